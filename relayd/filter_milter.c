/*
 * filter_milter: the configured milter chain behind filter.h ([relayd]
 * milters, in order, one connection per SMTP session per milter), as
 * filter.h describes; filter.c calls it after its own checks (the relay
 * check stays there, in front of the milters).
 *
 * Each event goes to milter 1, whose done() starts milter 2, ..., until
 * one answers other than continue/accept (as Postfix does, accept lets
 * the next milter run); then the session's callback runs, exactly once,
 * after every pending string is released (it may start the next event
 * or close the filter).  At end of message the buffered message is split
 * into header fields and body chunks of at most MILTER_CHUNK_MAX bytes;
 * each milter's modifications are copied one to one into filter_mods,
 * and applied (msgedit) before the next milter sees the message.
 */
#include "filter.h"
#include "milter_client.h"
#include "msgbuf.h"
#include "msgedit.h"
#include "log.h"

#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum fev { FEV_CONNECT, FEV_HELO, FEV_MAIL, FEV_RCPT, FEV_DATA, FEV_EOM };
enum cstate { CS_HDR, CS_EOH, CS_BODY, CS_EOM };

struct fmilter {
	struct filter_milters *f;
	struct milter_conn *c;
	int opened;
	int skip;               /* failed with default action accept */
};

struct filter_milters {
	const struct config *cfg;
	struct filter_conn *conn;
	struct milter_macros *mac;
	struct fmilter *m;
	size_t nm;
	int discard;            /* a milter said DISCARD in this transaction */
	/* the event being run through the chain */
	enum fev ev;
	size_t cur;
	filter_cb cb;
	filter_eom_cb ecb;
	void *arg;
	char *word;             /* HELO name, sender or recipient */
	char **args;            /* ESMTP parameters, NULL-terminated */
	/* end of message: the message as the current milter sees it */
	char *text;
	size_t len, pos, body;
	enum cstate cs;
	char *hname, *hvalue;
	size_t mod_first;       /* the current milter's first mod */
	struct filter_mod *mods;
	size_t nmods, capmods;
};

static void
reply_continue(struct filter_reply *r)
{
	memset(r, 0, sizeof(*r));
	r->action = FILTER_CONTINUE;
}

static void
reply_set(struct filter_reply *r, int code, const char *enh, const char *text)
{
	memset(r, 0, sizeof(*r));
	r->action = FILTER_REPLY;
	r->code = code;
	snprintf(r->enh, sizeof(r->enh), "%s", enh);
	snprintf(r->text, sizeof(r->text), "%s", text);
}

/* ------------------------------------------------------------ helpers */

static void
pending_free(struct filter_milters *f)
{
	free(f->word);
	f->word = NULL;
	if (f->args) {
		for (size_t i = 0; f->args[i]; i++)
			free(f->args[i]);
		free(f->args);
		f->args = NULL;
	}
	free(f->text);
	f->text = NULL;
	free(f->hname);
	free(f->hvalue);
	f->hname = f->hvalue = NULL;
}

static void
mods_free(struct filter_mod *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free((char *)v[i].name);
		free((char *)v[i].value);
		free((char *)v[i].args);
		free((unsigned char *)v[i].body);
	}
	free(v);
}

/* "<a@b>" -> "a@b" (malloc'd) */
static char *
strip_path(const char *p)
{
	size_t n;

	p += strspn(p, " ");
	if (*p == '<')
		p++;
	n = strcspn(p, ">");
	return strndup(p, n);
}

static char **
split_args(const char *params)
{
	size_t n = 0, cap = 4;
	char **v = calloc(cap + 1, sizeof(*v));

	if (v == NULL || params == NULL)
		return v;
	for (const char *p = params; *p;) {
		size_t w;
		p += strspn(p, " \t");
		if ((w = strcspn(p, " \t")) == 0)
			break;
		if (n == cap) {
			char **nv = realloc(v, (cap * 2 + 1) * sizeof(*v));
			if (nv == NULL)
				break;
			v = nv;
			cap *= 2;
		}
		if ((v[n] = strndup(p, w)) == NULL)
			break;
		v[++n] = NULL;
		p += w;
	}
	return v;
}

