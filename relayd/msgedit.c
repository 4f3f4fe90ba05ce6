/*
 * msgedit: header fields kept as (name, whole text) in order; the
 * modifications applied in the order given, as Postfix's cleanup does;
 * then the fields, the empty line and the body written out.  A new body
 * gets CRLF line ends (a lone LF becomes CRLF).
 */
#include "msgedit.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct field {
	char *text;             /* the whole field with its CRLFs */
	size_t len;
	size_t namelen;         /* bytes before the ':' (0: no name) */
};

struct editor {
	struct field *f;
	size_t n, cap;
	char *cur;              /* field being collected */
	size_t curlen, curcap;
	int in_body, at_bol, failed;
	int had_separator;
	struct msgbuf *out;
	int replace_body;
};

static int
cur_add(struct editor *e, const char *p, size_t n)
{
	if (e->curlen + n + 1 > e->curcap) {
		size_t c = e->curcap ? e->curcap : 256;
		while (c < e->curlen + n + 1)
			c *= 2;
		char *v = realloc(e->cur, c);
		if (v == NULL)
			return -1;
		e->cur = v;
		e->curcap = c;
	}
	memcpy(e->cur + e->curlen, p, n);
	e->curlen += n;
	e->cur[e->curlen] = '\0';
	return 0;
}

static size_t
name_len(const char *t, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (t[i] == ':')
			return i;
		if (t[i] == ' ' || t[i] == '\t' || t[i] == '\r' || t[i] == '\n')
			return 0;
	}
	return 0;
}

static int
field_insert(struct editor *e, size_t at, char *text, size_t len)
{
	if (e->n == e->cap) {
		size_t c = e->cap ? 2 * e->cap : 32;
		struct field *v = realloc(e->f, c * sizeof(*v));
		if (v == NULL)
			return -1;
		e->f = v;
		e->cap = c;
	}
	if (at > e->n)
		at = e->n;
	memmove(e->f + at + 1, e->f + at, (e->n - at) * sizeof(*e->f));
	e->f[at].text = text;
	e->f[at].len = len;
	e->f[at].namelen = name_len(text, len);
	e->n++;
	return 0;
}

/* The field collected so far becomes a field. */
static void
cur_finish(struct editor *e)
{
	if (e->curlen == 0)
		return;
	if (field_insert(e, e->n, e->cur, e->curlen) < 0) {
		e->failed = 1;
		free(e->cur);
	}
	e->cur = NULL;
	e->curlen = e->curcap = 0;
}

/* Header bytes, line by line; body bytes go straight out. */
static void
feed(void *arg, const char *p, size_t n)
{
	struct editor *e = arg;

	while (n && !e->in_body && !e->failed) {
		if (e->at_bol) {
			if (p[0] == '\r' || p[0] == '\n') {
				/* the empty line (CRLF, or our own LF-less end) */
				cur_finish(e);
				e->in_body = 1;
				e->had_separator = 1;
				/* skip its CRLF */
				size_t k = (p[0] == '\r' && n > 1 && p[1] == '\n') ? 2 : 1;
				if (p[0] == '\r' && n == 1)
					e->at_bol = 2;      /* LF still to come */
				p += k;
				n -= k;
				break;
			}
			if (p[0] != ' ' && p[0] != '\t')
				cur_finish(e);
			e->at_bol = 0;
		}
		const char *lf = memchr(p, '\n', n);
		size_t k = lf ? (size_t)(lf - p) + 1 : n;
		if (cur_add(e, p, k) < 0)
			e->failed = 1;
		if (lf)
			e->at_bol = 1;
		p += k;
		n -= k;
	}
	if (e->in_body && e->at_bol == 2 && n && p[0] == '\n') {
		p++;
		n--;
		e->at_bol = 0;
	}
	if (e->in_body && n && !e->replace_body)
		msgbuf_add(e->out, p, n);
}

static char *
make_field(const char *name, const char *value, size_t *len)
{
	size_t nl = strlen(name), vl = strlen(value);
	char *t = malloc(nl + vl + 4);

	if (t == NULL)
		return NULL;
	memcpy(t, name, nl);
	t[nl] = ':';
	memcpy(t + nl + 1, value, vl);
	memcpy(t + nl + 1 + vl, "\r\n", 3);
	*len = nl + vl + 3;
	return t;
}

