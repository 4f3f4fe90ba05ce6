/*
 * spf_grammar: strict RFC 7208 record parser.
 *
 * Terms are split on SP only (any other byte, control or 8-bit, makes the
 * term invalid).  A token is a modifier when it starts with a name
 * (ALPHA *(ALPHA / DIGIT / "-" / "_" / ".")) directly followed by '=';
 * everything else is a directive.  exp= and redirect= take a domain-spec
 * and may appear once each; unknown modifiers need a valid macro-string.
 */
#include <config.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "spf_grammar.h"
#include "spf_macro.h"

int spf_is_spf1(const char *txt, size_t len)
{
	if (len < 6 || strncasecmp(txt, "v=spf1", 6) != 0)
		return 0;
	return len == 6 || txt[6] == ' ';
}

static int is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z');
}

static int is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int toplabel_ok(const char *s, size_t n)
{
	int has_alpha = 0, has_dash = 0;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '-')
			has_dash = 1;
		else if (is_alpha(c))
			has_alpha = 1;
		else if (!is_alnum(c))
			return 0;
	}
	if (!has_dash)
		return has_alpha;
	return is_alnum((unsigned char)s[0]) && is_alnum((unsigned char)s[n - 1]);
}

int spf_domain_spec_check(const char *s, size_t len)
{
	if (len == 0 || spf_macro_check(s, len, SPF_MACRO_DOMAIN))
		return -1;
	/* Find where the trailing run of literal characters starts. */
	size_t i = 0, tail = 0;
	while (i < len) {
		if (s[i] != '%') {
			i++;
			continue;
		}
		if (s[i + 1] == '{') {
			const char *close = memchr(s + i, '}', len - i);
			i = (size_t)(close - s) + 1;     /* checked above */
		} else {
			i += 2;
		}
		tail = i;
	}
	if (tail == len)
		return 0;                   /* domain-end = macro-expand */
	size_t end = len;
	if (s[end - 1] == '.')
		end--;
	size_t j = end;
	while (j > tail && s[j - 1] != '.')
		j--;
	if (j == tail || s[j - 1] != '.')
		return -1;                  /* no "." toplabel */
	return toplabel_ok(s + j, end - j) ? 0 : -1;
}

/* "/" cidr at s[0..n): digits without a leading zero, at most max. */
static int parse_cidr(const char *s, size_t n, int max)
{
	if (n == 0 || n > 3)
		return -1;
	if (s[0] == '0' && n > 1)
		return -1;
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= max ? v : -1;
}

/* Strip a dual-cidr-length from the end of s[0..*n); -1 when malformed. */
static int strip_dual_cidr(const char *s, size_t *n, int *c4, int *c6)
{
	size_t k = *n;
	while (k > 0 && s[k - 1] >= '0' && s[k - 1] <= '9')
		k--;
	if (k == *n || k == 0 || s[k - 1] != '/')
		return 0;                   /* no cidr at all */
	if (k >= 2 && s[k - 2] == '/') {
		*c6 = parse_cidr(s + k, *n - k, 128);
		if (*c6 < 0)
			return -1;
		*n = k - 2;
		k = *n;
		while (k > 0 && s[k - 1] >= '0' && s[k - 1] <= '9')
			k--;
		if (k == *n || k == 0 || s[k - 1] != '/')
			return 0;
	}
	*c4 = parse_cidr(s + k, *n - k, 32);
	if (*c4 < 0)
		return -1;
	*n = k - 1;
	return 0;
}

static int ip4_network_ok(const char *s, size_t n, struct in_addr *out)
{
	char buf[16];
	int parts = 0;
	size_t i = 0;
	while (i < n) {
		size_t st = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		size_t dl = i - st;
		if (dl == 0 || dl > 3 || (dl > 1 && s[st] == '0'))
			return -1;
		if (atoi(s + st) > 255)     /* at most 3 digits then a non-digit */
			return -1;
		parts++;
		if (i < n) {
			if (s[i] != '.' || parts == 4)
				return -1;
			i++;
			if (i == n)
				return -1;
		}
	}
	if (parts != 4 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET, buf, out) == 1 ? 0 : -1;
}

