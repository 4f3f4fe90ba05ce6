/*
 * spf: RFC 7208 check_host() with libspf2 as the evaluator and this
 * module as the referee (see spf.h, spf_eval.h).
 *
 * The wrapper does what must happen around libspf2's interpreter:
 * the initial checks of §4.3 (a malformed domain is "none"), the record
 * fetch and selection of the top-level domain, the verdict substituted
 * by the DNS layer when a processing limit was hit, and the explanation
 * of §6.2 (fetched and expanded by our expander, only for the record
 * that produced the fail, NULL whenever anything goes wrong).  It calls
 * SPF_record_interpret() directly, so libspf2's unconditional pass for
 * loopback clients never applies.
 *
 * libspf2 objects are per thread (a thread-specific SPF_server_t with
 * its own DNS layer, made once); each evaluation's state lives on the
 * caller's stack and is hooked into the layer only while it runs.
 */
#include <config.h>

#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "spf_eval.h"

struct spf_thread {
	SPF_server_t *srv;
	SPF_dns_server_t *layer;
};

static pthread_key_t thread_key;
static pthread_once_t thread_once = PTHREAD_ONCE_INIT;

static void thread_free(void *p)
{
	struct spf_thread *t = p;
	if (!t)
		return;
	if (t->srv)
		SPF_server_free(t->srv);
	if (t->layer)
		SPF_dns_free(t->layer);
	free(t);
}

static void init_once(void)
{
	pthread_key_create(&thread_key, thread_free);
	/* libspf2 would print compiler warnings on stderr. */
	SPF_warning_handler = NULL;
	SPF_info_handler = NULL;
	SPF_debug_handler = NULL;
}

static struct spf_thread *thread_server(void)
{
	pthread_once(&thread_once, init_once);
	struct spf_thread *t = pthread_getspecific(thread_key);
	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->layer = spf_dnslayer_new();
	if (t->layer)
		t->srv = SPF_server_new_dns(t->layer, 0);
	if (!t->srv) {
		thread_free(t);
		return NULL;
	}
	/* The layer enforces the RFC limits over the whole evaluation;
	 * libspf2's per-record counter must never fire first (it restarts
	 * in each include, and our synthetic includes would feed it). */
	SPF_server_set_max_dns_mech(t->srv, INT_MAX / 2);
	SPF_server_set_max_dns_mx(t->srv, SPF_MAX_MX);
	SPF_server_set_max_dns_ptr(t->srv, SPF_MAX_PTR);
	/* libspf2 builds an explanation on every non-pass result; ours is
	 * made by the wrapper, so make libspf2's as cheap as possible. */
	SPF_response_t *resp = NULL;
	SPF_server_set_explanation(t->srv, "-", &resp);
	if (resp)
		SPF_response_free(resp);
	if (pthread_setspecific(thread_key, t)) {
		thread_free(t);
		return NULL;
	}
	return t;
}

void spf_thread_release(void)
{
	pthread_once(&thread_once, init_once);
	struct spf_thread *t = pthread_getspecific(thread_key);
	if (t) {
		pthread_setspecific(thread_key, NULL);
		thread_free(t);
	}
}

static const char *const result_names[SPF_RES_COUNT] = {
	"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror",
};

const char *spf_result_str(enum spf_result r)
{
	return (unsigned)r < SPF_RES_COUNT ? result_names[r] : "permerror";
}

int spf_result_parse(const char *s, enum spf_result *out)
{
	for (int i = 0; i < SPF_RES_COUNT; i++)
		if (s && strcasecmp(s, result_names[i]) == 0) {
			*out = (enum spf_result)i;
			return 0;
		}
	return -1;
}

void spf_verdict_free(struct spf_verdict *v)
{
	if (!v)
		return;
	free(v->explanation);
	v->explanation = NULL;
}

