/*
 * spool: deliverd's durable queue, one file per message.  The format is
 * documented at the top of spool.c.  A message is acknowledged (LMTP 250)
 * only after spool_commit() returned: file and directory fsynced.
 *
 * Layout under the spool directory:
 *   tmp/      files being written (removed at start-up: never acknowledged)
 *   queue/    committed messages awaiting delivery
 *   hold/     messages put on hold by the administrator, or quarantined
 *             by a filter on arrival
 *   corrupt/  unreadable or foreign files moved aside (logged)
 *   defer/    one small text file per deferred message: attempts and last
 *             error, for the queue listing (advisory, not fsynced)
 */
#ifndef SPFGATE_SPOOL_H
#define SPFGATE_SPOOL_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#define SPOOL_ID_MAX 32
#define SPOOL_REASON_MAX 512    /* a quarantine reason, bytes */

/* Recipient states: one byte in the file, updated in place. */
enum rcpt_state {
	RCPT_PENDING = '-',     /* not yet delivered */
	RCPT_DONE    = 'D',     /* delivered (or handed to the next hop) */
	RCPT_BOUNCED = 'B',     /* failed; the DSN has been queued */
};

struct spool_rcpt {
	char *addr;             /* what to deliver to: "user" (no '@') for a
	                           local mailbox, "local@domain" for SMTP */
	char *orig;             /* the recipient as given at RCPT */
	enum rcpt_state state;
	off_t state_off;        /* file offset of the state byte */
};

struct spool_msg {
	char id[SPOOL_ID_MAX];
	time_t arrival;
	char *sender;           /* "" for the null sender */
	size_t nrcpt;
	struct spool_rcpt *rcpt;
	int fd;                 /* open read-write while loaded */
	off_t body_off;         /* the message: headers + body, LF line ends */
	off_t body_len;
	int held;               /* lives in hold/ */
	char *quarantine;       /* why it arrived held (a filter's quarantine),
	                           NULL if it did not */
};

struct spool;               /* an opened spool directory */
struct spool_writer;        /* a message being received */

/* Create the directories if needed, remove stale tmp/ files. */
struct spool *spool_open(const char *dir, char *err, size_t errlen);
void spool_close(struct spool *s);
const char *spool_dir(const struct spool *s);

/* Start a message: a tmp/ file with the envelope; then the message text. */
struct spool_writer *spool_writer_new(struct spool *s, const char *sender,
                                      const struct spool_rcpt *rcpts, size_t n,
                                      char *err, size_t errlen);
/* The same, for a message a filter quarantined: it is committed into
 * hold/ (never visible in queue/) with reason recorded; reason: one line
 * of at most SPOOL_REASON_MAX bytes, no control characters (else NULL,
 * errno EINVAL). */
struct spool_writer *spool_writer_new_held(struct spool *s, const char *sender,
                                           const struct spool_rcpt *rcpts, size_t n,
                                           const char *reason, char *err, size_t errlen);
const char *spool_writer_id(const struct spool_writer *w);
/* Append message text (LF line ends, already dot-unstuffed). -1 on error
 * (errno: ENOSPC, EDQUOT, EIO...). */
int spool_writer_write(struct spool_writer *w, const void *buf, size_t len);
/* Finish: fsync file, rename into queue/, fsync queue/.  0, or -1 with
 * the tmp file removed.  Frees w either way. */
int spool_commit(struct spool_writer *w, char *err, size_t errlen);
void spool_abort(struct spool_writer *w);

/* Load a message (queue/ or hold/).  0, -1 missing, -2 corrupt (the file
 * has been moved to corrupt/ and logged).  On -1, errno is ENOENT when
 * the message does not exist; any other errno (EMFILE, EIO, ENOMEM) means
 * it could not be read now and is still there. */
int spool_load(struct spool *s, const char *id, struct spool_msg *m);
void spool_msg_free(struct spool_msg *m);
/* Set a recipient's state durably (pwrite + fdatasync). */
int spool_set_state(struct spool_msg *m, size_t i, enum rcpt_state st);
/* Remove a message whose recipients are all final (and its defer file). */
int spool_remove(struct spool *s, const char *id);

/* Calls fn for every id in queue/ (and hold/ when held != 0). */
int spool_scan(struct spool *s, int held,
               void (*fn)(const char *id, void *arg), void *arg);
int spool_hold(struct spool *s, const char *id);
int spool_release(struct spool *s, const char *id);

/* Advisory retry information shown by the queue listing. */
int spool_note_defer(struct spool *s, const char *id, int attempts,
                     const char *last_error);

/* --- additions by the queue core (engineer A) --- */

/* Is this a well-formed queue id (upper-case letters and digits, shorter
 * than SPOOL_ID_MAX)?  Anything else is never turned into a path. */
int spool_valid_id(const char *id);
/* Read defer/<id> back (for the queue listing, and for the scheduler at
 * start-up).  0, or -1 (no defer file: *attempts 0, last_error ""). */
int spool_read_defer(struct spool *s, const char *id, int *attempts,
                     char *last_error, size_t len);
/* spool_set_state() without the fdatasync: safe against a killed process
 * at once, against a power loss only once the caller has made it durable
 * (fdatasync(m->fd); or, for the last recipient, the removal that follows:
 * a power loss before it is durable repeats the delivery).  Saves one
 * sync per message when the last recipient is done and the file is about
 * to be removed anyway. */
int spool_set_state_nosync(struct spool_msg *m, size_t i, enum rcpt_state st);

/* --- group commit (spool_commit() is both steps for one writer) --- */

/* Step 1: write out w's file and fsync it.  Calls for different writers
 * may run at the same time on different threads.  0, or -1 with err and
 * w freed (its tmp file removed). */
int spool_commit_sync(struct spool_writer *w, char *err, size_t errlen);
/* Step 2, for n writers that passed step 1: rename each into queue/ (a
 * quarantined one into hold/), then ONE fsync of queue/ for all of them
 * (and one of hold/ if any went there); none is durable (nor may be
 * acknowledged) before this returns.  errs[i] is 0 (committed) or the
 * errno of writer i's failure (its file removed).  Frees every writer;
 * the number committed. */
size_t spool_commit_batch(struct spool_writer *const *w, size_t n, int *errs);
/* spool_remove() (since group commit: the unlink from queue/ is not
 * fsynced; a power loss may bring a delivered message back, a duplicate,
 * never a loss; spool.c) for a message known to have no defer/ note
 * (never deferred since it was queued or released): no defer/ unlink. */
int spool_remove_undeferred(struct spool *s, const char *id);

#endif
