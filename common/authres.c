/*
 * authres: safe rendering of values in Received-SPF and
 * Authentication-Results headers (see authres.h).
 */
#include "authres.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static void
put(char *buf, size_t len, size_t *o, char c)
{
	if (*o + 1 < len)
		buf[(*o)++] = c;
	buf[*o < len ? *o : len - 1] = '\0';
}

static int
is_atext(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* dot-atom, with '@' allowed once (RFC 8601 pvalue local-part@domain). */
static int
is_dot_atom(const char *s, size_t max)
{
	int prev_dot = 1, ats = 0;

	if (*s == '\0' || strlen(s) > max)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '.' || *p == '@') {
			if (prev_dot)
				return 0;
			if (*p == '@' && ++ats > 1)
				return 0;
			prev_dot = 1;
		} else if (is_atext(*p)) {
			prev_dot = 0;
		} else {
			return 0;
		}
	}
	return !prev_dot;
}

void
authres_value(char *buf, size_t len, const char *s, size_t max)
{
	size_t o = strlen(buf), n = 0;

	if (s == NULL)
		s = "";
	if (is_dot_atom(s, max)) {
		for (; *s; s++)
			put(buf, len, &o, *s);
		return;
	}
	put(buf, len, &o, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
		if (n == max) {
			put(buf, len, &o, '.'), put(buf, len, &o, '.'), put(buf, len, &o, '.');
			break;
		}
		if (*p == '"' || *p == '\\')
			put(buf, len, &o, '\\'), put(buf, len, &o, (char)*p);
		else if (*p < 0x20 || *p >= 0x7f)
			put(buf, len, &o, '?');
		else
			put(buf, len, &o, (char)*p);
	}
	put(buf, len, &o, '"');
}

void
authres_comment(char *buf, size_t len, const char *s, size_t max)
{
	size_t o = strlen(buf), n = 0;

	if (s == NULL)
		s = "";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
		if (n == max) {
			put(buf, len, &o, '.'), put(buf, len, &o, '.'), put(buf, len, &o, '.');
			break;
		}
		if (*p == '(' || *p == ')' || *p == '\\')
			put(buf, len, &o, '\\'), put(buf, len, &o, (char)*p);
		else if (*p < 0x20 || *p >= 0x7f)
			put(buf, len, &o, '?');
		else
			put(buf, len, &o, (char)*p);
	}
}

/* Skip white space and RFC 5322 comments (nested, with quoted-pairs). */
static const char *
skip_cfws(const char *p)
{
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p != '(')
			return p;
		int depth = 0;
		for (; *p; p++) {
			if (*p == '\\' && p[1])
				p++;
			else if (*p == '(')
				depth++;
			else if (*p == ')' && --depth == 0) {
				p++;
				break;
			}
		}
		if (depth > 0)
			return p;
	}
}

int
authres_is_ours(const char *value, const char *authserv_id)
{
	char id[256];
	size_t n = 0;
	const char *p = skip_cfws(value);

	/* The authserv-id is a token or a quoted-string (RFC 8601 §2.2). */
	if (*p == '"') {
		for (p++; *p && *p != '"' && n + 1 < sizeof(id); p++) {
			if (*p == '\\' && p[1])
				p++;
			id[n++] = *p;
		}
		if (*p != '"')
			return 0;
		p++;
	} else {
		while (*p && *p != ';' && *p != '(' && *p != ' ' && *p != '\t'
		       && *p != '\r' && *p != '\n' && n + 1 < sizeof(id))
			id[n++] = *p++;
	}
	id[n] = '\0';
	if (n && id[n - 1] == '.')
		id[--n] = '\0';
	if (strcasecmp(id, authserv_id) != 0)
		return 0;
	/* An optional version number, then ';' or the end (a bare "none"). */
	p = skip_cfws(p);
	while (isdigit((unsigned char)*p))
		p++;
	p = skip_cfws(p);
	return *p == ';' || *p == '\0';
}
