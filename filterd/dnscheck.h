/*
 * dnscheck: what spfgate-dnscheck's parts share.  One struct dnscheck
 * holds the site (configuration, this host's addresses, the outbound
 * paths), the resolver, and the report being built: one line per check
 * printed as it is made, records to publish printed at the end.
 */
#ifndef SPFGATE_DNSCHECK_H
#define SPFGATE_DNSCHECK_H

#include "cidr.h"
#include "config.h"
#include "dns.h"
#include "strlist.h"

#include <stddef.h>

#define DC_TTL 3600             /* TTL of the records we suggest */

/* A set of addresses, kept sorted (family, then bytes) and unique. */
struct dc_addrs {
	struct ipaddr *v;
	size_t n, cap;
};

int dc_addrs_add(struct dc_addrs *s, const struct ipaddr *a);   /* 0 or -1 */
int dc_addrs_contains(const struct dc_addrs *s, const struct ipaddr *a);
void dc_addrs_free(struct dc_addrs *s);
/* "192.0.2.1, 2001:db8::1" into buf (truncated to fit). */
const char *dc_addrs_format(const struct dc_addrs *s, char *buf, size_t len);

/*
 * This host's public addresses as relayd's listeners show them:
 * literal listen addresses, and the interface addresses (getifaddrs)
 * for 0.0.0.0 (IPv4) and [::] (IPv6).  Loopback and link-local addresses
 * are left out unless nothing else is left, then loopback is kept.
 * *how says where they came from.  0, or -1 (out of memory).
 */
int dc_self_addrs(const struct strlist *listen, struct dc_addrs *out, const char **how);

/* One way our mail leaves: an address that must pass SPF, and the
 * mechanism (index into dnscheck.mechs) that would authorize it. */
struct dc_path {
	struct ipaddr ip;
	const char *what;           /* "this host", "smarthost" */
	size_t mech;
};

enum dc_status { DC_OK, DC_WARN, DC_FAIL, DC_INFO };

struct dnscheck {
	const struct config *cfg;
	struct dns_resolver *dns;
	int timeout_ms;
	const char *ns_desc;        /* for the "not answering" line */
	int dead;                   /* the name servers stopped answering */
	unsigned answered, failed;  /* queries with an answer, without one */

	const char *mail_name;
	struct dc_addrs self;       /* this host's public addresses */
	char sh_host[256];          /* smarthost name or address, "" for none */
	int sh_literal;             /* sh_host is an address */

	struct strlist mechs;       /* SPF mechanisms for the outbound paths */
	struct dc_path *paths;
	size_t npaths;

	unsigned count[3];          /* lines printed, per DC_OK..DC_FAIL */
	struct strlist publish;     /* zone-file lines and ";" comments */
};

/* Report (dnscheck_report.c). */
void dc_line(struct dnscheck *c, enum dc_status st, const char *subject,
             const char *check, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void dc_publish(struct dnscheck *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A TXT record in zone-file syntax: quoted, escaped, split in
 * 255-byte character-strings. */
void dc_publish_txt(struct dnscheck *c, const char *owner, const char *text);
/* Summary and records to publish; returns the exit status (0 or 1). */
int dc_finish(struct dnscheck *c);

/* DNS with the run's deadline bookkeeping (dnscheck_checks.c): once a
 * query runs into the timeout, the servers are taken for dead and every
 * later query fails at once. */
/* Monotonic milliseconds; a temporary failure that took (nearly) the
 * whole dns_timeout since t0 marks the server dead: no more queries. */
long dc_clock_ms(void);
void dc_timed_out(struct dnscheck *c, long t0);
enum dns_status dc_query(struct dnscheck *c, const char *name, uint16_t type,
                         struct dns_answer *out);
/* Text for a failed lookup: "no such domain", "no answer within 5s", ... */
const char *dc_dns_error(const struct dnscheck *c, enum dns_status st);

/* The checks (dnscheck_checks.c, dnscheck_spf.c). */
void dc_check_mail_name(struct dnscheck *c);
void dc_check_smarthost(struct dnscheck *c);
void dc_check_mx(struct dnscheck *c, const char *domain);
void dc_check_spf(struct dnscheck *c, const char *domain);

/* SPF record text (dnscheck_spfrec.c). */
int dc_spf_is_record(const char *txt, size_t len);
/* The record with the mechanisms added before its "all" term (or at the
 * end when it has none), skipping those it names already; NULL when
 * there is nothing to add or no memory.  Caller frees. */
char *dc_spf_adapt(const char *record, const char *const *mechs, size_t n);
/* Append the record's mechanisms ("+" dropped), except "all", to out;
 * 0 or -1. */
int dc_spf_mechanisms(const char *record, struct strlist *out);
/* A new record: "v=spf1 FIRST MECHS ~all".  Caller frees. */
char *dc_spf_new(const char *first, const char *const *mechs, size_t n);

#endif
