/*
 * mbox: append one message to an mbox file, all or nothing (mbox.h).
 *
 * Format, as Postfix's local(8) and virtual(8) write it (mail_copy.c):
 *   From <sender, or MAILER-DAEMON>  <asctime of the delivery time>
 *   Return-Path: <sender>
 *   Delivered-To: <recipient, as given>
 *   message, every line that begins with "From " written as ">From "
 *   (mboxo, as Postfix and Exim quote; ">From " itself is left alone)
 *   a newline if the message lacks one, then one blank line.
 * (Postfix adds X-Original-To: when it knows an original recipient; the
 * interface here has none, so it is not written.)
 *
 * Locking, in this order: a mutex per path inside this process (fcntl
 * locks are per process, so two worker threads would not exclude each
 * other), the dotlock "<path>.lock" (dotlock.c), then an fcntl write lock
 * on the mailbox.  Both waits are polls bounded by the lock timeout; at
 * its end the delivery is deferred with 4.2.0 "mailbox locked".
 *
 * The dotlock (dotlock.c's opening comment: how it is made, what it holds,
 * when it is stale and broken) carries, once the mailbox is locked, the
 * record "<size> <length> <boot id>" of the append: the mailbox's size
 * before it, the number of bytes it will write, and the kernel's boot id.
 * The record is erased after the fsync, before mbox_deliver returns.
 *
 * Crash repair uses a dead writer's record, when the mailbox is now
 * longer than <size>:
 *  - same boot id: the writer was killed before mbox_deliver returned, so
 *    nobody was told the message was delivered and the spool will deliver
 *    it again; everything after <size> goes, complete or not.  That turns
 *    the at-least-once window into the few instructions between erasing
 *    the record and returning (a kill during the fsync, the longest step,
 *    no longer causes a duplicate).
 *  - another boot (power loss: the erase or the unlink may not have
 *    reached the disk while the spool's record of the delivery did): only
 *    a torn append is removed, one that is not exactly <length> bytes
 *    ending in a blank line; a complete one is kept (at worst delivered
 *    twice, never lost).
 * A stale lock without a record (another program's, or one whose record
 * was erased) never causes a truncation, nor does a record when the
 * mailbox is longer than <size> + <length> (someone appended since).  The
 * record of a lock we broke is copied into our own lock file until the
 * repair is done, so that a kill in between loses nothing; it is dropped
 * if another writer got the lock between our breaking it and taking it.
 *
 * A kill at any point therefore leaves: no lock, or a lock that is broken
 * at once; no temporary file (or one the next sweep removes); and a
 * mailbox that the next delivery cuts back to whole messages, keeping
 * exactly the appends whose record was erased (those the caller may have
 * been told of; the spool redelivers the others, and a kill after the
 * erase but before the spool notes the delivery repeats that one).  An empty mailbox left
 * by a kill between its creation and its fchown is finished, not
 * refused.  Then, whoever wrote last, a mailbox that does not end in a
 * blank line gets newlines first so that the new "From " line starts a
 * message.  Known limit: a program that
 * appends under the fcntl lock alone, ignoring a dead writer's dotlock,
 * would lose its append to this repair.
 *
 * Identity: with switch_identity (deliverd started as root; "self" is
 * root or, after the drop, deliverd's user in group mail with CAP_SETUID,
 * CAP_SETGID and CAP_CHOWN), an existing mailbox is opened with the
 * recipient's fs uid/gid (setfsuid/setfsgid, like capabilities, act on
 * the calling thread only on Linux, which makes this safe in worker
 * threads); a new one is created by self with O_EXCL, then fchown'ed and
 * fchmod'ed.  The dotlock is made by self (Debian's /var/mail is writable
 * by group mail only).  The append, fsync and any truncation run as the
 * recipient, holding no capability.  Where self may not write the
 * mailbox's folder (%h under a private home), the whole delivery, lock
 * file included, runs as the recipient.
 * Symbolic links, non-regular files, files with several links and
 * (switch_identity) files owned by someone else are refused, 5.2.0.
 *
 * Errors: err starts with the enhanced status code, e.g. "4.2.0 ...".
 */
