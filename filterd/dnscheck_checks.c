/*
 * dnscheck_checks: the address and MX checks of spfgate-dnscheck, and
 * the DNS wrapper they share.
 *
 *  - mail_name must resolve to this host: every A/AAAA one of our
 *    addresses (some not ours: WARN, mail for us reaches another host
 *    part of the time; none ours or none at all: FAIL).
 *  - a local domain's MX must name mail_name.  Another host preferred
 *    over it, or as preferred, gets our mail first or half the time:
 *    WARN.  A backup MX (less preferred) is a normal setup: OK.  No MX
 *    at all is fine only for mail_name itself (implicit MX, RFC 5321
 *    §5.1); a null MX (RFC 7505) refuses all mail: FAIL.
 *
 * A name server that lets a query run into the timeout is taken for
 * dead: every later query fails at once, so a dead server costs one
 * timeout, not one per check.
 */
#include "dnscheck.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

long
dc_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
dc_timed_out(struct dnscheck *c, long t0)
{
	/* a fast SERVFAIL is one broken zone; a timeout is the server */
	if (dc_clock_ms() - t0 >= (long)c->timeout_ms * 9 / 10)
		c->dead = 1;
}
enum dns_status
dc_query(struct dnscheck *c, const char *name, uint16_t type, struct dns_answer *out)
{
	if (c->dead) {
		memset(out, 0, sizeof(*out));
		out->status = DNS_TEMPFAIL;
		return DNS_TEMPFAIL;
	}
	long t0 = dc_clock_ms();
	enum dns_status st = dns_query(c->dns, name, type, 0, out);
	if (st == DNS_TEMPFAIL)
		dc_timed_out(c, t0);
	if (st == DNS_TEMPFAIL)
		c->failed++;
	else
		c->answered++;
	return st;
}

const char *
dc_dns_error(const struct dnscheck *c, enum dns_status st)
{
	static char buf[64];

	switch (st) {
	case DNS_NXDOMAIN: return "no such domain (NXDOMAIN)";
	case DNS_NODATA: return "no record";
	case DNS_BADNAME: return "not a valid domain name";
	case DNS_TEMPFAIL:
		if (!c->dead)
			return "temporary DNS failure (SERVFAIL or network error)";
		snprintf(buf, sizeof(buf), "no answer from the name servers within %ds",
		         c->timeout_ms / 1000);
		return buf;
	default: return "lookup failed";
	}
}

/* A and AAAA of name into *out.  Returns the worse status of the two
 * (DNS_OK when either had addresses and neither failed). */
static enum dns_status
lookup_addrs(struct dnscheck *c, const char *name, struct dc_addrs *out)
{
	static const uint16_t types[] = { DNS_T_A, DNS_T_AAAA };
	enum dns_status worst = DNS_NXDOMAIN;

	for (size_t t = 0; t < 2; t++) {
		struct dns_answer ans;
		enum dns_status st = dc_query(c, name, types[t], &ans);
		for (size_t i = 0; i < ans.n; i++) {
			struct ipaddr a;
			memset(&a, 0, sizeof(a));
			if (ans.rr[i].type == DNS_T_A) {
				a.family = AF_INET;
				a.u.v4 = ans.rr[i].u.a;
			} else if (ans.rr[i].type == DNS_T_AAAA) {
				a.family = AF_INET6;
				a.u.v6 = ans.rr[i].u.aaaa;
			} else
				continue;
			dc_addrs_add(out, &a);
		}
		dns_answer_free(&ans);
		if (st == DNS_TEMPFAIL || st == DNS_BADNAME)
			return st;
		if (st == DNS_OK || (st == DNS_NODATA && worst == DNS_NXDOMAIN))
			worst = st;
		if (c->dead)
			return DNS_TEMPFAIL;
	}
	return out->n ? DNS_OK : worst;
}

static void
publish_self_addrs(struct dnscheck *c, const char *name)
{
	for (size_t i = 0; i < c->self.n; i++) {
		char a[INET6_ADDRSTRLEN];
		dc_publish(c, "%s. %d IN %s %s", name, DC_TTL,
		           c->self.v[i].family == AF_INET ? "A" : "AAAA",
		           ipaddr_format(&c->self.v[i], a, sizeof(a)));
	}
}

void
dc_check_mail_name(struct dnscheck *c)
{
	struct dc_addrs got = { 0 }, foreign = { 0 };
	char list[1024], flist[1024];
	const char *name = c->mail_name;
	enum dns_status st = lookup_addrs(c, name, &got);

	if (st != DNS_OK) {
		if (st == DNS_TEMPFAIL)
			dc_line(c, DC_FAIL, name, "address", "lookup failed: %s", dc_dns_error(c, st));
		else if (st == DNS_NODATA)
			dc_line(c, DC_FAIL, name, "address", "no A or AAAA record");
		else
			dc_line(c, DC_FAIL, name, "address", "no A or AAAA record (%s)",
			        dc_dns_error(c, st));
		if (st != DNS_TEMPFAIL && c->self.n) {
			dc_publish(c, "; %s: this host's address", name);
			publish_self_addrs(c, name);
		}
		dc_addrs_free(&got);
		return;
	}
	for (size_t i = 0; i < got.n; i++)
		if (!dc_addrs_contains(&c->self, &got.v[i]))
			dc_addrs_add(&foreign, &got.v[i]);
	dc_addrs_format(&got, list, sizeof(list));
	dc_addrs_format(&foreign, flist, sizeof(flist));
	if (foreign.n == 0)
		dc_line(c, DC_OK, name, "address", "%s (this host)", list);
	else if (foreign.n < got.n)
		dc_line(c, DC_WARN, name, "address", "%s: %s not this host's", list, flist);
	else {
		dc_line(c, DC_FAIL, name, "address", "%s: not this host's", list);
		if (c->self.n) {
			dc_publish(c, "; %s: this host's address (instead of %s)", name, flist);
			publish_self_addrs(c, name);
		}
	}
	dc_addrs_free(&got);
	dc_addrs_free(&foreign);
}

