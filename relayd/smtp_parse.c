/*
 * smtp_parse: command lines, MAIL/RCPT arguments, and the strict DATA
 * reader (see smtp_parse.h).
 */
#include "smtp_parse.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
smtp_line_flaws(const char *line, size_t len)
{
	int f = 0;

	for (size_t i = 0; i < len; i++) {
		if (line[i] == '\n')
			f |= LINE_BARE_LF;
		else if (line[i] == '\r')
			f |= LINE_BARE_CR;
		else if (line[i] == '\0')
			f |= LINE_NUL;
	}
	return f;
}

static const struct {
	const char *name;
	enum smtp_verb v;
} verbs[] = {
	{ "HELO", V_HELO }, { "EHLO", V_EHLO }, { "MAIL", V_MAIL }, { "RCPT", V_RCPT },
	{ "DATA", V_DATA }, { "RSET", V_RSET }, { "NOOP", V_NOOP }, { "QUIT", V_QUIT },
	{ "VRFY", V_VRFY }, { "HELP", V_HELP }, { "STARTTLS", V_STARTTLS },
	{ "EXPN", V_EXPN }, { "AUTH", V_AUTH }, { "BDAT", V_BDAT },
};

enum smtp_verb
smtp_verb(const char *line, const char **arg)
{
	size_t vl = strcspn(line, " ");

	*arg = line + vl + (line[vl] == ' ');
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strlen(verbs[i].name) == vl && strncasecmp(line, verbs[i].name, vl) == 0)
			return verbs[i].v;
	return V_UNKNOWN;
}

int
smtp_split_path(const char *arg, const char *kw, char *path, size_t len, const char **params)
{
	size_t kl = strlen(kw);
	const char *p, *e;
	int inq = 0;

	if (strncasecmp(arg, kw, kl) != 0)
		return -1;
	p = arg + kl;
	while (*p == ' ')
		p++;
	if (*p != '<')
		return -1;
	/* the closing '>' outside a quoted string */
	for (e = p + 1; *e; e++) {
		if (inq && *e == '\\' && e[1]) {
			e++;
			continue;
		}
		if (*e == '"')
			inq = !inq;
		else if (!inq && *e == '>')
			break;
		else if (!inq && *e == '<')
			return -1;
	}
	if (*e != '>')
		return -1;
	if ((size_t)(e - p + 1) >= len)
		return -1;
	memcpy(path, p, (size_t)(e - p + 1));
	path[e - p + 1] = '\0';
	e++;
	if (*e && *e != ' ')
		return -1;
	while (*e == ' ')
		e++;
	*params = e;
	return 0;
}

int
smtp_mail_params(const char *params, struct mail_params *out, char *bad, size_t badlen)
{
	out->size = -1;
	out->body8 = 0;
	while (*params) {
		size_t n = strcspn(params, " ");
		char p[64];

		snprintf(bad, badlen, "%.*s", (int)(n > 60 ? 60 : n), params);
		if (n >= sizeof(p))
			return -1;
		memcpy(p, params, n);
		p[n] = '\0';
		if (strncasecmp(p, "SIZE=", 5) == 0) {
			char *end;
			if (!isdigit((unsigned char)p[5]))
				return -1;
			out->size = strtoll(p + 5, &end, 10);
			if (*end != '\0' || n > 25)
				return -1;
		} else if (strcasecmp(p, "BODY=7BIT") == 0) {
			out->body8 = 0;
		} else if (strcasecmp(p, "BODY=8BITMIME") == 0) {
			out->body8 = 1;
		} else {
			return -2;
		}
		params += n;
		while (*params == ' ')
			params++;
	}
	bad[0] = '\0';
	return 0;
}

/* ---------------------------------------------------------------- DATA */

void
data_reader_init(struct data_reader *r, data_sink sink, void *arg)
{
	memset(r, 0, sizeof(*r));
	r->st = DR_BOL;
	r->sink = sink;
	r->arg = arg;
}

/* Header bookkeeping on unstuffed output: count Received: fields. */
static void
header_track(struct data_reader *r, const char *p, size_t n)
{
	for (size_t i = 0; i < n && !r->in_body; i++) {
		char c = p[i];

		if (c == '\n') {
			if (r->hpos == 1 && r->hbuf[0] == '\r')
				r->in_body = 1;         /* the empty line */
			else if (r->hpos >= 9 && memcmp(r->hbuf, "received:", 9) == 0)
				r->received++;
			r->hpos = 0;
			continue;
		}
		if (r->hpos < (int)sizeof(r->hbuf))
			r->hbuf[r->hpos] = (char)tolower((unsigned char)c);
		r->hpos++;
	}
}

static void
out(struct data_reader *r, const char *p, size_t n)
{
	r->size += n;
	if (!r->in_body)
		header_track(r, p, n);
	if (r->sink)
		r->sink(r->arg, p, n);
}

size_t
data_reader_feed(struct data_reader *r, const char *p, size_t n, int *end)
{
	size_t k = 0;

	*end = 0;
	while (k < n) {
		char c = p[k];

		switch (r->st) {
		case DR_TEXT: {
			size_t run = 0;
			while (k + run < n && p[k + run] != '\r' && p[k + run] != '\n'
			       && p[k + run] != '\0')
				run++;
			if (run) {
				out(r, p + k, run);
				k += run;
				continue;
			}
			break;
		}
		case DR_BOL:
			if (c == '.') {
				r->st = DR_DOT;
				k++;
				continue;
			}
			break;
		case DR_DOT:
			k++;
			if (c == '\r') {
				r->st = DR_DOTCR;
				continue;
			}
			if (c == '.') {         /* stuffed dot */
				out(r, ".", 1);
				r->st = DR_TEXT;
				continue;
			}
			if (c == '\n') {
				r->flaws |= DATA_BARE_LF;
				r->st = DR_TEXT;
				continue;
			}
			if (c == '\0')
				r->flaws |= DATA_NUL;
			/* "." then text: the dot is dropped (§4.5.2) */
			out(r, &c, 1);
			r->st = DR_TEXT;
			continue;
		case DR_DOTCR:
			k++;
			if (c == '\n') {
				*end = 1;
				r->st = DR_BOL;
				return k;
			}
			/* ".<CR>x": a bare CR, never an end */
			r->flaws |= DATA_BARE_CR;
			r->st = DR_TEXT;
			k--;            /* x is read as text */
			continue;
		case DR_CR:
			if (c == '\n') {
				out(r, "\r\n", 2);
				r->st = DR_BOL;
				k++;
				continue;
			}
			r->flaws |= DATA_BARE_CR;
			r->st = DR_TEXT;
			break;          /* c read as text below */
		}
		/* c at the start of a line or after a bare CR */
		k++;
		if (c == '\r') {
			r->st = DR_CR;
		} else if (c == '\n') {
			r->flaws |= DATA_BARE_LF;   /* never a line end */
			r->st = DR_TEXT;
		} else {
			if (c == '\0')
				r->flaws |= DATA_NUL;
			out(r, &c, 1);
			r->st = DR_TEXT;
		}
	}
	return k;
}

void
smtp_dot_stuff(const char *p, size_t n, int *bol, data_sink sink, void *arg)
{
	size_t start = 0;

	for (size_t i = 0; i < n; i++) {
		if (*bol && p[i] == '.') {
			if (i > start)
				sink(arg, p + start, i - start);
			sink(arg, ".", 1);
			start = i;      /* the dot itself goes out with the run */
		}
		*bol = p[i] == '\n';
	}
	if (n > start)
		sink(arg, p + start, n - start);
}
