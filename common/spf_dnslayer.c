/*
 * spf_dnslayer: the libspf2 DNS layer (SPF_dns_server_t) over
 * common/dns.h.  It is the referee's seat during an evaluation:
 *
 *   - placeholders (see spf_eval.h) tell it which term libspf2 is
 *     evaluating; it expands the real target with our macro expander,
 *     counts DNS-querying terms and void lookups over the whole
 *     evaluation (includes and redirects too), enforces the MX limit,
 *     truncates PTR answers to 10 names, and spends the evaluation's
 *     time budget query by query;
 *   - the get_spf hook fetches TXT only (never type 99), selects exactly
 *     one "v=spf1" record, checks it against the grammar and hands
 *     libspf2 the rewritten record;
 *   - type-99 questions get "no data".
 *
 * To stop libspf2 with a permerror from inside a lookup (limits), the
 * layer records the verdict in the evaluation and answers TRY_AGAIN:
 * libspf2 carries a temperror unchanged up through every include and
 * redirect, and the wrapper then substitutes the recorded verdict.
 */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "spf_eval.h"

int spf_eval_remaining_ms(struct spf_eval *ev)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long long ms = (long long)(ev->deadline.tv_sec - now.tv_sec) * 1000 +
	               (ev->deadline.tv_nsec - now.tv_nsec) / 1000000;
	if (ms <= 0)
		return 0;
	return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

void spf_eval_abort(struct spf_eval *ev, enum spf_result r, const char *fmt, ...)
{
	if (ev->aborted)
		return;
	ev->aborted = 1;
	ev->abort_result = r;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ev->reason, sizeof(ev->reason), fmt, ap);
	va_end(ap);
}

