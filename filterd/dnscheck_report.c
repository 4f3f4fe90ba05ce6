/*
 * dnscheck_report: spfgate-dnscheck's output.  A check prints its line
 * at once (a slow name server shows where it is stuck); the records to
 * publish are kept and printed after a summary, as zone-file lines with
 * ";" comments so the block can be pasted into a zone as it stands.
 * DNS data is untrusted: anything unprintable becomes '?' in a line and
 * \DDD in a record, so every line stays one line.
 */
#include "dnscheck.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_name[] = { "OK", "WARN", "FAIL", "INFO" };

static void
put_clean(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		putchar(*p >= 0x20 && *p < 0x7f ? *p : '?');
}

void
dc_line(struct dnscheck *c, enum dc_status st, const char *subject,
        const char *check, const char *fmt, ...)
{
	char detail[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	if (st != DC_INFO)
		c->count[st]++;
	printf("%-4s ", status_name[st]);
	put_clean(subject);
	putchar(' ');
	put_clean(check);
	fputs(": ", stdout);
	put_clean(detail);
	putchar('\n');
	fflush(stdout);
}

void
dc_publish(struct dnscheck *c, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	for (char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
			*p = '?';
	/* the same advice for two domains is printed once */
	for (size_t i = 0; i < c->publish.n; i++)
		if (strcmp(c->publish.v[i], line) == 0)
			return;
	strlist_add(&c->publish, line);
}

void
dc_publish_txt(struct dnscheck *c, const char *owner, const char *text)
{
	size_t len = strlen(text);
	/* worst case: every byte \DDD, plus quotes and a space per string */
	size_t cap = len * 4 + (len / 255 + 1) * 3 + 600;
	char *out = malloc(cap), *o = out;

	if (out == NULL)
		return;
	o += snprintf(o, cap, "%s. %d IN TXT", owner, DC_TTL);
	for (size_t i = 0; i < len || i == 0; ) {
		size_t end = i + 255 < len ? i + 255 : len;
		/* split after a space where there is one, as people do */
		for (size_t k = end; end < len && k > i + 1; k--)
			if (text[k - 1] == ' ') {
				end = k;
				break;
			}
		*o++ = ' ';
		*o++ = '"';
		for (; i < end; i++) {
			unsigned char ch = (unsigned char)text[i];
			if (ch == '"' || ch == '\\') {
				*o++ = '\\';
				*o++ = (char)ch;
			} else if (ch < 0x20 || ch >= 0x7f)
				o += sprintf(o, "\\%03u", ch);
			else
				*o++ = (char)ch;
		}
		*o++ = '"';
		if (len == 0)
			break;
	}
	*o = '\0';
	for (size_t i = 0; i < c->publish.n; i++)
		if (strcmp(c->publish.v[i], out) == 0) {
			free(out);
			return;
		}
	strlist_add(&c->publish, out);
	free(out);
}

int
dc_finish(struct dnscheck *c)
{
	printf("\n%u OK, %u WARN, %u FAIL\n", c->count[DC_OK], c->count[DC_WARN],
	       c->count[DC_FAIL]);
	if (c->publish.n) {
		printf("\n; DNS records to publish\n");
		for (size_t i = 0; i < c->publish.n; i++)
			printf("%s\n", c->publish.v[i]);
	}
	fflush(stdout);
	return c->count[DC_FAIL] ? 1 : 0;
}