static int ip6_network_ok(const char *s, size_t n, struct in6_addr *out)
{
	char buf[64];
	if (n == 0 || n >= sizeof(buf))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
			return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

static const struct {
	const char *name;
	enum spf_mech mech;
} mechs[] = {
	{ "all", SPF_MECH_ALL }, { "include", SPF_MECH_INCLUDE },
	{ "a", SPF_MECH_A }, { "mx", SPF_MECH_MX }, { "ptr", SPF_MECH_PTR },
	{ "ip4", SPF_MECH_IP4 }, { "ip6", SPF_MECH_IP6 },
	{ "exists", SPF_MECH_EXISTS },
};

/* Parse one directive at r->text[off..off+n). */
static int parse_directive(struct spf_record *r, size_t off, size_t n,
                           struct spf_term *t, char *err, size_t errlen)
{
	const char *s = r->text + off;
	memset(t, 0, sizeof(*t));
	t->cidr4 = t->cidr6 = -1;
	t->text.off = off;
	t->text.len = n;
	t->qualifier = '+';
	size_t i = 0;
	if (s[0] != '\0' && strchr("+-~?", s[0])) {
		t->qualifier = s[0];
		i = 1;
	}
	size_t ns = i;
	while (i < n && is_alnum((unsigned char)s[i]))
		i++;
	size_t nl = i - ns;
	size_t k;
	for (k = 0; k < sizeof(mechs) / sizeof(mechs[0]); k++)
		if (strlen(mechs[k].name) == nl &&
		    strncasecmp(mechs[k].name, s + ns, nl) == 0)
			break;
	if (k == sizeof(mechs) / sizeof(mechs[0])) {
		snprintf(err, errlen, "unknown mechanism '%.*s'", (int)n, s);
		return -1;
	}
	t->mech = mechs[k].mech;
	const char *rest = s + i;
	size_t rn = n - i;
	switch (t->mech) {
	case SPF_MECH_ALL:
		if (rn)
			goto bad;
		return 0;
	case SPF_MECH_INCLUDE:
	case SPF_MECH_EXISTS:
		if (rn < 2 || rest[0] != ':' ||
		    spf_domain_spec_check(rest + 1, rn - 1))
			goto bad;
		t->domain.off = off + i + 1;
		t->domain.len = rn - 1;
		return 0;
	case SPF_MECH_PTR:
		if (rn == 0)
			return 0;
		if (rn < 2 || rest[0] != ':' ||
		    spf_domain_spec_check(rest + 1, rn - 1))
			goto bad;
		t->domain.off = off + i + 1;
		t->domain.len = rn - 1;
		return 0;
	case SPF_MECH_A:
	case SPF_MECH_MX: {
		size_t m = rn;
		if (strip_dual_cidr(rest, &m, &t->cidr4, &t->cidr6))
			goto bad;
		if (m == 0)
			return 0;
		if (rest[0] != ':' || m < 2 || spf_domain_spec_check(rest + 1, m - 1))
			goto bad;
		t->domain.off = off + i + 1;
		t->domain.len = m - 1;
		return 0;
	}
	case SPF_MECH_IP4:
	case SPF_MECH_IP6: {
		if (rn < 2 || rest[0] != ':')
			goto bad;
		const char *net = rest + 1;
		const char *slash = memchr(net, '/', rn - 1);
		size_t netlen = slash ? (size_t)(slash - net) : rn - 1;
		int v4 = t->mech == SPF_MECH_IP4;
		if (v4 ? ip4_network_ok(net, netlen, &t->net.v4)
		       : ip6_network_ok(net, netlen, &t->net.v6))
			goto bad;
		if (slash) {
			int c = parse_cidr(slash + 1, (size_t)(rest + rn - slash - 1),
			                   v4 ? 32 : 128);
			if (c < 0)
				goto bad;
			if (v4)
				t->cidr4 = c;
			else
				t->cidr6 = c;
		}
		return 0;
	}
	}
bad:
	snprintf(err, errlen, "invalid mechanism '%.*s'", (int)(n > 80 ? 80 : n), s);
	return -1;
}

int spf_record_parse(const char *txt, size_t len, struct spf_record *out,
                     char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!spf_is_spf1(txt, len)) {
		snprintf(err, errlen, "not an SPF record");
		return -1;
	}
	out->text = malloc(len + 1);
	if (!out->text) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memcpy(out->text, txt, len);
	out->text[len] = '\0';
	out->len = len;
	/* At most one term per two bytes. */
	out->terms = malloc(sizeof(*out->terms) * (len / 2 + 1));
	if (!out->terms) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	size_t i = 6;
	while (i < len) {
		if (out->text[i] == ' ') {
			i++;
			continue;
		}
		size_t st = i;
		while (i < len && out->text[i] != ' ')
			i++;
		size_t n = i - st;
		const char *tok = out->text + st;
		size_t nl = 0;
		if (is_alpha((unsigned char)tok[0])) {
			nl = 1;
			while (nl < n && (is_alnum((unsigned char)tok[nl]) ||
			                  (tok[nl] != '\0' && strchr("-_.", tok[nl]))))
				nl++;
		}
		if (nl > 0 && nl < n && tok[nl] == '=') {
			const char *val = tok + nl + 1;
			size_t vl = n - nl - 1;
			struct spf_span *slot = NULL;
			if (nl == 8 && strncasecmp(tok, "redirect", 8) == 0)
				slot = &out->redirect;
			else if (nl == 3 && strncasecmp(tok, "exp", 3) == 0)
				slot = &out->exp;
			if (slot) {
				if (slot->len) {
					snprintf(err, errlen, "duplicate %.*s= modifier",
					         (int)nl, tok);
					goto fail;
				}
				if (spf_domain_spec_check(val, vl)) {
					snprintf(err, errlen, "invalid domain in %.*s=",
					         (int)nl, tok);
					goto fail;
				}
				slot->off = st + nl + 1;
				slot->len = vl;
			} else if (spf_macro_check(val, vl, SPF_MACRO_MODIFIER)) {
				snprintf(err, errlen, "invalid value of modifier %.*s",
				         (int)(nl > 40 ? 40 : nl), tok);
				goto fail;
			}
			continue;
		}
		struct spf_term *t = &out->terms[out->nterms];
		if (parse_directive(out, st, n, t, err, errlen))
			goto fail;
		if (t->mech == SPF_MECH_ALL)
			out->has_all = 1;
		out->nterms++;
	}
	return 0;
fail:
	spf_record_clear(out);
	return -1;
}

void spf_record_clear(struct spf_record *r)
{
	free(r->text);
	free(r->terms);
	memset(r, 0, sizeof(*r));
}