void
dc_check_smarthost(struct dnscheck *c)
{
	struct dc_addrs got = { 0 };
	char list[1024];
	enum dns_status st = DNS_OK;

	if (c->sh_literal) {
		struct ipaddr a;
		if (ipaddr_parse(c->sh_host, &a) == 0)
			dc_addrs_add(&got, &a);
	} else
		st = lookup_addrs(c, c->sh_host, &got);
	if (st != DNS_OK) {
		if (st == DNS_NODATA)
			dc_line(c, DC_FAIL, c->sh_host, "smarthost address", "no A or AAAA record");
		else
			dc_line(c, DC_FAIL, c->sh_host, "smarthost address", "%s (%s)",
			        st == DNS_TEMPFAIL ? "lookup failed" : "no A or AAAA record",
			        dc_dns_error(c, st));
	} else {
		dc_addrs_format(&got, list, sizeof(list));
		dc_line(c, DC_OK, c->sh_host, "smarthost address", "%s", list);
	}
	c->paths = got.n ? calloc(got.n, sizeof(*c->paths)) : NULL;
	for (size_t i = 0; c->paths && i < got.n; i++) {
		c->paths[i].ip = got.v[i];
		c->paths[i].what = "smarthost";
		c->paths[i].mech = 0;
	}
	c->npaths = c->paths ? got.n : 0;
	dc_addrs_free(&got);
}

static int
same_name(const char *x, const char *y)
{
	size_t xl = strlen(x), yl = strlen(y);
	if (xl && x[xl - 1] == '.')
		xl--;
	if (yl && y[yl - 1] == '.')
		yl--;
	return xl == yl && strncasecmp(x, y, xl) == 0;
}

static int
mx_cmp(const void *a, const void *b)
{
	const struct dns_rr *x = a, *y = b;
	if (x->u.mx.pref != y->u.mx.pref)
		return x->u.mx.pref < y->u.mx.pref ? -1 : 1;
	return strcasecmp(x->u.mx.host, y->u.mx.host);
}

static void
publish_mx(struct dnscheck *c, const char *domain)
{
	dc_publish(c, "%s. %d IN MX 10 %s.", domain, DC_TTL, c->mail_name);
}

void
dc_check_mx(struct dnscheck *c, const char *domain)
{
	struct dns_answer ans;
	enum dns_status st = dc_query(c, domain, DNS_T_MX, &ans);
	char others[1024] = "";
	size_t used = 0;

	if (st == DNS_TEMPFAIL || st == DNS_BADNAME) {
		dc_line(c, DC_FAIL, domain, "MX", "lookup failed: %s", dc_dns_error(c, st));
		goto out;
	}
	if (st != DNS_OK) {
		if (st == DNS_NODATA && same_name(domain, c->mail_name)) {
			dc_line(c, DC_OK, domain, "MX", "none, mail goes to its own address (implicit MX)");
			goto out;
		}
		dc_line(c, DC_FAIL, domain, "MX", "%s", st == DNS_NODATA ? "no MX record"
		        : dc_dns_error(c, st));
		dc_publish(c, "; %s: MX to %s", domain, c->mail_name);
		publish_mx(c, domain);
		goto out;
	}
	qsort(ans.rr, ans.n, sizeof(*ans.rr), mx_cmp);
	for (size_t i = 0; i < ans.n; i++)
		if (ans.rr[i].u.mx.host[0] == '\0') {
			dc_line(c, DC_FAIL, domain, "MX", "null MX (%u .): the domain accepts no mail",
			        ans.rr[i].u.mx.pref);
			dc_publish(c, "; %s: MX to %s (remove the null MX \"%u .\")", domain,
			           c->mail_name, ans.rr[i].u.mx.pref);
			publish_mx(c, domain);
			goto out;
		}

	const struct dns_rr *ours = NULL, *ahead = NULL;
	for (size_t i = 0; i < ans.n; i++) {
		const struct dns_rr *rr = &ans.rr[i];
		if (ours == NULL && same_name(rr->u.mx.host, c->mail_name)) {
			ours = rr;
			continue;
		}
		if (same_name(rr->u.mx.host, c->mail_name))
			continue;
		if (ours == NULL || rr->u.mx.pref <= ours->u.mx.pref)
			ahead = ahead ? ahead : rr;
		if (used < sizeof(others)) {
			int k = snprintf(others + used, sizeof(others) - used, "%s%u %s",
			                 used ? ", " : "", rr->u.mx.pref, rr->u.mx.host);
			used += k > 0 ? (size_t)k : 0;
		}
	}
	if (ours == NULL) {
		dc_line(c, DC_FAIL, domain, "MX", "%s: not %s", others, c->mail_name);
		dc_publish(c, "; %s: MX to %s (instead of %s)", domain, c->mail_name, others);
		publish_mx(c, domain);
	} else if (ahead) {
		dc_line(c, DC_WARN, domain, "MX", "%u %s, but %u %s is %s", ours->u.mx.pref,
		        ours->u.mx.host, ahead->u.mx.pref, ahead->u.mx.host,
		        ahead->u.mx.pref < ours->u.mx.pref ? "preferred" : "as preferred");
	} else if (used) {
		dc_line(c, DC_OK, domain, "MX", "%u %s (backup: %s)", ours->u.mx.pref,
		        ours->u.mx.host, others);
	} else
		dc_line(c, DC_OK, domain, "MX", "%u %s", ours->u.mx.pref, ours->u.mx.host);
out:
	dns_answer_free(&ans);
}