static int
apply_one(struct editor *e, const struct filter_mod *m)
{
	size_t len;
	char *t;

	switch (m->type) {
	case FM_ADDHDR:
	case FM_INSHDR:
		if (m->name == NULL || m->value == NULL)
			return 0;
		if ((t = make_field(m->name, m->value, &len)) == NULL)
			return -1;
		if (field_insert(e, m->type == FM_ADDHDR ? e->n : m->index, t, len) < 0) {
			free(t);
			return -1;
		}
		return 0;
	case FM_CHGHDR: {
		unsigned long seen = 0;
		size_t nl;
		if (m->name == NULL)
			return 0;
		nl = strlen(m->name);
		for (size_t i = 0; i < e->n; i++) {
			if (e->f[i].namelen != nl || strncasecmp(e->f[i].text, m->name, nl) != 0)
				continue;
			if (++seen != (m->index ? m->index : 1))
				continue;
			if (m->value == NULL || m->value[0] == '\0') {
				free(e->f[i].text);
				memmove(e->f + i, e->f + i + 1, (e->n - i - 1) * sizeof(*e->f));
				e->n--;
				return 0;
			}
			if ((t = make_field(m->name, m->value, &len)) == NULL)
				return -1;
			free(e->f[i].text);
			e->f[i].text = t;
			e->f[i].len = len;
			e->f[i].namelen = nl;
			return 0;
		}
		/* no such field: Sendmail and Postfix add it */
		if (m->value == NULL || m->value[0] == '\0')
			return 0;
		if ((t = make_field(m->name, m->value, &len)) == NULL)
			return -1;
		if (field_insert(e, e->n, t, len) < 0) {
			free(t);
			return -1;
		}
		return 0;
	}
	default:
		return 0;
	}
}

int
msgedit_needed(const struct filter_mod *mods, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (mods[i].type == FM_ADDHDR || mods[i].type == FM_INSHDR
		    || mods[i].type == FM_CHGHDR || mods[i].type == FM_REPLBODY)
			return 1;
	return 0;
}

static void
body_crlf(struct msgbuf *out, const unsigned char *b, size_t n)
{
	size_t start = 0;

	for (size_t i = 0; i < n; i++)
		if (b[i] == '\n' && (i == 0 || b[i - 1] != '\r')) {
			msgbuf_add(out, (const char *)b + start, i - start);
			msgbuf_add(out, "\r\n", 2);
			start = i + 1;
		}
	msgbuf_add(out, (const char *)b + start, n - start);
}

static void
copy_out(void *arg, const char *p, size_t n)
{
	msgbuf_add(arg, p, n);
}

int
msgedit_apply(struct msgbuf *in, const struct filter_mod *mods, size_t n, struct msgbuf *out)
{
	struct editor e;
	const struct filter_mod *body = NULL;
	int rc = 0;

	memset(&e, 0, sizeof(e));
	e.at_bol = 1;
	e.out = out;
	for (size_t i = 0; i < n; i++)
		if (mods[i].type == FM_REPLBODY)
			body = &mods[i];
	e.replace_body = body != NULL;

	/*
	 * The headers are collected first, the body copied as it passes; so
	 * the body is written to a side buffer, and the fields put in front.
	 */
	struct msgbuf side;
	if (msgbuf_init(&side, out->mem_max) < 0)
		return -1;
	e.out = &side;
	if (msgbuf_foreach(in, feed, &e) < 0)
		rc = -1;
	cur_finish(&e);
	for (size_t i = 0; i < n && rc == 0 && !e.failed; i++)
		if (apply_one(&e, &mods[i]) < 0)
			rc = -1;
	if (e.failed)
		rc = -1;
	if (rc == 0) {
		for (size_t i = 0; i < e.n; i++) {
			msgbuf_add(out, e.f[i].text, e.f[i].len);
			/* a last field without its CRLF (message without a body) */
			if (e.f[i].len < 2 || e.f[i].text[e.f[i].len - 1] != '\n')
				msgbuf_add(out, "\r\n", 2);
		}
		if (e.had_separator || body || side.len)
			msgbuf_add(out, "\r\n", 2);
		if (body)
			body_crlf(out, body->body, body->body_len);
		else if (msgbuf_foreach(&side, copy_out, out) < 0)
			rc = -1;
		if (out->err)
			rc = -1;
	}
	for (size_t i = 0; i < e.n; i++)
		free(e.f[i].text);
	free(e.f);
	free(e.cur);
	msgbuf_free(&side);
	return rc;
}
