/*
 * sched: deliverd's scheduler.  It knows every queued message by id and
 * runs deliveries on a pool of worker threads ([deliverd] concurrency),
 * so a slow mailbox lock, DNS lookup or SMTP peer never stalls the LMTP
 * event loop.  A message is in exactly one state: ready (waiting for a
 * worker), running (owned by one worker: never two at once), waiting
 * (deferred until its retry time) or parked (its next step needs a busy
 * destination or mailbox slot: no worker ever waits for a slot; the
 * release of the slot makes the message ready again).  A timer thread
 * sleeping on a condition variable moves waiting messages back to ready.
 *
 * One attempt on a message (sched_attempt.c): local recipients (no '@')
 * go to their mbox, remote ones are grouped by domain and handed to
 * remote_deliver(), at most destination_concurrency at once per
 * destination.  Each final result is written to the spool before the next
 * step (at-least-once: a crash repeats at most the delivery in flight).
 * Permanent failures, and temporary ones past the queue lifetime, become
 * one DSN per attempt.
 * Retry delays start at retry_min and double up to retry_max; the
 * schedule lives in memory (after a restart everything is tried at once)
 * and defer/<id> mirrors it for the queue listing.
 */
#include "sched_int.h"
#include "log.h"
#include "remote.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_WORKERS 256
#define EXPIRE_EVERY 10            /* seconds between remote_expire() */

/* E_BLOCKED: parked on a busy slot (struct slot's list, through qnext)
 * until a holder releases it; then ready again. */
enum est { E_READY, E_RUNNING, E_WAITING, E_BLOCKED };

struct entry {
	char id[SPOOL_ID_MAX];
	enum est st;
	int again;                 /* submitted/flushed while running */
	int forget;                /* forgotten while ready or running */
	int attempts;
	time_t next;               /* waiting: when to try again */
	struct entry *hnext;       /* hash chain */
	struct entry *qnext;       /* ready FIFO, or a slot's parked list */
	struct entry *wprev, *wnext; /* waiting list */
	struct slot *woken_by;     /* taken off this slot's parked list */
};

static unsigned
hash(const char *id)
{
	unsigned h = 2166136261u;
	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h % NBUCKET;
}

static struct entry *
find(struct sched *s, const char *id)
{
	for (struct entry *e = s->bucket[hash(id)]; e; e = e->hnext)
		if (!strcmp(e->id, id))
			return e;
	return NULL;
}

static void
unhash(struct sched *s, struct entry *e)
{
	struct entry **pp = &s->bucket[hash(e->id)];
	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
}

static void
push_ready(struct sched *s, struct entry *e)
{
	e->st = E_READY;
	e->qnext = NULL;
	if (s->rtail)
		s->rtail->qnext = e;
	else
		s->rhead = e;
	s->rtail = e;
	pthread_cond_signal(&s->work_cv);
}

static void
wait_unlink(struct sched *s, struct entry *e)
{
	if (e->wprev)
		e->wprev->wnext = e->wnext;
	else
		s->whead = e->wnext;
	if (e->wnext)
		e->wnext->wprev = e->wprev;
	e->wprev = e->wnext = NULL;
}

static void
submit_locked(struct sched *s, const char *id, int attempts)
{
	struct entry *e = find(s, id);
	if (e) {
		e->forget = 0;
		if (e->st == E_RUNNING)
			e->again = 1;
		else if (e->st == E_WAITING) {
			wait_unlink(s, e);
			push_ready(s, e);
		}
		return;
	}
	if (!(e = calloc(1, sizeof(*e)))) {
		log_err("id=%s status=unscheduled error=\"out of memory\" (tried again at restart)", id);
		return;
	}
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->attempts = attempts;
	unsigned h = hash(id);
	e->hnext = s->bucket[h];
	s->bucket[h] = e;
	push_ready(s, e);
}

void
sched_submit(struct sched *s, const char *id)
{
	if (!spool_valid_id(id))
		return;
	pthread_mutex_lock(&s->mu);
	submit_locked(s, id, 0);
	pthread_mutex_unlock(&s->mu);
}

void
sched_flush(struct sched *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->whead) {
		struct entry *e = s->whead;
		wait_unlink(s, e);
		push_ready(s, e);
	}
	for (unsigned i = 0; i < NBUCKET; i++)
		for (struct entry *e = s->bucket[i]; e; e = e->hnext)
			if (e->st == E_RUNNING)
				e->again = 1;
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->mu);
}

