/*
 * sendmail_input: the message on standard input, as lines.
 *
 * Programs hand sendmail(1) text with LF line ends, sometimes CRLF,
 * lines of any length and any bytes.  relayd reads SMTP strictly (a
 * bare CR or a NUL is refused as smuggling), so the text is made plain
 * here, once: LF and CRLF end a line, a CR alone ends one too (a
 * progress meter in cron output reads better as lines than as one
 * line), NUL bytes are dropped.  Without -i a line holding only "."
 * ends the message, as it always has for sendmail.
 */
#include "sendmail.h"

#include <stdlib.h>
#include <string.h>

static int
grow(struct msgtext *t, size_t more)
{
	if (t->len + more <= t->cap)
		return 0;
	size_t cap = t->cap ? t->cap : 65536;
	while (cap < t->len + more)
		cap *= 2;
	char *p = realloc(t->p, cap);
	if (p == NULL)
		return -1;
	t->p = p;
	t->cap = cap;
	return 0;
}

int
msg_append_line(struct msgtext *t, const char *p, size_t n)
{
	/* a CR may become a line end: at most n + 1 bytes */
	if (grow(t, n + 1) < 0)
		return IN_NOMEM;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\0')
			continue;
		if (c == '\r')
			c = '\n';
		else if (c >= 0x80)
			t->eight_bit = 1;
		t->p[t->len++] = (char)c;
	}
	t->p[t->len++] = '\n';
	return IN_OK;
}

int
msg_read(FILE *in, int dot_ends, size_t limit, struct msgtext *t)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	int rc = IN_OK;

	while ((got = getline(&line, &cap, in)) > 0) {
		size_t n = (size_t)got;
		if (line[n - 1] == '\n')
			n--;
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if (dot_ends && n == 1 && line[0] == '.')
			break;
		if ((rc = msg_append_line(t, line, n)) != IN_OK)
			break;
		if (t->len > limit) {
			rc = IN_TOOBIG;
			break;
		}
	}
	if (rc == IN_OK && ferror(in))
		rc = IN_IOERR;
	free(line);
	return rc;
}

void
msg_free(struct msgtext *t)
{
	free(t->p);
	memset(t, 0, sizeof(*t));
}
