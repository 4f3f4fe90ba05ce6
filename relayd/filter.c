/*
 * filter: the built-in policy behind filter.h -- relay only for self via
 * policy_rcpt(), everything else continues.  The configured milter chain
 * is to be called from here (see filter.h for how); until then relayd
 * warns at start that [relayd] milters is not used yet.  The relay check
 * stays here in any case, so a configuration with milters is never an
 * open relay.
 */
#include "filter.h"
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct filter_session {
	const struct config *cfg;
	struct filter_conn *conn;
};

static void
reply_continue(struct filter_reply *r)
{
	memset(r, 0, sizeof(*r));
	r->action = FILTER_CONTINUE;
}

/* "554 5.7.1 text" -> reply */
static void
reply_parse(struct filter_reply *r, const char *line)
{
	const char *p = line;

	memset(r, 0, sizeof(*r));
	r->action = FILTER_REPLY;
	r->code = atoi(p);
	p += strspn(p, "0123456789");
	p += strspn(p, " ");
	if (p[0] >= '2' && p[0] <= '5' && p[1] == '.') {
		size_t n = strcspn(p, " ");
		snprintf(r->enh, sizeof(r->enh), "%.*s", (int)(n < 15 ? n : 15), p);
		p += n;
		p += strspn(p, " ");
	}
	snprintf(r->text, sizeof(r->text), "%s", p);
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

	(void)base;
	if (f == NULL)
		return NULL;
	f->cfg = cfg;
	f->conn = conn;
	return f;
}

void
filter_connect(struct filter_session *f, filter_cb cb, void *arg)
{
	struct filter_reply r;

	(void)f;
	reply_continue(&r);
	cb(arg, &r);
}

void
filter_helo(struct filter_session *f, const char *helo, filter_cb cb, void *arg)
{
	struct filter_reply r;

	(void)f;
	(void)helo;
	reply_continue(&r);
	cb(arg, &r);
}

void
filter_mail(struct filter_session *f, const char *sender, const char *params,
            filter_cb cb, void *arg)
{
	struct filter_reply r;

	(void)f;
	(void)sender;
	(void)params;
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

	(void)params;
	if (policy_rcpt(f->cfg, &cl, rcpt, line, sizeof(line)) == POLICY_ACCEPT)
		reply_continue(&r);
	else
		reply_parse(&r, line);
	cb(arg, &r);
}

void
filter_data(struct filter_session *f, filter_cb cb, void *arg)
{
	struct filter_reply r;

	(void)f;
	reply_continue(&r);
	cb(arg, &r);
}

void
filter_eom(struct filter_session *f, struct msgbuf *msg, filter_eom_cb cb, void *arg)
{
	struct filter_reply r;

	(void)f;
	(void)msg;
	reply_continue(&r);
	cb(arg, &r, NULL);
}

void
filter_end(struct filter_session *f)
{
	(void)f;
}

void
filter_close(struct filter_session *f)
{
	free(f);
}
