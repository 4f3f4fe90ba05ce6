/*
 * control: deliverd's control socket, for the queue tool (spfgate-queue).
 * A unix socket ([deliverd] control, mode 0600: root or deliverd's own
 * user only) speaking one command a line, one answer each:
 *
 *   LIST             "ID queue" / "ID hold" lines, then "ok"
 *   FLUSH            retry every deferred message now       -> "ok"
 *   DELETE ID        remove a message (queued or held)      -> "ok"
 *   HOLD ID          stop delivering it, keep it            -> "ok"
 *   RELEASE ID       deliver a held message again           -> "ok"
 *   QUIT             close
 *
 * Failures answer "error: reason".  The scheduler is told first (forget)
 * so that it does not pick up a message the administrator is moving.
 */
#include "deliverd.h"
#include "log.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_LINE_MAX 512
#define CTL_TIMEOUT  60

struct ctl_conn {
	struct control *c;
	struct bufferevent *bev;
	struct ctl_conn *prev, *next;
};

struct control {
	struct deliverd *d;
	struct evconnlistener *l;
	char *path;
	struct ctl_conn *conns;         /* open connections, freed at close */
};

static void
conn_free(struct ctl_conn *k)
{
	if (k->prev)
		k->prev->next = k->next;
	else
		k->c->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	bufferevent_free(k->bev);
	free(k);
}

/* Which directory holds id now: "queue", "hold", or NULL. */
static const char *
locate(struct deliverd *d, const char *id)
{
	char p[4096];
	struct stat st;

	snprintf(p, sizeof(p), "%s/queue/%s", spool_dir(d->spool), id);
	if (stat(p, &st) == 0)
		return "queue";
	snprintf(p, sizeof(p), "%s/hold/%s", spool_dir(d->spool), id);
	if (stat(p, &st) == 0)
		return "hold";
	return NULL;
}

struct list_ctx {
	struct deliverd *d;
	struct evbuffer *out;
};

static void
list_one(const char *id, void *arg)
{
	struct list_ctx *c = arg;
	const char *where = locate(c->d, id);

	if (where)
		evbuffer_add_printf(c->out, "%s %s\n", id, where);
}

static void
ctl_command(struct deliverd *d, struct evbuffer *out, char *line)
{
	char *arg = line + strcspn(line, " ");
	const char *where;

	if (*arg)
		*arg++ = '\0';
	while (*arg == ' ')
		arg++;
	if (strcasecmp(line, "LIST") == 0) {
		struct list_ctx c = { d, out };
		spool_scan(d->spool, 1, list_one, &c);
		evbuffer_add_printf(out, "ok\n");
		return;
	}
	if (strcasecmp(line, "FLUSH") == 0) {
		sched_flush(d->sched);
		log_info("control: flush");
		evbuffer_add_printf(out, "ok\n");
		return;
	}
	if (strcasecmp(line, "DELETE") != 0 && strcasecmp(line, "HOLD") != 0
	    && strcasecmp(line, "RELEASE") != 0) {
		evbuffer_add_printf(out, "error: unknown command (LIST FLUSH DELETE HOLD RELEASE QUIT)\n");
		return;
	}
	if (!spool_valid_id(arg)) {
		evbuffer_add_printf(out, "error: not a queue id\n");
		return;
	}
	if ((where = locate(d, arg)) == NULL) {
		evbuffer_add_printf(out, "error: %s: no such message\n", arg);
		return;
	}
	if (strcasecmp(line, "DELETE") == 0) {
		sched_forget(d->sched, arg);
		if (spool_remove(d->spool, arg) < 0) {
			evbuffer_add_printf(out, "error: %s: %s\n", arg, strerror(errno));
			return;
		}
		log_info("id=%s removed by the administrator", arg);
	} else if (strcasecmp(line, "HOLD") == 0) {
		if (strcmp(where, "hold") == 0) {
			evbuffer_add_printf(out, "error: %s: already held\n", arg);
			return;
		}
		sched_forget(d->sched, arg);
		if (spool_hold(d->spool, arg) < 0) {
			evbuffer_add_printf(out, "error: %s: %s\n", arg, strerror(errno));
			sched_submit(d->sched, arg);
			return;
		}
		log_info("id=%s held by the administrator", arg);
	} else {
		if (strcmp(where, "queue") == 0) {
			evbuffer_add_printf(out, "error: %s: not held\n", arg);
			return;
		}
		if (spool_release(d->spool, arg) < 0) {
			evbuffer_add_printf(out, "error: %s: %s\n", arg, strerror(errno));
			return;
		}
		sched_submit(d->sched, arg);
		log_info("id=%s released by the administrator", arg);
	}
	evbuffer_add_printf(out, "ok\n");
}

static void
ctl_written(struct bufferevent *bev, void *arg)
{
	if (!(bufferevent_get_enabled(bev) & EV_READ))
		conn_free(arg);
}

static void
ctl_read(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *k = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);
	char *line;
	size_t len;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		if (len > CTL_LINE_MAX || memchr(line, '\0', len)) {
			evbuffer_add_printf(out, "error: bad line\n");
		} else if (strcasecmp(line, "QUIT") == 0) {
			free(line);
			bufferevent_disable(bev, EV_READ);
			if (evbuffer_get_length(out) == 0)
				conn_free(k);
			return;
		} else {
			ctl_command(k->c->d, out, line);
		}
		free(line);
	}
	if (evbuffer_get_length(in) > CTL_LINE_MAX) {
		evbuffer_add_printf(out, "error: line too long\n");
		bufferevent_disable(bev, EV_READ);
	}
}

static void
ctl_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	conn_free(arg);
}

static void
ctl_accept(struct evconnlistener *el, evutil_socket_t fd, struct sockaddr *sa,
           int salen, void *arg)
{
	struct control *c = arg;
	struct ctl_conn *k;
	struct timeval tv = { CTL_TIMEOUT, 0 };

	(void)el;
	(void)sa;
	(void)salen;
	if ((k = calloc(1, sizeof(*k))) == NULL
	    || (k->bev = bufferevent_socket_new(c->d->base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		free(k);
		close(fd);
		return;
	}
	k->c = c;
	k->next = c->conns;
	if (c->conns)
		c->conns->prev = k;
	c->conns = k;
	bufferevent_setcb(k->bev, ctl_read, ctl_written, ctl_event, k);
	bufferevent_set_timeouts(k->bev, &tv, &tv);
	bufferevent_enable(k->bev, EV_READ | EV_WRITE);
}

struct control *
control_open(struct deliverd *d, char *err, size_t errlen)
{
	struct control *c = calloc(1, sizeof(*c));
	const char *path = d->cfg->deliverd.control;
	int fd;

	if (c == NULL || (c->path = strdup(path)) == NULL) {
		free(c);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->d = d;
	if ((fd = deliverd_listen_unix(path, 0600, 16, err, errlen)) < 0)
		goto fail;
	c->l = evconnlistener_new(d->base, ctl_accept, c, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (c->l == NULL) {
		close(fd);
		snprintf(err, errlen, "%s: cannot set up the listener", path);
		goto fail;
	}
	return c;
fail:
	free(c->path);
	free(c);
	return NULL;
}

void
control_close(struct control *c)
{
	struct stat st;

	if (c == NULL)
		return;
	evconnlistener_free(c->l);
	while (c->conns)
		conn_free(c->conns);
	if (lstat(c->path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(c->path);
	free(c->path);
	free(c);
}