static void set_reason(struct spf_eval *ev, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_reason(struct spf_eval *ev, const char *fmt, ...)
{
	if (ev->aborted || ev->reason[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ev->reason, sizeof(ev->reason), fmt, ap);
	va_end(ap);
}

enum dns_status spf_eval_query(struct spf_eval *ev, const char *name,
                               uint16_t type, struct dns_answer *ans)
{
	memset(ans, 0, sizeof(*ans));
	if (!name || !*name) {
		ans->status = DNS_NXDOMAIN;
		return ans->status;
	}
	int ms = spf_eval_remaining_ms(ev);
	if (ms <= 0) {
		spf_eval_abort(ev, SPF_RES_TEMPERROR, "time limit exceeded");
		ans->status = DNS_TEMPFAIL;
		return ans->status;
	}
	return dns_query(ev->dns, name, type, ms, ans);
}

void spf_eval_macro_env(struct spf_eval *ev, int rec, struct spf_macro_env *env)
{
	memset(env, 0, sizeof(*env));
	env->sender = ev->sender;
	env->local = ev->local;
	env->sender_domain = ev->domain;
	env->domain = rec >= 0 ? ev->recs[rec].domain : ev->domain;
	env->ip = &ev->ip;
	env->helo = ev->helo;
	env->receiver = ev->receiver;
	env->now = ev->now;
	env->validated_name = spf_eval_validated_name;
	env->arg = ev;
}

char *spf_eval_target(struct spf_eval *ev, int rec, struct spf_span spec)
{
	const struct spf_recinst *ri = &ev->recs[rec];
	char *name;
	if (spec.len == 0) {
		name = strdup(ri->domain);
	} else {
		struct spf_macro_env env;
		spf_eval_macro_env(ev, rec, &env);
		name = spf_macro_expand(spf_span_ptr(&ri->rec, spec), spec.len,
		                        SPF_MACRO_DOMAIN, &env);
	}
	if (name && spf_macro_to_qname(name)) {
		free(name);
		name = NULL;
	}
	return name;
}

static int name_in_domain(const char *name, const char *domain)
{
	size_t n = strlen(name), d = strlen(domain);
	if (d > n)
		return 0;
	if (d == n)
		return strcasecmp(name, domain) == 0;
	return name[n - d - 1] == '.' && strcasecmp(name + n - d, domain) == 0;
}

int spf_eval_in_net(const struct spf_eval *ev, int family, const void *addr,
                    int prefix)
{
	if (family != ev->ip.family)
		return 0;
	const unsigned char *a = addr;
	const unsigned char *b = family == AF_INET
		? (const unsigned char *)&ev->ip.u.v4 : ev->ip.u.v6.s6_addr;
	for (int i = 0; prefix > 0; i++, prefix -= 8) {
		unsigned char m = prefix >= 8 ? 0xff : (unsigned char)(0xff << (8 - prefix));
		if ((a[i] & m) != (b[i] & m))
			return 0;
	}
	return 1;
}

/* For the verdict's "mechanism": did an a/mx answer hold the client? */
static void note_match(struct spf_eval *ev, int slot, const struct dns_answer *a)
{
	if (slot < 0)
		return;
	struct spf_slot *s = &ev->slots[slot];
	const struct spf_term *t = &ev->recs[s->rec].rec.terms[s->term];
	int v4 = ev->ip.family == AF_INET;
	int prefix = v4 ? (t->cidr4 < 0 ? 32 : t->cidr4)
	                : (t->cidr6 < 0 ? 128 : t->cidr6);
	for (size_t i = 0; i < a->n; i++) {
		const struct dns_rr *x = &a->rr[i];
		if (x->type == (v4 ? DNS_T_A : DNS_T_AAAA) &&
		    spf_eval_in_net(ev, ev->ip.family, &x->u, prefix))
			s->matched = 1;
	}
}

static int addr_match(const struct spf_eval *ev, const struct dns_rr *rr)
{
	if (ev->ip.family == AF_INET)
		return rr->type == DNS_T_A &&
		       memcmp(&rr->u.a, &ev->ip.u.v4, sizeof(rr->u.a)) == 0;
	return rr->type == DNS_T_AAAA &&
	       memcmp(&rr->u.aaaa, &ev->ip.u.v6, sizeof(rr->u.aaaa)) == 0;
}

/* %{p}: DNS errors only make names unvalidated (RFC 7208 §7.3). */
const char *spf_eval_validated_name(void *arg, const char *domain)
{
	struct spf_eval *ev = arg;
	if (!ev->p_done) {
		char rev[128];
		struct dns_answer ptr, a;
		ev->p_done = 1;
		if (dns_reverse_name(ev->ip.family, &ev->ip.u, rev, sizeof(rev)))
			return NULL;
		if (spf_eval_query(ev, rev, DNS_T_PTR, &ptr) == DNS_OK) {
			uint16_t t = ev->ip.family == AF_INET ? DNS_T_A : DNS_T_AAAA;
			for (size_t i = 0; i < ptr.n && i < SPF_MAX_PTR; i++) {
				const char *name = ptr.rr[i].u.name;
				if (ptr.rr[i].type != DNS_T_PTR || !name)
					continue;
				if (spf_eval_query(ev, name, t, &a) == DNS_OK) {
					for (size_t j = 0; j < a.n; j++)
						if (addr_match(ev, &a.rr[j])) {
							char *c = strdup(name);
							if (c)
								ev->p_names[ev->p_n++] = c;
							break;
						}
				}
				dns_answer_free(&a);
			}
		}
		dns_answer_free(&ptr);
	}
	if (ev->p_n == 0)
		return NULL;
	for (int i = 0; i < ev->p_n; i++)
		if (domain && name_in_domain(ev->p_names[i], domain))
			return ev->p_names[i];
	return ev->p_names[0];
}

int spf_eval_fetch(struct spf_eval *ev, const char *domain, int parent,
                   int top_chain, enum spf_result *res)
{
	struct dns_answer ans;
	enum dns_status st = spf_eval_query(ev, domain, DNS_T_TXT, &ans);
	int found = -1, nspf = 0;
	if (st == DNS_TEMPFAIL) {
		*res = SPF_RES_TEMPERROR;
		set_reason(ev, "DNS failure looking up the SPF record of %s", domain);
		goto out;
	}
	for (size_t i = 0; st == DNS_OK && i < ans.n; i++)
		if (ans.rr[i].type == DNS_T_TXT &&
		    spf_is_spf1(ans.rr[i].u.txt.data, ans.rr[i].u.txt.len)) {
			nspf++;
			found = (int)i;
		}
	if (nspf == 0) {
		*res = SPF_RES_NONE;
		set_reason(ev, "no SPF record for %s", domain);
		goto out;
	}
	if (nspf > 1) {
		*res = SPF_RES_PERMERROR;
		set_reason(ev, "multiple SPF records for %s", domain);
		goto out;
	}
	if (ev->nrecs == ev->caprecs) {
		size_t cap = ev->caprecs ? ev->caprecs * 2 : 4;
		struct spf_recinst *nr = realloc(ev->recs, cap * sizeof(*nr));
		if (!nr) {
			*res = SPF_RES_TEMPERROR;
			set_reason(ev, "out of memory");
			goto out;
		}
		ev->recs = nr;
		ev->caprecs = cap;
	}
	struct spf_recinst *ri = &ev->recs[ev->nrecs];
	char err[128];
	memset(ri, 0, sizeof(*ri));
	if (spf_record_parse(ans.rr[found].u.txt.data, ans.rr[found].u.txt.len,
	                     &ri->rec, err, sizeof(err))) {
		*res = SPF_RES_PERMERROR;
		set_reason(ev, "syntax error in SPF record of %s: %s", domain, err);
		goto out;
	}
	ri->domain = strdup(domain);
	if (!ri->domain) {
		spf_record_clear(&ri->rec);
		*res = SPF_RES_TEMPERROR;
		set_reason(ev, "out of memory");
		goto out;
	}
	ri->parent = parent;
	ri->top_chain = top_chain;
	dns_answer_free(&ans);
	return (int)ev->nrecs++;
out:
	dns_answer_free(&ans);
	return -1;
}

/* ---- answers for libspf2 ---- */

static SPF_dns_rr_t *rr_status(SPF_dns_server_t *d, const char *domain,
                               ns_type type, SPF_dns_stat_t herrno)
{
	SPF_dns_rr_t *rr = SPF_dns_rr_new_init(d, domain, type, 0, herrno);
	if (!rr)
		abort();        /* libspf2 cannot take NULL either */
	return rr;
}

static SPF_dns_stat_t herrno_of(enum dns_status st)
{
	switch (st) {
	case DNS_OK: return NETDB_SUCCESS;
	case DNS_NODATA: return NO_DATA;
	case DNS_TEMPFAIL: return TRY_AGAIN;
	default: return HOST_NOT_FOUND;
	}
}

static SPF_dns_rr_t *rr_answer(SPF_dns_server_t *d, const char *domain,
                               ns_type type, const struct dns_answer *a,
                               size_t max)
{
	SPF_dns_rr_t *rr = rr_status(d, domain, type, NETDB_SUCCESS);
	int k = 0;
	for (size_t i = 0; i < a->n && (size_t)k < max; i++) {
		const struct dns_rr *x = &a->rr[i];
		if (x->type != type)
			continue;
		const char *str = type == ns_t_mx ? x->u.mx.host :
		                  type == ns_t_ptr ? x->u.name : NULL;
		if ((type == ns_t_mx || type == ns_t_ptr) && !str)
			continue;
		size_t need = str ? strlen(str) + 1 : sizeof(SPF_dns_rr_data_t);
		if (SPF_dns_rr_buf_realloc(rr, k, need) != SPF_E_SUCCESS)
			break;
		if (type == ns_t_a)
			rr->rr[k]->a = x->u.a;
		else if (type == ns_t_aaaa)
			rr->rr[k]->aaaa = x->u.aaaa;
		else if (type == ns_t_mx)
			memcpy(rr->rr[k]->mx, str, need);
		else
			memcpy(rr->rr[k]->ptr, str, need);
		k++;
	}
	rr->num_rr = k;
	if (k == 0)
		rr->herrno = NO_DATA;
	return rr;
}

static int count_lookup(struct spf_eval *ev, const char *what)
{
	if (++ev->lookups > SPF_MAX_LOOKUPS) {
		spf_eval_abort(ev, SPF_RES_PERMERROR,
		               "DNS lookup limit of %d exceeded at %s",
		               SPF_MAX_LOOKUPS, what);
		return -1;
	}
	return 0;
}

static int count_void(struct spf_eval *ev, const char *name)
{
	if (++ev->voids > SPF_MAX_VOID) {
		spf_eval_abort(ev, SPF_RES_PERMERROR,
		               "void lookup limit of %d exceeded at %s",
		               SPF_MAX_VOID, name);
		return -1;
	}
	return 0;
}

static const char *kind_name(enum spf_slot_kind k)
{
	switch (k) {
	case SLOT_A: case SLOT_ANY_A: return "a";
	case SLOT_MX: case SLOT_ANY_MX: return "mx";
	case SLOT_EXISTS: return "exists";
	case SLOT_INCLUDE: return "include";
	case SLOT_REDIRECT: return "redirect";
	default: return "record";
	}
}

/* Query the target of a slot; returns the status, with *name set. */
static enum dns_status slot_query(struct spf_eval *ev, struct spf_slot *s,
                                  uint16_t type, char **name,
                                  struct dns_answer *ans)
{
	const struct spf_record *r = &ev->recs[s->rec].rec;
	memset(ans, 0, sizeof(*ans));
	*name = NULL;
	if (count_lookup(ev, kind_name(s->kind)))
		return DNS_TEMPFAIL;
	*name = spf_eval_target(ev, s->rec, r->terms[s->term].domain);
	if (!*name)
		return DNS_BADNAME;     /* not a DNS name: no match, no query */
	enum dns_status st = spf_eval_query(ev, *name, type, ans);
	if (st == DNS_TEMPFAIL) {
		set_reason(ev, "DNS failure for %s:%s", kind_name(s->kind), *name);
	} else if (st == DNS_NXDOMAIN || st == DNS_NODATA ||
	           (st == DNS_OK && ans->n == 0)) {
		if (count_void(ev, *name))
			return DNS_TEMPFAIL;
		st = DNS_NODATA;
	}
	return st;
}

/* a/0 and mx/0: does the name (or any MX host) have an address of the
 * client's family?  The answer to libspf2's "exists" question. */
static enum dns_status any_address(struct spf_eval *ev, struct spf_slot *s,
                                   int *match)
{
	uint16_t t = ev->ip.family == AF_INET ? DNS_T_A : DNS_T_AAAA;
	struct dns_answer ans, a;
	char *name;
	*match = 0;
	enum dns_status st = slot_query(ev, s, s->kind == SLOT_ANY_A ? t : DNS_T_MX,
	                                &name, &ans);
	if (st == DNS_OK && s->kind == SLOT_ANY_A) {
		*match = ans.n > 0;
	} else if (st == DNS_OK) {
		if (ans.n > SPF_MAX_MX) {
			spf_eval_abort(ev, SPF_RES_PERMERROR,
			               "more than %d MX records for %s", SPF_MAX_MX, name);
			st = DNS_TEMPFAIL;
		}
		for (size_t i = 0; st == DNS_OK && !*match && i < ans.n; i++) {
			enum dns_status st2 = spf_eval_query(ev, ans.rr[i].u.mx.host, t, &a);
			if (st2 == DNS_TEMPFAIL)
				st = DNS_TEMPFAIL;
			*match = st2 == DNS_OK && a.n > 0;
			dns_answer_free(&a);
		}
	}
	free(name);
	dns_answer_free(&ans);
	return st;
}

static SPF_dns_rr_t *slot_lookup(SPF_dns_server_t *d, struct spf_eval *ev,
                                 int idx, const char *domain, ns_type type)
{
	struct spf_slot *s = &ev->slots[idx];
	struct dns_answer ans;
	SPF_dns_rr_t *rr;
	char *name = NULL;
	int match;
	enum dns_status st;

	s->hit = 1;
	ev->cur_is_ptr = 0;
	ev->cur_kind = s->kind;
	ev->cur_slot = s->kind == SLOT_MX ? idx : -1;
	switch (s->kind) {
	case SLOT_A:
	case SLOT_EXISTS:
	case SLOT_MX:
		if ((s->kind == SLOT_MX) != (type == ns_t_mx))
			return rr_status(d, domain, type, NO_DATA);
		st = slot_query(ev, s, (uint16_t)type, &name, &ans);
		if (st == DNS_OK && s->kind == SLOT_MX && ans.n > SPF_MAX_MX) {
			spf_eval_abort(ev, SPF_RES_PERMERROR,
			               "more than %d MX records for %s", SPF_MAX_MX, name);
			st = DNS_TEMPFAIL;
		}
		rr = st == DNS_OK ? rr_answer(d, domain, type, &ans, (size_t)-1)
		                  : rr_status(d, domain, type, herrno_of(st));
		if (st == DNS_OK && s->kind == SLOT_A)
			note_match(ev, idx, &ans);
		else if (st == DNS_OK && s->kind == SLOT_EXISTS)
			s->matched = ans.n > 0;
		dns_answer_free(&ans);
		free(name);
		return rr;
	case SLOT_ANY_A:
	case SLOT_ANY_MX:
		st = any_address(ev, s, &match);
		if (st == DNS_TEMPFAIL)
			return rr_status(d, domain, type, TRY_AGAIN);
		if (!match || type != ns_t_a)
			return rr_status(d, domain, type, NO_DATA);
		s->matched = 1;
		rr = rr_status(d, domain, type, NETDB_SUCCESS);
		if (SPF_dns_rr_buf_realloc(rr, 0, sizeof(SPF_dns_rr_data_t)) ==
		    SPF_E_SUCCESS) {
			rr->rr[0]->a.s_addr = htonl(0x7f000002);
			rr->num_rr = 1;
		}
		return rr;
	default:
		return rr_status(d, domain, type, NO_DATA);
	}
}

/* The PTR question of a "ptr" term (libspf2 asks nothing else by PTR). */
static SPF_dns_rr_t *ptr_lookup(SPF_dns_server_t *d, struct spf_eval *ev,
                                const char *domain)
{
	struct dns_answer ans;
	ev->cur_is_ptr = 1;
	ev->cur_slot = -1;
	if (count_lookup(ev, "ptr"))
		return rr_status(d, domain, ns_t_ptr, TRY_AGAIN);
	enum dns_status st = spf_eval_query(ev, domain, DNS_T_PTR, &ans);
	SPF_dns_rr_t *rr;
	if (ev->aborted) {
		rr = rr_status(d, domain, ns_t_ptr, TRY_AGAIN);
	} else if (st == DNS_OK && ans.n > 0) {
		/* RFC 7208 §4.6.4: names past the 10th are ignored. */
		rr = rr_answer(d, domain, ns_t_ptr, &ans, SPF_MAX_PTR);
	} else if (st == DNS_TEMPFAIL) {
		/* §5.5: a DNS error on the PTR lookup is a non-match. */
		rr = rr_status(d, domain, ns_t_ptr, HOST_NOT_FOUND);
	} else {
		rr = rr_status(d, domain, ns_t_ptr,
		               count_void(ev, domain) ? TRY_AGAIN : HOST_NOT_FOUND);
	}
	dns_answer_free(&ans);
	return rr;
}

static SPF_dns_rr_t *layer_lookup(SPF_dns_server_t *d, const char *domain,
                                  ns_type type, int should_cache)
{
	struct spf_eval *ev = d->hook;
	(void)should_cache;
	if (!ev || ev->aborted)
		return rr_status(d, domain, type, TRY_AGAIN);
	if (type == ns_t_spf)
		return rr_status(d, domain, type, NO_DATA);
	int idx = spf_slot_from_name(ev, domain);
	if (idx >= 0)
		return slot_lookup(d, ev, idx, domain, type);
	if (type == ns_t_ptr)
		return ptr_lookup(d, ev, domain);
	if (type != ns_t_a && type != ns_t_aaaa)
		return rr_status(d, domain, type, NO_DATA);
	/* An address of an MX host or of a PTR name: not a term of its own. */
	struct dns_answer ans;
	enum dns_status st = spf_eval_query(ev, domain, (uint16_t)type, &ans);
	SPF_dns_rr_t *rr;
	if (ev->aborted)
		rr = rr_status(d, domain, type, TRY_AGAIN);
	else if (st == DNS_OK) {
		rr = rr_answer(d, domain, type, &ans, (size_t)-1);
		note_match(ev, ev->cur_slot, &ans);
		for (size_t i = 0; ev->cur_is_ptr && i < ans.n; i++)
			if (addr_match(ev, &ans.rr[i]))
				ev->ptr_validated = 1;
	} else if (st == DNS_TEMPFAIL && ev->cur_is_ptr)
		rr = rr_status(d, domain, type, HOST_NOT_FOUND); /* §5.5: skip */
	else {
		if (st == DNS_TEMPFAIL)
			set_reason(ev, "DNS failure for MX host %s", domain);
		rr = rr_status(d, domain, type, herrno_of(st));
	}
	dns_answer_free(&ans);
	return rr;
}

static SPF_errcode_t layer_get_spf(SPF_server_t *srv, SPF_request_t *req,
                                   SPF_response_t *resp, SPF_record_t **recp)
{
	struct spf_eval *ev = srv->resolver->hook;
	(void)resp;
	*recp = NULL;
	if (!ev || ev->aborted)
		return SPF_E_DNS_ERROR;
	int idx = spf_slot_from_name(ev, req->cur_dom);
	if (idx < 0) {
		spf_eval_abort(ev, SPF_RES_PERMERROR, "unexpected record request");
		return SPF_E_DNS_ERROR;
	}
	struct spf_slot *s = &ev->slots[idx];
	SPF_errcode_t err;
	s->hit = 1;
	ev->cur_is_ptr = 0;
	ev->cur_slot = -1;
	if (s->kind == SLOT_CHUNK) {
		err = spf_rewrite_compile_chunk(ev, srv, idx, recp);
	} else if (s->kind == SLOT_INCLUDE || s->kind == SLOT_REDIRECT) {
		int redirect = s->kind == SLOT_REDIRECT;
		if (count_lookup(ev, kind_name(s->kind)))
			return SPF_E_DNS_ERROR;
		const struct spf_record *r = &ev->recs[s->rec].rec;
		char *name = spf_eval_target(ev, s->rec,
		                             redirect ? r->redirect : r->terms[s->term].domain);
		if (!name) {
			set_reason(ev, "%s target is not a domain name", kind_name(s->kind));
			return SPF_E_NOT_SPF;
		}
		int top = redirect && ev->recs[s->rec].top_chain;
		enum spf_result res;
		int rec = spf_eval_fetch(ev, name, s->rec, top, &res);
		if (rec < 0) {
			if (res == SPF_RES_NONE) {
				ev->reason[0] = '\0';
				set_reason(ev, "%s:%s has no SPF record", kind_name(s->kind), name);
			}
			free(name);
			return res == SPF_RES_TEMPERROR ? SPF_E_DNS_ERROR :
			       res == SPF_RES_NONE ? SPF_E_NOT_SPF : SPF_E_SYNTAX;
		}
		free(name);
		if (top)
			ev->final_rec = rec;
		err = spf_rewrite_compile(ev, srv, rec, recp);
	} else {
		spf_eval_abort(ev, SPF_RES_PERMERROR, "unexpected record request");
		return SPF_E_DNS_ERROR;
	}
	if (err != SPF_E_SUCCESS) {
		spf_eval_abort(ev, SPF_RES_TEMPERROR,
		               "cannot hand the record to libspf2: %s", SPF_strerror(err));
		return SPF_E_DNS_ERROR;
	}
	return SPF_E_SUCCESS;
}

static void layer_destroy(SPF_dns_server_t *d)
{
	free(d);
}

SPF_dns_server_t *spf_dnslayer_new(void)
{
	SPF_dns_server_t *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->destroy = layer_destroy;
	d->lookup = layer_lookup;
	d->get_spf = layer_get_spf;
	d->name = "spfgate";
	return d;
}
