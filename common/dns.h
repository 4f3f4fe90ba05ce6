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
 * asked for.  A chain of more than 8 CNAMEs, and so every CNAME loop, is
 * DNS_TEMPFAIL (RFC 1034 3.6.2: a loop is an error).  Asking for
 * DNS_T_CNAME returns the CNAME itself, unfollowed.
 *
 * Names, both query names and names in answers, are plain text: labels
 * separated by '.', an optional trailing '.', every other byte (backslash
 * included) taken literally, no escapes.  In answers a '.' or NUL inside a
 * label is written as \DDD, names have no trailing dot, and the root is ""
 * (so a null MX, RFC 7505, has host "").
 *
 * Test convention of the zone backend: a name that owns a record of the
 * private type TYPE65280 (written "name IN TYPE65280 \# 0") behaves as if
 * its server timed out: every query for it returns DNS_TEMPFAIL (also when
 * reached through a CNAME).  Other zone backend rules: every ancestor of
 * an owner name exists (an empty non-terminal answers DNS_NODATA, not
 * DNS_NXDOMAIN), "*.<name>" owners are wildcards (RFC 4592), and any name
 * not in the files is DNS_NXDOMAIN.
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
			char *data;     /* the character-strings concatenated,
			                   plus a NUL after data[len - 1] */
			size_t len;     /* may contain NULs: use len */
			int nstrings;   /* 0 for an RR with empty rdata */
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
 * $ORIGIN; a name written without either is taken as absolute; $INCLUDE
 * is refused).  Returns NULL with "file:line: message" in err on failure. */
struct dns_resolver *dns_new_zone(const char *const *files, size_t n,
                                  char *err, size_t errlen);
void dns_free(struct dns_resolver *r);

/*
 * Look up (name, type).  timeout_ms <= 0 means the resolver's default;
 * otherwise it caps this query (used to enforce an overall deadline): the
 * limit is the smaller of the two.  Always fills *out (status + RRs; no RRs
 * unless DNS_OK); returns out->status.
 */
enum dns_status dns_query(struct dns_resolver *r, const char *name,
                          uint16_t type, int timeout_ms,
                          struct dns_answer *out);
void dns_answer_free(struct dns_answer *a);

/* Reverse name for an address: "4.3.2.1.in-addr.arpa" / nibble ip6.arpa.
 * family: AF_INET or AF_INET6.  0 on success, -1 if buf is too small
 * (73 bytes always suffice) or family is unknown. */
int dns_reverse_name(int family, const void *addr, char *buf, size_t len);

const char *dns_status_str(enum dns_status s);

#endif