/* the macros that change as the session goes on */
static void
macros_refresh(struct filter_milters *f)
{
	struct filter_conn *c = f->conn;

	milter_macros_set(f->mac, "i", c->queue_id[0] ? c->queue_id : NULL);
	milter_macros_set(f->mac, "{tls_version}", c->tls ? c->tls_version : NULL);
	milter_macros_set(f->mac, "{cipher}", c->tls ? c->tls_cipher : NULL);
}

static void
collect_text(void *arg, const char *p, size_t n)
{
	struct filter_milters *f = arg;
	char *t;

	if (f->len + n + 1 < f->len || (t = realloc(f->text, f->len + n + 1)) == NULL) {
		f->pos = 1;     /* error flag while collecting */
		return;
	}
	memcpy(t + f->len, p, n);
	f->text = t;
	f->len += n;
	f->text[f->len] = '\0';
}

/* Load msg into f->text; 0 or -1. */
static int
load_text(struct filter_milters *f, struct msgbuf *msg)
{
	free(f->text);
	f->text = NULL;
	f->len = 0;
	f->pos = 0;
	if (msgbuf_foreach(msg, collect_text, f) < 0 || f->pos)
		return -1;
	if (f->text == NULL && (f->text = calloc(1, 1)) == NULL)
		return -1;
	f->pos = 0;
	return 0;
}

/* ------------------------------------------------------------ the chain */

static void step(struct filter_milters *f);

/* The chain is over for this event: tell the session (exactly once). */
static void
finish(struct filter_milters *f, const struct filter_reply *r)
{
	filter_cb cb = f->cb;
	filter_eom_cb ecb = f->ecb;
	void *arg = f->arg;
	struct filter_mod *mods = NULL;
	size_t nmods = 0;
	struct filter_reply rr = *r;

	f->cb = NULL;
	f->ecb = NULL;
	pending_free(f);
	if (f->ev == FEV_EOM) {
		mods = f->mods;
		nmods = f->nmods;
		f->mods = NULL;
		f->nmods = f->capmods = 0;
		if (rr.action == FILTER_CONTINUE && f->discard)
			rr.action = FILTER_DISCARD;
		if (rr.action != FILTER_CONTINUE) {
			mods_free(mods, nmods);
			mods = NULL;
			nmods = 0;
		}
		struct filter_mods fm = { mods, nmods };
		/* the callback may call filter_close(f): f is not used after */
		ecb(arg, &rr, &fm);
		mods_free(mods, nmods);
		return;
	}
	cb(arg, &rr);
}

static void
next_milter(struct filter_milters *f)
{
	f->cur++;
	step(f);
}

/* A milter's verdict other than "go on" for this event. */
static void
verdict(struct filter_milters *f, struct fmilter *fm, const struct milter_result *res)
{
	struct filter_reply r;

	switch (res->status) {
	case MILTER_CONTINUE:
	case MILTER_ACCEPT:
	case MILTER_SKIP:
		next_milter(f);
		return;
	case MILTER_DISCARD:
		f->discard = 1;
		reply_continue(&r);
		break;
	case MILTER_REJECT:
		if (f->ev == FEV_CONNECT)
			reply_set(&r, 554, "5.7.1", "Connection rejected");
		else
			reply_set(&r, 550, "5.7.1", "Command rejected");
		break;
	case MILTER_TEMPFAIL:
		reply_set(&r, 451, "4.7.1", "Service unavailable - try again later");
		break;
	case MILTER_REPLY: {
		/* no CR/LF in a filter_reply: keep the last line */
		const char *last = res->reply ? res->reply : "451 4.7.1 Service unavailable";
		const char *nl;
		while ((nl = strstr(last, "\r\n")) != NULL && nl[2])
			last = nl + 2;
		filter_reply_parse(&r, last);
		{
			char *e = strpbrk(r.text, "\r\n");
			if (e)
				*e = '\0';
		}
		break;
	}
	case MILTER_CONNFAIL:
		reply_set(&r, 421, "4.7.0", "Service unavailable - closing connection");
		r.close = 1;
		log_warn("milter %s: %s", milter_name(fm->c), res->error ? res->error : "closing");
		break;
	case MILTER_FAILED:
	default:
		log_warn("milter %s: %s at %s", milter_name(fm->c),
		         res->error ? res->error : "failed", milter_event_name(res->event));
		switch (f->cfg->relayd.milter_default_action) {
		case MILTER_DEFAULT_ACCEPT:
			fm->skip = 1;
			next_milter(f);
			return;
		case MILTER_DEFAULT_REJECT:
			reply_set(&r, 550, "5.7.1", "Command rejected");
			break;
		default:
			reply_set(&r, 451, "4.7.1", "Service unavailable - try again later");
			break;
		}
		break;
	}
	finish(f, &r);
}

