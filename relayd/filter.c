/*
 * filter: the policy behind filter.h.  Relay only for self via
 * policy_rcpt(), always, in front of any milter: a milter list without
 * filterd (opendkim alone, say) must never make relayd an open relay.
 * Then, with [relayd] milters configured, the milter chain
 * (filter_milter.c); without, every other step continues at once.
 */
#include "filter.h"
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct filter_session {
	const struct config *cfg;
	struct filter_conn *conn;
	struct filter_milters *milters;   /* NULL: no milters configured */
};

static void
reply_continue(struct filter_reply *r)
{
	memset(r, 0, sizeof(*r));
	r->action = FILTER_CONTINUE;
}

void
filter_reply_parse(struct filter_reply *r, const char *line)
{
	const char *p = line;

	memset(r, 0, sizeof(*r));
	r->action = FILTER_REPLY;
	r->code = atoi(p);
	p += strspn(p, "0123456789");
	p += strspn(p, " -");
	if (p[0] >= '2' && p[0] <= '5' && p[1] == '.') {
		size_t n = strcspn(p, " ");
		snprintf(r->enh, sizeof(r->enh), "%.*s", (int)(n < 15 ? n : 15), p);
		p += n;
		p += strspn(p, " ");
	}
	snprintf(r->text, sizeof(r->text), "%s", p);
	for (char *q = r->text; *q; q++)
		if (*q < 0x20 || *q >= 0x7f)
			*q = ' ';
	if (r->code < 400 || r->code > 599)
		r->code = 451;
}

const char *
filter_reply_line(const struct filter_reply *r, char *buf, size_t len)
{
	if (r->enh[0])
		snprintf(buf, len, "%d %s %s", r->code, r->enh, r->text);
	else
		snprintf(buf, len, "%d %s", r->code, r->text);
	return buf;
}

struct filter_session *
filter_open(const struct config *cfg, struct event_base *base, struct filter_conn *conn)
{
	struct filter_session *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return NULL;
	f->cfg = cfg;
	f->conn = conn;
	if (cfg->relayd.milters.n
	    && (f->milters = filter_milters_open(cfg, base, conn)) == NULL) {
		free(f);
		return NULL;
	}
	return f;
}

void
filter_connect(struct filter_session *f, filter_cb cb, void *arg)
{
	struct filter_reply r;

	if (f->milters) {
		filter_milters_connect(f->milters, cb, arg);
		return;
	}
	reply_continue(&r);
	cb(arg, &r);
}

void
filter_helo(struct filter_session *f, const char *helo, filter_cb cb, void *arg)
{
	struct filter_reply r;

	if (f->milters) {
		filter_milters_helo(f->milters, helo, cb, arg);
		return;
	}
	reply_continue(&r);
	cb(arg, &r);
}

void
filter_mail(struct filter_session *f, const char *sender, const char *params,
            filter_cb cb, void *arg)
{
	struct filter_reply r;

	if (f->milters) {
		filter_milters_mail(f->milters, sender, params, cb, arg);
		return;
	}
	reply_continue(&r);
	cb(arg, &r);
}

void
filter_rcpt(struct filter_session *f, const char *rcpt, const char *params,
            filter_cb cb, void *arg)
{
	struct filter_reply r;
	struct policy_client cl = { .ip = f->conn->ip, .helo = f->conn->helo, .auth = NULL };
	char line[POLICY_REPLY_MAX];

	if (policy_rcpt(f->cfg, &cl, rcpt, line, sizeof(line)) != POLICY_ACCEPT) {
		filter_reply_parse(&r, line);
		cb(arg, &r);
		return;
	}
	if (f->milters) {
		filter_milters_rcpt(f->milters, rcpt, params, cb, arg);
		return;
	}
	reply_continue(&r);
	cb(arg, &r);
}

void
filter_data(struct filter_session *f, filter_cb cb, void *arg)
{
	struct filter_reply r;

	if (f->milters) {
		filter_milters_data(f->milters, cb, arg);
		return;
	}
	reply_continue(&r);
	cb(arg, &r);
}

void
filter_eom(struct filter_session *f, struct msgbuf *msg, filter_eom_cb cb, void *arg)
{
	struct filter_reply r;

	if (f->milters) {
		filter_milters_eom(f->milters, msg, cb, arg);
		return;
	}
	reply_continue(&r);
	cb(arg, &r, NULL);
}

void
filter_end(struct filter_session *f)
{
	if (f->milters)
		filter_milters_end(f->milters);
}

void
filter_close(struct filter_session *f)
{
	if (f == NULL)
		return;
	if (f->milters)
		filter_milters_close(f->milters);
	free(f);
}
