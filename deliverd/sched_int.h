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

/* A destination (or mailbox) in use: its holders, and its own waiters
 * (a release wakes a waiter of that key only). */
struct slot {
	char key[PATH_MAX + 8];
	int busy;
	int waiters;
	pthread_cond_t cv;
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
/* At most limit holders of key at once (waits); release wakes waiters. */
void slot_acquire(struct sched *s, const char *key, long limit);
void slot_release(struct sched *s, const char *key);
/* sched_free() has begun: finish the current step, start no new one. */
int sched_stopping(struct sched *s);

/*
 * One delivery attempt on message id (sched_attempt.c).  1 when the
 * message is gone (all recipients final and removed, or missing, held,
 * corrupt); 0 when something is deferred, with the reason in last and
 * the end of the message's lifetime in *expires.
 */
int sched_attempt(struct sched *s, const char *id, int attempts,
                  char *last, size_t lastlen, time_t *expires);

#endif