static void
fail_now(struct filter_milters *f, struct fmilter *fm, enum milter_event ev)
{
	struct milter_result res;

	memset(&res, 0, sizeof(res));
	res.event = ev;
	res.status = MILTER_FAILED;
	res.error = "cannot send the command";
	verdict(f, fm, &res);
}

/* The next content step for the current milter at end of message. */
static void
content_step(struct filter_milters *f, struct fmilter *fm)
{
	const char *t = f->text;
	int rc;

	free(f->hname);
	free(f->hvalue);
	f->hname = f->hvalue = NULL;
	if (f->cs == CS_HDR) {
		size_t p = f->pos, nl, colon;
		const char *e;
		if (p >= f->len || (t[p] == '\r' && t[p + 1] == '\n')) {
			f->body = p >= f->len ? f->len : p + 2;
			f->cs = CS_EOH;
		} else {
			colon = strcspn(t + p, ":\r\n \t");
			if (colon == 0 || t[p + colon] != ':') {
				f->body = p;        /* not a header field: the body */
				f->cs = CS_EOH;
			} else {
				/* the field: this line and its continuation lines */
				size_t q = p;
				for (;;) {
					e = strstr(t + q, "\r\n");
					if (e == NULL) {
						nl = f->len;
						q = f->len;
						break;
					}
					nl = (size_t)(e - t);
					q = nl + 2;
					if (q >= f->len || (t[q] != ' ' && t[q] != '\t'))
						break;
				}
				f->hname = strndup(t + p, colon);
				f->hvalue = strndup(t + p + colon + 1, nl - (p + colon + 1));
				f->pos = q;
				if (f->hname == NULL || f->hvalue == NULL) {
					fail_now(f, fm, MILTER_EV_HEADER);
					return;
				}
				if (milter_header(fm->c, f->hname, f->hvalue) < 0)
					fail_now(f, fm, MILTER_EV_HEADER);
				return;
			}
		}
	}
	if (f->cs == CS_EOH) {
		f->cs = CS_BODY;
		f->pos = f->body;
		if (milter_eoh(fm->c, f->mac) < 0)
			fail_now(f, fm, MILTER_EV_EOH);
		return;
	}
	if (f->cs == CS_BODY && f->pos < f->len) {
		size_t n = f->len - f->pos;
		if (n > MILTER_CHUNK_MAX)
			n = MILTER_CHUNK_MAX;
		rc = milter_body(fm->c, t + f->pos, n);
		f->pos += n;
		if (rc < 0)
			fail_now(f, fm, MILTER_EV_BODY);
		return;
	}
	f->cs = CS_EOM;
	if (milter_eom(fm->c, f->mac) < 0)
		fail_now(f, fm, MILTER_EV_EOM);
}

static const enum filter_mod_type mod_type[] = {
	[MILTER_MOD_ADDHDR] = FM_ADDHDR, [MILTER_MOD_INSHDR] = FM_INSHDR,
	[MILTER_MOD_CHGHDR] = FM_CHGHDR, [MILTER_MOD_CHGFROM] = FM_CHGFROM,
	[MILTER_MOD_ADDRCPT] = FM_ADDRCPT, [MILTER_MOD_DELRCPT] = FM_DELRCPT,
	[MILTER_MOD_REPLBODY] = FM_REPLBODY, [MILTER_MOD_QUARANTINE] = FM_QUARANTINE,
};