/* RFC 7208 §4.3: a usable <domain> is a multi-label FQDN. */
static int domain_ok(char *d)
{
	for (const char *p = d; *p; p++)
		if (*p < 0x21 || *p > 0x7e)
			return 0;
	size_t n = strlen(d);
	if (n > 253 || !strchr(d, '.'))
		return 0;
	char tmp[256];
	memcpy(tmp, d, n + 1);
	if (spf_macro_to_qname(tmp) || strcmp(tmp, d) != 0 || !strchr(tmp, '.'))
		return 0;
	/* the top label must be a toplabel: letters somewhere, or dashes
	 * inside (a "domain" like [1.2.3.4] or 1.2.3.4 is not one) */
	const char *top = strrchr(d, '.') + 1;
	int alpha = 0, dash = 0;
	for (const char *p = top; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
			alpha = 1;
		else if (*p == '-')
			dash = 1;
		else if (*p < '0' || *p > '9')
			return 0;
	}
	if (dash && (top[0] == '-' || top[strlen(top) - 1] == '-'))
		return 0;
	return alpha || dash;
}

static void sanitize(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = '?';
}

#define EXPLANATION_MAX 400

/* §6.2: the explanation of the record that produced "fail". */
static char *explain(struct spf_eval *ev, int rec)
{
	const struct spf_recinst *ri = &ev->recs[rec];
	if (!ri->rec.exp.len || spf_eval_remaining_ms(ev) <= 0)
		return NULL;
	/* Running out of time here costs the explanation, not the result. */
	int aborted = ev->aborted;
	char *name = spf_eval_target(ev, rec, ri->rec.exp);
	if (!name) {
		ev->aborted = aborted;
		return NULL;
	}
	struct dns_answer ans;
	enum dns_status st = spf_eval_query(ev, name, DNS_T_TXT, &ans);
	free(name);
	char *text = NULL;
	size_t ntxt = 0, which = 0;
	for (size_t i = 0; st == DNS_OK && i < ans.n; i++)
		if (ans.rr[i].type == DNS_T_TXT) {
			ntxt++;
			which = i;
		}
	if (ntxt == 1) {
		struct spf_macro_env env;
		spf_eval_macro_env(ev, rec, &env);
		text = spf_macro_expand(ans.rr[which].u.txt.data,
		                        ans.rr[which].u.txt.len, SPF_MACRO_EXP, &env);
	}
	dns_answer_free(&ans);
	if (ev->aborted != aborted) {
		ev->aborted = aborted;
		ev->reason[0] = '\0';
		free(text);
		return NULL;
	}
	if (text) {
		sanitize(text);
		if (strlen(text) > EXPLANATION_MAX)
			text[EXPLANATION_MAX] = '\0';
	}
	return text;
}

static enum spf_result map_result(SPF_result_t r)
{
	switch (r) {
	case SPF_RESULT_NEUTRAL: return SPF_RES_NEUTRAL;
	case SPF_RESULT_PASS: return SPF_RES_PASS;
	case SPF_RESULT_FAIL: return SPF_RES_FAIL;
	case SPF_RESULT_SOFTFAIL: return SPF_RES_SOFTFAIL;
	case SPF_RESULT_NONE: return SPF_RES_NONE;
	case SPF_RESULT_TEMPERROR: return SPF_RES_TEMPERROR;
	default: return SPF_RES_PERMERROR;
	}
}

static enum spf_result qualifier_result(char q)
{
	return q == '-' ? SPF_RES_FAIL : q == '~' ? SPF_RES_SOFTFAIL :
	       q == '?' ? SPF_RES_NEUTRAL : SPF_RES_PASS;
}

static int local_match(const struct spf_eval *ev, const struct spf_term *t)
{
	if (t->mech == SPF_MECH_ALL)
		return 1;
	if (t->mech == SPF_MECH_PTR)
		return ev->ptr_validated;   /* approximately: it may have matched */
	if (t->mech == SPF_MECH_IP4)
		return spf_eval_in_net(ev, AF_INET, &t->net.v4,
		                       t->cidr4 < 0 ? 32 : t->cidr4);
	if (t->mech == SPF_MECH_IP6)
		return spf_eval_in_net(ev, AF_INET6, &t->net.v6,
		                       t->cidr6 < 0 ? 128 : t->cidr6);
	return 0;
}

/* Which term of the deciding record matched (informational): the last
 * term the layer saw evaluated, or a later local term that matches. */