#include "mbox.h"
#include "fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dotlock.h"
#include "log.h"
#include "privs.h"

static int lock_timeout_ms = 20000;

void
mbox_set_lock_timeout(int ms)
{
	lock_timeout_ms = ms > 0 ? ms : 1;
}

/* ---- the per-path mutex inside this process ----
 * One entry per path that is held or waited for, each with its own
 * condition variable: a release wakes one waiter of that path only (no
 * herd of every waiting worker on every delivery to any mailbox).  The
 * entry goes when it is neither held nor waited for. */

struct held {
	char *path;
	int busy;                /* held by a thread */
	int waiters;             /* threads waiting on cv */
	pthread_cond_t cv;
	struct held *next;
};

static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static struct held *held_list;

static struct held *
held_find(const char *path)
{
	for (struct held *h = held_list; h; h = h->next)
		if (strcmp(h->path, path) == 0)
			return h;
	return NULL;
}

static void
held_unlink(struct held *h)
{
	for (struct held **pp = &held_list; *pp; pp = &(*pp)->next)
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	pthread_cond_destroy(&h->cv);
	free(h->path);
	free(h);
}

/* 0 held, -1 timed out or out of memory. */
static int
held_acquire(const char *path, const struct timespec *deadline)
{
	pthread_mutex_lock(&held_mu);
	struct held *h = held_find(path);
	if (h == NULL) {
		if ((h = calloc(1, sizeof(*h))) == NULL || (h->path = strdup(path)) == NULL) {
			pthread_mutex_unlock(&held_mu);
			free(h);
			return -1;
		}
		pthread_cond_init(&h->cv, NULL);
		h->next = held_list;
		held_list = h;
	}
	h->waiters++;
	while (h->busy) {
		if (pthread_cond_timedwait(&h->cv, &held_mu, deadline) == ETIMEDOUT &&
		    h->busy) {
			h->waiters--;   /* busy: the holder's release frees h */
			pthread_mutex_unlock(&held_mu);
			return -1;
		}
	}
	h->waiters--;
	h->busy = 1;
	pthread_mutex_unlock(&held_mu);
	return 0;
}

static void
held_release(const char *path)
{
	pthread_mutex_lock(&held_mu);
	struct held *h = held_find(path);
	if (h != NULL) {
		h->busy = 0;
		if (h->waiters)
			pthread_cond_signal(&h->cv);
		else
			held_unlink(h);
	}
	pthread_mutex_unlock(&held_mu);
}

/* ---- helpers ---- */

static void fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* A write error's status: full disks and quotas are temporary. */
static enum mbox_status
io_error(int e, const char *what, const char *path, char *err, size_t errlen)
{
	if (e == EDQUOT || e == EFBIG)
		fail(err, errlen, "4.2.2 mailbox full: %s %s: %s", what, path, strerror(e));
	else if (e == ENOSPC)
		fail(err, errlen, "4.3.1 insufficient system storage: %s %s: %s", what,
		     path, strerror(e));
	else
		fail(err, errlen, "4.3.0 %s %s: %s", what, path, strerror(e));
	return MBOX_TEMP;
}

