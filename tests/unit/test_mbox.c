/* Unit tests: mbox appends, locking, rollback and repair (deliverd/mbox.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mbox.h"

static char dir[64], box[128], msgfile[128];

/* ---- helpers ---- */

static char *
slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	char *b = malloc((size_t)st.st_size + 1);
	assert_non_null(b);
	assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
	b[st.st_size] = '\0';
	close(fd);
	if (len)
		*len = (size_t)st.st_size;
	return b;
}

static void
spit(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
}

static off_t
fsize(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Deliver text (a C string) from a spool-like file, at an offset. */
static enum mbox_status
deliver_to(const char *path, const char *sender, const char *rcpt, const char *text,
           char *err, size_t errlen)
{
	size_t n = strlen(text);
	char *b = malloc(n + 7);
	memcpy(b, "HEADER", 6);          /* the message starts at offset 6 */
	memcpy(b + 6, text, n);
	spit(msgfile, b, n + 6);
	free(b);
	int fd = open(msgfile, O_RDONLY);
	assert_true(fd >= 0);
	struct mbox_dest d = { .path = path, .mode = 0600 };
	struct mbox_msg m = { .fd = fd, .off = 6, .len = (off_t)n, .sender = sender,
	                      .delivered_to = rcpt, .arrival = time(NULL) };
	enum mbox_status st = mbox_deliver(&d, &m, err, errlen);
	close(fd);
	return st;
}

#define DELIVER_OK(path, text) do { \
	char e_[512] = ""; \
	enum mbox_status s_ = deliver_to(path, "alice@example.org", "bob@example.test", \
	                                 text, e_, sizeof(e_)); \
	if (s_ != MBOX_OK) fail_msg("mbox_deliver: %d %s", s_, e_); \
} while (0)

/* Messages in an mbox: "From " at the start or after a blank line. */
static int
count_messages(const char *b)
{
	int n = 0;
	if (strncmp(b, "From ", 5) == 0)
		n++;
	for (const char *p = b; (p = strstr(p, "\n\nFrom ")) != NULL; p += 2)
		n++;
	return n;
}

/* Replace each "From X  <24-char date>" date with DATE, checking it. */
static void
blank_dates(char *b, time_t t0, time_t t1)
{
	for (char *p = b; (p = strstr(p, "  ")) != NULL; p++) {
		char *ls = p;
		while (ls > b && ls[-1] != '\n')
			ls--;
		if (strncmp(ls, "From ", 5) != 0 || memchr(ls, '\n', (size_t)(p - ls)))
			continue;
		int ok = 0;
		for (time_t t = t0; t <= t1 && !ok; t++) {
			char want[32];
			struct tm tm;
			localtime_r(&t, &tm);
			strftime(want, sizeof(want), "%a %b %e %H:%M:%S %Y", &tm);
			ok = strncmp(p + 2, want, 24) == 0 && p[26] == '\n';
		}
		if (!ok)
			fail_msg("bad From line date: %.40s", ls);
		memcpy(p + 2, "DATE", 4);
		memmove(p + 6, p + 26, strlen(p + 26) + 1);
	}
}

static pid_t
dead_pid(void)
{
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0)
		_exit(0);
	waitpid(p, NULL, 0);
	return p;
}

static void
write_lock(const char *text, time_t mtime)
{
	char lp[160];
	snprintf(lp, sizeof(lp), "%s.lock", box);
	spit(lp, text, strlen(text));
	if (mtime) {
		struct timeval tv[2] = { { mtime, 0 }, { mtime, 0 } };
		assert_int_equal(utimes(lp, tv), 0);
	}
}

static int
lock_exists(void)
{
	char lp[160];
	snprintf(lp, sizeof(lp), "%s.lock", box);
	return access(lp, F_OK) == 0;
}

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}


/* The kernel's boot id, as the lock files carry it. */
static void
read_boot(char *boot, size_t n)
{
	FILE *bf = fopen("/proc/sys/kernel/random/boot_id", "r");
	assert_non_null(bf);
	assert_non_null(fgets(boot, (int)n, bf));
	fclose(bf);
	boot[strcspn(boot, "\n")] = '\0';
}

/* Files in dir whose name contains ".lock" (a lock or a lock temp). */
static int
lock_files(const char *d, char *names, size_t len)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "ls -a '%s' | grep -F .lock", d);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(names, 1, len - 1, p);
	names[n] = '\0';
	pclose(p);
	int lines = 0;
	for (size_t i = 0; i < n; i++)
		lines += names[i] == '\n';
	return lines;
}