static void find_mechanism(struct spf_eval *ev, enum spf_result res,
                           struct spf_verdict *out)
{
	const struct spf_record *r = &ev->recs[ev->final_rec].rec;
	int last = -1, last_matched = 0;
	for (size_t i = 0; i < ev->nslots; i++)
		if (ev->slots[i].hit && ev->slots[i].rec == ev->final_rec &&
		    ev->slots[i].term > last) {
			last = ev->slots[i].term;
			/* include results are not seen by the layer */
			last_matched = ev->slots[i].matched ||
			               ev->slots[i].kind == SLOT_INCLUDE;
		}
	for (size_t i = last < 0 ? 0 : (size_t)last; i < r->nterms; i++) {
		const struct spf_term *t = &r->terms[i];
		if (qualifier_result(t->qualifier) != res)
			continue;
		if (((int)i == last && last_matched) || local_match(ev, t)) {
			snprintf(out->mechanism, sizeof(out->mechanism), "%.*s",
			         (int)t->text.len, r->text + t->text.off);
			return;
		}
	}
}

static void parse_sender(struct spf_eval *ev, const char *s)
{
	const char *at = strrchr(s, '@');
	const char *dom = at ? at + 1 : s;
	size_t ll = at ? (size_t)(at - s) : 0;
	if (ll == 0 || ll >= sizeof(ev->local))
		snprintf(ev->local, sizeof(ev->local), "postmaster");
	else
		snprintf(ev->local, sizeof(ev->local), "%.*s", (int)ll, s);
	snprintf(ev->domain, sizeof(ev->domain), "%s", dom);
	size_t dl = strlen(ev->domain);
	if (dl > 1 && ev->domain[dl - 1] == '.')
		ev->domain[dl - 1] = '\0';
	snprintf(ev->sender, sizeof(ev->sender), "%s@%s", ev->local, ev->domain);
}

static void eval_free(struct spf_eval *ev)
{
	for (size_t i = 0; i < ev->nslots; i++)
		free(ev->slots[i].chunk);
	free(ev->slots);
	for (size_t i = 0; i < ev->nrecs; i++) {
		free(ev->recs[i].domain);
		spf_record_clear(&ev->recs[i].rec);
	}
	free(ev->recs);
	for (int i = 0; i < ev->p_n; i++)
		free(ev->p_names[i]);
}

/* Run libspf2's interpreter on the rewritten top-level record. */
static enum spf_result interpret(struct spf_eval *ev, struct spf_thread *t,
                                 int rec, SPF_reason_t *reason)
{
	SPF_record_t *record = NULL;
	SPF_request_t *sreq = NULL;
	SPF_response_t *sresp = NULL;
	enum spf_result res = SPF_RES_TEMPERROR;

	*reason = SPF_REASON_NONE;
	t->layer->hook = ev;
	if (spf_rewrite_compile(ev, t->srv, rec, &record) != SPF_E_SUCCESS) {
		snprintf(ev->reason, sizeof(ev->reason),
		         "cannot hand the record to libspf2");
		goto out;
	}
	sreq = SPF_request_new(t->srv);
	if (!sreq)
		goto out;
	if (ev->ip.family == AF_INET)
		SPF_request_set_ipv4(sreq, ev->ip.u.v4);
	else
		SPF_request_set_ipv6(sreq, ev->ip.u.v6);
	sreq->cur_dom = ev->domain;
	sresp = SPF_response_new(sreq);
	if (!sresp)
		goto out;
	sresp->spf_record_exp = record;
	SPF_record_interpret(record, sreq, sresp, 0);
	res = map_result(sresp->result);
	*reason = sresp->reason;
out:
	if (ev->aborted)
		res = ev->abort_result;
	t->layer->hook = NULL;
	if (sresp)
		SPF_response_free(sresp);
	if (sreq)
		SPF_request_free(sreq);
	if (record)
		SPF_record_free(record);
	return res;
}

enum spf_result spf_check(struct dns_resolver *dns,
                          const struct spf_request *req,
                          struct spf_verdict *out)
{
	static __thread unsigned counter;
	struct spf_eval *ev = calloc(1, sizeof(*ev));
	enum spf_result res = SPF_RES_TEMPERROR;
	SPF_reason_t why = SPF_REASON_NONE;

