/*
 * cidr: IPv4 and IPv6 networks and address matching.  An IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d) is treated as the IPv4 address, because
 * that is what the client really is.
 */
#ifndef SPFGATE_CIDR_H
#define SPFGATE_CIDR_H

#include <stddef.h>
#include <netinet/in.h>

struct ipaddr {
	int family;                     /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} u;
};

struct cidr {
	struct ipaddr addr;
	int prefix;                     /* 0..32 or 0..128 */
};

struct cidr_list {
	struct cidr *v;
	size_t n, cap;
};

/* Parse a literal address; IPv4-mapped IPv6 becomes AF_INET.  0 or -1. */
int ipaddr_parse(const char *s, struct ipaddr *out);
/* Format an address (IPv6 in RFC 5952 form) into buf; returns buf. */
const char *ipaddr_format(const struct ipaddr *a, char *buf, size_t len);

/* Parse "ADDR" or "ADDR/PREFIX".  Host bits must be zero.  0 or -1. */
int cidr_parse(const char *s, struct cidr *out);
int cidr_match(const struct cidr *net, const struct ipaddr *a);

/* Parse a comma/space separated list, appending.  On error returns -1 and
 * points *bad at a static copy of the offending item. */
int cidr_list_parse(struct cidr_list *l, const char *s, const char **bad);
int cidr_list_match(const struct cidr_list *l, const struct ipaddr *a);
void cidr_list_free(struct cidr_list *l);

#endif
