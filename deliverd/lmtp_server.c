/*
 * lmtp_server: the LMTP server's listening side -- opening every
 * [deliverd] listen address, accepting connections (each becomes a
 * session, lmtp.c), and the orderly stop: no new connections, idle
 * sessions told 421 at once, open transactions given DRAIN_MS to finish,
 * commits in flight always allowed to finish (they may be acknowledged).
 */
#include "deliverd.h"
#include "lmtp_int.h"
#include "log.h"

#include <event2/event.h>
#include <event2/listener.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_MS 10000          /* a stop waits this long for open mail */

static void
accept_cb(struct evconnlistener *el, evutil_socket_t fd, struct sockaddr *sa,
          int salen, void *arg)
{
	(void)el;
	(void)salen;
	lmtp_session_start(arg, fd, sa);
}

static void
accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct lmtp_server *l = arg;

	(void)fd;
	(void)what;
	for (int i = 0; i < l->nls; i++)
		evconnlistener_enable(l->ls[i]);
}

/*
 * accept() failed (out of descriptors, most likely): pause all listeners
 * for a second instead of spinning on a socket that stays readable.
 */
static void
accept_error(struct evconnlistener *el, void *arg)
{
	struct lmtp_server *l = arg;
	struct timeval tv = { 1, 0 };

	(void)el;
	log_warn("lmtp: accept: %s; pausing for a second",
	         evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	for (int i = 0; i < l->nls; i++)
		evconnlistener_disable(l->ls[i]);
	if (l->resume)
		evtimer_add(l->resume, &tv);
}

struct lmtp_server *
lmtp_listen(struct deliverd *d, char *err, size_t errlen)
{
	struct lmtp_server *l = calloc(1, sizeof(*l));
	const struct strlist *ls = &d->cfg->deliverd.listen;

	if (l == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->d = d;
	if ((l->commits = commit_pool_new(err, errlen)) == NULL)
		goto fail;
	l->resume = evtimer_new(d->base, accept_resume, l);
	for (size_t i = 0; i < ls->n; i++) {
		const char *spec = ls->v[i], *path = NULL;
		int fd;

		if (l->nls == MAX_LISTEN) {
			snprintf(err, errlen, "too many listen addresses");
			goto fail;
		}
		if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0)
			path = strchr(spec, ':') + 1;
		fd = path ? deliverd_listen_unix(path, 0666, 1024, err, errlen) : lmtp_listen_inet(spec, err, errlen);
		if (fd < 0)
			goto fail;
		l->ls[l->nls] = evconnlistener_new(d->base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE,
		                                   -1, fd);
		if (l->ls[l->nls] == NULL) {
			close(fd);
			snprintf(err, errlen, "%s: cannot set up the listener", spec);
			goto fail;
		}
		evconnlistener_set_error_cb(l->ls[l->nls], accept_error);
		l->paths[l->nls++] = path ? strdup(path) : NULL;
		log_info("lmtp: listening on %s", spec);
	}
	return l;
fail:
	lmtp_close(l);
	return NULL;
}

static void
drain_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

void
lmtp_close(struct lmtp_server *l)
{
	struct timespec t0, now;
	struct event *tick;
	struct timeval tv = { 0, 100000 };

	if (l == NULL)
		return;
	l->closing = 1;
	if (l->resume)
		event_free(l->resume);
	for (int i = 0; i < l->nls; i++) {
		evconnlistener_free(l->ls[i]);
		if (l->paths[i]) {
			struct stat st;
			if (lstat(l->paths[i], &st) == 0 && S_ISSOCK(st.st_mode))
				unlink(l->paths[i]);
			free(l->paths[i]);
		}
	}
	l->nls = 0;
	for (struct lmtp_session *s = l->sessions, *n; s; s = n) {
		n = lmtp_session_next(s);
		lmtp_session_stop(s);
	}
	/* open transactions get DRAIN_MS to finish; commits always finish */
	tick = event_new(l->d->base, -1, EV_PERSIST, drain_tick, NULL);
	if (tick)
		event_add(tick, &tv);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int busy = 0;
		long ms;

		for (struct lmtp_session *s = l->sessions; s; s = lmtp_session_next(s))
			busy |= lmtp_session_busy(s);
		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
		if (l->sessions == NULL || (!busy && ms > DRAIN_MS) || !tick)
			break;
		event_base_loop(l->d->base, EVLOOP_ONCE);
	}
	if (tick)
		event_free(tick);
	if (l->nsessions)
		log_warn("lmtp: %d session(s) still open at stop, dropped", l->nsessions);
	/* joins the commit threads: no job is running after this */
	commit_pool_free(l->commits);
	while (l->sessions)
		lmtp_session_drop(l->sessions);
	free(l);
}
