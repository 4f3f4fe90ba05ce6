/*
 * dotlock.h: the "<mailbox>.lock" file that mbox delivery (mbox.c) holds
 * while it appends, and the record of the append kept in it for crash
 * repair (dotlock.c).  Internal to mbox delivery; not part of deliverd's
 * interface.
 */
#ifndef SPFGATE_DOTLOCK_H
#define SPFGATE_DOTLOCK_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

struct dotlock {
	char path[PATH_MAX];
	char tmp[PATH_MAX + 32];  /* "<path>.lock.spfgate.<pid>" (fallback) */
	int fd;
	size_t head;             /* length of the first line "<pid> <boot>\n" */
	int stale_record;        /* a dead writer's record was found */
	int same_boot;           /* ... written since the last boot */
	off_t rec_size, rec_len;
	char rec_boot[40];       /* ... its boot id ("" if none) */
};

/* dotlock_take's outcomes. */
enum { DOTLOCK_TAKEN = 0, DOTLOCK_TOO_LONG, DOTLOCK_BUSY, DOTLOCK_FAILED };

/* Read the kernel's boot id, once: before any lock is written or judged. */
void dotlock_boot_init(void);

/*
 * Take "<mbox>.lock" (l starts as { .fd = -1 }), breaking stale locks,
 * until the deadline: DOTLOCK_TAKEN; DOTLOCK_TOO_LONG if the path does
 * not fit; DOTLOCK_BUSY, someone else's lock (l->path) is still there at
 * the deadline; DOTLOCK_FAILED, the lock file could not be made (errno).
 * A dead writer's record from a lock broken on the way is in l (and in
 * the lock file) when l->stale_record is set.
 */
int dotlock_take(struct dotlock *l, const char *mbox, const struct timespec *deadline);

/*
 * Write our record "<size> <length> <boot id>\n" after the first line,
 * in place of a dead writer's: 0, or -1 with errno set.
 */
int dotlock_record(struct dotlock *l, off_t size, off_t len);

/* Erase the record, keeping the first line: 0, or -1 with errno set. */
int dotlock_erase_record(struct dotlock *l);

/* Remove the lock, if it is still ours. */
void dotlock_release(struct dotlock *l);

/* Give up the lock but leave its file (and record) for the next writer. */
void dotlock_abandon(struct dotlock *l);

/*
 * One turn of a lock wait (the dotlock's and mbox.c's fcntl lock's): -1 if
 * the deadline has passed, else 0 after a poll interval's sleep.
 */
int dotlock_wait(const struct timespec *deadline);

#endif