void
sched_forget(struct sched *s, const char *id)
{
	pthread_mutex_lock(&s->mu);
	struct entry *e = find(s, id);
	if (e) {
		if (e->st == E_WAITING) {
			wait_unlink(s, e);
			unhash(s, e);
			free(e);
		} else {
			/* ready (or parked: ready once its slot is released):
			 * dropped when popped; running: after this attempt, and
			 * the attempt itself stops at the next step */
			e->forget = 1;
			e->again = 0;
		}
	}
	pthread_mutex_unlock(&s->mu);
}

/* ---- snapshots of configuration, user database, remote context ----
 * main.c swaps d->cfg, d->localdb and d->dns on SIGHUP (atomic stores;
 * the old ones stay allocated until exit).  An attempt pins the current
 * set with a remote context made for it, so one attempt sees one
 * configuration, and a new smarthost or resolver is used from the next
 * attempt on. */

static struct snap *
snap_make(struct sched *s, struct config *cfg, struct localdb *db, struct dns_resolver *dns)
{
	char err[256];
	struct snap *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	if (!(p->rc = remote_new(cfg, dns, err, sizeof(err)))) {
		log_err("reload: remote delivery: %s; keeping the previous settings", err);
		free(p);
		return NULL;
	}
	p->cfg = cfg;
	p->db = db;
	p->dns = dns;
	p->refs = 1;   /* held by s->cur */
	(void)s;
	return p;
}

static void
snap_release(struct snap *p)
{
	remote_free(p->rc);
	free(p);
}

struct snap *
snap_pin(struct sched *s)
{
	struct deliverd *d = s->d;
	struct config *cfg = __atomic_load_n(&d->cfg, __ATOMIC_ACQUIRE);
	struct localdb *db = __atomic_load_n(&d->localdb, __ATOMIC_ACQUIRE);
	struct dns_resolver *dns = __atomic_load_n(&d->dns, __ATOMIC_ACQUIRE);
	struct snap *old = NULL;
	pthread_mutex_lock(&s->mu);
	if (s->cur->cfg != cfg || s->cur->dns != dns) {
		struct snap *n = snap_make(s, cfg, db, dns);
		if (n) {
			old = s->cur;
			s->cur = n;
			if (--old->refs != 0)
				old = NULL;   /* the last attempt using it frees it */
		}
	} else
		s->cur->db = db;
	struct snap *p = s->cur;
	p->refs++;
	pthread_mutex_unlock(&s->mu);
	if (old)
		snap_release(old);
	return p;
}

void
snap_unpin(struct sched *s, struct snap *p)
{
	pthread_mutex_lock(&s->mu);
	int last = --p->refs == 0 && p != s->cur;
	pthread_mutex_unlock(&s->mu);
	if (last)
		snap_release(p);
}

/* ---- destination concurrency ---- */

static void
slot_free(struct sched *s, struct slot *sl)
{
	for (struct slot **pp = &s->slots; *pp; pp = &(*pp)->next)
		if (*pp == sl) {
			*pp = sl->next;
			break;
		}
	free(sl);
}

static struct slot *
slot_find(struct sched *s, const char *key)
{
	struct slot *sl = s->slots;
	while (sl && strcmp(sl->key, key))
		sl = sl->next;
	return sl;
}

int
slot_try(struct sched *s, const char *key, long limit)
{
	pthread_mutex_lock(&s->mu);
	struct slot *sl = slot_find(s, key);
	if (!sl) {
		if (!(sl = calloc(1, sizeof(*sl)))) {
			pthread_mutex_unlock(&s->mu);
			return 1;   /* no bookkeeping possible: do not limit */
		}
		snprintf(sl->key, sizeof(sl->key), "%s", key);
		sl->next = s->slots;
		s->slots = sl;
	}
	sl->limit = limit;
	int got = limit <= 0 || sl->busy < limit;
	if (got)
		sl->busy++;
	pthread_mutex_unlock(&s->mu);
	return got;
}

/*
 * As many parked messages get another try as the slot has free units
 * (one, for a mailbox), counting those woken before whose attempts are
 * not over.  Waking every parked message on every release made each of
 * them load its spool file again only to park again: work that grew with
 * the square of a mailbox's backlog.  A woken message that does not take
 * the unit after all (deleted, held, delivered meanwhile) wakes the next
 * when its attempt ends (woken_done), so no parked message is forgotten.
 */
static void
slot_wake_locked(struct sched *s, struct slot *sl)
{
	while (sl->bhead && (sl->limit <= 0 || sl->busy + sl->waking < sl->limit)) {
		struct entry *e = sl->bhead;
		sl->bhead = e->qnext;
		if (!sl->bhead)
			sl->btail = NULL;
		e->woken_by = sl;
		sl->waking++;
		push_ready(s, e);
	}
}

