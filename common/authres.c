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

int
authres_is_ours(const char *value, const char *authserv_id)
{
	size_t n = strlen(authserv_id);

	while (*value == ' ' || *value == '\t' || *value == '\r' || *value == '\n')
		value++;
	if (strncasecmp(value, authserv_id, n) != 0)
		return 0;
	value += n;
	/* A trailing dot on the id, then an optional version, then ';'. */
	if (*value == '.')
		value++;
	while (*value == ' ' || *value == '\t' || *value == '\r' || *value == '\n'
	       || isdigit((unsigned char)*value))
		value++;
	return *value == ';' || *value == '\0';
}