/* Copy s into the header, control characters replaced: one line only. */
static size_t
put_clean(char *o, const char *s)
{
	size_t n = 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		o[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	return n;
}

/*
 * The bytes of one mbox entry.  Reads the message from the spool file and
 * quotes it in one pass; *out is malloc'ed.
 */
static enum mbox_status
render(const struct mbox_msg *m, char **out, size_t *outlen, char *err, size_t errlen)
{
	const char *sender = m->sender ? m->sender : "";
	const char *rcpt = m->delivered_to ? m->delivered_to : "";
	size_t len = (size_t)m->len;
	char *msg = NULL, *o = NULL;

	if (m->len < 0 || m->off < 0) {
		fail(err, errlen, "4.3.0 bad message extent");
		return MBOX_TEMP;
	}
	if ((msg = malloc(len + 1)) == NULL)
		goto nomem;
	for (size_t got = 0; got < len;) {
		ssize_t r = pread(m->fd, msg + got, len - got, m->off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fail(err, errlen, "4.3.0 cannot read the queue file: %s",
			     r < 0 ? strerror(errno) : "short file");
			free(msg);
			return MBOX_TEMP;
		}
		got += (size_t)r;
	}
	size_t quotes = 0;
	for (size_t i = 0; i + 5 <= len; i++)
		if ((i == 0 || msg[i - 1] == '\n') && memcmp(msg + i, "From ", 5) == 0)
			quotes++;

	size_t cap = 2 * strlen(sender) + strlen(rcpt) + 128 + len + quotes + 2;
	if ((o = malloc(cap)) == NULL)
		goto nomem;

	char date[32];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm);

	size_t n = 0;
	memcpy(o + n, "From ", 5), n += 5;
	if (*sender)
		n += put_clean(o + n, sender);
	else
		memcpy(o + n, "MAILER-DAEMON", 13), n += 13;
	n += (size_t)snprintf(o + n, cap - n, "  %s\nReturn-Path: <", date);
	n += put_clean(o + n, sender);
	memcpy(o + n, ">\nDelivered-To: ", 16), n += 16;
	n += put_clean(o + n, rcpt);
	o[n++] = '\n';
	for (size_t i = 0; i < len; i++) {
		if ((i == 0 || msg[i - 1] == '\n') && i + 5 <= len &&
		    memcmp(msg + i, "From ", 5) == 0)
			o[n++] = '>';
		o[n++] = msg[i];
	}
	if (len == 0 || msg[len - 1] != '\n')
		o[n++] = '\n';
	o[n++] = '\n';
	free(msg);
	*out = o;
	*outlen = n;
	return MBOX_OK;
nomem:
	free(msg);
	fail(err, errlen, "4.3.0 out of memory");
	return MBOX_TEMP;
}

/* ---- the dotlock (dotlock.c) ---- */

/* Take it; its failures in mbox_deliver's terms (status, err). */
static enum mbox_status
take_dotlock(struct dotlock *l, const char *mbox, const struct timespec *deadline,
             char *err, size_t errlen)
{
	switch (dotlock_take(l, mbox, deadline)) {
	case DOTLOCK_TAKEN:
		return MBOX_OK;
	case DOTLOCK_TOO_LONG:
		fail(err, errlen, "5.2.0 mailbox path too long");
		return MBOX_PERM;
	case DOTLOCK_BUSY:
		fail(err, errlen, "4.2.0 mailbox locked: %s exists", l->path);
		return MBOX_TEMP;
	default: {
		int e = errno;
		if (e == ENOSPC || e == EDQUOT)
			return io_error(e, "cannot write lock file", l->path, err, errlen);
		fail(err, errlen, "4.2.0 cannot create lock file %s: %s", l->path,
		     strerror(e));
		return MBOX_TEMP;
	}
	}
}

/* ---- identity ----
 * "self" is the daemon's user: root, or spfgate-deliverd holding
 * CAP_SETUID, CAP_SETGID and CAP_CHOWN.  As the recipient, the thread
 * holds no capability at all: what it writes, the recipient could. */

static int
become(uid_t uid, gid_t gid)
{
	setfsgid(gid);
	setfsuid(uid);
	if ((uid_t)setfsuid(uid) != uid || (gid_t)setfsgid(gid) != gid)
		return -1;
	return privs_suspend();
}

static void
become_self(void)
{
	privs_resume();
	setfsuid(geteuid());
	setfsgid(getegid());
}

/*
 * May self make files beside the mailbox?  Not in a folder only its user
 * may write (a %h template under a 0700 home): there the whole delivery,
 * lock file included, runs as the recipient.
 */
static int
self_may_write(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t n = slash && slash != path ? (size_t)(slash - path) : 1;

	if (n >= sizeof(dir))
		return 0;
	memcpy(dir, path, n);
	dir[n] = '\0';
	return faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == 0;
}