static char *
dup_or_null(const char *s, int *err)
{
	char *d;

	if (s == NULL)
		return NULL;
	if ((d = strdup(s)) == NULL)
		*err = 1;
	return d;
}

/* Keep one milter's modifications; 0 or -1 (out of memory). */
static int
mods_add(struct filter_milters *f, const struct milter_mod *v, size_t n)
{
	int err = 0;

	for (size_t i = 0; i < n; i++) {
		struct filter_mod *d;
		if ((unsigned)v[i].type >= sizeof(mod_type) / sizeof(mod_type[0]))
			continue;
		if (f->nmods == f->capmods) {
			size_t cap = f->capmods ? f->capmods * 2 : 8;
			struct filter_mod *nv = realloc(f->mods, cap * sizeof(*nv));
			if (nv == NULL)
				return -1;
			f->mods = nv;
			f->capmods = cap;
		}
		d = &f->mods[f->nmods++];
		memset(d, 0, sizeof(*d));
		d->type = mod_type[v[i].type];
		d->index = v[i].index;
		d->name = dup_or_null(v[i].name, &err);
		d->value = dup_or_null(v[i].value, &err);
		d->args = dup_or_null(v[i].args, &err);
		if (v[i].body && v[i].body_len) {
			unsigned char *b = malloc(v[i].body_len);
			if (b == NULL)
				err = 1;
			else
				memcpy(b, v[i].body, v[i].body_len);
			d->body = b;
			d->body_len = v[i].body_len;
		}
	}
	return err ? -1 : 0;
}

/* Is there a milter after the current one that still takes part? */
static int
more_milters(struct filter_milters *f)
{
	for (size_t i = f->cur + 1; i < f->nm; i++)
		if (!f->m[i].skip)
			return 1;
	return 0;
}

/* The next milter sees the message as the earlier ones changed it. */
static int
apply_between(struct filter_milters *f)
{
	const struct filter_mod *v = f->mods + f->mod_first;
	size_t n = f->nmods - f->mod_first;
	struct msgbuf in, out;
	int rc = -1;

	if (n == 0 || !msgedit_needed(v, n) || !more_milters(f))
		return 0;
	if (msgbuf_init(&in, MSGBUF_MEM_MAX) < 0)
		return -1;
	if (msgbuf_init(&out, MSGBUF_MEM_MAX) < 0) {
		msgbuf_free(&in);
		return -1;
	}
	msgbuf_add(&in, f->text, f->len);
	if (!in.err && msgedit_apply(&in, v, n, &out) == 0 && !out.err)
		rc = load_text(f, &out);
	msgbuf_free(&in);
	msgbuf_free(&out);
	return rc;
}

static void
milter_done(struct milter_conn *c, const struct milter_result *res, void *arg)
{
	struct fmilter *fm = arg;
	struct filter_milters *f = fm->f;

	(void)c;
	if (res->event == MILTER_EV_OPEN) {
		if (res->status == MILTER_CONTINUE) {
			fm->opened = 1;
			step(f);
		} else {
			fm->opened = 1;     /* the connection reports FAILED from now on */
			verdict(f, fm, res);
		}
		return;
	}
	switch (res->event) {
	case MILTER_EV_HEADER:
	case MILTER_EV_EOH:
	case MILTER_EV_BODY:
		if (res->status == MILTER_CONTINUE) {
			content_step(f, fm);
			return;
		}
		if (res->status == MILTER_SKIP) {
			f->cs = CS_EOM;
			content_step(f, fm);
			return;
		}
		if (res->status == MILTER_ACCEPT) {
			/* this milter is done with the message: its EOM reports ACCEPT */
			f->cs = CS_EOM;
			content_step(f, fm);
			return;
		}
		verdict(f, fm, res);
		return;
	case MILTER_EV_EOM:
		if (res->status == MILTER_CONTINUE || res->status == MILTER_ACCEPT) {
			struct filter_reply r;
			if (mods_add(f, res->mods, res->nmods) < 0 || apply_between(f) < 0) {
				reply_set(&r, 451, "4.3.0", "Error: out of memory");
				finish(f, &r);
				return;
			}
			next_milter(f);
			return;
		}
		verdict(f, fm, res);
		return;
	default:
		verdict(f, fm, res);
		return;
	}
}

