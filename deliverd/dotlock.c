/*
 * dotlock: the "<mailbox>.lock" file of an mbox delivery (mbox.c, which
 * takes it after its per-path mutex and before the fcntl lock): made with
 * its content in one step, judged stale and broken, released; the record
 * of the append in progress; the sweep of temporary files.
 *
 * The dotlock never exists without its owner's pid: its content is
 * written to a file without a name (O_TMPFILE) or, where that is not
 * available (NFS), to "<path>.lock.spfgate.<pid>", which is then link()ed
 * to "<path>.lock" (link, like O_EXCL, fails when the lock exists) and the
 * temporary name removed.  A process sweeps a mailbox directory of such
 * temporary files left by dead processes (or older than 5 minutes) on its
 * first delivery there, then at most once a minute, and at once after
 * breaking a lock whose temporary name was still linked.
 *
 * The dotlock holds "<pid> <boot id>\n"; once the mailbox is locked a
 * second line, the record "<size> <length> <boot id>\n", is added: the
 * mailbox's size before the append, the number of bytes the append will
 * write, and the kernel's boot id.  The record is erased again (the file
 * cut back to its first line, one ftruncate) after the fsync, before the
 * lock is removed and before mbox_deliver returns.  A lock is stale, and
 * broken at once, if its pid is gone, or is this very process (a previous
 * incarnation, since the mutex says no thread of ours holds it), or it
 * names another boot id than the current one (its pid may have been
 * reused since); any lock older than 5 minutes is stale too.  Locks that
 * are not ours (mailutils' dotlock(1) makes an empty one; liblockfile
 * writes "<pid>") are judged by their pid if they have one, else by their
 * age only: a fresh empty lock is respected.  The boot id is read before
 * any lock is judged.  The previous one-line form "<pid> <size> <length>
 * [<boot id>]" is still understood.
 *
 * What the record is for (crash repair), and what a kill at any point
 * leaves behind: mbox.c's opening comment.
 */
#include "dotlock.h"
#include "fdio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mbox.h"

#define STALE_AGE 300            /* seconds: a dotlock older is broken */
#define POLL_MS 50

int
dotlock_wait(const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	if (now.tv_sec > deadline->tv_sec ||
	    (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec))
		return -1;
	struct timespec ts = { 0, POLL_MS * 1000000L };
	nanosleep(&ts, NULL);
	return 0;
}

#define TEMP_TAG ".lock.spfgate."
#define SWEEP_EVERY 60           /* seconds between sweeps of a directory */

static char boot_id[40] = "-";
static pthread_once_t boot_once = PTHREAD_ONCE_INIT;
static int named_temp_only;      /* mbox_set_named_lock_temp */

/* Declared in mbox.h: the test switch for the named way. */
void
mbox_set_named_lock_temp(int on)
{
	named_temp_only = on;
}

static void
read_boot_id(void)
{
	char b[64];
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	if (f == NULL)
		return;
	if (fgets(b, sizeof(b), f) && strlen(b) >= 32) {
		b[strcspn(b, "\n ")] = '\0';
		snprintf(boot_id, sizeof(boot_id), "%s", b);
	}
	fclose(f);
}

/* Before any lock is written or judged. */
void
dotlock_boot_init(void)
{
	pthread_once(&boot_once, read_boot_id);
}

