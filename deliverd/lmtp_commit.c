/*
 * lmtp_commit: spool_commit() off the event loop.  A commit fsyncs the
 * message file and the queue directory, which can take milliseconds; done
 * in the loop it would stall every other session.  A small pool of threads
 * takes commits from a queue and hands each result back to the loop with
 * event_active() (libevent is set up with evthread_use_pthreads()).  Many
 * commits in flight at once also let the filesystem merge their journal
 * flushes: group commit, without giving up a single fsync.
 */
#include "lmtp_int.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define COMMIT_THREADS 16

struct commit_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct commit_job *head, *tail;
	int stop;
	int nthreads;
	pthread_t th[COMMIT_THREADS];
};

static void *
commit_main(void *arg)
{
	struct commit_pool *p = arg;

	for (;;) {
		struct commit_job *j;

		pthread_mutex_lock(&p->mu);
		while (p->head == NULL && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->head == NULL) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		j = p->head;
		p->head = j->next;
		if (p->head == NULL)
			p->tail = NULL;
		pthread_mutex_unlock(&p->mu);

		j->rc = spool_commit(j->w, j->err, sizeof(j->err));
		j->w = NULL;    /* spool_commit freed it */
		event_active(j->done, EV_READ, 1);
	}
}

struct commit_pool *
commit_pool_new(char *err, size_t errlen)
{
	struct commit_pool *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	for (int i = 0; i < COMMIT_THREADS; i++) {
		if (pthread_create(&p->th[i], NULL, commit_main, p) != 0)
			break;
		p->nthreads++;
	}
	if (p->nthreads == 0) {
		snprintf(err, errlen, "cannot start commit threads");
		commit_pool_free(p);
		return NULL;
	}
	return p;
}

void
commit_pool_submit(struct commit_pool *p, struct commit_job *j)
{
	j->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* Commits already queued are finished first: they may have been promised. */
void
commit_pool_free(struct commit_pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->th[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p);
}