/* ---- the mailbox ---- */

static int
fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *s = strrchr(dir, '/');
	if (s == dir)
		s[1] = '\0';
	else if (s)
		*s = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

/*
 * A mailbox whose creation was cut short by a kill between the O_EXCL
 * create (as root) and the fchown: empty, one link, still owned by us.
 * Finished as a creation rather than refused as someone else's file.
 */
static int
orphan(const struct mbox_dest *d, const struct stat *st)
{
	return d->switch_identity && S_ISREG(st->st_mode) && st->st_nlink == 1 &&
	       st->st_size == 0 && st->st_uid == geteuid() && st->st_uid != d->uid;
}

static enum mbox_status
open_mailbox(const struct mbox_dest *d, int *fdp, char *err, size_t errlen)
{
	int fd, created = 0;
	const int flags = O_RDWR | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;

	for (int tries = 0;; tries++) {
		if (d->switch_identity && become(d->uid, d->gid) < 0) {
			become_self();
			fail(err, errlen, "4.3.0 cannot switch to uid %ld", (long)d->uid);
			return MBOX_TEMP;
		}
		fd = open(d->path, flags);
		int e = errno;
		if (d->switch_identity)
			become_self();
		if (fd >= 0)
			break;
		if (d->switch_identity && (e == EACCES || e == EPERM) &&
		    (fd = open(d->path, flags)) >= 0) {
			struct stat ost;
			if (fstat(fd, &ost) == 0 && orphan(d, &ost)) {
				created = 1;
				break;
			}
			close(fd);
		}
		if (e == ENOENT && tries < 3) {
			fd = open(d->path, flags | O_CREAT | O_EXCL, d->mode & 07777);
			e = errno;
			if (fd >= 0) {
				created = 1;
				break;
			}
			if (e == EEXIST)
				continue;
		}
		struct stat lst;
		if (e == ELOOP || (lstat(d->path, &lst) == 0 && S_ISLNK(lst.st_mode))) {
			fail(err, errlen, "5.2.0 mailbox %s is a symbolic link", d->path);
			return MBOX_PERM;
		}
		if (lstat(d->path, &lst) == 0 && !S_ISREG(lst.st_mode)) {
			/* a FIFO (ENXIO) or a directory (EISDIR) */
			fail(err, errlen, "5.2.0 mailbox %s is not a regular file", d->path);
			return MBOX_PERM;
		}
		fail(err, errlen, "4.2.0 cannot open mailbox %s: %s", d->path, strerror(e));
		return MBOX_TEMP;
	}

	struct stat st, lst;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return io_error(e, "cannot stat mailbox", d->path, err, errlen);
	}
	if (!created && orphan(d, &st))
		created = 1;
	const char *bad = NULL;
	if (!S_ISREG(st.st_mode))
		bad = "is not a regular file";
	else if (st.st_nlink > 1)
		bad = "has more than one hard link";
	else if (lstat(d->path, &lst) < 0 || lst.st_ino != st.st_ino || lst.st_dev != st.st_dev)
		bad = "changed while being opened";
	else if (!created && d->switch_identity && st.st_uid != d->uid)
		bad = "is not owned by its user";
	if (bad) {
		close(fd);
		fail(err, errlen, "5.2.0 mailbox %s %s", d->path, bad);
		return MBOX_PERM;
	}
	/* O_NONBLOCK was only against a FIFO planted in the mailbox's place */
	fcntl(fd, F_SETFL, O_APPEND);
	if (created) {
		/* the mode while it is still ours: after the chown, changing it
		 * would take CAP_FOWNER, which deliverd does not keep */
		if (fchmod(fd, (mode_t)(d->mode & 07777)) < 0 ||
		    (d->switch_identity && fchown(fd, d->uid, d->gid) < 0) ||
		    fsync_parent(d->path) < 0) {
			int e = errno;
			/* an empty file we made: nothing of anyone's is lost */
			unlink(d->path);
			close(fd);
			fail(err, errlen, "4.3.0 cannot set up new mailbox %s: %s", d->path,
			     strerror(e));
			return MBOX_TEMP;
		}
		log_info("mailbox=%s created", d->path);
	}
	*fdp = fd;
	return MBOX_OK;
}

