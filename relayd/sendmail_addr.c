/*
 * sendmail_addr: RFC 5322 address lists, as written in To: headers and
 * on sendmail's command line, turned into envelope addresses.
 *
 * One pass over the text keeps track of quoted strings, comments (which
 * nest and may hold commas), angle brackets and groups: a comma or a
 * group's ';' ends an item; "group name:" and display names are dropped;
 * an item's address is what stands in <...>, else the item itself with
 * its white space removed.  Each address is then checked with the
 * envelope parser (common/addr.c) and written back in one canonical
 * form, so nothing a header says reaches the SMTP dialogue unchecked.
 */
#include "sendmail.h"
#include "addr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
is_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
	       || c >= 0x80 || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* A dot-atom local part goes as it is; anything else is quoted. */
static int
local_is_dot_atom(const char *l)
{
	if (*l == '\0' || *l == '.' || l[strlen(l) - 1] == '.' || strstr(l, ".."))
		return 0;
	for (; *l; l++)
		if (*l != '.' && !is_atext((unsigned char)*l))
			return 0;
	return 1;
}

/* s (an addr-spec, no white space) -> "local@domain" in out. */
static int
canonical(const char *s, const char *domain, char *out, size_t outlen,
          char *err, size_t errlen)
{
	char with[ADDR_MAX + 300];
	struct mailbox mb;
	const char *why;
	int quoted = 0, has_at = 0;

	for (const char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c == 0x7f) {
			snprintf(err, errlen, "control character in address");
			return -1;
		}
		if (c == '\\' && quoted && p[1])
			p++;
		else if (c == '"')
			quoted = !quoted;
		else if (c == '@' && !quoted)
			has_at = 1;
	}
	if (snprintf(with, sizeof(with), "%s%s%s", s, has_at ? "" : "@",
	             has_at ? "" : domain) >= (int)sizeof(with)) {
		snprintf(err, errlen, "address too long");
		return -1;
	}
	if (addr_parse(with, &mb, &why) < 0 || mb.null || mb.domain[0] == '\0') {
		snprintf(err, errlen, "bad address %.200s: %s", s,
		         mb.null ? "empty" : mb.domain[0] ? why : "missing domain");
		return -1;
	}
	size_t o = 0;
	int n;
	if (local_is_dot_atom(mb.local)) {
		n = snprintf(out, outlen, "%s@%s", mb.local, mb.domain);
	} else {
		out[o++] = '"';
		for (const char *p = mb.local; *p && o + 4 < outlen; p++) {
			if (*p == '"' || *p == '\\')
				out[o++] = '\\';
			out[o++] = *p;
		}
		n = snprintf(out + o, outlen - o, "\"@%s", mb.domain);
	}
	if (n < 0 || (size_t)n >= outlen - o) {
		snprintf(err, errlen, "address too long");
		return -1;
	}
	return 0;
}

struct item {
	char text[ADDR_MAX + 300];  /* the item without white space */
	size_t tn;
	char angle[ADDR_MAX + 300];
	size_t an;
	int in_angle, had_angle, too_long;
};

static void
put(char *buf, size_t *n, size_t cap, char c, int *too_long)
{
	if (*n + 1 >= cap) {
		*too_long = 1;
		return;
	}
	buf[(*n)++] = c;
	buf[*n] = '\0';
}

static int
finish(struct item *it, const char *domain, struct strlist *out, char *err, size_t errlen)
{
	char addr[ADDR_MAX + 320];
	const char *s;
	int rc = 0;

	if (it->too_long) {
		snprintf(err, errlen, "address too long");
		rc = -1;
	} else if (it->in_angle) {
		snprintf(err, errlen, "missing '>' in %.200s", it->angle);
		rc = -1;
	} else {
		s = it->had_angle ? it->angle : it->text;
		if (it->had_angle && s[0] == '@' && strchr(s, ':'))
			s = strchr(s, ':') + 1;      /* obsolete source route */
		if (*s != '\0') {
			rc = canonical(s, domain, addr, sizeof(addr), err, errlen);
			if (rc == 0 && !strlist_contains_ci(out, addr) && strlist_add(out, addr) < 0) {
				snprintf(err, errlen, "out of memory");
				rc = -1;
			}
		}
	}
	memset(it, 0, sizeof(*it));
	return rc;
}

int
addrlist_parse(const char *s, const char *domain, struct strlist *out,
               char *err, size_t errlen)
{
	struct item *it = calloc(1, sizeof(*it));
	int quoted = 0, comment = 0, literal = 0, rc = 0;

	if (it == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (const char *p = s; rc == 0; p++) {
		char c = *p;
		char *buf = it->in_angle ? it->angle : it->text;
		size_t *n = it->in_angle ? &it->an : &it->tn;

		if (c == '\0') {
			if (quoted || comment || literal) {
				snprintf(err, errlen, "unterminated %s in %.200s",
				         quoted ? "quoted string" : comment ? "comment" : "domain literal", s);
				rc = -1;
				break;
			}
			rc = finish(it, domain, out, err, errlen);
			break;
		}
		if (comment) {
			if (c == '\\' && p[1])
				p++;
			else if (c == '(')
				comment++;
			else if (c == ')')
				comment--;
			continue;
		}
		if (literal && c != '\0') {
			/* a domain literal: "[IPv6:::1]" holds colons */
			put(buf, n, sizeof(it->text), c, &it->too_long);
			literal = c != ']';
			continue;
		}
		if (quoted) {
			put(buf, n, sizeof(it->text), c, &it->too_long);
			if (c == '\\' && p[1])
				put(buf, n, sizeof(it->text), *++p, &it->too_long);
			else if (c == '"')
				quoted = 0;
			continue;
		}
		switch (c) {
		case '(':
			comment = 1;
			break;
		case '"':
			quoted = 1;
			put(buf, n, sizeof(it->text), c, &it->too_long);
			break;
		case '[':
			literal = 1;
			put(buf, n, sizeof(it->text), c, &it->too_long);
			break;
		case ' ': case '\t': case '\r': case '\n':
			break;
		case '<':
			/* what came before was a display name */
			it->in_angle = it->had_angle = 1;
			it->an = 0;
			it->angle[0] = '\0';
			break;
		case '>':
			if (!it->in_angle) {
				snprintf(err, errlen, "stray '>' in %.200s", s);
				rc = -1;
			}
			it->in_angle = 0;
			break;
		case ':':
			if (it->in_angle) {   /* "<@relay:u@d>", a source route */
				put(buf, n, sizeof(it->text), c, &it->too_long);
				break;
			}
			/* "group name:" -- the name is not an address */
			it->tn = 0;
			it->text[0] = '\0';
			break;
		case ',':
		case ';':
			if (it->in_angle) {
				put(buf, n, sizeof(it->text), c, &it->too_long);
				break;
			}
			rc = finish(it, domain, out, err, errlen);
			break;
		default:
			put(buf, n, sizeof(it->text), c, &it->too_long);
		}
	}
	free(it);
	return rc;
}

int
addr_envelope(const char *s, const char *domain, char *out, size_t outlen,
              char *err, size_t errlen)
{
	struct strlist l = { 0 };
	const char *p = s;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || strcmp(p, "<>") == 0) {
		snprintf(out, outlen, "%s", "");
		return 0;
	}
	if (addrlist_parse(s, domain, &l, err, errlen) < 0) {
		strlist_free(&l);
		return -1;
	}
	if (l.n != 1) {
		snprintf(err, errlen, "expected one address: %.200s", s);
		strlist_free(&l);
		return -1;
	}
	snprintf(out, outlen, "%s", l.v[0]);
	strlist_free(&l);
	return 0;
}
