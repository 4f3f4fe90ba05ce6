/*
 * spf_eval: the state of one SPF evaluation, shared by the wrapper
 * (spf.c), the libspf2 DNS layer (spf_dnslayer.c) and the record
 * rewriter (spf_rewrite.c).  Private to the SPF module.
 *
 * libspf2 never sees a domain-spec of ours: every target it would look up
 * is replaced by a placeholder "@<slot>@<nonce>" ('@' never appears in a
 * name that comes back from DNS in presentation form, and the per
 * evaluation nonce makes a guess useless).  When libspf2 asks the layer
 * about a placeholder, the layer knows exactly which term of which record
 * is being evaluated: it expands the macro with our expander, counts the
 * lookup and the void lookup for the whole evaluation, and queries the
 * real name through common/dns.h.
 */
#ifndef SPFGATE_SPF_EVAL_H
#define SPFGATE_SPF_EVAL_H

#include <time.h>

#include <netinet/in.h>
#include <arpa/nameser.h>
#include <spf2/spf.h>

#include "dns.h"
#include "spf.h"
#include "spf_grammar.h"
#include "spf_macro.h"

#define SPF_MAX_LOOKUPS 10      /* RFC 7208 §4.6.4 */
#define SPF_MAX_VOID 2
#define SPF_MAX_MX 10
#define SPF_MAX_PTR 10

enum spf_slot_kind {
	SLOT_A,         /* a: libspf2 asks A or AAAA */
	SLOT_MX,        /* mx: libspf2 asks MX, then A/AAAA of the hosts */
	SLOT_EXISTS,    /* exists: libspf2 asks A */
	SLOT_ANY_A,     /* a with a /0 prefix: "exists" answered by the layer
	                   when the name has any address of the client family */
	SLOT_ANY_MX,    /* mx with a /0 prefix: likewise, over the MX hosts */
	SLOT_INCLUDE,
	SLOT_REDIRECT,
	SLOT_CHUNK,     /* synthetic record holding part of a long record */
};

struct spf_slot {
	enum spf_slot_kind kind;
	int rec;                /* record instance the term belongs to */
	int term;               /* term index in that record, -1 for redirect */
	char *chunk;            /* SLOT_CHUNK: libspf2 text of the piece */
	int hit;                /* the layer was asked about it */
	int matched;            /* its answer matched the client */
};

struct spf_recinst {
	char *domain;           /* <domain> of this record (%{d}) */
	struct spf_record rec;
	int parent;             /* -1 for the top-level record */
	int top_chain;          /* reached from the top through redirects */
};

struct spf_eval {
	struct dns_resolver *dns;
	struct ipaddr ip;
	const char *helo;
	const char *receiver;
	char sender[600];
	char local[320];
	char domain[256];       /* the checked domain (%{o}) */
	long long now;
	struct timespec deadline;
	char nonce[12];

	int lookups, voids;
	int aborted;            /* the layer decided the result: */
	enum spf_result abort_result;
	char reason[256];       /* why, for errors found by the referee */

	enum spf_slot_kind cur_kind;    /* term whose follow-ups arrive */
	int cur_is_ptr;
	int cur_slot;           /* slot whose follow-ups arrive, or -1 */
	int ptr_validated;      /* some ptr term saw the client's name */

	struct spf_slot *slots;
	size_t nslots, capslots;
	struct spf_recinst *recs;
	size_t nrecs, caprecs;
	int final_rec;          /* last record of the top redirect chain */

	/* %{p}: validated names, found once per evaluation */
	int p_done;
	char *p_names[SPF_MAX_PTR];
	int p_n;
	char p_buf[256];
};

/* spf_dnslayer.c */
SPF_dns_server_t *spf_dnslayer_new(void);
int spf_eval_remaining_ms(struct spf_eval *ev);
/* Does the client fall within addr/prefix (family AF_INET/AF_INET6)? */
int spf_eval_in_net(const struct spf_eval *ev, int family, const void *addr,
                    int prefix);
enum dns_status spf_eval_query(struct spf_eval *ev, const char *name,
                               uint16_t type, struct dns_answer *ans);
void spf_eval_abort(struct spf_eval *ev, enum spf_result r,
                    const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Fetch and select the SPF record of a domain (TXT only): fills a new
 * record instance and returns its index, or -1 with *res set to
 * none / temperror / permerror and ev->reason explaining. */
int spf_eval_fetch(struct spf_eval *ev, const char *domain, int parent,
                   int top_chain, enum spf_result *res);
/* Expand a record's domain-spec span (or its own domain when absent)
 * into a query name; NULL when it is not a usable DNS name. */
char *spf_eval_target(struct spf_eval *ev, int rec, struct spf_span spec);
const char *spf_eval_validated_name(void *arg, const char *domain);
void spf_eval_macro_env(struct spf_eval *ev, int rec,
                        struct spf_macro_env *env);

/* spf_rewrite.c: the libspf2 record for a record instance, compiled. */
SPF_errcode_t spf_rewrite_compile(struct spf_eval *ev, SPF_server_t *srv,
                                  int rec, SPF_record_t **out);
SPF_errcode_t spf_rewrite_compile_chunk(struct spf_eval *ev,
                                        SPF_server_t *srv, int slot,
                                        SPF_record_t **out);
/* Slot index named by a placeholder, or -1 when name is not ours. */
int spf_slot_from_name(const struct spf_eval *ev, const char *name);

#endif