/* Send the pending event to the current milter, or end the chain. */
static void
step(struct filter_milters *f)
{
	struct fmilter *fm;
	struct filter_conn *c = f->conn;
	int rc = 0;
	enum milter_event ev = MILTER_EV_CONNECT;

	while (f->cur < f->nm && f->m[f->cur].skip)
		f->cur++;
	if (f->cur >= f->nm || (f->discard && f->ev != FEV_CONNECT && f->ev != FEV_HELO)) {
		struct filter_reply r;
		reply_continue(&r);
		finish(f, &r);
		return;
	}
	fm = &f->m[f->cur];
	if (!fm->opened) {
		if (milter_open(fm->c) < 0)
			fail_now(f, fm, MILTER_EV_OPEN);
		return;
	}
	macros_refresh(f);
	switch (f->ev) {
	case FEV_CONNECT: {
		char fam = c->ip.family == AF_INET6 ? '6' : c->ip.family == AF_INET ? '4' : 'U';
		char name[80];
		snprintf(name, sizeof(name), "[%s]", c->addr);
		ev = MILTER_EV_CONNECT;
		rc = milter_connect(fm->c, f->mac, name, fam, (unsigned)c->port, c->addr);
		break;
	}
	case FEV_HELO:
		ev = MILTER_EV_HELO;
		rc = milter_helo(fm->c, f->mac, f->word);
		break;
	case FEV_MAIL:
		ev = MILTER_EV_MAIL;
		rc = milter_mail(fm->c, f->mac, f->word, (const char *const *)f->args);
		break;
	case FEV_RCPT:
		ev = MILTER_EV_RCPT;
		rc = milter_rcpt(fm->c, f->mac, f->word, (const char *const *)f->args);
		break;
	case FEV_DATA:
		ev = MILTER_EV_DATA;
		rc = milter_data(fm->c, f->mac);
		break;
	case FEV_EOM:
		f->cs = CS_HDR;
		f->pos = 0;
		f->mod_first = f->nmods;
		content_step(f, fm);
		return;
	}
	if (rc < 0)
		fail_now(f, fm, ev);
}

static void
start(struct filter_milters *f, enum fev ev, filter_cb cb, filter_eom_cb ecb, void *arg)
{
	f->ev = ev;
	f->cur = 0;
	f->cb = cb;
	f->ecb = ecb;
	f->arg = arg;
	step(f);
}

/* ------------------------------------------------------------ the API */

struct filter_milters *
filter_milters_open(const struct config *cfg, struct event_base *base,
                    struct filter_conn *conn)
{
	struct filter_milters *f = calloc(1, sizeof(*f));
	const struct strlist *ml = &cfg->relayd.milters;
	char buf[160];

	if (f == NULL)
		return NULL;
	f->cfg = cfg;
	f->conn = conn;
	if ((f->mac = milter_macros_new()) == NULL
	    || (f->m = calloc(ml->n, sizeof(*f->m))) == NULL)
		goto fail;
	f->nm = ml->n;
	for (size_t i = 0; i < ml->n; i++) {
		struct milter_conf mc;
		memset(&mc, 0, sizeof(mc));
		mc.name = ml->v[i];
		mc.socket = ml->v[i];
		mc.connect_timeout = cfg->relayd.milter_connect_timeout;
		mc.command_timeout = cfg->relayd.milter_command_timeout;
		mc.content_timeout = cfg->relayd.milter_content_timeout;
		f->m[i].f = f;
		if ((f->m[i].c = milter_conn_new(base, &mc, milter_done, &f->m[i])) == NULL)
			goto fail;
	}
	/* relayd does no reverse lookup: the name is the bracketed address */
	snprintf(buf, sizeof(buf), "[%s]", conn->addr);
	if (milter_macros_set(f->mac, "j", conn->mail_name) < 0
	    || milter_macros_set(f->mac, "{daemon_name}",
	                         conn->daemon_name ? conn->daemon_name : "relayd") < 0
	    || milter_macros_set(f->mac, "{if_addr}", conn->if_addr) < 0
	    || milter_macros_set(f->mac, "{client_addr}", conn->addr) < 0
	    || milter_macros_set(f->mac, "{client_name}", buf) < 0)
		goto fail;
	snprintf(buf, sizeof(buf), "[%s] [%s]", conn->addr, conn->addr);
	if (milter_macros_set(f->mac, "_", buf) < 0)
		goto fail;
	snprintf(buf, sizeof(buf), "%d", conn->port);
	if (milter_macros_set(f->mac, "{client_port}", buf) < 0)
		goto fail;
	return f;
fail:
	filter_milters_close(f);
	return NULL;
}

