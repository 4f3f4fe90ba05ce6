/*
 * addr: RFC 5321 envelope address parsing.  Strict on syntax, because an
 * address that two programs split differently is how relays get opened:
 * the local part is a Dot-string of atext or a Quoted-string, the domain
 * is LDH labels or an address literal, and nothing else is accepted.
 */
#include "addr.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int
is_atext(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

void
addr_domain_normalize(char *d)
{
	size_t n = strlen(d);

	if (n > 1 && d[n - 1] == '.')
		d[--n] = '\0';
	if (d[0] != '[')
		for (char *p = d; *p; p++)
			*p = (char)tolower((unsigned char)*p);
}

int
addr_domain_valid(const char *d)
{
	size_t n = strlen(d);

	if (n == 0 || n > 255)
		return 0;
	if (d[0] == '[')
		return n > 2 && d[n - 1] == ']' && strchr(d + 1, '[') == NULL
		       && strchr(d, ']') == d + n - 1;
	for (const char *p = d; *p; ) {
		const char *q = p;
		while (isalnum((unsigned char)*q) || *q == '-')
			q++;
		size_t lab = (size_t)(q - p);
		if (lab == 0 || lab > 63 || *p == '-' || q[-1] == '-')
			return 0;
		if (*q == '\0')
			return 1;
		if (*q != '.')
			return 0;
		p = q + 1;
		if (*p == '\0')
			return 1;   /* one trailing dot: the root */
	}
	return 0;
}

int
addr_parse(const char *s, struct mailbox *out, const char **why)
{
	const char *p, *end;
	size_t o = 0;
	const char *dummy;

	if (why == NULL)
		why = &dummy;
	memset(out, 0, sizeof(*out));
	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (end > s && *s == '<') {
		if (end[-1] != '>') {
			*why = "missing '>'";
			return -1;
		}
		s++;
		end--;
	}
	if (end - s > ADDR_MAX + 256) {
		*why = "address too long";
		return -1;
	}
	if (s == end) {
		out->null = 1;
		return 0;
	}
	p = s;
	/* A-d-l: "@one,@two:" — parsed so it can be recognised, never used. */
	if (*p == '@' && memchr(p, ':', (size_t)(end - p)) != NULL) {
		const char *colon = memchr(p, ':', (size_t)(end - p));
		for (const char *q = p; q < colon; q++)
			if (*q == '"' || *q == '<' || *q == '>' || *q == ' ') {
				*why = "bad source route";
				return -1;
			}
		out->flags |= ADDR_ROUTED;
		p = colon + 1;
	}
	if (p < end && *p == '"') {
		out->flags |= ADDR_QUOTED;
		for (p++; p < end && *p != '"'; p++) {
			unsigned char c = (unsigned char)*p;
			if (c == '\\') {
				if (++p == end) {
					*why = "unterminated quoted string";
					return -1;
				}
				c = (unsigned char)*p;
			}
			if (c < 0x20 || c > 0x7e) {
				*why = "bad character in local part";
				return -1;
			}
			if (c == '@')
				out->flags |= ADDR_LOCAL_AT;
			if (o >= 64) {
				*why = "local part too long";
				return -1;
			}
			out->local[o++] = (char)c;
		}
		if (p == end) {
			*why = "unterminated quoted string";
			return -1;
		}
		p++;
	} else {
		/*
		 * Dots anywhere and 8-bit bytes (SMTPUTF8) are accepted as Postfix
		 * does: real users have such addresses, and none of them can route
		 * mail anywhere.  The routing characters are flagged below.
		 */
		for (; p < end && *p != '@'; p++) {
			unsigned char c = (unsigned char)*p;
			if (c != '.' && !is_atext(c) && c < 0x80) {
				*why = "bad character in local part";
				return -1;
			}
			if (o >= 64) {
				*why = "local part too long";
				return -1;
			}
			out->local[o++] = (char)c;
		}
	}
	out->local[o] = '\0';
	if (strchr(out->local, '%'))
		out->flags |= ADDR_PERCENT;
	if (strchr(out->local, '!'))
		out->flags |= ADDR_BANG;
	if (p == end) {
		/* RFC 5321 allows a bare "Postmaster" recipient and nothing else. */
		if (strcasecmp(out->local, "postmaster") == 0
		    && !(out->flags & (ADDR_QUOTED | ADDR_ROUTED)))
			return 0;
		*why = "missing domain";
		return -1;
	}
	if (*p != '@') {
		*why = "junk after local part";
		return -1;
	}
	p++;
	size_t dlen = (size_t)(end - p);
	if (dlen == 0 || dlen > 255) {
		*why = "bad domain";
		return -1;
	}
	memcpy(out->domain, p, dlen);
	out->domain[dlen] = '\0';
	if (!addr_domain_valid(out->domain)) {
		*why = "bad domain";
		return -1;
	}
	if (out->domain[0] == '[')
		out->flags |= ADDR_LITERAL;
	addr_domain_normalize(out->domain);
	return 0;
}
