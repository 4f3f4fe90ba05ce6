/*
 * lmtp_commit: spool commits off the event loop, with group commit.  A
 * commit fsyncs the message file and the queue directory, which can take
 * milliseconds; done in the loop it would stall every other session.  A
 * small pool of threads takes commits from a queue and hands each result
 * back to the loop with event_active() (libevent is set up with
 * evthread_use_pthreads()).
 *
 * Group commit: each thread writes out and fsyncs its message file
 * (spool_commit_sync; several at once, the file system merges their
 * journal flushes), then puts it on the "synced" list.  One thread at a
 * time is the publisher: it takes the whole list, renames every file into
 * queue/ and fsyncs queue/ once (spool_commit_batch), and only then
 * answers all of them; files synced meanwhile form the next batch, which
 * the same publisher takes before it steps down.  Nothing is acknowledged
 * before its file and its directory entry are on stable storage, and the
 * directory costs one flush per batch instead of one per message.
 */
#include "lmtp_int.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMMIT_THREADS 16
#define BATCH_MAX 256

struct commit_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct commit_job *head, *tail;     /* waiting for a thread */
	struct commit_job *synced;          /* file fsynced, not yet renamed */
	int publishing;                     /* a thread is publishing a batch */
	int stop;
	int nthreads;
	pthread_t th[COMMIT_THREADS];
};

/* Rename and fsync queue/ for the jobs in list (all synced), answer them. */
static void
publish(struct commit_job *list)
{
	struct spool_writer *w[BATCH_MAX];
	struct commit_job *jobs[BATCH_MAX];
	int errs[BATCH_MAX];

	while (list) {
		size_t n = 0;
		for (; list && n < BATCH_MAX; list = list->next) {
			jobs[n] = list;
			w[n++] = list->w;
		}
		spool_commit_batch(w, n, errs);
		for (size_t i = 0; i < n; i++) {
			struct commit_job *j = jobs[i];
			j->w = NULL;    /* spool_commit_batch freed it */
			j->rc = errs[i] ? -1 : 0;
			if (errs[i])
				snprintf(j->err, sizeof(j->err), "spool commit: %s", strerror(errs[i]));
			/* j may be freed by the loop from here on: no more j->next */
			event_active(j->done, EV_READ, 1);
		}
	}
}

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

		if (spool_commit_sync(j->w, j->err, sizeof(j->err)) == -1) {
			j->rc = -1;
			j->w = NULL;    /* freed */
			event_active(j->done, EV_READ, 1);
			continue;
		}

		pthread_mutex_lock(&p->mu);
		j->next = p->synced;
		p->synced = j;
		if (p->publishing) {
			/* the publisher takes it with its next batch */
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		p->publishing = 1;
		while (p->synced) {
			struct commit_job *list = NULL, *x = p->synced;
			p->synced = NULL;
			pthread_mutex_unlock(&p->mu);
			while (x) {     /* oldest first */
				struct commit_job *nx = x->next;
				x->next = list;
				list = x;
				x = nx;
			}
			publish(list);
			pthread_mutex_lock(&p->mu);
		}
		p->publishing = 0;
		pthread_mutex_unlock(&p->mu);
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
