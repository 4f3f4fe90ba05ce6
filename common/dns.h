/*
 * dns: the one resolver interface of spfgate, over ldns, with two
 * backends:
 *
 *   network  queries name servers (the configured list, each "ADDR" or
 *            "ADDR:PORT" / "[V6ADDR]:PORT", or /etc/resolv.conf when the
 *            list is empty) over UDP with TCP fallback, recursion desired;
 *   zone     answers from zone files read once at start-up (master file
 *            format as ldns reads it), for tests and the policy harness.
 *
 * A resolver is immutable after creation and may be shared by threads;
 * every dns_query() call is independent.  CNAMEs are followed (both
 * backends) up to a small depth; the answer holds only RRs of the type
 * asked for.
 *
 * Test convention of the zone backend: a name that owns a record of the
 * private type TYPE65280 (written "name IN TYPE65280 \# 0") behaves as if
 * its server timed out: every query for it returns DNS_TEMPFAIL.
 */
#ifndef SPFGATE_DNS_H
#define SPFGATE_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#define DNS_T_A      1
#define DNS_T_NS     2
#define DNS_T_CNAME  5
#define DNS_T_PTR    12
#define DNS_T_MX     15
#define DNS_T_TXT    16
#define DNS_T_AAAA   28
#define DNS_T_SPF    99
#define DNS_T_TIMEOUT_MARK 65280

enum dns_status {
	DNS_OK = 0,         /* at least one RR of the asked type */
	DNS_NODATA,         /* name exists, no RR of that type */
	DNS_NXDOMAIN,       /* name does not exist */
	DNS_TEMPFAIL,       /* SERVFAIL, REFUSED, timeout, network error */
	DNS_BADNAME,        /* not a valid query name (empty label, >63, >253) */
};

struct dns_rr {
	uint16_t type;
	uint32_t ttl;
	union {
		struct in_addr a;       /* DNS_T_A */
		struct in6_addr aaaa;   /* DNS_T_AAAA */
		struct {                /* DNS_T_MX */
			uint16_t pref;
			char *host;     /* no trailing dot */
		} mx;
		char *name;             /* DNS_T_PTR, DNS_T_CNAME, DNS_T_NS: no trailing dot */
		struct {                /* DNS_T_TXT, DNS_T_SPF */
			char *data;     /* the character-strings concatenated */
			size_t len;     /* may contain NULs: use len */
			int nstrings;
		} txt;
	} u;
};

struct dns_answer {
	enum dns_status status;
	size_t n;
	struct dns_rr *rr;
};

struct dns_resolver;

/*
 * nameservers: array of n strings, or n == 0 for /etc/resolv.conf.
 * timeout_ms: default per-query time limit (all retries included).
 * Returns NULL with a message in err on failure.
 */
struct dns_resolver *dns_new_network(const char *const *nameservers, size_t n,
                                     int timeout_ms, char *err, size_t errlen);
/* Read zone files (default origin: none, names must be absolute or use
 * $ORIGIN).  Returns NULL with "file:line: message" in err on failure. */
struct dns_resolver *dns_new_zone(const char *const *files, size_t n,
                                  char *err, size_t errlen);
void dns_free(struct dns_resolver *r);

/*
 * Look up (name, type).  timeout_ms <= 0 means the resolver's default;
 * otherwise it caps this query (used to enforce an overall deadline).
 * Always fills *out (status + RRs); returns out->status.
 */
enum dns_status dns_query(struct dns_resolver *r, const char *name,
                          uint16_t type, int timeout_ms,
                          struct dns_answer *out);
void dns_answer_free(struct dns_answer *a);

/* Reverse name for an address: "4.3.2.1.in-addr.arpa" / nibble ip6.arpa. */
int dns_reverse_name(int family, const void *addr, char *buf, size_t len);

const char *dns_status_str(enum dns_status s);

#endif