	memset(out, 0, sizeof(*out));
	if (!ev) {
		snprintf(out->reason, sizeof(out->reason), "out of memory");
		return out->result = SPF_RES_TEMPERROR;
	}
	ev->dns = dns;
	ev->ip = req->client;
	if (ev->ip.family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&ev->ip.u.v6)) {
		struct in_addr v4;
		memcpy(&v4, ev->ip.u.v6.s6_addr + 12, 4);
		ev->ip.family = AF_INET;
		ev->ip.u.v4 = v4;
	}
	ev->helo = req->helo ? req->helo : "";
	ev->cur_slot = -1;
	ev->receiver = req->receiver;
	ev->now = (long long)time(NULL);
	int timeout = req->timeout_ms > 0 ? req->timeout_ms : 20000;
	clock_gettime(CLOCK_MONOTONIC, &ev->deadline);
	ev->deadline.tv_sec += timeout / 1000;
	ev->deadline.tv_nsec += (long)(timeout % 1000) * 1000000L;
	if (ev->deadline.tv_nsec >= 1000000000L) {
		ev->deadline.tv_sec++;
		ev->deadline.tv_nsec -= 1000000000L;
	}
	snprintf(ev->nonce, sizeof(ev->nonce), "%08x",
	         (unsigned)(++counter * 2654435761u) ^
	         (unsigned)(uintptr_t)ev ^ (unsigned)ev->deadline.tv_nsec);
	parse_sender(ev, req->sender ? req->sender : "");
	snprintf(out->domain, sizeof(out->domain), "%s", ev->domain);

	if (ev->ip.family != AF_INET && ev->ip.family != AF_INET6) {
		res = SPF_RES_PERMERROR;
		snprintf(ev->reason, sizeof(ev->reason), "no client address");
		goto done;
	}
	if (!domain_ok(ev->domain)) {
		res = SPF_RES_NONE;
		snprintf(ev->reason, sizeof(ev->reason),
		         "'%.200s' is not a valid domain name", ev->domain);
		goto done;
	}
	struct spf_thread *t = thread_server();
	if (!t) {
		snprintf(ev->reason, sizeof(ev->reason), "out of memory");
		goto done;
	}
	int rec = spf_eval_fetch(ev, ev->domain, -1, 1, &res);
	if (rec < 0)
		goto done;
	ev->final_rec = rec;
	res = interpret(ev, t, rec, &why);
	if (res == SPF_RES_FAIL && !ev->aborted)
		out->explanation = explain(ev, ev->final_rec);
	if (!ev->aborted && why == SPF_REASON_DEFAULT) {
		snprintf(out->mechanism, sizeof(out->mechanism), "default");
		snprintf(ev->reason, sizeof(ev->reason),
		         "no mechanism matched, default result");
	} else if (!ev->aborted && why == SPF_REASON_MECH &&
	           res != SPF_RES_TEMPERROR && res != SPF_RES_PERMERROR) {
		find_mechanism(ev, res, out);
		snprintf(ev->reason, sizeof(ev->reason), "mechanism %.200s matched",
		         out->mechanism[0] ? out->mechanism : "(unknown)");
	}
done:
	if (!ev->reason[0])
		snprintf(ev->reason, sizeof(ev->reason), "%s",
		         res == SPF_RES_PERMERROR ? "permanent error in SPF evaluation" :
		         res == SPF_RES_TEMPERROR ? "temporary error in SPF evaluation" :
		         spf_result_str(res));
	snprintf(out->reason, sizeof(out->reason), "%s", ev->reason);
	sanitize(out->reason);
	sanitize(out->mechanism);
	sanitize(out->domain);
	out->dns_lookups = ev->lookups > SPF_MAX_LOOKUPS + 1 ? SPF_MAX_LOOKUPS + 1
	                                                    : ev->lookups;
	out->void_lookups = ev->voids;
	out->result = res;
	eval_free(ev);
	free(ev);
	return res;
}
