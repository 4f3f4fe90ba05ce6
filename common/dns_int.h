/*
 * dns_int.h: what dns.c and dns_zone.c share; not for other modules.
 */
#ifndef SPFGATE_DNS_INT_H
#define SPFGATE_DNS_INT_H

#include <stdint.h>
#include <sys/socket.h>

#include <ldns/ldns.h>

#include "dns.h"

#define DNS_MAX_CHAIN 8      /* CNAMEs followed per query, loops included */

struct dns_nameserver {
	struct sockaddr_storage sa;
	socklen_t len;
};

struct dns_znode {
	uint8_t *key;        /* owner in wire form, ASCII lower-cased */
	size_t keylen;
	ldns_rr **rr;        /* none for an empty non-terminal */
	size_t n;
	int timeout_mark;
	const ldns_rr *cname;
};

struct dns_resolver {
	int is_zone;
	int timeout_ms;
	struct dns_nameserver *ns;
	size_t nns;
	struct dns_znode *nodes; /* sorted by key */
	size_t nnodes;
};

/* DNS names compare case-insensitively in ASCII only, whatever the locale. */
static inline uint8_t dns__lc(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

void dns__seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int dns__type_matches(const ldns_rr *rr, uint16_t type);
/* Appends rr converted (skipped if malformed); -1 when out of memory. */
int dns__answer_add(struct dns_answer *a, const ldns_rr *rr);

/* name: wire form, len bytes.  Fills out->rr, returns the status. */
enum dns_status dns__zone_query(const struct dns_resolver *r,
                                const uint8_t *name, size_t len,
                                uint16_t type, struct dns_answer *out);
void dns__zone_free(struct dns_resolver *r);

#endif
