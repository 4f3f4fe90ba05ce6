/*
 * spool: deliverd's durable queue, one text file per message.
 *
 * File format (version 1).  A header of LF-terminated lines, then the
 * message text exactly as received (LF line ends, dot-unstuffed):
 *
 *   SPFGATE-SPOOL 1
 *   id 692B9A3E0C1F2001A
 *   arrival 1764462142
 *   sender alice@example.org            ("sender " alone: null sender)
 *   size 00000000000000001234           (message text bytes, 20 digits)
 *   quarantine Spam score 12.5          (optional: held at arrival, why)
 *   rcpt - bob<TAB>bob@example.test
 *   rcpt D carol@example.org<TAB>carol@example.org
 *   end
 *   <message text: exactly "size" bytes, up to the end of the file>
 *
 * One "rcpt" line per recipient: the state byte at column 5 ('-' pending,
 * 'D' delivered, 'B' bounced: the DSN is queued), then the address to
 * deliver to ("user" for a local mailbox, "local@domain" for SMTP), a TAB,
 * and the recipient as given at RCPT.  Addresses never contain control
 * characters (TAB, LF, CR, NUL...): the writer refuses them, the loader
 * treats them as corruption.  The state byte is the only thing ever
 * rewritten in place (pwrite of one byte + fdatasync): a crash leaves it
 * either old or new, never torn.
 *
 * The "size" field is written as 20 '?' and patched at commit; the loader
 * checks it against the file size, so a truncated file is recognised.
 *
 * "quarantine": a filter (a milter's SMFIR_QUARANTINE, passed on by
 * relayd as the LMTP MAIL parameter XQUARANTINE) asked for the message
 * to be held.  Such a message is committed straight into hold/ instead
 * of queue/, so it is never in queue/ for a moment and survives any
 * crash held; the line keeps the reason (printable text, at most
 * SPOOL_REASON_MAX bytes, no control characters) for the queue listing.
 * Where the file lives says whether it is held: a release moves it to
 * queue/ like any held message and the line stays as a record of why it
 * was quarantined.  Absent for ordinary messages.
 *
 * Atomicity: a message is written to tmp/<id>, fsynced, renamed to
 * queue/<id> (hold/<id> when quarantined), and that directory is
 * fsynced; only then is it acknowledged.  A
 * file in queue/ is therefore always complete.  Group commit
 * (spool_commit_sync + spool_commit_batch): the files of commits waiting
 * at the same time are fsynced (concurrently), all renamed, then queue/
 * is fsynced once for the whole batch before any of them is acknowledged.
 *
 * Removal: a delivered message's queue/<id> (and defer/<id>) is unlinked
 * WITHOUT an fsync of queue/.  A process crash (kill -9) cannot undo a
 * completed unlink (it is in the kernel at once); only a power failure or
 * kernel crash before the next journal commit can bring the file back,
 * and then its recipients are delivered again: a possible duplicate,
 * never a loss (Postfix does not sync its removals either).  The next
 * fsync of queue/ (any commit's) or the file system's periodic writeback
 * makes earlier removals durable as well.  The same holds for the last
 * recipient's state byte, written without fdatasync when the removal
 * follows at once.  Removals from hold/ (an administrator's delete, rare)
 * are still fsynced.  tmp/ is emptied at
 * start-up by the process that takes the spool lock (.lock, flock), i.e.
 * deliverd, never by a queue tool running beside it.
 *
 * Queue ids: 8 hex digits of seconds, 5 of microseconds, 4 of a
 * per-process counter, all upper case (17 characters): unique, sorted by
 * arrival, safe as file names.  Ids are checked against queue/ and hold/
 * before use so that a clock stepping back cannot reuse one.
 *
 * defer/<id> (advisory, for the queue listing; written via tmp + rename):
 *   attempts N
 *   error <last error, one line>
 * removed with the message (not looked for when the scheduler knows none
 * was written), and on release (the scheduler starts afresh); notes
 * without a message are swept at start-up.
 */
#include "spool.h"
#include "fdio.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define MAGIC "SPFGATE-SPOOL 1\n"
#define SIZE_DIGITS 20
#define HEADER_MAX (16u << 20)   /* a header larger than this is corrupt */
#define WBUF 65536

enum { D_TMP, D_QUEUE, D_HOLD, D_CORRUPT, D_DEFER, D_N };
static const char *const dnames[D_N] = { "tmp", "queue", "hold", "corrupt", "defer" };