static enum mbox_status
fcntl_lock(int fd, const char *path, const struct timespec *deadline,
           char *err, size_t errlen)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	for (;;) {
		if (fcntl(fd, F_SETLK, &fl) == 0)
			return MBOX_OK;
		if (errno != EAGAIN && errno != EACCES && errno != EINTR) {
			int e = errno;
			fail(err, errlen, "4.2.0 cannot lock mailbox %s: %s", path, strerror(e));
			return MBOX_TEMP;
		}
		if (dotlock_wait(deadline) < 0) {
			fail(err, errlen, "4.2.0 mailbox locked: %s", path);
			return MBOX_TEMP;
		}
	}
}

/* The last two bytes of the file ("" when empty). */
static int
tail2(int fd, off_t size, char t[2])
{
	t[0] = t[1] = '\0';
	if (size == 0)
		return 0;
	off_t at = size >= 2 ? size - 2 : 0;
	size_t want = size >= 2 ? 2 : 1;
	if (pread(fd, t + 2 - want, want, at) != (ssize_t)want)
		return -1;
	return 0;
}

/* Repair a dead writer's torn append; newlines before our own append. */
static enum mbox_status
prepare(int fd, const char *path, const struct dotlock *l, off_t *sizep,
        const char **pad, char *err, size_t errlen)
{
	struct stat st;
	char t[2];

	if (fstat(fd, &st) < 0)
		return io_error(errno, "cannot stat mailbox", path, err, errlen);
	off_t size = st.st_size;
	if (tail2(fd, size, t) < 0)
		return io_error(errno, "cannot read mailbox", path, err, errlen);
	if (l->stale_record && size > l->rec_size + l->rec_len) {
		/* more than the dead writer could have written: someone else
		 * appended since, so the record no longer describes the tail */
		log_warn("mailbox=%s not repaired: it is %lld bytes, more than a dead "
		         "writer's append of %lld bytes at %lld", path, (long long)size,
		         (long long)l->rec_len, (long long)l->rec_size);
	} else if (l->stale_record && size > l->rec_size &&
	    (l->same_boot ||
	     !(size == l->rec_size + l->rec_len && t[0] == '\n' && t[1] == '\n'))) {
		if (ftruncate(fd, l->rec_size) < 0 || fsync(fd) < 0)
			return io_error(errno, "cannot repair mailbox", path, err, errlen);
		log_warn("mailbox=%s repaired: truncated from %lld to %lld bytes, "
		         "the append of a writer that died before it finished", path,
		         (long long)size, (long long)l->rec_size);
		size = l->rec_size;
		if (tail2(fd, size, t) < 0)
			return io_error(errno, "cannot read mailbox", path, err, errlen);
	}
	*pad = "";
	if (size > 0 && t[1] != '\n')
		*pad = "\n\n";
	else if (size > 0 && t[0] != '\n')
		*pad = "\n";
	*sizep = size;
	return MBOX_OK;
}