static int
pid_gone(long pid)
{
	return pid > 0 && pid <= INT_MAX && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/* A boot id's shape (or "-", unknown): not a host name or any other word. */
static int
is_boot_id(const char *s)
{
	if (strcmp(s, "-") == 0)
		return 1;
	if (strlen(s) != 36)
		return 0;
	for (int i = 0; i < 36; i++) {
		int dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') ||
		                           (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	}
	return 1;
}

static int
all_digits(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

/*
 * What a lock file says.  Ours: "<pid> <boot>\n", plus "<size> <length>
 * <boot>\n" while an append is in progress.  Also read: the previous
 * one-line form "<pid> <size> <length> [<boot>]", and other programs'
 * "<pid>" (liblockfile) or nothing at all (mailutils' dotlock).
 */
struct lockinfo {
	long pid;                /* 0: none */
	const char *boot;        /* the holder's boot id, NULL if unknown */
	int has_rec;
	long long size, len;
	const char *rec_boot;    /* NULL if none */
	char tok[6][48];
};

static void
lock_parse(const char *buf, struct lockinfo *li)
{
	int nt = 0;
	memset(li, 0, sizeof(*li));
	for (const char *p = buf; nt < 6;) {
		p += strspn(p, " \t\r\n");
		size_t n = strcspn(p, " \t\r\n");
		if (n == 0)
			break;
		if (n >= sizeof(li->tok[0]))
			return;          /* not ours, not liblockfile's */
		memcpy(li->tok[nt], p, n);
		li->tok[nt++][n] = '\0';
		p += n;
	}
	if (nt == 0 || !all_digits(li->tok[0]) || strlen(li->tok[0]) > 10)
		return;
	li->pid = strtol(li->tok[0], NULL, 10);
	int i = 1;
	if (i < nt && is_boot_id(li->tok[i]))
		li->boot = li->tok[i++];
	if (i + 1 < nt && all_digits(li->tok[i]) && all_digits(li->tok[i + 1]) &&
	    strlen(li->tok[i]) <= 18 && strlen(li->tok[i + 1]) <= 18) {
		li->has_rec = 1;
		li->size = strtoll(li->tok[i], NULL, 10);
		li->len = strtoll(li->tok[i + 1], NULL, 10);
		i += 2;
		if (i < nt && is_boot_id(li->tok[i]))
			li->rec_boot = li->tok[i];
	}
}

/* Read a lock file: is it stale?  Fills rec with a dead writer's record. */
static int
dotlock_stale(struct dotlock *rec, int fd, const struct stat *st)
{
	char buf[256];
	struct lockinfo li;
	ssize_t r = pread(fd, buf, sizeof(buf) - 1, 0);

	dotlock_boot_init();
	if (r < 0)
		r = 0;
	buf[r] = '\0';
	lock_parse(buf, &li);
	int dead = 0;
	if (li.pid > 0 && li.pid <= INT_MAX)
		dead = (pid_t)li.pid == getpid() || pid_gone(li.pid);
	/* made in an earlier boot: its pid may belong to someone else now */
	const char *made = li.boot ? li.boot : li.rec_boot;
	if (li.pid > 0 && made && strcmp(made, "-") != 0 && strcmp(boot_id, "-") != 0 &&
	    strcmp(made, boot_id) != 0)
		dead = 1;
	if (dead && li.has_rec && li.size >= 0 && li.len > 0) {
		rec->stale_record = 1;
		rec->same_boot = li.rec_boot && strcmp(boot_id, "-") != 0 &&
		                 strcmp(li.rec_boot, boot_id) == 0;
		rec->rec_size = (off_t)li.size;
		rec->rec_len = (off_t)li.len;
		snprintf(rec->rec_boot, sizeof(rec->rec_boot), "%s",
		         li.rec_boot ? li.rec_boot : "");
	}
	/* an empty or foreign lock: its maker may still be at work */
	return dead || st->st_mtime + STALE_AGE < time(NULL);
}

/*
 * Remove the named temporary files ("<mailbox>.lock.spfgate.<pid>") that
 * writers killed between creating one and removing it left in dir: those
 * of dead processes, and any older than STALE_AGE (one lives for a few
 * system calls).  Our own process's are left to their threads.
 */
static void
sweep_temps(const char *dir)
{
	DIR *dp = opendir(dir);
	if (dp == NULL)
		return;
	time_t now = time(NULL);
	struct dirent *de;
	while ((de = readdir(dp)) != NULL) {
		const char *t = strstr(de->d_name, TEMP_TAG);
		if (t == NULL || t == de->d_name)
			continue;
		const char *num = t + strlen(TEMP_TAG);
		if (!all_digits(num) || strlen(num) > 10)
			continue;
		long pid = strtol(num, NULL, 10);
		struct stat st;
		if (fstatat(dirfd(dp), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || st.st_size > 255)
			continue;
		int stale = st.st_mtime + STALE_AGE < now ||
		            ((pid_t)pid != getpid() && pid_gone(pid));
		if (stale && unlinkat(dirfd(dp), de->d_name, 0) == 0)
			log_warn("dir=%s stale lock temp file %s removed", dir, de->d_name);
	}
	closedir(dp);
}

/* Directories swept by this process, and when. */
struct swept {
	char *dir;
	time_t at;
	struct swept *next;
};

static pthread_mutex_t swept_mu = PTHREAD_MUTEX_INITIALIZER;
static struct swept *swept_list;
static pid_t swept_pid;

/* Sweep mbox's directory if this process has not done so lately. */
static void
maybe_sweep(const char *mbox, int force)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", mbox);
	char *s = strrchr(dir, '/');
	if (s == NULL)
		return;
	s[s == dir ? 1 : 0] = '\0';
	time_t now = time(NULL);
	int due = 1;

	pthread_mutex_lock(&swept_mu);
	if (swept_pid != getpid()) {
		/* a new process (fork): whatever its parent did, sweep again;
		 * the parent's list is left as it is (other threads' memory) */
		swept_list = NULL;
		swept_pid = getpid();
	}
	struct swept *w;
	for (w = swept_list; w; w = w->next)
		if (strcmp(w->dir, dir) == 0)
			break;
	if (w && !force && w->at + SWEEP_EVERY > now && w->at <= now)
		due = 0;
	else if (w)
		w->at = now;
	else if ((w = malloc(sizeof(*w))) != NULL && (w->dir = strdup(dir)) != NULL) {
		w->at = now;
		w->next = swept_list;
		swept_list = w;
	} else
		free(w);
	pthread_mutex_unlock(&swept_mu);
	if (due)
		sweep_temps(dir);
}

enum { MADE = 0, EXISTS = 1, FAILED = -1 };

/*
 * Make the lock file with its content in one step: the content goes into
 * a file that has no name yet (O_TMPFILE) or a temporary one, which is
 * then linked to the lock's name (link fails if that exists).  So the
 * lock never exists without the owner's pid, and a kill leaves no
 * temporary file (O_TMPFILE), or one that maybe_sweep removes.
 */
static int
make_lock(struct dotlock *l, const char *content, size_t n)
{
	int fd = -1, rc, e;
	char dir[PATH_MAX];

	if (!named_temp_only) {
		snprintf(dir, sizeof(dir), "%s", l->path);
		char *s = strrchr(dir, '/');
		s[s == dir ? 1 : 0] = '\0';
		fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	}
	if (fd >= 0) {
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		if (fd_write_all(fd, content, n) < 0) {
			e = errno;
			close(fd);
			errno = e;
			return FAILED;
		}
		rc = linkat(AT_FDCWD, proc, AT_FDCWD, l->path, AT_SYMLINK_FOLLOW);
		e = errno;
		if (rc == 0) {
			l->fd = fd;
			return MADE;
		}
		close(fd);
		if (e == EEXIST)
			return EXISTS;
		if (e != ENOENT && e != EPERM && e != EOPNOTSUPP) {
			errno = e;
			return FAILED;
		}
		/* no /proc, or a file system that cannot: the named way */
	}

	/* a leftover of ours from a previous incarnation with this pid (the
	 * path mutex: no thread of this process is at work on it) */
	unlink(l->tmp);
	fd = open(l->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return FAILED;
	if (fd_write_all(fd, content, n) < 0) {
		e = errno;
		unlink(l->tmp);
		close(fd);
		errno = e;
		return FAILED;
	}
	rc = link(l->tmp, l->path);
	e = errno;
	if (rc < 0 && e != EEXIST) {
		/* NFS: the reply to a link that was made may have been lost */
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_nlink == 2)
			rc = 0;
	}
	unlink(l->tmp);
	if (rc == 0) {
		l->fd = fd;
		return MADE;
	}
	close(fd);
	errno = e;
	return e == EEXIST ? EXISTS : FAILED;
}

int
dotlock_take(struct dotlock *l, const char *mbox, const struct timespec *deadline)
{
	char content[256];
	int swept_after_break = 0;

	if ((size_t)snprintf(l->path, sizeof(l->path), "%s.lock", mbox) >= sizeof(l->path))
		return DOTLOCK_TOO_LONG;
	snprintf(l->tmp, sizeof(l->tmp), "%s%s%ld", mbox, TEMP_TAG, (long)getpid());
	dotlock_boot_init();
	maybe_sweep(mbox, 0);
	for (;;) {
		/* "<pid> <boot>", and the record of a dead writer whose lock we
		 * just broke, so that its repair survives our own death */
		int n = snprintf(content, sizeof(content), "%ld %s\n", (long)getpid(), boot_id);
		l->head = (size_t)n;
		if (l->stale_record)
			n += snprintf(content + n, sizeof(content) - (size_t)n, "%lld %lld %s\n",
			              (long long)l->rec_size, (long long)l->rec_len,
			              l->rec_boot[0] ? l->rec_boot : "-");
		int made = make_lock(l, content, (size_t)n);
		if (made == MADE)
			return DOTLOCK_TAKEN;
		if (made == FAILED)
			return DOTLOCK_FAILED;  /* errno from make_lock */
		/* someone holds it.  A record we took from a lock we broke is
		 * good only if we got the lock right after: whoever got it in
		 * between may have written the mailbox since. */
		l->stale_record = 0;
		int fd = open(l->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
		struct stat st, st2;
		struct dotlock rec = { .stale_record = 0 };
		if (fd >= 0 && fstat(fd, &st) == 0 && dotlock_stale(&rec, fd, &st) &&
		    lstat(l->path, &st2) == 0 && st.st_ino == st2.st_ino &&
		    st.st_dev == st2.st_dev) {
			/* the same file we judged: break it; its record is ours
			 * to act on only if we were the one who broke it */
			if (unlink(l->path) == 0) {
				log_warn("mailbox=%s stale lock file removed", mbox);
				l->stale_record = rec.stale_record;
				l->same_boot = rec.same_boot;
				l->rec_size = rec.rec_size;
				l->rec_len = rec.rec_len;
				memcpy(l->rec_boot, rec.rec_boot, sizeof(l->rec_boot));
				/* killed between link and unlink: its temp name too */
				if (st.st_nlink > 1 && !swept_after_break) {
					swept_after_break = 1;
					maybe_sweep(mbox, 1);
				}
			}
			close(fd);
			continue;
		}
		if (fd >= 0)
			close(fd);
		else if (errno == ENOENT)
			continue;       /* released while we looked */
		if (dotlock_wait(deadline) < 0)
			return DOTLOCK_BUSY;
	}
}

/* Our record, after "<pid> <boot>\n" (in place of a dead writer's). */
int
dotlock_record(struct dotlock *l, off_t size, off_t len)
{
	char rec[160];
	int rn = snprintf(rec, sizeof(rec), "%lld %lld %s\n", (long long)size,
	                  (long long)len, boot_id);
	if ((l->stale_record && ftruncate(l->fd, (off_t)l->head) < 0) ||
	    pwrite(l->fd, rec, (size_t)rn, (off_t)l->head) != rn)
		return -1;
	return 0;
}

/* Back to the first line "<pid> <boot>\n": the lock is still known for
 * ours, and broken at once if we die now. */
int
dotlock_erase_record(struct dotlock *l)
{
	return ftruncate(l->fd, (off_t)l->head);
}

/* Remove the lock, if it is still ours. */
void
dotlock_release(struct dotlock *l)
{
	if (l->fd >= 0) {
		struct stat a, b;
		if (fstat(l->fd, &a) == 0 && lstat(l->path, &b) == 0 &&
		    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			unlink(l->path);
		close(l->fd);
		l->fd = -1;
	}
}

/* Give up the lock but leave its file (and record) for the next writer. */
void
dotlock_abandon(struct dotlock *l)
{
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
}