void
filter_milters_connect(struct filter_milters *f, filter_cb cb, void *arg)
{
	start(f, FEV_CONNECT, cb, NULL, arg);
}

void
filter_milters_helo(struct filter_milters *f, const char *helo, filter_cb cb, void *arg)
{
	struct filter_reply r;

	if (f->nm && (f->word = strdup(helo ? helo : "")) == NULL) {
		reply_set(&r, 451, "4.3.0", "Error: out of memory");
		cb(arg, &r);
		return;
	}
	start(f, FEV_HELO, cb, NULL, arg);
}

/* MAIL and RCPT: the path, its ESMTP arguments, and its address macro. */
static void
start_path(struct filter_milters *f, enum fev ev, const char *macro,
           const char *path, const char *params, filter_cb cb, void *arg)
{
	struct filter_reply r;
	char *addr;

	f->word = strdup(path);
	f->args = split_args(params);
	addr = strip_path(path);
	if (f->word == NULL || f->args == NULL || addr == NULL
	    || milter_macros_set(f->mac, macro, addr) < 0) {
		free(addr);
		pending_free(f);
		reply_set(&r, 451, "4.3.0", "Error: out of memory");
		cb(arg, &r);
		return;
	}
	free(addr);
	start(f, ev, cb, NULL, arg);
}

void
filter_milters_mail(struct filter_milters *f, const char *sender, const char *params,
                    filter_cb cb, void *arg)
{
	start_path(f, FEV_MAIL, "{mail_addr}", sender, params, cb, arg);
}

void
filter_milters_rcpt(struct filter_milters *f, const char *rcpt, const char *params,
                    filter_cb cb, void *arg)
{
	start_path(f, FEV_RCPT, "{rcpt_addr}", rcpt, params, cb, arg);
}

void
filter_milters_data(struct filter_milters *f, filter_cb cb, void *arg)
{
	start(f, FEV_DATA, cb, NULL, arg);
}

void
filter_milters_eom(struct filter_milters *f, struct msgbuf *msg, filter_eom_cb cb,
                   void *arg)
{
	struct filter_reply r;

	if (f->nm && !f->discard && load_text(f, msg) < 0) {
		pending_free(f);
		reply_set(&r, 451, "4.3.0", "Error: cannot read the message now");
		cb(arg, &r, NULL);
		return;
	}
	start(f, FEV_EOM, NULL, cb, arg);
}

void
filter_milters_end(struct filter_milters *f)
{
	f->discard = 0;
	if (f->nm == 0)
		return;
	for (size_t i = 0; i < f->nm; i++)
		if (f->m[i].c && f->m[i].opened)
			milter_abort(f->m[i].c);
	milter_macros_set(f->mac, "{mail_addr}", NULL);
	milter_macros_set(f->mac, "{rcpt_addr}", NULL);
	milter_macros_set(f->mac, "i", NULL);
}

void
filter_milters_close(struct filter_milters *f)
{
	if (f == NULL)
		return;
	for (size_t i = 0; i < f->nm; i++)
		if (f->m[i].c)
			milter_close(f->m[i].c);
	free(f->m);
	if (f->mac)
		milter_macros_free(f->mac);
	pending_free(f);
	mods_free(f->mods, f->nmods);
	free(f);
}