struct spool {
	char *dir;
	int dfd[D_N];
	int lockfd;
	pthread_mutex_t mu;      /* id generation */
	unsigned counter;
};

struct spool_writer {
	struct spool *s;
	char id[SPOOL_ID_MAX];
	int fd;
	off_t size_off;          /* offset of the 20-digit size field */
	off_t body_off;
	off_t written;           /* file offset of the next buffered byte */
	int held;                /* quarantined: committed into hold/ */
	size_t blen;
	int err;                 /* first errno seen, sticky */
	char buf[WBUF];
};

static void
seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;
	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

static int
fsync_fd(int fd)
{
	return fsync(fd);
}

int
spool_valid_id(const char *id)
{
	size_t n = 0;
	if (!id)
		return 0;
	for (; id[n]; n++)
		if (!((id[n] >= '0' && id[n] <= '9') || (id[n] >= 'A' && id[n] <= 'Z')))
			return 0;
	return n > 0 && n < SPOOL_ID_MAX;
}

/* Characters allowed in an address field: printable, TAB/LF/CR never. */
static int
valid_addr(const char *a)
{
	for (const unsigned char *p = (const unsigned char *)a; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

static int
exists_at(int dfd, const char *name)
{
	struct stat st;
	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

struct spool *
spool_open(const char *dir, char *err, size_t errlen)
{
	struct spool *s = calloc(1, sizeof(*s));
	if (!s) {
		seterr(err, errlen, "out of memory");
		return NULL;
	}
	for (int i = 0; i < D_N; i++)
		s->dfd[i] = -1;
	s->lockfd = -1;
	pthread_mutex_init(&s->mu, NULL);
	if (!(s->dir = strdup(dir)))
		goto oom;
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		seterr(err, errlen, "%s: %s", dir, strerror(errno));
		goto fail;
	}
	int top = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (top == -1) {
		seterr(err, errlen, "%s: %s", dir, strerror(errno));
		goto fail;
	}
	for (int i = 0; i < D_N; i++) {
		if (mkdirat(top, dnames[i], 0700) == -1 && errno != EEXIST) {
			seterr(err, errlen, "%s/%s: %s", dir, dnames[i], strerror(errno));
			close(top);
			goto fail;
		}
		s->dfd[i] = openat(top, dnames[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->dfd[i] == -1) {
			seterr(err, errlen, "%s/%s: %s", dir, dnames[i], strerror(errno));
			close(top);
			goto fail;
		}
	}
	fsync_fd(top);   /* the subdirectories themselves must survive */
	s->lockfd = openat(top, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	close(top);
	if (s->lockfd != -1 && flock(s->lockfd, LOCK_EX | LOCK_NB) == 0) {
		/* we own the spool: what is in tmp/ was never acknowledged */
		DIR *d = fdopendir(dup(s->dfd[D_TMP]));
		struct dirent *e;
		if (d) {
			while ((e = readdir(d)) != NULL) {
				if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
					continue;
				if (unlinkat(s->dfd[D_TMP], e->d_name, 0) == 0)
					log_info("spool: removed unfinished tmp/%s", e->d_name);
			}
			closedir(d);
		}
		/* defer/ notes whose message is gone (a kill between the two
		 * unlinks of a removal) */
		if ((d = fdopendir(dup(s->dfd[D_DEFER]))) != NULL) {
			while ((e = readdir(d)) != NULL) {
				if (e->d_name[0] == '.')
					continue;
				if (!exists_at(s->dfd[D_QUEUE], e->d_name) &&
				    !exists_at(s->dfd[D_HOLD], e->d_name))
					unlinkat(s->dfd[D_DEFER], e->d_name, 0);
			}
			closedir(d);
		}
	} else if (s->lockfd != -1) {
		close(s->lockfd);   /* someone else (deliverd) owns it */
		s->lockfd = -1;
	}
	return s;
oom:
	seterr(err, errlen, "out of memory");
fail:
	spool_close(s);
	return NULL;
}

void
spool_close(struct spool *s)
{
	if (!s)
		return;
	for (int i = 0; i < D_N; i++)
		if (s->dfd[i] != -1)
			close(s->dfd[i]);
	if (s->lockfd != -1)
		close(s->lockfd);
	pthread_mutex_destroy(&s->mu);
	free(s->dir);
	free(s);
}

const char *
spool_dir(const struct spool *s)
{
	return s->dir;
}

/* A fresh id with its tmp/ file created exclusively; fd or -1. */
static int
new_tmp(struct spool *s, char *id)
{
	for (int tries = 0; tries < 1000; tries++) {
		struct timeval tv;
		gettimeofday(&tv, NULL);
		pthread_mutex_lock(&s->mu);
		unsigned c = s->counter++ & 0xffff;
		pthread_mutex_unlock(&s->mu);
		snprintf(id, SPOOL_ID_MAX, "%08llX%05lX%04X",
		         (unsigned long long)tv.tv_sec & 0xffffffffULL,
		         (unsigned long)tv.tv_usec & 0xfffff, c);
		if (exists_at(s->dfd[D_QUEUE], id) || exists_at(s->dfd[D_HOLD], id))
			continue;
		int fd = openat(s->dfd[D_TMP], id, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd != -1 || errno != EEXIST)
			return fd;
	}
	errno = EEXIST;
	return -1;
}

static int
wflush(struct spool_writer *w)
{
	if (w->err)
		return -1;
	if (w->blen && fd_pwrite_all(w->fd, w->buf, w->blen, w->written) == -1) {
		w->err = errno ? errno : EIO;
		return -1;
	}
	w->written += (off_t)w->blen;
	w->blen = 0;
	return 0;
}

static int
wput(struct spool_writer *w, const void *buf, size_t len)
{
	const char *p = buf;
	if (w->err) {
		errno = w->err;
		return -1;
	}
	while (len > 0) {
		size_t room = WBUF - w->blen;
		size_t k = len < room ? len : room;
		memcpy(w->buf + w->blen, p, k);
		w->blen += k;
		p += k;
		len -= k;
		if (w->blen == WBUF && wflush(w) == -1) {
			errno = w->err;
			return -1;
		}
	}
	return 0;
}

static int
wprintf(struct spool_writer *w, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		w->err = ENAMETOOLONG;
		return -1;
	}
	return wput(w, line, (size_t)n);
}

/* A quarantine reason as the spool stores it: one printable line. */
static int
valid_reason(const char *r)
{
	size_t n = strlen(r);
	return n > 0 && n <= SPOOL_REASON_MAX && valid_addr(r);
}

struct spool_writer *
spool_writer_new(struct spool *s, const char *sender,
                 const struct spool_rcpt *rcpts, size_t n,
                 char *err, size_t errlen)
{
	return spool_writer_new_held(s, sender, rcpts, n, NULL, err, errlen);
}

struct spool_writer *
spool_writer_new_held(struct spool *s, const char *sender,
                      const struct spool_rcpt *rcpts, size_t n, const char *reason,
                      char *err, size_t errlen)
{
	if (!sender)
		sender = "";
	if (reason && !valid_reason(reason)) {
		seterr(err, errlen, "bad quarantine reason");
		errno = EINVAL;
		return NULL;
	}
	if (!valid_addr(sender) || strlen(sender) > 512) {
		seterr(err, errlen, "bad sender address");
		errno = EINVAL;
		return NULL;
	}
	if (n == 0) {
		seterr(err, errlen, "no recipients");
		errno = EINVAL;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		const char *o = rcpts[i].orig ? rcpts[i].orig : rcpts[i].addr;
		if (!rcpts[i].addr || !*rcpts[i].addr || !valid_addr(rcpts[i].addr) ||
		    !valid_addr(o) || strlen(rcpts[i].addr) > 512 || strlen(o) > 512) {
			seterr(err, errlen, "bad recipient address");
			errno = EINVAL;
			return NULL;
		}
	}
	struct spool_writer *w = calloc(1, sizeof(*w));
	if (!w) {
		seterr(err, errlen, "out of memory");
		return NULL;
	}
	w->s = s;
	w->fd = new_tmp(s, w->id);
	if (w->fd == -1) {
		int e = errno;
		seterr(err, errlen, "spool tmp file: %s", strerror(e));
		free(w);
		errno = e;
		return NULL;
	}
	wprintf(w, MAGIC "id %s\narrival %lld\nsender %s\nsize ", w->id,
	        (long long)time(NULL), sender);
	w->size_off = w->written + (off_t)w->blen;
	wprintf(w, "%.*s\n", SIZE_DIGITS, "????????????????????");
	if (reason) {
		w->held = 1;
		wprintf(w, "quarantine %s\n", reason);
	}
	for (size_t i = 0; i < n; i++) {
		const char *o = rcpts[i].orig ? rcpts[i].orig : rcpts[i].addr;
		int st = rcpts[i].state == RCPT_DONE || rcpts[i].state == RCPT_BOUNCED
		             ? rcpts[i].state : RCPT_PENDING;
		wprintf(w, "rcpt %c %s\t%s\n", st, rcpts[i].addr, o);
	}
	wprintf(w, "end\n");
	w->body_off = w->written + (off_t)w->blen;
	if (w->err) {
		int e = w->err;
		seterr(err, errlen, "spool write: %s", strerror(e));
		spool_abort(w);
		errno = e;
		return NULL;
	}
	return w;
}

const char *
spool_writer_id(const struct spool_writer *w)
{
	return w->id;
}

int
spool_writer_write(struct spool_writer *w, const void *buf, size_t len)
{
	return wput(w, buf, len);
}

/* Remove w's file from directory where (D_TMP, or where it was renamed
 * to), free w. */
static void
writer_drop(struct spool_writer *w, int where)
{
	unlinkat(w->s->dfd[where], w->id, 0);
	close(w->fd);
	free(w);
}

int
spool_commit_sync(struct spool_writer *w, char *err, size_t errlen)
{
	char num[SIZE_DIGITS + 1];
	if (wflush(w) == -1)
		goto fail;
	snprintf(num, sizeof(num), "%0*lld", SIZE_DIGITS,
	         (long long)(w->written - w->body_off));
	if (fd_pwrite_all(w->fd, num, SIZE_DIGITS, w->size_off) == -1 ||
	    fsync(w->fd) == -1) {
		w->err = errno;
		goto fail;
	}
	return 0;
fail:
	{
		int e = w->err ? w->err : EIO;
		seterr(err, errlen, "spool commit: %s", strerror(e));
		writer_drop(w, D_TMP);
		errno = e;
	}
	return -1;
}

size_t
spool_commit_batch(struct spool_writer *const *w, size_t n, int *errs)
{
	size_t renamed = 0, into[D_N] = { 0 };
	struct spool *s = n ? w[0]->s : NULL;
	for (size_t i = 0; i < n; i++) {
		int to = w[i]->held ? D_HOLD : D_QUEUE;
		errs[i] = 0;
		if (renameat(s->dfd[D_TMP], w[i]->id, s->dfd[to], w[i]->id) == -1) {
			errs[i] = errno ? errno : EIO;
			writer_drop(w[i], D_TMP);
		} else {
			renamed++;
			into[to]++;
		}
	}
	/* one directory fsync makes every rename above durable (two when
	 * quarantined messages went to hold/ in the same batch) */
	for (int d = D_QUEUE; d <= D_HOLD; d++) {
		if (!into[d] || fsync_fd(s->dfd[d]) == 0)
			continue;
		/* visible but maybe not durable: take them back, never ack them */
		int e = errno ? errno : EIO;
		for (size_t i = 0; i < n; i++)
			if (!errs[i] && (w[i]->held ? D_HOLD : D_QUEUE) == d) {
				errs[i] = e;
				writer_drop(w[i], d);
			}
		renamed -= into[d];
	}
	for (size_t i = 0; i < n; i++)
		if (!errs[i]) {
			close(w[i]->fd);
			free(w[i]);
		}
	return renamed;
}

int
spool_commit(struct spool_writer *w, char *err, size_t errlen)
{
	int e;
	if (spool_commit_sync(w, err, errlen) == -1)
		return -1;
	if (spool_commit_batch(&w, 1, &e) == 1)
		return 0;
	seterr(err, errlen, "spool commit: %s", strerror(e));
	errno = e;
	return -1;
}

void
spool_abort(struct spool_writer *w)
{
	if (!w)
		return;
	unlinkat(w->s->dfd[D_TMP], w->id, 0);
	close(w->fd);
	free(w);
}

/* Move a bad file out of dfd into corrupt/, never overwriting. */
static void
move_corrupt(struct spool *s, int dfd, const char *name, const char *why)
{
	char dst[256], q[300], q2[300];
	snprintf(dst, sizeof(dst), "%s", name);
	for (int i = 1; exists_at(s->dfd[D_CORRUPT], dst) && i < 1000; i++)
		snprintf(dst, sizeof(dst), "%.200s.%d", name, i);
	if (renameat(dfd, name, s->dfd[D_CORRUPT], dst) == 0) {
		fsync_fd(dfd);
		fsync_fd(s->dfd[D_CORRUPT]);
		log_warn("id=%s status=corrupt reason=\"%s\" moved_to=corrupt/%s",
		         log_quote(q, sizeof(q), name), why, log_quote(q2, sizeof(q2), dst));
	} else {
		log_err("id=%s status=corrupt reason=\"%s\" move_error=\"%s\"",
		        log_quote(q, sizeof(q), name), why, strerror(errno));
	}
}

static char *
take_line(char **p, char *end)
{
	char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
	if (!nl)
		return NULL;
	*nl = '\0';
	*p = nl + 1;
	return s;
}

/* Parse the header in buf (hlen bytes, ending with "end\n"); NULL = ok. */
static const char *
parse_header(char *buf, size_t hlen, off_t fsize, const char *id, struct spool_msg *m)
{
	char *p = buf, *end = buf + hlen, *l, *e;
	if (hlen < sizeof(MAGIC) - 1 || memcmp(buf, MAGIC, sizeof(MAGIC) - 1))
		return "bad magic";
	p += sizeof(MAGIC) - 1;
	if (!(l = take_line(&p, end)) || strncmp(l, "id ", 3) || strcmp(l + 3, id))
		return "id line does not match file name";
	if (!(l = take_line(&p, end)) || strncmp(l, "arrival ", 8))
		return "bad arrival line";
	errno = 0;
	long long t = strtoll(l + 8, &e, 10);
	if (errno || e == l + 8 || *e || t < 0)
		return "bad arrival time";
	m->arrival = (time_t)t;
	if (!(l = take_line(&p, end)) || strncmp(l, "sender ", 7) || !valid_addr(l + 7))
		return "bad sender line";
	if (!(m->sender = strdup(l + 7)))
		return "out of memory";
	if (!(l = take_line(&p, end)) || strncmp(l, "size ", 5) ||
	    strlen(l + 5) != SIZE_DIGITS)
		return "bad size line";
	long long sz = 0;
	for (int i = 0; i < SIZE_DIGITS; i++) {
		if (l[5 + i] < '0' || l[5 + i] > '9')
			return "size never committed";
		if (sz > (long long)1e17)
			return "size out of range";
		sz = sz * 10 + (l[5 + i] - '0');
	}
	size_t cap = 0;
	for (;;) {
		off_t lineoff = (off_t)(p - buf);
		if (!(l = take_line(&p, end)))
			return "header ends early";
		if (!strcmp(l, "end"))
			break;
		if (!strncmp(l, "quarantine ", 11)) {
			if (m->quarantine || m->nrcpt || !valid_reason(l + 11))
				return "bad quarantine line";
			if (!(m->quarantine = strdup(l + 11)))
				return "out of memory";
			continue;
		}
		if (strncmp(l, "rcpt ", 5) || !l[5] || l[6] != ' ')
			return "bad recipient line";
		char st = l[5];
		if (st != RCPT_PENDING && st != RCPT_DONE && st != RCPT_BOUNCED)
			return "bad recipient state";
		char *tab = strchr(l + 7, '\t');
		if (!tab || tab == l + 7 || !valid_addr(tab + 1))
			return "bad recipient line";
		*tab = '\0';
		if (!valid_addr(l + 7))
			return "bad recipient address";
		if (m->nrcpt == cap) {
			size_t nc = cap ? cap * 2 : 8;
			struct spool_rcpt *r = realloc(m->rcpt, nc * sizeof(*r));
			if (!r)
				return "out of memory";
			m->rcpt = r;
			cap = nc;
		}
		struct spool_rcpt *r = &m->rcpt[m->nrcpt];
		memset(r, 0, sizeof(*r));
		r->addr = strdup(l + 7);
		r->orig = strdup(tab + 1);
		m->nrcpt++;
		if (!r->addr || !r->orig)
			return "out of memory";
		r->state = (enum rcpt_state)st;
		r->state_off = lineoff + 5;
	}
	if (m->nrcpt == 0)
		return "no recipients";
	m->body_off = (off_t)(p - buf);
	m->body_len = (off_t)sz;
	if (m->body_off + m->body_len != fsize)
		return m->body_off + m->body_len > fsize ? "truncated" : "trailing data";
	return NULL;
}

int
spool_load(struct spool *s, const char *id, struct spool_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (!spool_valid_id(id)) {
		errno = ENOENT;   /* no such message can exist */
		return -1;
	}
	int where = D_QUEUE;
	int fd = openat(s->dfd[D_QUEUE], id, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1 && errno == ENOENT) {
		where = D_HOLD;
		fd = openat(s->dfd[D_HOLD], id, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	}
	if (fd == -1) {
		int e = errno;
		if (e == ENOENT)
			return -1;
		if (e == ELOOP) {
			move_corrupt(s, s->dfd[where], id, "symbolic link");
			return -2;
		}
		log_err("id=%s status=unreadable error=\"%s\"", id, strerror(e));
		errno = e;   /* not ENOENT: the caller tries again later */
		return -1;
	}
	snprintf(m->id, sizeof(m->id), "%s", id);
	m->fd = fd;
	m->held = where == D_HOLD;
	struct stat st;
	const char *why = NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0, hlen = 0;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		why = "not a regular file";
		goto bad;
	}
	/* read until the "\nend\n" that closes the header */
	for (;;) {
		if (len + 4096 + 1 > cap) {
			size_t nc = cap ? cap * 2 : 8192;
			char *b = realloc(buf, nc);
			if (!b) {
				why = "out of memory";
				goto bad;
			}
			buf = b;
			cap = nc;
		}
		ssize_t r = pread(fd, buf + len, cap - len - 1, (off_t)len);
		if (r < 0) {
			int e = errno;
			if (e == EINTR)
				continue;
			log_err("id=%s status=unreadable error=\"%s\"", id, strerror(e));
			free(buf);
			spool_msg_free(m);
			errno = e;
			return -1;
		}
		size_t from = len > 4 ? len - 4 : 0;
		len += (size_t)r;
		buf[len] = '\0';
		char *e = memmem(buf + from, len - from, "\nend\n", 5);
		if (e) {
			hlen = (size_t)(e - buf) + 5;
			break;
		}
		if (r == 0 || len > HEADER_MAX) {
			why = len < sizeof(MAGIC) - 1 || memcmp(buf, MAGIC, sizeof(MAGIC) - 1)
			          ? "not a spool file" : "header ends early";
			goto bad;
		}
	}
	if ((why = parse_header(buf, hlen, st.st_size, id, m)) != NULL)
		goto bad;
	free(buf);
	return 0;
bad:
	free(buf);
	if (!strcmp(why, "out of memory")) {
		log_err("id=%s status=unreadable error=\"out of memory\"", id);
		spool_msg_free(m);
		errno = ENOMEM;
		return -1;
	}
	spool_msg_free(m);
	move_corrupt(s, s->dfd[where], id, why);
	return -2;
}

void
spool_msg_free(struct spool_msg *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nrcpt; i++) {
		free(m->rcpt[i].addr);
		free(m->rcpt[i].orig);
	}
	free(m->rcpt);
	free(m->sender);
	free(m->quarantine);
	m->quarantine = NULL;
	if (m->fd != -1)
		close(m->fd);
	m->rcpt = NULL;
	m->sender = NULL;
	m->nrcpt = 0;
	m->fd = -1;
}

static int
set_state(struct spool_msg *m, size_t i, enum rcpt_state st, int sync)
{
	char c = (char)st;
	if (i >= m->nrcpt || m->fd == -1) {
		errno = EINVAL;
		return -1;
	}
	if (fd_pwrite_all(m->fd, &c, 1, m->rcpt[i].state_off) == -1 ||
	    (sync && fdatasync(m->fd) == -1))
		return -1;
	m->rcpt[i].state = st;
	return 0;
}

int
spool_set_state(struct spool_msg *m, size_t i, enum rcpt_state st)
{
	return set_state(m, i, st, 1);
}

int
spool_set_state_nosync(struct spool_msg *m, size_t i, enum rcpt_state st)
{
	return set_state(m, i, st, 0);
}

static int
remove_msg(struct spool *s, const char *id, int defer)
{
	int where = D_QUEUE;
	if (!spool_valid_id(id)) {
		errno = EINVAL;
		return -1;
	}
	if (unlinkat(s->dfd[D_QUEUE], id, 0) == -1) {
		if (errno != ENOENT || unlinkat(s->dfd[D_HOLD], id, 0) == -1)
			return -1;
		where = D_HOLD;
	}
	if (defer)
		unlinkat(s->dfd[D_DEFER], id, 0);
	/* where == D_HOLD: an administrator's delete, rare; made durable */
	return where == D_HOLD ? fsync_fd(s->dfd[where]) : 0;
}

int
spool_remove(struct spool *s, const char *id)
{
	return remove_msg(s, id, 1);
}

int
spool_remove_undeferred(struct spool *s, const char *id)
{
	return remove_msg(s, id, 0);
}

static int
cmp_ids(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
spool_scan(struct spool *s, int held, void (*fn)(const char *id, void *arg), void *arg)
{
	for (int w = D_QUEUE; w <= (held ? D_HOLD : D_QUEUE); w++) {
		DIR *d = fdopendir(dup(s->dfd[w]));
		struct dirent *e;
		if (!d)
			return -1;
		rewinddir(d);
		/* collect first: fn may rename files out of this directory */
		char **ids = NULL;
		size_t n = 0, cap = 0;
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.')
				continue;
			if (!spool_valid_id(e->d_name)) {
				move_corrupt(s, s->dfd[w], e->d_name, "foreign file name");
				continue;
			}
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 64;
				char **x = realloc(ids, nc * sizeof(*x));
				if (!x)
					break;
				ids = x;
				cap = nc;
			}
			if (!(ids[n] = strdup(e->d_name)))
				break;
			n++;
		}
		closedir(d);
		if (n)
			qsort(ids, n, sizeof(*ids), cmp_ids);   /* oldest first */
		for (size_t i = 0; i < n; i++) {
			fn(ids[i], arg);
			free(ids[i]);
		}
		free(ids);
	}
	return 0;
}

static int
move_between(struct spool *s, const char *id, int from, int to)
{
	if (!spool_valid_id(id)) {
		errno = EINVAL;
		return -1;
	}
	if (renameat(s->dfd[from], id, s->dfd[to], id) == -1)
		return -1;
	fsync_fd(s->dfd[to]);
	return fsync_fd(s->dfd[from]);
}

int
spool_hold(struct spool *s, const char *id)
{
	return move_between(s, id, D_QUEUE, D_HOLD);
}

int
spool_release(struct spool *s, const char *id)
{
	if (move_between(s, id, D_HOLD, D_QUEUE) == -1)
		return -1;
	/* the scheduler starts the released message afresh (attempts 0) */
	unlinkat(s->dfd[D_DEFER], id, 0);
	return 0;
}

int
spool_note_defer(struct spool *s, const char *id, int attempts, const char *last_error)
{
	char tmp[SPOOL_ID_MAX + 8], text[1200];
	if (!spool_valid_id(id)) {
		errno = EINVAL;
		return -1;
	}
	/* one line: control characters become spaces */
	size_t k = 0;
	for (const char *p = last_error ? last_error : ""; *p && k < 1000; p++)
		text[k++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? ' ' : *p;
	text[k] = '\0';
	snprintf(tmp, sizeof(tmp), "d.%s", id);
	int fd = openat(s->dfd[D_TMP], tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		return -1;
	char out[1300];
	int n = snprintf(out, sizeof(out), "attempts %d\nerror %s\n", attempts, text);
	if (fd_pwrite_all(fd, out, (size_t)n, 0) == -1) {
		close(fd);
		unlinkat(s->dfd[D_TMP], tmp, 0);
		return -1;
	}
	close(fd);
	if (renameat(s->dfd[D_TMP], tmp, s->dfd[D_DEFER], id) == -1) {
		unlinkat(s->dfd[D_TMP], tmp, 0);
		return -1;
	}
	return 0;
}

int
spool_read_defer(struct spool *s, const char *id, int *attempts,
                 char *last_error, size_t len)
{
	char buf[1400];
	*attempts = 0;
	if (len)
		last_error[0] = '\0';
	if (!spool_valid_id(id)) {
		errno = EINVAL;
		return -1;
	}
	int fd = openat(s->dfd[D_DEFER], id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1)
		return -1;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	char *p = buf, *l;
	while ((l = take_line(&p, buf + n)) != NULL) {
		if (!strncmp(l, "attempts ", 9))
			*attempts = atoi(l + 9);
		else if (!strncmp(l, "error ", 6) && len)
			snprintf(last_error, len, "%s", l + 6);
	}
	return 0;
}