enum mbox_status
mbox_deliver(const struct mbox_dest *d, const struct mbox_msg *m,
             char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	struct dotlock l = { .fd = -1 };
	int fd = -1, identity = 0;
	enum mbox_status st;
	struct timespec deadline;
	off_t size = 0;
	const char *pad = "";

	err[0] = '\0';
	dotlock_boot_init();     /* before any lock file is judged */
	if (d->path == NULL || d->path[0] != '/') {
		fail(err, errlen, "5.3.5 mailbox path is not absolute");
		return MBOX_PERM;
	}
	if ((st = render(m, &buf, &len, err, errlen)) != MBOX_OK)
		return st;
	struct mbox_dest own = *d;
	int whole = 0;
	if (d->switch_identity && !self_may_write(d->path)) {
		if (become(d->uid, d->gid) < 0) {
			become_self();
			free(buf);
			fail(err, errlen, "4.3.0 cannot switch to uid %ld", (long)d->uid);
			return MBOX_TEMP;
		}
		own.switch_identity = 0;   /* already the recipient throughout */
		whole = 1;
	}
	d = &own;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += lock_timeout_ms / 1000;
	deadline.tv_nsec += (lock_timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	if (held_acquire(d->path, &deadline) < 0) {
		free(buf);
		fail(err, errlen, "4.2.0 mailbox locked: %s (busy in this process)", d->path);
		return MBOX_TEMP;
	}
	if ((st = take_dotlock(&l, d->path, &deadline, err, errlen)) != MBOX_OK)
		goto out;
	if ((st = open_mailbox(d, &fd, err, errlen)) != MBOX_OK)
		goto out;
	if (d->switch_identity) {
		if (become(d->uid, d->gid) < 0) {
			fail(err, errlen, "4.3.0 cannot switch to uid %ld", (long)d->uid);
			st = MBOX_TEMP;
			goto out;
		}
		identity = 1;
	}
	if ((st = fcntl_lock(fd, d->path, &deadline, err, errlen)) != MBOX_OK)
		goto out;

	if ((st = prepare(fd, d->path, &l, &size, &pad, err, errlen)) != MBOX_OK) {
		/* a dead writer's record not acted on stays in our lock file */
		if (l.stale_record)
			dotlock_abandon(&l);
		goto out;
	}
	size_t padlen = strlen(pad);

	/* our record, after "<pid> <boot>\n" (in place of a dead writer's,
	 * whose repair is done: the mailbox is no longer than its <size>) */
	if (dotlock_record(&l, size, (off_t)(len + padlen)) < 0) {
		st = io_error(errno, "cannot write lock file", l.path, err, errlen);
		goto out;
	}

	if ((padlen && fd_write_all(fd, pad, padlen) < 0) || fd_write_all(fd, buf, len) < 0 ||
	    fsync(fd) < 0) {
		int e = errno;
		st = io_error(e, "cannot write mailbox", d->path, err, errlen);
		goto rollback;
	}
	/* erase the record, keeping "<pid> <boot>\n" (so that the lock is
	 * known for ours and broken at once if we die now): from here on a
	 * crash leaves the message be */
	if (dotlock_erase_record(&l) < 0) {
		st = io_error(errno, "cannot clear lock file", l.path, err, errlen);
		goto rollback;
	}
	st = MBOX_OK;
	goto out;
rollback:
	/* all or nothing: back to the size we found */
	if (ftruncate(fd, size) < 0 || fsync(fd) < 0) {
		log_err("mailbox=%s cannot truncate back to %lld after a failed "
		        "write: %s; its lock file stays for the next delivery to "
		        "repair it", d->path, (long long)size, strerror(errno));
		dotlock_abandon(&l);     /* keep the record for the next writer */
	}
out:
	if (fd >= 0)
		close(fd);       /* drops the fcntl lock */
	if (identity)
		become_self();
	dotlock_release(&l);
	if (whole)
		become_self();
	held_release(d->path);
	free(buf);
	return st;
}

int
mbox_path(const char *tmpl, const char *user, const char *home,
          char *buf, size_t len)
{
	size_t n = 0;

	if (user == NULL || user[0] == '\0' || user[0] == '.' || strchr(user, '/'))
		return -1;
	for (const char *p = tmpl; *p; p++) {
		const char *s;
		char one[2] = { *p, '\0' };
		if (*p != '%')
			s = one;
		else if (p[1] == 'u')
			s = user, p++;
		else if (p[1] == 'h') {
			if (home == NULL || home[0] == '\0')
				return -1;
			s = home, p++;
		} else if (p[1] == '%')
			s = "%", p++;
		else
			return -1;
		size_t sl = strlen(s);
		if (n + sl >= len)
			return -1;
		memcpy(buf + n, s, sl);
		n += sl;
	}
	if (len == 0)
		return -1;
	buf[n] = '\0';
	return 0;
}
