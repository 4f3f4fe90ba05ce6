/*
 * sched_int.h: what the scheduler (sched.c) and one delivery attempt
 * (sched_attempt.c) share.  Not part of deliverd's interface.
 */
#ifndef SPFGATE_SCHED_INT_H
#define SPFGATE_SCHED_INT_H

#include "deliverd.h"

#include <limits.h>
#include <pthread.h>
#include <sys/types.h>

#define NBUCKET 4096

struct entry;

/* What the workers read from the configuration, swapped on reload. */
struct snap {
	struct config *cfg;
	struct localdb *db;
	struct dns_resolver *dns;
	struct remote_ctx *rc;
	int refs;
};

/* A destination (or mailbox) in use: its holders, and the messages
 * parked until one of them releases it (no worker ever waits on a busy
 * slot: the message waits, the worker takes the next ready one). */
struct slot {
	char key[PATH_MAX + 8];
	int busy;
	long limit;                /* as of the last slot_try() */
	struct entry *bhead, *btail; /* parked messages (E_BLOCKED) */
	int waking;                /* woken from the list, attempt not yet over */
	struct slot *next;
};

struct sched {
	struct deliverd *d;
	pthread_mutex_t mu;
	pthread_cond_t work_cv, timer_cv;
	struct entry *bucket[NBUCKET];
	struct entry *rhead, *rtail;
	struct entry *whead;
	struct snap *cur;
	struct slot *slots;        /* keys held or waited for */
	int stop;                  /* read without the lock: __atomic */
	int nworker;
	pthread_t *workers;
	pthread_t timer;
	int timer_started;
	gid_t mail_gid;
	int have_mail_gid;
};

/* Pin the current configuration set for one attempt; unpin after. */
struct snap *snap_pin(struct sched *s);
void snap_unpin(struct sched *s, struct snap *p);
/* At most limit holders of key at once: 1 when taken, 0 when busy (never
 * waits; the attempt reports the key and its message is parked until a
 * release).  A release puts the messages parked on key back to ready. */
int slot_try(struct sched *s, const char *key, long limit);
void slot_release(struct sched *s, const char *key);
/* The message was forgotten (DELETE) while this attempt ran. */
int sched_forgotten(struct sched *s, const char *id);
/* sched_free() has begun: finish the current step, start no new one. */
int sched_stopping(struct sched *s);

/*
 * One delivery attempt on message id (sched_attempt.c).  1 when the
 * message is gone (all recipients final and removed, or missing, held,
 * corrupt, deleted); 0 when something is deferred, with the reason in
 * last and the end of the message's lifetime in *expires; 2 when
 * something could not start because the slot named in blocked (blen
 * bytes) was busy: not an attempt, the message waits for that slot.
 */
int sched_attempt(struct sched *s, const char *id, int attempts,
                  char *last, size_t lastlen, time_t *expires,
                  char *blocked, size_t blen);

#endif
