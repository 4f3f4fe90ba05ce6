/*
 * cidr: IPv4/IPv6 addresses and networks.  IPv4-mapped IPv6 addresses
 * are folded to IPv4 at parse time so that every later comparison (relay
 * networks, SPF) sees the client as what it is.
 */
#include "cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void
unmap(struct ipaddr *a)
{
	if (a->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->u.v6)) {
		struct in_addr v4;
		memcpy(&v4, &a->u.v6.s6_addr[12], 4);
		a->family = AF_INET;
		a->u.v4 = v4;
	}
}

int
ipaddr_parse(const char *s, struct ipaddr *out)
{
	char buf[INET6_ADDRSTRLEN + 2];
	size_t len;

	if (s == NULL)
		return -1;
	len = strlen(s);
	/* Accept the SMTP literal forms "[1.2.3.4]" and "[IPv6:...]". */
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		s++;
		len -= 2;
		if (len > 5 && strncasecmp(s, "IPv6:", 5) == 0)
			s += 5, len -= 5;
	}
	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, buf, &out->u.v4) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, &out->u.v6) == 1) {
		out->family = AF_INET6;
		unmap(out);
		return 0;
	}
	return -1;
}

const char *
ipaddr_format(const struct ipaddr *a, char *buf, size_t len)
{
	if (inet_ntop(a->family, &a->u, buf, (socklen_t)len) == NULL)
		snprintf(buf, len, "unknown");
	return buf;
}

static const unsigned char *
addr_bytes(const struct ipaddr *a, int *bits)
{
	*bits = a->family == AF_INET ? 32 : 128;
	return a->family == AF_INET ? (const unsigned char *)&a->u.v4
	                            : (const unsigned char *)&a->u.v6;
}

static int
prefix_equal(const unsigned char *x, const unsigned char *y, int prefix)
{
	int full = prefix / 8, rest = prefix % 8;

	if (memcmp(x, y, (size_t)full) != 0)
		return 0;
	if (rest) {
		unsigned char mask = (unsigned char)(0xff << (8 - rest));
		if ((x[full] & mask) != (y[full] & mask))
			return 0;
	}
	return 1;
}

int
cidr_parse(const char *s, struct cidr *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	int bits;
	const unsigned char *b;

	if (alen == 0 || alen >= sizeof(buf))
		return -1;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, buf, &out->addr.u.v4) == 1)
		out->addr.family = AF_INET;
	else if (inet_pton(AF_INET6, buf, &out->addr.u.v6) == 1)
		out->addr.family = AF_INET6;
	else
		return -1;
	b = addr_bytes(&out->addr, &bits);
	if (slash) {
		char *end;
		const char *p = slash + 1;
		if (*p < '0' || *p > '9')
			return -1;
		long v = strtol(p, &end, 10);
		if (*end != '\0' || v < 0 || v > bits)
			return -1;
		out->prefix = (int)v;
	} else {
		out->prefix = bits;
	}
	/* A mapped network ::ffff:a.b.c.d/120 means a.b.c.d/24. */
	if (out->addr.family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&out->addr.u.v6)
	    && out->prefix >= 96) {
		out->prefix -= 96;
		unmap(&out->addr);
		b = addr_bytes(&out->addr, &bits);
	}
	/* Host bits set is a typo more often than an intent: refuse it. */
	for (int i = out->prefix; i < bits; i++)
		if (b[i / 8] & (0x80 >> (i % 8)))
			return -1;
	return 0;
}

int
cidr_match(const struct cidr *net, const struct ipaddr *a)
{
	int bits;
	const unsigned char *x, *y;

	if (net->addr.family != a->family)
		return 0;
	x = addr_bytes(&net->addr, &bits);
	y = addr_bytes(a, &bits);
	return prefix_equal(x, y, net->prefix);
}

int
cidr_list_parse(struct cidr_list *l, const char *s, const char **bad)
{
	static __thread char badbuf[128];

	while (*s) {
		while (*s == ',' || *s == ' ' || *s == '\t')
			s++;
		size_t len = strcspn(s, ", \t");
		if (len == 0)
			break;
		char item[INET6_ADDRSTRLEN + 8];
		struct cidr c;
		if (len >= sizeof(item) || (memcpy(item, s, len), item[len] = '\0',
		    cidr_parse(item, &c) < 0)) {
			snprintf(badbuf, sizeof(badbuf), "%.*s", (int)len, s);
			if (bad)
				*bad = badbuf;
			return -1;
		}
		if (l->n == l->cap) {
			size_t cap = l->cap ? l->cap * 2 : 4;
			struct cidr *v = realloc(l->v, cap * sizeof(*v));
			if (v == NULL)
				return -1;
			l->v = v;
			l->cap = cap;
		}
		l->v[l->n++] = c;
		s += len;
	}
	return 0;
}

int
cidr_list_match(const struct cidr_list *l, const struct ipaddr *a)
{
	for (size_t i = 0; i < l->n; i++)
		if (cidr_match(&l->v[i], a))
			return 1;
	return 0;
}

void
cidr_list_free(struct cidr_list *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}