static void
slot_maybe_free(struct sched *s, struct slot *sl)
{
	if (sl->busy <= 0 && !sl->bhead && sl->waking <= 0)
		slot_free(s, sl);   /* keep the list short */
}

/* e's attempt is over (or e is dropped): it no longer counts as woken. */
static void
woken_done(struct sched *s, struct entry *e)
{
	struct slot *sl = e->woken_by;
	if (!sl)
		return;
	e->woken_by = NULL;
	sl->waking--;
	slot_wake_locked(s, sl);
	slot_maybe_free(s, sl);
}

void
slot_release(struct sched *s, const char *key)
{
	pthread_mutex_lock(&s->mu);
	struct slot *sl = slot_find(s, key);
	if (sl) {
		sl->busy--;
		slot_wake_locked(s, sl);
		slot_maybe_free(s, sl);
	}
	pthread_mutex_unlock(&s->mu);
}

/* After an attempt that found key busy (lock held): park e on the slot,
 * or make it ready at once when the slot was released meanwhile. */
static void
park_locked(struct sched *s, struct entry *e, const char *key)
{
	struct slot *sl = slot_find(s, key);
	if (!sl || sl->limit <= 0 || sl->busy < sl->limit) {
		push_ready(s, e);
		return;
	}
	e->st = E_BLOCKED;
	e->qnext = NULL;
	if (sl->btail)
		sl->btail->qnext = e;
	else
		sl->bhead = e;
	sl->btail = e;
}

int
sched_forgotten(struct sched *s, const char *id)
{
	pthread_mutex_lock(&s->mu);
	struct entry *e = find(s, id);
	int f = !e || e->forget;
	pthread_mutex_unlock(&s->mu);
	return f;
}

int
sched_stopping(struct sched *s)
{
	return __atomic_load_n(&s->stop, __ATOMIC_RELAXED);
}

/* ---- the workers and the timer ---- */

static long
backoff(const struct config *cfg, int attempts)
{
	long d = cfg->deliverd.retry_min > 0 ? cfg->deliverd.retry_min : 1;
	long max = cfg->deliverd.retry_max > d ? cfg->deliverd.retry_max : d;
	for (int i = 1; i < attempts && d < max; i++)
		d *= 2;
	return d < max ? d : max;
}

static void *
worker_main(void *arg)
{
	struct sched *s = arg;
	char last[512], blocked[PATH_MAX + 8];
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->rhead && !s->stop)
			pthread_cond_wait(&s->work_cv, &s->mu);
		if (s->stop)
			break;
		struct entry *e = s->rhead;
		s->rhead = e->qnext;
		if (!s->rhead)
			s->rtail = NULL;
		if (e->forget) {
			woken_done(s, e);
			unhash(s, e);
			free(e);
			continue;
		}
		e->st = E_RUNNING;
		e->again = 0;
		char id[SPOOL_ID_MAX];
		int attempts = e->attempts;
		snprintf(id, sizeof(id), "%s", e->id);
		pthread_mutex_unlock(&s->mu);

		last[0] = '\0';
		time_t expires = 0;
		long delay = 0;
		blocked[0] = '\0';
		int gone = sched_attempt(s, id, attempts, last, sizeof(last), &expires,
		                         blocked, sizeof(blocked));

		pthread_mutex_lock(&s->mu);
		woken_done(s, e);
		if (gone == 1 || e->forget || s->stop) {
			unhash(s, e);
			free(e);
		} else if (gone == 2) {
			park_locked(s, e, blocked);   /* not an attempt: no backoff */
		} else if (e->again) {
			e->attempts++;
			push_ready(s, e);
		} else {
			e->attempts++;
			time_t now = time(NULL);
			delay = backoff(s->cur->cfg, e->attempts);
			/* never sleep past the lifetime: the bounce is due then */
			if (expires && expires < now + delay)
				delay = expires > now ? (long)(expires - now) : 1;
			e->next = now + delay;
			e->st = E_WAITING;
			e->wprev = NULL;
			e->wnext = s->whead;
			if (s->whead)
				s->whead->wprev = e;
			s->whead = e;
			pthread_cond_signal(&s->timer_cv);
			int n = e->attempts;
			pthread_mutex_unlock(&s->mu);
			char q[600];
			log_info("id=%s status=deferred attempts=%d retry_in=%ld reason=%s",
			         id, n, delay, log_quote(q, sizeof(q), last));
			pthread_mutex_lock(&s->mu);
		}
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* Deferred messages whose time has come go back to ready; a message
 * past its lifetime is due at once (its next attempt bounces it). */
