/*
 * dnscheck_spf: a local domain's SPF record, and whether it lets our
 * mail out.  The record must exist once (two are a permerror, RFC 7208
 * §4.5); then every outbound path's address is run through the real
 * evaluator (common/spf.c) against the same DNS the world sees, and only
 * "pass" will do: softfail and neutral get our mail into spam folders.
 *
 * Advice: no record gets a new one; a record that leaves a path out is
 * adapted with the missing mechanisms; two records become one, the
 * first (in sorted order) adapted.  A record in error (permerror) or an
 * unanswered lookup gets no record: adding terms would not fix it.
 */
#include "dnscheck.h"
#include "spf.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int
str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The v=spf1 records among the TXT records, sorted (DNS order is not
 * stable, the output must be). */
static enum dns_status
fetch_records(struct dnscheck *c, const char *domain, struct strlist *recs)
{
	struct dns_answer ans;
	enum dns_status st = dc_query(c, domain, DNS_T_TXT, &ans);

	for (size_t i = 0; i < ans.n; i++)
		if (dc_spf_is_record(ans.rr[i].u.txt.data, ans.rr[i].u.txt.len))
			strlist_add(recs, ans.rr[i].u.txt.data);
	dns_answer_free(&ans);
	if (recs->n > 1)
		qsort(recs->v, recs->n, sizeof(*recs->v), str_cmp);
	return st;
}

/* Evaluate every path; mark the mechanisms of those that do not pass.
 * Returns the worst kind of failure: 0 all pass, 1 a plain non-pass,
 * 2 temperror, 3 permerror. */
static int
evaluate_paths(struct dnscheck *c, const char *domain, unsigned char *missing)
{
	char sender[300];
	int worst = 0;

	snprintf(sender, sizeof(sender), "postmaster@%s", domain);
	for (size_t i = 0; i < c->npaths && !c->dead; i++) {
		const struct dc_path *p = &c->paths[i];
		struct spf_request req = {
			.client = p->ip, .sender = sender, .helo = c->mail_name,
			.receiver = NULL, .timeout_ms = c->timeout_ms,
		};
		struct spf_verdict v;
		char a[INET6_ADDRSTRLEN], check[INET6_ADDRSTRLEN + 40];

		long t0 = dc_clock_ms();
		spf_check(c->dns, &req, &v);
		if (v.result == SPF_RES_TEMPERROR)
			dc_timed_out(c, t0);
		snprintf(check, sizeof(check), "SPF for %s (%s)", ipaddr_format(&p->ip, a, sizeof(a)),
		         p->what);
		dc_line(c, v.result == SPF_RES_PASS ? DC_OK : DC_FAIL, domain, check, "%s (%s)",
		        spf_result_str(v.result), v.reason);
		if (v.result != SPF_RES_PASS) {
			missing[p->mech] = 1;
			int kind = v.result == SPF_RES_PERMERROR ? 3
			         : v.result == SPF_RES_TEMPERROR ? 2 : 1;
			worst = kind > worst ? kind : worst;
		}
		spf_verdict_free(&v);
	}
	return worst;
}

static void
advise(struct dnscheck *c, const char *domain, const struct strlist *recs,
       const unsigned char *missing, int worst)
{
	const char *add[64];
	size_t nadd = 0;
	char *rec;

	for (size_t i = 0; i < c->mechs.n && nadd < 64; i++)
		if (missing[i] || recs->n != 1)
			add[nadd++] = c->mechs.v[i];
	if (recs->n == 0) {
		/* mail_name usually has no MX of its own: "a" is the host */
		rec = dc_spf_new(strcasecmp(domain, c->mail_name) == 0 ? "a" : "mx", add, nadd);
		if (rec == NULL)
			return;
		dc_publish(c, "; %s: SPF record", domain);
		dc_publish_txt(c, domain, rec);
		free(rec);
		return;
	}
	if (recs->n > 1) {
		/* the first keeps its "all"; what the others allowed stays allowed */
		struct strlist terms = { 0 };
		for (size_t i = 1; i < recs->n; i++)
			dc_spf_mechanisms(recs->v[i], &terms);
		for (size_t i = 0; i < nadd; i++)
			if (!strlist_contains_ci(&terms, add[i]))
				strlist_add(&terms, add[i]);
		rec = dc_spf_adapt(recs->v[0], (const char *const *)terms.v, terms.n);
		dc_publish(c, "; %s: one SPF record instead of %zu, with the terms of all", domain,
		           recs->n);
		dc_publish_txt(c, domain, rec ? rec : recs->v[0]);
		free(rec);
		strlist_free(&terms);
		return;
	}
	if (worst == 0 || worst == 2)
		return;
	if (worst == 3) {
		dc_publish(c, "; %s: its SPF record is in error (permerror): fix it", domain);
		return;
	}
	rec = dc_spf_adapt(recs->v[0], add, nadd);
	if (rec == NULL) {
		/* it names the right hosts, their addresses are wrong */
		dc_publish(c, "; %s: the SPF record names %s already, yet does not pass:"
		           " check the addresses that name has", domain, nadd ? add[0] : "every path");
		return;
	}
	dc_publish(c, "; %s: SPF record, adapted (instead of \"%s\")", domain, recs->v[0]);
	dc_publish_txt(c, domain, rec);
	free(rec);
}

void
dc_check_spf(struct dnscheck *c, const char *domain)
{
	struct strlist recs = { 0 };
	enum dns_status st = fetch_records(c, domain, &recs);
	unsigned char missing[64] = { 0 };

	if (st == DNS_TEMPFAIL || st == DNS_BADNAME) {
		dc_line(c, DC_FAIL, domain, "SPF record", "lookup failed: %s", dc_dns_error(c, st));
		strlist_free(&recs);
		return;
	}
	if (recs.n == 0)
		dc_line(c, DC_FAIL, domain, "SPF record", "none");
	else if (recs.n == 1)
		dc_line(c, DC_OK, domain, "SPF record", "\"%s\"", recs.v[0]);
	else
		dc_line(c, DC_FAIL, domain, "SPF record", "%zu v=spf1 records (permerror)", recs.n);

	int worst = evaluate_paths(c, domain, missing);
	if (!c->dead)
		advise(c, domain, &recs, missing, worst);
	strlist_free(&recs);
}
