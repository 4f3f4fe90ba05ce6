/*
 * lmtp_client: bufferevent-based LMTP client (RFC 2033) for the handoff
 * to deliverd.  The greeting and LHLO are the first two expected replies;
 * if either is not 2xx the connection is broken and every waiting
 * command gets code 0.  The LHLO reply's keywords are kept for
 * lmtp_client_has().
 */
#include "lmtp_client.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#define REPLY_LINE_MAX 4096
#define EXT_MAX 512             /* LHLO keywords kept */

enum { P_CMD, P_GREETING, P_LHLO };

struct pending {
	lmtp_reply_cb cb;
	void *arg;
	int internal;           /* P_GREETING or P_LHLO: checked here */
	struct pending *next;
};

struct lmtp_client {
	struct bufferevent *bev;
	struct pending *head, *tail;
	int broken;
	int lines;              /* lines of the reply being read so far */
	char ext[EXT_MAX];      /* " KEYWORD KEYWORD ... " from the LHLO reply */
	long timeout;
	char spec[256];
};

static void
push(struct lmtp_client *c, lmtp_reply_cb cb, void *arg, int internal)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		c->broken = 1;
		if (cb)
			cb(arg, 0, "");
		return;
	}
	p->cb = cb;
	p->arg = arg;
	p->internal = internal;
	if (c->tail)
		c->tail->next = p;
	else
		c->head = p;
	c->tail = p;
	if (c->bev) {
		struct timeval tv = { c->timeout, 0 };
		bufferevent_set_timeouts(c->bev, &tv, NULL);
	}
}

/* The connection is gone: everyone waiting hears code 0. */
static void
fail_all(struct lmtp_client *c, const char *why)
{
	if (!c->broken)
		log_warn("lmtp: %s: %s", c->spec, why);
	c->broken = 1;
	if (c->bev) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	while (c->head) {
		struct pending *p = c->head;
		c->head = p->next;
		if (c->head == NULL)
			c->tail = NULL;
		if (p->cb)
			p->cb(p->arg, 0, "");
		free(p);
	}
}

/* One line of the LHLO reply: all but the first (our name) start with
 * an extension keyword. */
static void
lhlo_line(struct lmtp_client *c, const char *line, size_t len)
{
	size_t k = 0, o = strlen(c->ext);

	if (c->lines++ == 0 || len <= 4)
		return;
	line += 4;
	while (line[k] && line[k] != ' ')
		k++;
	if (o == 0)
		c->ext[o++] = ' ';
	if (o + k + 2 > sizeof(c->ext))
		return;
	for (size_t i = 0; i < k; i++)
		c->ext[o++] = (char)toupper((unsigned char)line[i]);
	c->ext[o++] = ' ';
	c->ext[o] = '\0';
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct lmtp_client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;

	while (c->head && !c->broken
	       && (line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		int code = 0;
		if (len < 3 || sscanf(line, "%3d", &code) != 1 || code < 200 || code > 599
		    || (len > 3 && line[3] != ' ' && line[3] != '-')) {
			free(line);
			fail_all(c, "bad reply from deliverd");
			return;
		}
		if (c->head->internal == P_LHLO)
			lhlo_line(c, line, len);
		if (len > 3 && line[3] == '-') {        /* continued */
			free(line);
			continue;
		}
		c->lines = 0;
		struct pending *p = c->head;
		c->head = p->next;
		if (c->head == NULL) {
			c->tail = NULL;
			bufferevent_set_timeouts(c->bev, NULL, NULL);
		}
		if (p->internal && code / 100 != 2) {
			char why[300];
			snprintf(why, sizeof(why), "refused: %.200s", line);
			free(line);
			free(p);
			fail_all(c, why);
			return;
		}
		if (p->cb)
			p->cb(p->arg, code, len > 4 ? line + 4 : "");
		free(line);
		free(p);
	}
	if (c->head && !c->broken && evbuffer_get_length(in) > REPLY_LINE_MAX)
		fail_all(c, "reply line too long");
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct lmtp_client *c = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED)
		return;
	if (what & BEV_EVENT_TIMEOUT)
		fail_all(c, "timeout waiting for deliverd");
	else if (what & BEV_EVENT_EOF)
		fail_all(c, c->head ? "deliverd closed the connection" : "closed");
	else
		fail_all(c, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

struct lmtp_client *
lmtp_client_new(struct event_base *base, const char *spec, const char *lhlo,
                long timeout_s, char *err, size_t errlen)
{
	struct lmtp_client *c = calloc(1, sizeof(*c));
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(c->spec, sizeof(c->spec), "%s", spec);
	c->timeout = timeout_s > 0 ? timeout_s : 300;
	memset(&ss, 0, sizeof(ss));
	if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
		const char *path = strchr(spec, ':') + 1;
		if (strlen(path) >= sizeof(sun->sun_path)) {
			snprintf(err, errlen, "%s: path too long", spec);
			free(c);
			return NULL;
		}
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, path);
		sslen = sizeof(*sun);
	} else {
		/* inet:PORT@ADDR (or inet6:) */
		const char *p = strchr(spec, ':'), *at;
		char hp[300];
		if (p == NULL || (at = strchr(p, '@')) == NULL) {
			snprintf(err, errlen, "%s: want unix:/PATH or inet:PORT@ADDR", spec);
			free(c);
			return NULL;
		}
		if (strchr(at + 1, ':') && at[1] != '[')
			snprintf(hp, sizeof(hp), "[%s]:%.*s", at + 1, (int)(at - p - 1), p + 1);
		else
			snprintf(hp, sizeof(hp), "%s:%.*s", at + 1, (int)(at - p - 1), p + 1);
		if (evutil_parse_sockaddr_port(hp, (struct sockaddr *)&ss, &sslen) < 0) {
			snprintf(err, errlen, "%s: bad address", spec);
			free(c);
			return NULL;
		}
	}
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		snprintf(err, errlen, "out of memory");
		free(c);
		return NULL;
	}
	bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	push(c, NULL, NULL, P_GREETING);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, sslen) < 0) {
		/* refused at once (unix socket missing): fail the first command */
		c->broken = 1;
		bufferevent_free(c->bev);
		c->bev = NULL;
		while (c->head) {
			struct pending *p = c->head;
			c->head = p->next;
			free(p);
		}
		c->tail = NULL;
		log_warn("lmtp: %s: cannot connect: %s", spec, strerror(errno));
		return c;
	}
	evbuffer_add_printf(bufferevent_get_output(c->bev), "LHLO %s\r\n", lhlo);
	push(c, NULL, NULL, P_LHLO);
	return c;
}