static void *
timer_main(void *arg)
{
	struct sched *s = arg;
	time_t last_expire = time(NULL);
	pthread_mutex_lock(&s->mu);
	while (!s->stop) {
		time_t now = time(NULL), soonest = now + EXPIRE_EVERY;
		for (struct entry *e = s->whead, *nx; e; e = nx) {
			nx = e->wnext;
			if (e->next <= now) {
				wait_unlink(s, e);
				push_ready(s, e);
			} else if (e->next < soonest)
				soonest = e->next;
		}
		if (now - last_expire >= EXPIRE_EVERY) {
			struct snap *p = s->cur;
			p->refs++;
			pthread_mutex_unlock(&s->mu);
			remote_expire(p->rc);
			snap_unpin(s, p);
			pthread_mutex_lock(&s->mu);
			last_expire = now;
			continue;
		}
		struct timespec ts = { .tv_sec = soonest, .tv_nsec = 0 };
		pthread_cond_timedwait(&s->timer_cv, &s->mu, &ts);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

struct scan_ctx {
	struct sched *s;
	size_t n;
};

static void
scan_one(const char *id, void *arg)
{
	struct scan_ctx *c = arg;
	int attempts = 0;
	char last[8];
	/* a note that exists counts as one attempt even when unreadable:
	 * attempts 0 tells the removal that there is no note to unlink */
	if (spool_read_defer(c->s->d->spool, id, &attempts, last, sizeof(last)) == 0 &&
	    attempts < 1)
		attempts = 1;
	pthread_mutex_lock(&c->s->mu);
	submit_locked(c->s, id, attempts);
	pthread_mutex_unlock(&c->s->mu);
	c->n++;
}

struct sched *
sched_new(struct deliverd *d, char *err, size_t errlen)
{
	struct sched *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->d = d;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work_cv, NULL);
	pthread_cond_init(&s->timer_cv, NULL);
	if (!(s->cur = calloc(1, sizeof(*s->cur))))
		goto oom;
	s->cur->cfg = d->cfg;
	s->cur->db = d->localdb;
	s->cur->dns = d->dns;
	s->cur->refs = 1;
	if (!(s->cur->rc = remote_new(d->cfg, d->dns, err, errlen)))
		goto fail;
	/* getgrnam is not thread-safe: look the group up once, here */
	struct group *g = getgrnam("mail");
	if (g) {
		s->mail_gid = g->gr_gid;
		s->have_mail_gid = 1;
	}
	long n = d->cfg->deliverd.concurrency;
	s->nworker = n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (int)n;
	if (!(s->workers = calloc((size_t)s->nworker, sizeof(pthread_t))))
		goto oom;

	struct scan_ctx c = { s, 0 };
	if (spool_scan(d->spool, 0, scan_one, &c) == -1) {
		snprintf(err, errlen, "%s/queue: %s", spool_dir(d->spool), strerror(errno));
		goto fail;
	}
	if (c.n)
		log_info("spool: %zu queued message%s found, delivering now", c.n, c.n == 1 ? "" : "s");
	if (pthread_create(&s->timer, NULL, timer_main, s) != 0) {
		snprintf(err, errlen, "cannot start the timer thread");
		goto fail;
	}
	s->timer_started = 1;
	for (int i = 0; i < s->nworker; i++)
		if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
			snprintf(err, errlen, "cannot start worker threads");
			s->nworker = i;
			sched_free(s);
			return NULL;
		}
	return s;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	s->nworker = 0;
	sched_free(s);
	return NULL;
}

void
sched_free(struct sched *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&s->work_cv);
	pthread_cond_broadcast(&s->timer_cv);
	pthread_mutex_unlock(&s->mu);
	if (s->timer_started)
		pthread_join(s->timer, NULL);
	for (int i = 0; i < s->nworker; i++)
		pthread_join(s->workers[i], NULL);
	for (unsigned i = 0; i < NBUCKET; i++)
		for (struct entry *e = s->bucket[i], *nx; e; e = nx) {
			nx = e->hnext;
			free(e);
		}
	if (s->cur) {
		/* configurations and user databases belong to main.c */
		if (s->cur->rc)
			remote_free(s->cur->rc);
		free(s->cur);
	}
	while (s->slots)
		slot_free(s, s->slots);
	free(s->workers);
	pthread_cond_destroy(&s->work_cv);
	pthread_cond_destroy(&s->timer_cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