static void
append_raw(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* ---- tests ---- */

static void
format_like_postfix(void **state)
{
	time_t t0 = time(NULL);
	DELIVER_OK(box, "Subject: one\nFrom: Alice <alice@example.org>\n\n"
	                "From the start of a line\n>From already quoted\n"
	                " From indented\nFrom\nFromage\nlast line without newline");
	char e[256];
	assert_int_equal(deliver_to(box, "", "Bob@Example.TEST", "Subject: bounce\n\nFrom x\n",
	                            e, sizeof(e)), MBOX_OK);
	assert_int_equal(deliver_to(box, "x@y.test", "bob@example.test", "", e, sizeof(e)),
	                 MBOX_OK);
	time_t t1 = time(NULL);

	char *b = slurp(box, NULL);
	blank_dates(b, t0, t1);
	/* byte for byte what Postfix's local(8) writes (less X-Original-To) */
	assert_string_equal(b,
	    "From alice@example.org  DATE\n"
	    "Return-Path: <alice@example.org>\n"
	    "Delivered-To: bob@example.test\n"
	    "Subject: one\n"
	    "From: Alice <alice@example.org>\n"
	    "\n"
	    ">From the start of a line\n"
	    ">From already quoted\n"
	    " From indented\n"
	    "From\n"
	    "Fromage\n"
	    "last line without newline\n"
	    "\n"
	    "From MAILER-DAEMON  DATE\n"
	    "Return-Path: <>\n"
	    "Delivered-To: Bob@Example.TEST\n"
	    "Subject: bounce\n"
	    "\n"
	    ">From x\n"
	    "\n"
	    "From x@y.test  DATE\n"
	    "Return-Path: <x@y.test>\n"
	    "Delivered-To: bob@example.test\n"
	    "\n"
	    "\n");
	free(b);
	struct stat st;
	assert_int_equal(stat(box, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_false(lock_exists());
}

static void
header_injection(void **state)
{
	char e[256];
	assert_int_equal(deliver_to(box, "a\nb@x.test", "c\r\nX-Evil: 1", "S: x\n\nhi\n",
	                            e, sizeof(e)), MBOX_OK);
	char *b = slurp(box, NULL);
	assert_non_null(strstr(b, "Return-Path: <a?b@x.test>\nDelivered-To: c??X-Evil: 1\n"));
	free(b);
}

static void
rollback_on_failed_write(void **state)
{
	DELIVER_OK(box, "Subject: first\n\nhello\n");
	size_t n0;
	static char before[4096];     /* static: the child must not leak it */
	char *b0 = slurp(box, &n0);
	assert_true(n0 < sizeof(before));
	memcpy(before, b0, n0);
	free(b0);

	char big[20000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (size_t i = 80; i < sizeof(big) - 1; i += 80)
		big[i] = '\n';
	memcpy(big, "Subject: big\n\n", 14);

	spit(msgfile, big, strlen(big));
	int mfd = open(msgfile, O_RDONLY);
	assert_true(mfd >= 0);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		/* a file size limit a little above the mailbox: EFBIG midway */
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = { (rlim_t)n0 + 4096, (rlim_t)n0 + 4096 };
		setrlimit(RLIMIT_FSIZE, &rl);
		char e[256] = "";
		struct mbox_dest d = { .path = box, .mode = 0600 };
		struct mbox_msg m = { .fd = mfd, .len = (off_t)strlen(big),
		                      .sender = "a@b.test", .delivered_to = "b@example.test" };
		enum mbox_status s = mbox_deliver(&d, &m, e, sizeof(e));
		_exit(s == MBOX_TEMP && strncmp(e, "4.2.2 ", 6) == 0 ? 0 : 1);
	}
	close(mfd);
	int ws;
	assert_int_equal(waitpid(p, &ws, 0), p);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);

	size_t n1;
	char *after = slurp(box, &n1);
	assert_int_equal(n1, n0);
	assert_memory_equal(after, before, n0);
	assert_false(lock_exists());
	free(after);

	/* and the next delivery goes through */
	DELIVER_OK(box, "Subject: second\n\nhello\n");
	char *b = slurp(box, NULL);
	assert_int_equal(count_messages(b), 2);
	free(b);
}

static void
stale_dotlocks(void **state)
{
	char lk[64];
	mbox_set_lock_timeout(10000);

	/* a dead owner: broken at once, not after the timeout */
	snprintf(lk, sizeof(lk), "%ld\n", (long)dead_pid());
	write_lock(lk, 0);
	double t = now_s();
	DELIVER_OK(box, "Subject: a\n\nx\n");
	assert_true(now_s() - t < 2.0);
	assert_false(lock_exists());

	/* our own pid, from a previous incarnation of this process */
	snprintf(lk, sizeof(lk), "%ld\n", (long)getpid());
	write_lock(lk, 0);
	t = now_s();
	DELIVER_OK(box, "Subject: b\n\nx\n");
	assert_true(now_s() - t < 2.0);

	/* a live owner (init), but ten minutes old */
	write_lock("1\n", time(NULL) - 600);
	DELIVER_OK(box, "Subject: c\n\nx\n");
	assert_false(lock_exists());

	/* garbage, old */
	write_lock("garbage", time(NULL) - 600);
	DELIVER_OK(box, "Subject: d\n\nx\n");

	/* a live, fresh lock is respected until the timeout */
	mbox_set_lock_timeout(300);
	write_lock("1\n", 0);
	char e[256];
	assert_int_equal(deliver_to(box, "a@b.test", "bob@example.test", "S: e\n\nx\n",
	                            e, sizeof(e)), MBOX_TEMP);
	assert_non_null(strstr(e, "4.2.0 mailbox locked"));
	assert_true(lock_exists());
	char lp[160];
	snprintf(lp, sizeof(lp), "%s.lock", box);
	unlink(lp);
	mbox_set_lock_timeout(20000);

	char *b = slurp(box, NULL);
	assert_int_equal(count_messages(b), 4);
	free(b);
}

/* A second process holds the fcntl lock, then the dotlock. */
static void
contention(void **state)
{
	int go[2], ready[2];
	char c;
	DELIVER_OK(box, "Subject: first\n\nx\n");
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		int fd = open(box, O_RDWR);
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		if (fd < 0 || fcntl(fd, F_SETLKW, &fl) < 0)
			_exit(1);
		if (write(ready[1], "l", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(1);
		close(fd);      /* fcntl lock released */
		char lp[160];
		snprintf(lp, sizeof(lp), "%s.lock", box);
		int lfd = open(lp, O_WRONLY | O_CREAT | O_EXCL, 0600);
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
		if (lfd < 0 || write(lfd, pid, (size_t)n) != n)
			_exit(1);
		close(lfd);
		if (write(ready[1], "d", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(1);
		unlink(lp);
		_exit(0);
	}
	char e[256];
	assert_int_equal(read(ready[0], &c, 1), 1);
	mbox_set_lock_timeout(300);
	assert_int_equal(deliver_to(box, "a@b.test", "bob@example.test", "S: x\n\nx\n",
	                            e, sizeof(e)), MBOX_TEMP);
	assert_non_null(strstr(e, "4.2.0 mailbox locked"));
	assert_false(lock_exists());     /* our dotlock was released */

	assert_int_equal(write(go[1], "1", 1), 1);
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(deliver_to(box, "a@b.test", "bob@example.test", "S: x\n\nx\n",
	                            e, sizeof(e)), MBOX_TEMP);
	assert_non_null(strstr(e, ".lock exists"));

	/* released while we wait: delivered */
	mbox_set_lock_timeout(20000);
	assert_int_equal(write(go[1], "2", 1), 1);
	DELIVER_OK(box, "Subject: second\n\nx\n");
	int ws;
	waitpid(p, &ws, 0);
	assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	char *b = slurp(box, NULL);
	assert_int_equal(count_messages(b), 2);
	free(b);
	close(go[0]); close(go[1]); close(ready[0]); close(ready[1]);
}

static void
repair_torn_tail(void **state)
{
	char lk[96];
	DELIVER_OK(box, "Subject: good\n\nx\n");
	size_t n0;
	char *good = slurp(box, &n0);

	/* a writer died after 30 of its 200 bytes, leaving its dotlock */
	int fd = open(box, O_WRONLY | O_APPEND);
	assert_int_equal(write(fd, "From dead@x.test  Mon Nov 30 00", 31), 31);
	close(fd);
	snprintf(lk, sizeof(lk), "%ld %zu 200\n", (long)dead_pid(), n0);
	write_lock(lk, 0);
	DELIVER_OK(box, "Subject: next\n\ny\n");
	char *b = slurp(box, NULL);
	assert_memory_equal(b, good, n0);
	assert_int_equal(strncmp(b + n0, "From alice@example.org  ", 24), 0);
	assert_int_equal(count_messages(b), 2);
	assert_null(strstr(b, "dead@x.test"));
	free(b);

	/* the same writer, in this boot, killed after its complete append
	 * (in the fsync, say): it never returned, the spool will deliver the
	 * message again, so it goes */
	char boot[64] = "";
	FILE *bf = fopen("/proc/sys/kernel/random/boot_id", "r");
	assert_non_null(bf);
	assert_non_null(fgets(boot, sizeof(boot), bf));
	fclose(bf);
	boot[strcspn(boot, "\n")] = '\0';
	size_t n1;
	free(good);
	good = slurp(box, &n1);
	const char *whole = "From w@x.test  Mon Nov 30 00:00:00 2026\n\nbody\n\n";
	fd = open(box, O_WRONLY | O_APPEND);
	assert_int_equal(write(fd, whole, strlen(whole)), (ssize_t)strlen(whole));
	close(fd);
	snprintf(lk, sizeof(lk), "%ld %zu %zu %s\n", (long)dead_pid(), n1, strlen(whole), boot);
	write_lock(lk, 0);
	DELIVER_OK(box, "Subject: third\n\nz\n");
	b = slurp(box, NULL);
	assert_memory_equal(b, good, n1);
	assert_null(strstr(b, "w@x.test"));
	assert_int_equal(count_messages(b), 3);
	free(b);
	free(good);

	/* a record from before a reboot: a complete append is kept (the
	 * spool may have recorded it), a torn one still goes */
	good = slurp(box, &n1);
	fd = open(box, O_WRONLY | O_APPEND);
	assert_int_equal(write(fd, whole, strlen(whole)), (ssize_t)strlen(whole));
	close(fd);
	snprintf(lk, sizeof(lk), "%ld %zu %zu 00000000-1111-2222-3333-444444444444\n",
	         (long)dead_pid(), n1, strlen(whole));
	write_lock(lk, 0);
	DELIVER_OK(box, "Subject: fourth\n\nz\n");
	b = slurp(box, NULL);
	assert_non_null(strstr(b, "w@x.test"));
	assert_int_equal(count_messages(b), 5);
	free(b);
	free(good);
	good = slurp(box, &n1);
	fd = open(box, O_WRONLY | O_APPEND);
	assert_int_equal(write(fd, whole, 20), 20);
	close(fd);
	snprintf(lk, sizeof(lk), "%ld %zu %zu 00000000-1111-2222-3333-444444444444\n",
	         (long)dead_pid(), n1, strlen(whole));
	write_lock(lk, 0);
	DELIVER_OK(box, "Subject: fifth\n\nz\n");
	b = slurp(box, NULL);
	assert_memory_equal(b, good, n1);
	assert_int_equal(count_messages(b), 6);
	free(b);
	free(good);

	/* a successful append leaves no record behind */
	assert_false(lock_exists());

	/* another program's mailbox without a final blank line: padded */
	unlink(box);
	spit(box, "From a@b  Mon Nov 30 00:00:00 2026\nS: x\n\nno blank", 48);
	DELIVER_OK(box, "Subject: after\n\nz\n");
	b = slurp(box, NULL);
	assert_int_equal(strncmp(b + 48, "\n\nFrom alice@example.org  ", 26), 0);
	assert_int_equal(count_messages(b), 2);
	free(b);
}


/*
 * First in the run, before any delivery has read the boot id: a writer
 * of this boot killed after its complete append (in the fsync, before
 * the record was erased) never returned, so its message goes, even when
 * the first thing this process does is judge its lock.
 */
static void
boot_id_read_before_judging(void **state)
{
	char boot[64], lk[160];
	read_boot(boot, sizeof(boot));
	const char *whole = "From w@x.test  Mon Nov 30 00:00:00 2026\n\nbody\n\n";
	append_raw(box, whole);
	snprintf(lk, sizeof(lk), "%ld %s\n0 %zu %s\n", (long)dead_pid(), boot,
	         strlen(whole), boot);
	write_lock(lk, 0);
	mbox_set_lock_timeout(10000);
	double t = now_s();
	DELIVER_OK(box, "Subject: next\n\ny\n");
	assert_true(now_s() - t < 2.0);
	char *b = slurp(box, NULL);
	assert_null(strstr(b, "w@x.test"));
	assert_int_equal(count_messages(b), 1);
	free(b);
	assert_false(lock_exists());
}

/*
 * What a writer killed at each step of taking, using and releasing the
 * dotlock leaves behind, made by hand: every one is dealt with at once
 * (the lock timeout is 10 s, each delivery must take well under 2 s),
 * and no lock or temporary file is left.
 */
static void
killed_writer_leftovers(void **state)
{
	char boot[64], d2[160], b2[192], lp[224], tp[224], lk[256], names[1024];
	read_boot(boot, sizeof(boot));
	const char *whole = "From w@x.test  Mon Nov 30 00:00:00 2026\n\nwhole\n\n";
	mbox_set_lock_timeout(10000);

	for (int stage = 0; stage < 8; stage++) {
		/* a fresh directory each time: its first delivery sweeps it */
		snprintf(d2, sizeof(d2), "%s/s%d", dir, stage);
		assert_int_equal(mkdir(d2, 0700), 0);
		snprintf(b2, sizeof(b2), "%s/bob", d2);
		snprintf(lp, sizeof(lp), "%s.lock", b2);
		long dead = (long)dead_pid();
		snprintf(tp, sizeof(tp), "%s.lock.spfgate.%ld", b2, dead);
		append_raw(b2, "From a@b.test  Mon Nov 30 00:00:00 2026\n\nfirst\n\n");
		off_t n0 = fsize(b2);
		int keep = 0;        /* the whole append stays */
		switch (stage) {
		case 0:  /* named temp made, killed before the pid was written */
			spit(tp, "", 0);
			break;
		case 1:  /* killed before the link */
			snprintf(lk, sizeof(lk), "%ld %s\n", dead, boot);
			spit(tp, lk, strlen(lk));
			break;
		case 2:  /* killed between the link and the temp's unlink */
			snprintf(lk, sizeof(lk), "%ld %s\n", dead, boot);
			spit(tp, lk, strlen(lk));
			assert_int_equal(link(tp, lp), 0);
			break;
		case 3:  /* killed holding the lock, before the record */
			snprintf(lk, sizeof(lk), "%ld %s\n", dead, boot);
			spit(lp, lk, strlen(lk));
			break;
		case 4:  /* killed after the fsync, before the record's erase */
			append_raw(b2, whole);
			snprintf(lk, sizeof(lk), "%ld %s\n%lld %zu %s\n", dead, boot,
			         (long long)n0, strlen(whole), boot);
			spit(lp, lk, strlen(lk));
			break;
		case 5:  /* killed after the erase, before the unlink: final */
			append_raw(b2, whole);
			snprintf(lk, sizeof(lk), "%ld %s\n", dead, boot);
			spit(lp, lk, strlen(lk));
			keep = 1;
			break;
		case 6:  /* killed mid-append, its lock linked under both names */
			append_raw(b2, "From w@x.test  Mon Nov 30 00:00:00 2026\n\nwho");
			snprintf(lk, sizeof(lk), "%ld %s\n%lld %zu %s\n", dead, boot,
			         (long long)n0, strlen(whole), boot);
			spit(tp, lk, strlen(lk));
			assert_int_equal(link(tp, lp), 0);
			break;
		case 7:  /* made in an earlier boot; its pid lives again (init) */
			append_raw(b2, whole);
			snprintf(lk, sizeof(lk), "1 00000000-1111-2222-3333-444444444444\n");
			spit(lp, lk, strlen(lk));
			keep = 1;
			break;
		}
		double t = now_s();
		DELIVER_OK(b2, "Subject: next\n\ny\n");
		if (now_s() - t >= 2.0)
			fail_msg("stage %d: %.1f s", stage, now_s() - t);
		char *b = slurp(b2, NULL);
		if (count_messages(b) != 2 + keep || (strstr(b, "w@x.test") != NULL) != keep)
			fail_msg("stage %d: mailbox [%s]", stage, b);
		assert_int_equal(strncmp(b + n0, keep ? "From w@x.test" : "From alice@", 11), 0);
		free(b);
		if (lock_files(d2, names, sizeof(names)) != 0)
			fail_msg("stage %d: left behind: %s", stage, names);
	}
	mbox_set_lock_timeout(20000);
}

/*
 * Other programs' locks: mailutils' dotlock(1) makes an empty one, which
 * is respected while fresh; "<pid> <word>" is not taken for a boot id;
 * liblockfile's "<pid>" of a live process is respected.
 */
static void
foreign_locks(void **state)
{
	char e[256];
	mbox_set_lock_timeout(300);
	for (int i = 0; i < 3; i++) {
		write_lock(i == 0 ? "" : i == 1 ? "1 mail.example.test\n" : "1\n", 0);
		double t = now_s();
		assert_int_equal(deliver_to(box, "a@b.test", "bob@example.test", "S: e\n\nx\n",
		                            e, sizeof(e)), MBOX_TEMP);
		assert_true(now_s() - t >= 0.25);
		assert_non_null(strstr(e, "4.2.0 mailbox locked"));
		assert_true(lock_exists());
	}
	/* old: stale */
	mbox_set_lock_timeout(10000);
	write_lock("", time(NULL) - 600);
	DELIVER_OK(box, "Subject: a\n\nx\n");
	assert_false(lock_exists());
	mbox_set_lock_timeout(20000);
}

/* Our lock file while we hold it: "<pid> <boot>", and nothing more once
 * the append is done (seen by a second process at the fcntl lock). */
static void
lock_content_while_held(void **state)
{
	char boot[64], want[128], lp[160];
	read_boot(boot, sizeof(boot));
	DELIVER_OK(box, "Subject: first\n\nx\n");
	int go[2], ready[2];
	char c;
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		int fd = open(box, O_RDWR);
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		if (fd < 0 || fcntl(fd, F_SETLKW, &fl) < 0 ||
		    write(ready[1], "l", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(1);
		_exit(0);
	}
	assert_int_equal(read(ready[0], &c, 1), 1);
	mbox_set_lock_timeout(1000);
	/* a second process delivers; look at its lock while it waits */
	pid_t q = fork();
	assert_true(q >= 0);
	if (q == 0) {
		char e[256];
		enum mbox_status s = deliver_to(box, "a@b.test", "b@example.test", "S: x\n\nx\n",
		                                e, sizeof(e));
		_exit(s == MBOX_TEMP ? 0 : 1);
	}
	snprintf(lp, sizeof(lp), "%s.lock", box);
	for (int i = 0; i < 100 && access(lp, F_OK) != 0; i++)
		usleep(5000);
	usleep(50000);
	char *l = slurp(lp, NULL);
	snprintf(want, sizeof(want), "%ld %s\n", (long)q, boot);
	assert_string_equal(l, want);
	free(l);
	int ws;
	assert_int_equal(waitpid(q, &ws, 0), q);
	assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	assert_false(lock_exists());
	assert_int_equal(write(go[1], "x", 1), 1);
	waitpid(p, NULL, 0);
	mbox_set_lock_timeout(20000);
	close(go[0]); close(go[1]); close(ready[0]); close(ready[1]);
}

/*
 * Real kills: a child appends numbered messages (about 5 KB each) and
 * reports each one mbox_deliver returned OK for; it is SIGKILLed at a
 * random moment, 25 times, and after each kill a new process delivers
 * one message.  That delivery never waits for the dead writer's lock; no
 * lock or temporary file is left; the mailbox holds whole messages only,
 * each at most once, including every one reported.  With O_TMPFILE and
 * with the named temporary file.
 */
#define KBODY 400

static int
check_whole(const char *b, const unsigned char *acked, int nacked_max, int *count)
{
	/* "From ..\nReturn-Path..\nDelivered-To..\nSubject: m<k>\n\n" then
	 * KBODY lines "line <k> <i>\n", then "\n" */
	static unsigned char seen[4096];
	memset(seen, 0, sizeof(seen));
	int n = 0;
	const char *p = b;
	while (*p) {
		if (strncmp(p, "From ", 5) != 0)
			return -1;
		const char *s = strstr(p, "\nSubject: ");
		if (s == NULL)
			return -2;
		int k = atoi(s + 10 + 1);   /* "m<k>" or "a<k>" */
		char kind = s[10];
		const char *q = strstr(s, "\n\n");
		if (q == NULL)
			return -3;
		q += 2;
		if (kind == 'm') {
			char want[64];
			for (int i = 0; i < KBODY; i++) {
				int wl = snprintf(want, sizeof(want), "line %d %d\n", k, i);
				if (strncmp(q, want, (size_t)wl) != 0)
					return -4;
				q += wl;
			}
			if (k < 0 || k >= (int)sizeof(seen) || seen[k]++)
				return -5;          /* twice */
		} else if (strncmp(q, "y\n", 2) == 0)
			q += 2;
		else
			return -6;
		if (*q != '\n')
			return -7;
		p = q + 1;
		n++;
	}
	for (int k = 0; k < nacked_max; k++)
		if (acked[k] && !seen[k])
			return -8;                  /* reported, then lost */
	*count = n;
	return 0;
}

static void
kill_at_random_moments(void **state)
{
	static unsigned char acked[4096];
	char names[1024], text[KBODY * 24 + 64];
	srand(7);
	for (int named = 0; named < 2; named++) {
		memset(acked, 0, sizeof(acked));
		unlink(box);
		int next = 0, finished_appends = 0;
		for (int round = 0; round < 25; round++) {
			int ack[2];
			assert_int_equal(pipe(ack), 0);
			int first = next;
			pid_t p = fork();
			assert_true(p >= 0);
			if (p == 0) {
				close(ack[0]);
				mbox_set_named_lock_temp(named);
				char mf[160];
				snprintf(mf, sizeof(mf), "%s/kmsg", dir);
				for (int k = first; k < first + 100; k++) {
					int n = snprintf(text, sizeof(text), "Subject: m%d\n\n", k);
					for (int i = 0; i < KBODY; i++)
						n += snprintf(text + n, sizeof(text) - (size_t)n,
						              "line %d %d\n", k, i);
					spit(mf, text, (size_t)n);
					int fd = open(mf, O_RDONLY);
					struct mbox_dest d = { .path = box, .mode = 0600 };
					struct mbox_msg m = { .fd = fd, .len = n, .sender = "a@b.test",
					                      .delivered_to = "b@example.test" };
					char e[256];
					if (mbox_deliver(&d, &m, e, sizeof(e)) != MBOX_OK)
						_exit(2);
					close(fd);
					unsigned short kk = (unsigned short)k;
					if (write(ack[1], &kk, sizeof(kk)) != sizeof(kk))
						_exit(3);
				}
				_exit(0);
			}
			close(ack[1]);
			usleep((useconds_t)(1000 + rand() % 15000));
			kill(p, SIGKILL);
			int ws;
			assert_int_equal(waitpid(p, &ws, 0), p);
			unsigned short kk;
			while (read(ack[0], &kk, sizeof(kk)) == sizeof(kk))
				acked[kk] = 1;
			close(ack[0]);
			next = first + 100;
			if (WIFEXITED(ws))
				fail_msg("writer exited %d before the kill", WEXITSTATUS(ws));

			/* the next writer: a new process, as after a restart */
			double t = now_s();
			pid_t q = fork();
			assert_true(q >= 0);
			if (q == 0) {
				mbox_set_named_lock_temp(named);
				mbox_set_lock_timeout(10000);
				char e[256], s[64];
				snprintf(s, sizeof(s), "Subject: a%d\n\ny\n", round);
				_exit(deliver_to(box, "a@b.test", "b@example.test", s, e,
				                 sizeof(e)) == MBOX_OK ? 0 : 1);
			}
			assert_int_equal(waitpid(q, &ws, 0), q);
			assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
			if (now_s() - t >= 2.0)
				fail_msg("round %d: the next delivery took %.1f s", round, now_s() - t);
			if (lock_files(dir, names, sizeof(names)) != 0)
				fail_msg("round %d (%s): left behind: %s", round,
				         named ? "named" : "O_TMPFILE", names);
			char *b = slurp(box, NULL);
			int count = 0, rc = check_whole(b, acked, next, &count);
			if (rc != 0)
				fail_msg("round %d: mailbox not whole (%d)", round, rc);
			free(b);
			finished_appends = count - (round + 1);
		}
		int nacked = 0;
		for (int k = 0; k < next; k++)
			nacked += acked[k];
		print_message("kills (%s): 25, messages reported delivered %d, in the mailbox %d\n",
		              named ? "named temp" : "O_TMPFILE", nacked, finished_appends);
		assert_true(nacked > 0);
	}
}

static void
refused_files(void **state)
{
	char e[256], other[160], lp[160];

	/* a symbolic link, even to a good mailbox */
	snprintf(other, sizeof(other), "%s/other", dir);
	spit(other, "", 0);
	assert_int_equal(symlink(other, box), 0);
	assert_int_equal(deliver_to(box, "a@b.test", "b@example.test", "S: x\n\n", e,
	                            sizeof(e)), MBOX_PERM);
	assert_non_null(strstr(e, "5.2.0"));
	assert_non_null(strstr(e, "symbolic link"));
	assert_int_equal(fsize(other), 0);
	unlink(box);

	/* a dangling one: never followed to create a file */
	snprintf(lp, sizeof(lp), "%s/nowhere", dir);
	assert_int_equal(symlink(lp, box), 0);
	assert_int_equal(deliver_to(box, "a@b.test", "b@example.test", "S: x\n\n", e,
	                            sizeof(e)), MBOX_PERM);
	assert_int_equal(access(lp, F_OK), -1);
	unlink(box);

	/* a second hard link */
	assert_int_equal(link(other, box), 0);
	assert_int_equal(deliver_to(box, "a@b.test", "b@example.test", "S: x\n\n", e,
	                            sizeof(e)), MBOX_PERM);
	assert_non_null(strstr(e, "hard link"));
	assert_int_equal(fsize(other), 0);
	unlink(box);
	unlink(other);

	/* a FIFO and a directory */
	assert_int_equal(mkfifo(box, 0600), 0);
	assert_int_equal(deliver_to(box, "a@b.test", "b@example.test", "S: x\n\n", e,
	                            sizeof(e)), MBOX_PERM);
	assert_non_null(strstr(e, "not a regular file"));
	unlink(box);
	assert_int_equal(mkdir(box, 0700), 0);
	assert_int_equal(deliver_to(box, "a@b.test", "b@example.test", "S: x\n\n", e,
	                            sizeof(e)), MBOX_PERM);
	rmdir(box);
	assert_false(lock_exists());

	/* a directory that does not exist: temporary */
	snprintf(lp, sizeof(lp), "%s/no/such/box", dir);
	assert_int_equal(deliver_to(lp, "a@b.test", "b@example.test", "S: x\n\n", e,
	                            sizeof(e)), MBOX_TEMP);
	assert_int_equal(strncmp(e, "4.", 2), 0);
}

static void
identity(void **state)
{
	if (geteuid() != 0)
		skip();
	char e[256];
	int fd = open(msgfile, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(write(fd, "S: x\n\nhi\n", 9), 9);
	struct mbox_dest d = { .path = box, .mode = 0660, .switch_identity = 1,
	                       .uid = 65534, .gid = 8 };
	struct mbox_msg m = { .fd = fd, .off = 0, .len = 9, .sender = "a@b.test",
	                      .delivered_to = "nobody@example.test" };
	umask(077);
	assert_int_equal(chmod(dir, 0755), 0);    /* the user must reach it */
	assert_int_equal(mbox_deliver(&d, &m, e, sizeof(e)), MBOX_OK);
	struct stat st;
	assert_int_equal(stat(box, &st), 0);
	assert_int_equal(st.st_uid, 65534);
	assert_int_equal(st.st_gid, 8);
	assert_int_equal(st.st_mode & 07777, 0660);
	/* appended as the user, to a file the user owns */
	assert_int_equal(mbox_deliver(&d, &m, e, sizeof(e)), MBOX_OK);
	char *b = slurp(box, NULL);
	if (count_messages(b) != 2)
		fail_msg("mailbox: [%s]", b);
	free(b);
	/* the thread is root again */
	assert_int_equal(setfsuid(-1), 0);

	/* someone else's file is refused */
	assert_int_equal(chown(box, 0, 8), 0);   /* writable through group 8 */
	assert_int_equal(mbox_deliver(&d, &m, e, sizeof(e)), MBOX_PERM);
	assert_non_null(strstr(e, "not owned"));
	/* a mode the user cannot write: temporary */
	assert_int_equal(chown(box, 65534, 8), 0);
	assert_int_equal(chmod(box, 0400), 0);
	assert_int_equal(mbox_deliver(&d, &m, e, sizeof(e)), MBOX_TEMP);
	close(fd);
	umask(022);
}

struct worker { int n; int failed; };

static void *
worker(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < w->n; i++) {
		char e[256];
		char text[64];
		int fd;
		char path[160];
		snprintf(path, sizeof(path), "%s/msg.%lx.%d", dir, (unsigned long)pthread_self(), i);
		snprintf(text, sizeof(text), "Subject: t%d\n\nFrom here\n", i);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
			w->failed++;
		struct mbox_dest d = { .path = box, .mode = 0600 };
		struct mbox_msg m = { .fd = fd, .len = (off_t)strlen(text),
		                      .sender = "a@b.test", .delivered_to = "b@example.test" };
		if (mbox_deliver(&d, &m, e, sizeof(e)) != MBOX_OK)
			w->failed++;
		close(fd);
		unlink(path);
	}
	return NULL;
}

static void
threads(void **state)
{
	pthread_t th[4];
	struct worker w[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){ .n = 50 };
		assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].failed, 0);
	}
	char *b = slurp(box, NULL);
	assert_int_equal(count_messages(b), 200);
	free(b);
}

/*
 * setfsuid must act on the delivering thread only: while one thread
 * appends as uid 65534, another (root) keeps writing into a directory
 * only root may enter.
 */
struct idw { const char *box; int as_user; int failed; };

static void *
id_worker(void *arg)
{
	struct idw *w = arg;
	char path[160];
	snprintf(path, sizeof(path), "%s.msg", w->box);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "S: x\n\nhi\n", 9) != 9)
		w->failed++;
	struct mbox_dest d = { .path = w->box, .mode = 0600,
	                       .switch_identity = w->as_user, .uid = 65534, .gid = 65534 };
	struct mbox_msg m = { .fd = fd, .len = 9, .sender = "a@b.test",
	                      .delivered_to = "b@example.test" };
	for (int i = 0; i < 200; i++) {
		char e[256];
		if (mbox_deliver(&d, &m, e, sizeof(e)) != MBOX_OK) {
			w->failed++;
			break;
		}
	}
	close(fd);
	return NULL;
}

static void
identity_per_thread(void **state)
{
	if (geteuid() != 0)
		skip();
	char pub[128], priv[128], b1[160], b2[160];
	snprintf(pub, sizeof(pub), "%s/pub", dir);
	snprintf(priv, sizeof(priv), "%s/priv", dir);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(mkdir(pub, 0777), 0);
	assert_int_equal(chmod(pub, 0777), 0);
	assert_int_equal(mkdir(priv, 0700), 0);
	snprintf(b1, sizeof(b1), "%s/nobody", pub);
	snprintf(b2, sizeof(b2), "%s/root", priv);
	struct idw w[2] = { { b1, 1, 0 }, { b2, 0, 0 } };
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, id_worker, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(w[0].failed, 0);
	assert_int_equal(w[1].failed, 0);
	struct stat st;
	assert_int_equal(stat(b1, &st), 0);
	assert_int_equal(st.st_uid, 65534);
	assert_int_equal(stat(b2, &st), 0);
	assert_int_equal(st.st_uid, 0);
}

static void
paths(void **state)
{
	char buf[64];
	assert_int_equal(mbox_path("/var/mail/%u", "alice", "/home/alice", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/var/mail/alice");
	assert_int_equal(mbox_path("%h/Mail/in%%box-%u", "bob", "/home/bob", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/home/bob/Mail/in%box-bob");
	assert_int_equal(mbox_path("/var/mail/%u", "../etc", "", buf, sizeof(buf)), -1);
	assert_int_equal(mbox_path("/var/mail/%u", "a/b", "", buf, sizeof(buf)), -1);
	assert_int_equal(mbox_path("/var/mail/%u", ".hidden", "", buf, sizeof(buf)), -1);
	assert_int_equal(mbox_path("/var/mail/%u", "", "", buf, sizeof(buf)), -1);
	assert_int_equal(mbox_path("%h/mbox", "carol", "", buf, sizeof(buf)), -1);
	assert_int_equal(mbox_path("/var/mail/%x", "carol", "", buf, sizeof(buf)), -1);
	assert_int_equal(mbox_path("/var/mail/%", "carol", "", buf, sizeof(buf)), -1);
	assert_int_equal(mbox_path("/a/very/long/path/that/does/not/fit/in/the/buffer/%u",
	                           "someone-with-a-long-name", "", buf, sizeof(buf)), -1);
}

static int
setup_one(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/spfgate-mbox.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(box, sizeof(box), "%s/bob", dir);
	snprintf(msgfile, sizeof(msgfile), "%s/msg", dir);
	mbox_set_lock_timeout(20000);
	return 0;
}

static int
teardown_one(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		/* first: before any delivery of this process reads the boot id */
		cmocka_unit_test_setup_teardown(boot_id_read_before_judging, setup_one,
		                                teardown_one),
		cmocka_unit_test_setup_teardown(format_like_postfix, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(header_injection, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(rollback_on_failed_write, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(stale_dotlocks, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(contention, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(repair_torn_tail, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(killed_writer_leftovers, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(foreign_locks, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(lock_content_while_held, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(kill_at_random_moments, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(refused_files, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(identity, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(threads, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(identity_per_thread, setup_one, teardown_one),
		cmocka_unit_test_setup_teardown(paths, setup_one, teardown_one),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
