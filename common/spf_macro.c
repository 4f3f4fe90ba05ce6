/*
 * spf_macro: RFC 7208 §7 macro-string checking and expansion.
 *
 * One parser serves both jobs: with env == NULL it only checks syntax.
 * Output is bounded (SPF_MACRO_MAX) so hostile records full of %{S}
 * cannot make us allocate without limit.
 */
#include <config.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spf_macro.h"

struct obuf {
	char *p;
	size_t len, cap;
	int overflow;
};

static int ob_put(struct obuf *o, const char *s, size_t n)
{
	if (o->overflow)
		return -1;
	if (o->len + n + 1 > SPF_MACRO_MAX) {
		o->overflow = 1;
		return -1;
	}
	if (o->len + n + 1 > o->cap) {
		size_t cap = o->cap ? o->cap : 128;
		while (cap < o->len + n + 1)
			cap *= 2;
		char *np = realloc(o->p, cap);
		if (!np) {
			o->overflow = 1;
			return -1;
		}
		o->p = np;
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
	return 0;
}

void spf_macro_ip_dotted(const struct ipaddr *ip, char *buf, size_t len)
{
	if (ip->family == AF_INET) {
		const unsigned char *b = (const unsigned char *)&ip->u.v4;
		snprintf(buf, len, "%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
		return;
	}
	/* RFC 7208 §7.3 writes nibbles in upper case (1.0.B.C...). */
	static const char hex[] = "0123456789ABCDEF";
	char tmp[64];
	size_t k = 0;
	for (int i = 0; i < 16; i++) {
		unsigned char c = ip->u.v6.s6_addr[i];
		tmp[k++] = hex[c >> 4];
		tmp[k++] = '.';
		tmp[k++] = hex[c & 15];
		tmp[k++] = '.';
	}
	tmp[k - 1] = '\0';
	snprintf(buf, len, "%s", tmp);
}

static int is_delim(char c)
{
	return c && strchr(".-+,/_=", c) != NULL;
}

static int is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	       c == '~';
}

/* The raw value of a macro letter (lower case), written into buf or
 * returned as a pointer to the environment's own string. */
static const char *letter_value(char letter, const struct spf_macro_env *env,
                                char *buf, size_t len)
{
	switch (letter) {
	case 's': return env->sender ? env->sender : "";
	case 'l': return env->local ? env->local : "";
	case 'o': return env->sender_domain ? env->sender_domain : "";
	case 'd': return env->domain ? env->domain : "";
	case 'h': return env->helo ? env->helo : "";
	case 'r': return env->receiver && *env->receiver ? env->receiver
	                                                 : "unknown";
	case 'v': return env->ip->family == AF_INET ? "in-addr" : "ip6";
	case 'i':
		spf_macro_ip_dotted(env->ip, buf, len);
		return buf;
	case 'c':
		if (!inet_ntop(env->ip->family, &env->ip->u, buf, (socklen_t)len))
			snprintf(buf, len, "unknown");
		return buf;
	case 't':
		snprintf(buf, len, "%lld", env->now);
		return buf;
	case 'p': {
		const char *p = env->validated_name ?
			env->validated_name(env->arg, env->domain) : NULL;
		return p ? p : "unknown";
	}
	}
	return "";
}

/* Apply the transformers (split on delims, reverse, keep the rightmost
 * ndigits parts, join with '.') and append, URL-escaped if asked. */
static int transform(struct obuf *o, const char *v, const char *delims,
                     int ndigits, int reverse, int escape)
{
	/* Parts are located, not copied: at most one per input character. */
	size_t vlen = strlen(v), nparts = 1;
	for (size_t i = 0; i < vlen; i++)
		if (strchr(delims, v[i]))
			nparts++;
	size_t *start = malloc(nparts * sizeof(*start));
	size_t *plen = malloc(nparts * sizeof(*plen));
	if (!start || !plen) {
		free(start);
		free(plen);
		o->overflow = 1;
		return -1;
	}
	size_t k = 0, s0 = 0;
	for (size_t i = 0; i <= vlen; i++) {
		if (i == vlen || strchr(delims, v[i])) {
			start[k] = s0;
			plen[k] = i - s0;
			k++;
			s0 = i + 1;
		}
	}
	size_t first = 0;
	if (ndigits > 0 && (size_t)ndigits < nparts)
		first = nparts - (size_t)ndigits;
	int rc = 0;
	for (size_t j = first; j < nparts && rc == 0; j++) {
		size_t idx = reverse ? nparts - 1 - j : j;
		if (j > first)
			rc = ob_put(o, ".", 1);
		if (rc)
			break;
		if (!escape) {
			rc = ob_put(o, v + start[idx], plen[idx]);
			continue;
		}
		for (size_t m = 0; m < plen[idx] && rc == 0; m++) {
			unsigned char c = (unsigned char)v[start[idx] + m];
			char esc[4];
			if (is_unreserved(c)) {
				rc = ob_put(o, (const char *)&c, 1);
			} else {
				snprintf(esc, sizeof(esc), "%%%02X", c);
				rc = ob_put(o, esc, 3);
			}
		}
	}
	free(start);
	free(plen);
	return rc;
}

/* The one parser.  env == NULL: check only. */
static int run(const char *s, size_t len, enum spf_macro_kind kind,
               const struct spf_macro_env *env, struct obuf *o)
{
	size_t i = 0;
	while (i < len) {
		unsigned char c = (unsigned char)s[i];
		if (c != '%') {
			int ok = (c >= 0x21 && c <= 0x7e) ||
			         (c == ' ' && kind == SPF_MACRO_EXP);
			if (!ok)
				return -1;
			if (env && ob_put(o, s + i, 1))
				return -1;
			i++;
			continue;
		}
		if (i + 1 >= len)
			return -1;
		char n = s[i + 1];
		if (n == '%' || n == '_' || n == '-') {
			const char *lit = n == '%' ? "%" : n == '_' ? " " : "%20";
			if (env && ob_put(o, lit, strlen(lit)))
				return -1;
			i += 2;
			continue;
		}
		if (n != '{')
			return -1;
		i += 2;
		if (i >= len)
			return -1;
		char letter = s[i];
		int upper = letter >= 'A' && letter <= 'Z';
		char lower = upper ? (char)(letter - 'A' + 'a') : letter;
		const char *allowed = kind == SPF_MACRO_DOMAIN ? "slodiphv"
		                                                : "slodiphvcrt";
		if (!lower || !strchr(allowed, lower))
			return -1;
		i++;
		int ndigits = 0, have_digits = 0;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			have_digits = 1;
			if (ndigits < 1000)
				ndigits = ndigits * 10 + (s[i] - '0');
			i++;
		}
		if (have_digits && ndigits == 0)
			return -1;      /* RFC 7208 §7.3: the count is nonzero */
		int reverse = 0;
		if (i < len && (s[i] == 'r' || s[i] == 'R')) {
			reverse = 1;
			i++;
		}
		char delims[8];
		size_t nd = 0;
		while (i < len && is_delim(s[i])) {
			if (nd < sizeof(delims) - 1 && !memchr(delims, s[i], nd))
				delims[nd++] = s[i];
			i++;
		}
		delims[nd] = '\0';
		if (i >= len || s[i] != '}')
			return -1;
		i++;
		if (env) {
			char vbuf[128];
			const char *v = letter_value(lower, env, vbuf, sizeof(vbuf));
			if (transform(o, v, nd ? delims : ".", ndigits, reverse,
			              upper))
				return -1;
		}
	}
	return 0;
}

int spf_macro_check(const char *s, size_t len, enum spf_macro_kind kind)
{
	return run(s, len, kind, NULL, NULL);
}

char *spf_macro_expand(const char *s, size_t len, enum spf_macro_kind kind,
                       const struct spf_macro_env *env)
{
	struct obuf o = { 0 };
	if (run(s, len, kind, env, &o) || ob_put(&o, "", 0)) {
		free(o.p);
		return NULL;
	}
	return o.p;
}

int spf_macro_to_qname(char *name)
{
	size_t n = strlen(name);
	if (n && name[n - 1] == '.')
		name[--n] = '\0';
	char *p = name;
	while (n > 253) {
		char *dot = strchr(p, '.');
		if (!dot)
			return -1;
		n -= (size_t)(dot + 1 - p);
		p = dot + 1;
	}
	if (p != name)
		memmove(name, p, n + 1);
	if (n == 0)
		return -1;
	size_t lab = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || name[i] == '.') {
			if (lab == 0 || lab > 63)
				return -1;
			lab = 0;
		} else {
			lab++;
		}
	}
	return 0;
}
