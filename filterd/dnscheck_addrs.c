/*
 * dnscheck_addrs: this host's public addresses, the ones the world
 * reaches relayd on and the ones our direct outbound mail comes from.
 * relayd's listen list says which: a literal address is one; 0.0.0.0
 * and [::] mean every interface address of that family.
 */
#include "dnscheck.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
addr_cmp(const struct ipaddr *x, const struct ipaddr *y)
{
	if (x->family != y->family)
		return x->family == AF_INET ? -1 : 1;
	return x->family == AF_INET ? memcmp(&x->u.v4, &y->u.v4, sizeof(x->u.v4))
	                            : memcmp(&x->u.v6, &y->u.v6, sizeof(x->u.v6));
}

int
dc_addrs_add(struct dc_addrs *s, const struct ipaddr *a)
{
	size_t i = 0;

	while (i < s->n && addr_cmp(&s->v[i], a) < 0)
		i++;
	if (i < s->n && addr_cmp(&s->v[i], a) == 0)
		return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 4;
		struct ipaddr *v = realloc(s->v, cap * sizeof(*v));
		if (v == NULL)
			return -1;
		s->v = v;
		s->cap = cap;
	}
	memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(*s->v));
	s->v[i] = *a;
	s->n++;
	return 0;
}

int
dc_addrs_contains(const struct dc_addrs *s, const struct ipaddr *a)
{
	for (size_t i = 0; i < s->n; i++)
		if (addr_cmp(&s->v[i], a) == 0)
			return 1;
	return 0;
}

void
dc_addrs_free(struct dc_addrs *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

const char *
dc_addrs_format(const struct dc_addrs *s, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < s->n && used < len; i++) {
		char a[INET6_ADDRSTRLEN];
		ipaddr_format(&s->v[i], a, sizeof(a));
		int k = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", a);
		if (k < 0)
			break;
		used += (size_t)k;
	}
	return buf;
}

/* Not reachable from elsewhere: loopback, link-local, unspecified. */
static int
is_private_scope(const struct ipaddr *a)
{
	if (a->family == AF_INET) {
		uint32_t v = ntohl(a->u.v4.s_addr);
		return (v >> 24) == 127 || (v >> 16) == 0xa9fe || v == 0;
	}
	return IN6_IS_ADDR_LOOPBACK(&a->u.v6) || IN6_IS_ADDR_LINKLOCAL(&a->u.v6)
	       || IN6_IS_ADDR_UNSPECIFIED(&a->u.v6);
}

static int
is_loopback(const struct ipaddr *a)
{
	return a->family == AF_INET ? (ntohl(a->u.v4.s_addr) >> 24) == 127
	                            : IN6_IS_ADDR_LOOPBACK(&a->u.v6);
}

/* The address part of "ADDR:PORT" / "[V6ADDR]:PORT" (config.c has
 * checked the form). */
static int
listen_addr(const char *spec, struct ipaddr *out)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *h = spec, *end;

	if (spec[0] == '[') {
		h = spec + 1;
		end = strchr(h, ']');
	} else
		end = strrchr(spec, ':');
	if (end == NULL || (size_t)(end - h) >= sizeof(host))
		return -1;
	memcpy(host, h, (size_t)(end - h));
	host[end - h] = '\0';
	return ipaddr_parse(host, out);
}

static int
add_interfaces(struct dc_addrs *all, int want4, int want6)
{
	struct ifaddrs *ifa = NULL;
	int rc = 0;

	if (getifaddrs(&ifa) < 0)
		return 0;       /* no interface list: only the literal addresses */
	for (struct ifaddrs *p = ifa; p && rc == 0; p = p->ifa_next) {
		struct ipaddr a;
		if (p->ifa_addr == NULL || !(p->ifa_flags & IFF_UP))
			continue;
		memset(&a, 0, sizeof(a));
		if (p->ifa_addr->sa_family == AF_INET && want4) {
			a.family = AF_INET;
			a.u.v4 = ((const struct sockaddr_in *)p->ifa_addr)->sin_addr;
		} else if (p->ifa_addr->sa_family == AF_INET6 && want6) {
			const struct in6_addr *v6 = &((const struct sockaddr_in6 *)p->ifa_addr)->sin6_addr;
			if (IN6_IS_ADDR_V4MAPPED(v6))
				continue;
			a.family = AF_INET6;
			a.u.v6 = *v6;
		} else
			continue;
		rc = dc_addrs_add(all, &a);
	}
	freeifaddrs(ifa);
	return rc;
}

int
dc_self_addrs(const struct strlist *listen, struct dc_addrs *out, const char **how)
{
	struct dc_addrs all = { 0 };
	int want4 = 0, want6 = 0, rc = 0;

	for (size_t i = 0; i < listen->n && rc == 0; i++) {
		struct ipaddr a;
		if (listen_addr(listen->v[i], &a) < 0)
			continue;
		if (a.family == AF_INET && a.u.v4.s_addr == htonl(INADDR_ANY))
			want4 = 1;
		else if (a.family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&a.u.v6))
			want6 = 1;      /* relayd binds [::] IPv6-only */
		else
			rc = dc_addrs_add(&all, &a);
	}
	if (rc == 0 && (want4 || want6))
		rc = add_interfaces(&all, want4, want6);
	*how = want4 || want6 ? "relayd listen addresses and interfaces"
	                      : "relayd listen addresses";

	/* Public addresses if there are any, else loopback (a test box). */
	int public = 0;
	for (size_t i = 0; i < all.n; i++)
		public |= !is_private_scope(&all.v[i]);
	for (size_t i = 0; i < all.n && rc == 0; i++)
		if (public ? !is_private_scope(&all.v[i]) : is_loopback(&all.v[i]))
			rc = dc_addrs_add(out, &all.v[i]);
	dc_addrs_free(&all);
	return rc;
}
