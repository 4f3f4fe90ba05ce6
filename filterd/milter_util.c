/*
 * milter_util: the small translations between policy output and what
 * libmilter and MTAs accept: SMTP reply lines for smfi_setreply(),
 * header folding for smfi_insheader(), and bounded text for log lines.
 */
#include "milter.h"
#include "log.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_OCTETS 998     /* RFC 5322 §2.1.1, without CRLF */
#define FOLD_WIDTH 78           /* the "SHOULD" width of RFC 5322 */

int
milter_setreply(SMFICTX *ctx, const char *line)
{
	char rcode[4], xcode[32], text[1100];
	const char *p = line;
	size_t n = 0, o = 0;

	if (line == NULL || strlen(line) < 3 || (p[0] != '4' && p[0] != '5')
	    || !isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2])
	    || (p[3] != ' ' && p[3] != '\0'))
		return -1;
	memcpy(rcode, p, 3);
	rcode[3] = '\0';
	p += 3;
	while (*p == ' ')
		p++;

	/* An enhanced status code of the same class, if present. */
	xcode[0] = '\0';
	if (p[0] == rcode[0] && p[1] == '.') {
		while ((isdigit((unsigned char)p[n]) || p[n] == '.') && n + 1 < sizeof(xcode))
			n++;
		if (p[n] == ' ' || p[n] == '\0') {
			memcpy(xcode, p, n);
			xcode[n] = '\0';
			p += n;
			while (*p == ' ')
				p++;
		}
	}

	/* Sendmail treats the text as a format: a lone '%' would eat it. */
	for (; *p && o + 3 < sizeof(text); p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '%')
			text[o++] = '%';
		text[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	text[o] = '\0';

	if (smfi_setreply(ctx, rcode, xcode[0] ? xcode : NULL,
	                  text[0] ? text : NULL) != MI_SUCCESS)
		return -1;
	return 0;
}

static int
put(char *out, size_t len, size_t *o, const char *s, size_t n)
{
	if (*o + n + 1 > len)
		return -1;
	memcpy(out + *o, s, n);
	*o += n;
	out[*o] = '\0';
	return 0;
}

char *
milter_fold(const char *name, const char *value, char *out, size_t len)
{
	size_t nlen = strlen(name), vlen = strlen(value), o = 0, i = 0;
	size_t col = nlen + 2;

	if (len == 0)
		return NULL;
	out[0] = '\0';
	if (col + vlen <= LINE_MAX_OCTETS)
		return put(out, len, &o, value, vlen) < 0 ? NULL : out;

	/*
	 * Break before a space or tab, so that unfolding (dropping the line
	 * break only) gives back the value exactly.  A run without white
	 * space cannot be folded and is left whole.
	 */
	while (i < vlen) {
		size_t j, best = 0, first = 0;

		if (col + (vlen - i) <= FOLD_WIDTH)
			break;
		for (j = i + 1; j < vlen; j++) {
			if (value[j] != ' ' && value[j] != '\t')
				continue;
			if (col + (j - i) <= FOLD_WIDTH)
				best = j;
			else {
				first = j;
				break;
			}
		}
		j = best ? best : first;
		if (j == 0)
			break;
		if (put(out, len, &o, value + i, j - i) < 0 || put(out, len, &o, "\n", 1) < 0)
			return NULL;
		i = j;
		col = 0;
	}
	return put(out, len, &o, value + i, vlen - i) < 0 ? NULL : out;
}

void
tb_init(struct textbuf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void
tb_add(struct textbuf *b, const char *s)
{
	size_t n = strlen(s);

	if (b->truncated)
		return;
	if (b->len + n > b->max) {
		n = b->max > b->len ? b->max - b->len : 0;
		b->truncated = 1;
	}
	if (b->len + n + 4 > b->cap) {
		size_t cap = b->cap ? b->cap : 128;
		while (cap < b->len + n + 4)
			cap *= 2;
		char *ns = realloc(b->s, cap);
		if (ns == NULL) {
			b->truncated = 1;
			return;
		}
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	if (b->truncated) {
		memcpy(b->s + b->len, "...", 3);
		b->len += 3;
	}
	b->s[b->len] = '\0';
}

void
tb_kv(struct textbuf *b, const char *key, const char *value)
{
	char q[1200];

	tb_add(b, " ");
	tb_add(b, key);
	tb_add(b, "=");
	tb_add(b, log_quote(q, sizeof(q), value));
}

void
tb_free(struct textbuf *b)
{
	free(b->s);
	memset(b, 0, sizeof(*b));
}
