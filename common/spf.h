/*
 * spf: RFC 7208 sender policy evaluation.
 *
 * libspf2 is the evaluator; this module is the referee.  Every DNS
 * answer libspf2 sees comes from our dns layer (which counts lookups and
 * void lookups over the whole evaluation and answers type-99 queries
 * with no data); every record is checked against the RFC 7208 grammar
 * before libspf2 sees it; where libspf2 mis-evaluates a valid construct,
 * it is handed an equivalent record.  The verdicts match RFC 7208.
 *
 * Loopback clients get no special treatment here (libspf2 passes them
 * unconditionally; trusting local clients is what relay_networks is for).
 */
#ifndef SPFGATE_SPF_H
#define SPFGATE_SPF_H

#include "cidr.h"
#include "dns.h"

enum spf_result {
	SPF_RES_NONE = 0,
	SPF_RES_NEUTRAL,
	SPF_RES_PASS,
	SPF_RES_FAIL,
	SPF_RES_SOFTFAIL,
	SPF_RES_TEMPERROR,
	SPF_RES_PERMERROR,
};
#define SPF_RES_COUNT 7

struct spf_request {
	struct ipaddr client;     /* already un-mapped: never ::ffff:a.b.c.d */
	const char *sender;       /* "local@domain" (for HELO identity and the
	                             null sender: "postmaster@<helo>"); the
	                             checked domain is the part after the last
	                             '@'; a sender without '@' is a domain and
	                             the local part is "postmaster" */
	const char *helo;         /* %{h}; may be NULL or "" */
	const char *receiver;     /* %{r}; NULL means "unknown" */
	int timeout_ms;           /* overall budget for all DNS; <=0: 20000 */
};

struct spf_verdict {
	enum spf_result result;
	char domain[256];          /* the domain checked */
	char mechanism[256];       /* matching mechanism, "default" or "" */
	char reason[256];          /* short human text, e.g.
	                              "mechanism -all matched",
	                              "void lookup limit of 2 exceeded" */
	char *explanation;         /* malloc'd explanation from exp= on fail,
	                              NULL when none (default applies) */
	int dns_lookups;           /* terms that caused DNS lookups */
	int void_lookups;
};

/* Evaluate; always fills *out.  Returns out->result. */
enum spf_result spf_check(struct dns_resolver *dns,
                          const struct spf_request *req,
                          struct spf_verdict *out);
void spf_verdict_free(struct spf_verdict *v);

/* spf_check() keeps a libspf2 server per thread (made on first use and
 * freed when the thread exits); a thread may free its own earlier, e.g.
 * the main thread before exit, to keep leak checkers quiet. */
void spf_thread_release(void);

/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror" */
const char *spf_result_str(enum spf_result r);
int spf_result_parse(const char *s, enum spf_result *out);

#endif
