/*
 * sendmail_wire: plain lines -> the text of SMTP DATA.
 *
 * Each line gets CRLF and a doubled leading dot.  SMTP lines hold at
 * most 998 octets (RFC 5321 4.5.3.1.6), and a program may write longer
 * ones; such a line is split, never sent whole and never refused:
 *   - in the header section it is folded before the last space or tab
 *     within the limit, past the first 78 octets (an RFC 5322 fold: the
 *     field means the same);
 *     with no white space to fold at, it is broken and the rest goes on
 *     a continuation line that starts with one added space;
 *   - in the body it is broken after 998 octets, moved back to the start
 *     of a UTF-8 character so that no character is cut in two.
 * The same pass counts the octets, for MAIL's SIZE parameter.
 */
#include "sendmail.h"

#include <string.h>

/* A fold point this close to the start gains nothing: the rest is as
 * long as the line was. */
#define FOLD_MIN 78

void
wire_init(struct wire *w, wire_sink sink, void *arg)
{
	memset(w, 0, sizeof(*w));
	w->sink = sink;
	w->arg = arg;
}

int
wire_flush(struct wire *w)
{
	if (w->n && w->sink && !w->err && w->sink(w->arg, w->buf, w->n) < 0)
		w->err = 1;
	w->n = 0;
	return w->err ? -1 : 0;
}

void
wire_raw(struct wire *w, const char *p, size_t len)
{
	w->bytes += len;
	if (w->sink == NULL)
		return;
	while (len) {
		size_t k = sizeof(w->buf) - w->n;
		if (k > len)
			k = len;
		memcpy(w->buf + w->n, p, k);
		w->n += k;
		p += k;
		len -= k;
		if (w->n == sizeof(w->buf))
			wire_flush(w);
	}
}

/* One wire line: pre (0 or 1 added space), then p[0..n), CRLF. */
static void
put_line(struct wire *w, int pre, const char *p, size_t n)
{
	if (pre)
		wire_raw(w, " ", 1);
	else if (n > 0 && p[0] == '.')
		wire_raw(w, ".", 1);
	wire_raw(w, p, n);
	wire_raw(w, "\r\n", 2);
}

/* n cut back to the start of a UTF-8 character (at most 3 octets). */
static size_t
char_boundary(const char *p, size_t n)
{
	size_t k = n;

	while (k > n - 3 && ((unsigned char)p[k] & 0xC0) == 0x80)
		k--;
	return ((unsigned char)p[k] & 0xC0) == 0x80 ? n : k;
}

void
wire_line(struct wire *w, const char *p, size_t len, int header)
{
	int pre = 0;

	while (len + (size_t)pre > SM_LINE_MAX) {
		size_t room = SM_LINE_MAX - (size_t)pre, cut = 0;
		int next_pre = 0;

		if (header)
			for (size_t i = room; i > FOLD_MIN; i--)
				if (p[i] == ' ' || p[i] == '\t') {
					cut = i;    /* the rest starts with this white space */
					break;
				}
		if (cut == 0) {
			cut = char_boundary(p, room);
			next_pre = header;
		}
		put_line(w, pre, p, cut);
		p += cut;
		len -= cut;
		pre = next_pre;
	}
	put_line(w, pre, p, len);
}

static void
lines(struct wire *w, const char *p, size_t n, int header)
{
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t k = nl ? (size_t)(nl - p) : n;
		wire_line(w, p, k, header);
		if (nl == NULL)
			break;
		p += k + 1;
		n -= k + 1;
	}
}

void
wire_message(struct wire *w, const struct message *m, const struct added *a)
{
	if (a && a->top)
		lines(w, a->top, strlen(a->top), 1);
	for (size_t i = 0; i < m->nh; i++)
		if (!m->h[i].drop)
			lines(w, m->text.p + m->h[i].off, m->h[i].len, 1);
	if (a && a->end)
		lines(w, a->end, strlen(a->end), 1);
	wire_line(w, "", 0, 0);
	lines(w, m->text.p + m->body, m->text.len - m->body, 0);
}