void
lmtp_client_cmd(struct lmtp_client *c, const char *line, lmtp_reply_cb cb, void *arg)
{
	if (c->broken || c->bev == NULL) {
		if (cb)
			cb(arg, 0, "");
		return;
	}
	evbuffer_add_printf(bufferevent_get_output(c->bev), "%s\r\n", line);
	push(c, cb, arg, P_CMD);
}

void
lmtp_client_write(struct lmtp_client *c, const char *p, size_t n)
{
	if (!c->broken && c->bev)
		bufferevent_write(c->bev, p, n);
}

void
lmtp_client_expect(struct lmtp_client *c, lmtp_reply_cb cb, void *arg)
{
	if (c->broken || c->bev == NULL) {
		if (cb)
			cb(arg, 0, "");
		return;
	}
	push(c, cb, arg, P_CMD);
}

int
lmtp_client_has(const struct lmtp_client *c, const char *keyword)
{
	char w[64];
	size_t n = strlen(keyword);

	if (c->broken || n == 0 || n + 3 > sizeof(w))
		return 0;
	w[0] = ' ';
	for (size_t i = 0; i < n; i++)
		w[i + 1] = (char)toupper((unsigned char)keyword[i]);
	w[n + 1] = ' ';
	w[n + 2] = '\0';
	return strstr(c->ext, w) != NULL;
}

size_t
lmtp_client_xtext(const char *in, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (outlen == 0)
		return 0;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		size_t need = (*p < 33 || *p > 126 || *p == '+' || *p == '=') ? 3 : 1;
		if (o + need >= outlen)
			break;          /* whole characters only: still valid xtext */
		if (need == 3) {
			out[o++] = '+';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		} else {
			out[o++] = (char)*p;
		}
	}
	out[o] = '\0';
	return o;
}

int
lmtp_client_broken(const struct lmtp_client *c)
{
	return c->broken;
}

void
lmtp_client_free(struct lmtp_client *c)
{
	if (c == NULL)
		return;
	if (c->bev)
		bufferevent_free(c->bev);
	while (c->head) {
		struct pending *p = c->head;
		c->head = p->next;
		free(p);
	}
	free(c);
}
