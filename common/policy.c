/*
 * policy: filterd's decisions, shared by the milter, spfgate-policy and
 * relayd so that all three say the same thing for the same input.
 *
 * MAIL:  relay networks and authenticated clients are not SPF-checked;
 *        everyone else gets SPF on the MAIL FROM identity (postmaster@HELO
 *        for the null sender) and, with helo_check, on the HELO identity;
 *        each result maps to reject / tempfail / tag, the most severe of
 *        the identities wins, and dry_run turns every verdict into tag.
 * RCPT:  relay only for self.
 */
#include "policy.h"
#include "authres.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define VALUE_MAX 200       /* longest client value copied into a header */

/*
 * The MAIL FROM identity for SPF, split leniently: syntax is the MTA's
 * business, and RFC 7208 §4.3 defines a result (none) for a malformed
 * domain, so a bad address must still get an SPF verdict.
 */
static void
spf_identity(const char *from, const char *helo, char *id, size_t len, int *is_null)
{
	const char *b = from, *e;

	while (*b == ' ')
		b++;
	e = b + strlen(b);
	while (e > b && e[-1] == ' ')
		e--;
	if (e - b >= 2 && *b == '<' && e[-1] == '>')
		b++, e--;
	*is_null = b == e;
	if (*is_null) {
		snprintf(id, len, "postmaster@%s", helo ? helo : "");
		return;
	}
	/*
	 * Never check a truncated domain: that would ask a different domain
	 * than the sender's.  The domain (after the last '@') is kept whole up
	 * to one byte more than any valid name, so an over-long one still
	 * reads as malformed (none, RFC 7208 §4.3); an over-long local part
	 * becomes "postmaster", like a missing one.
	 */
	const char *at = NULL;
	for (const char *p = b; p < e; p++)
		if (*p == '@')
			at = p;
	const char *dom = at ? at + 1 : b;
	size_t dlen = (size_t)(e - dom);
	size_t llen = at ? (size_t)(at - b) : 0;
	if (dlen > 256)
		dlen = 256;
	if (llen == 0 || llen > 64 * 4)
		snprintf(id, len, "postmaster@%.*s", (int)dlen, dom);
	else
		snprintf(id, len, "%.*s@%.*s", (int)llen, b, (int)dlen, dom);
}

static enum policy_verdict
verdict_of(enum spf_action a)
{
	return a == SPF_ACT_REJECT ? POLICY_REJECT
	       : a == SPF_ACT_TEMPFAIL ? POLICY_TEMPFAIL : POLICY_ACCEPT;
}

/* Keep only printable ASCII: the text goes into an SMTP reply line. */
static void
reply_text(char *buf, size_t len, const char *s)
{
	size_t o = 0;
	for (; *s && o + 1 < len && o < 300; s++)
		buf[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
	buf[o] = '\0';
}

static void
build_reply(struct policy_mail *m, const struct spf_verdict *v,
            enum policy_verdict verdict, const char *ipstr, const char *what)
{
	char text[400];
	int perm = verdict == POLICY_REJECT;
	int error = v->result == SPF_RES_TEMPERROR || v->result == SPF_RES_PERMERROR;
	const char *code = perm ? "550" : "451";
	char cls = perm ? '5' : '4';

	if (v->result == SPF_RES_FAIL && v->explanation)
		reply_text(text, sizeof(text), v->explanation);
	else if (v->result == SPF_RES_FAIL || v->result == SPF_RES_SOFTFAIL)
		snprintf(text, sizeof(text), "SPF %s: %s is not allowed to send mail for %s %s",
		         spf_result_str(v->result), ipstr, what, v->domain);
	else if (v->result == SPF_RES_TEMPERROR)
		snprintf(text, sizeof(text), "SPF temporary error for %s %s, try again later",
		         what, v->domain);
	else if (v->result == SPF_RES_PERMERROR)
		snprintf(text, sizeof(text), "SPF permanent error in the record of %s %s",
		         what, v->domain);
	else
		snprintf(text, sizeof(text), "SPF %s for %s %s: not accepted here",
		         spf_result_str(v->result), what, v->domain);
	snprintf(m->reply, sizeof(m->reply), "%s %c.7.%d %s", code, cls,
	         error ? 24 : 23, text);
}

static void
add_received_spf(struct policy_mail *m, const struct config *cfg,
                 const struct spf_verdict *v, const char *ipstr,
                 const char *envfrom, const char *helo, const char *identity,
                 const char *comment)
{
	struct policy_header *h = &m->headers[m->nheaders++];
	char *b = h->value;
	size_t len = sizeof(h->value);

	snprintf(h->name, sizeof(h->name), "Received-SPF");
	snprintf(b, len, "%s (%s: ", spf_result_str(v->result), cfg->mail_name);
	authres_comment(b, len, comment, 300);
	snprintf(b + strlen(b), len - strlen(b), ") client-ip=%s; envelope-from=", ipstr);
	authres_value(b, len, envfrom, VALUE_MAX);
	snprintf(b + strlen(b), len - strlen(b), "; helo=");
	authres_value(b, len, helo ? helo : "", VALUE_MAX);
	snprintf(b + strlen(b), len - strlen(b), "; receiver=%s; identity=%s",
	         cfg->mail_name, identity);
	if (v->mechanism[0]) {
		snprintf(b + strlen(b), len - strlen(b), "; mechanism=");
		authres_value(b, len, v->mechanism, VALUE_MAX);
	}
}

static void
spf_comment(char *buf, size_t len, const struct spf_verdict *v,
            const char *ipstr, const char *who)
{
	switch (v->result) {
	case SPF_RES_PASS:
		snprintf(buf, len, "domain of %s designates %s as permitted sender", who, ipstr);
		break;
	case SPF_RES_FAIL:
		snprintf(buf, len, "domain of %s does not designate %s as permitted sender", who, ipstr);
		break;
	case SPF_RES_SOFTFAIL:
		snprintf(buf, len, "domain of transitioning %s does not designate %s as permitted sender", who, ipstr);
		break;
	case SPF_RES_NEUTRAL:
		snprintf(buf, len, "%s is neither permitted nor denied by domain of %s", ipstr, who);
		break;
	case SPF_RES_NONE:
		snprintf(buf, len, "domain of %s does not provide an SPF record", who);
		break;
	case SPF_RES_TEMPERROR:
	case SPF_RES_PERMERROR:
		snprintf(buf, len, "error in processing during lookup of %s: %s", who, v->reason);
		break;
	}
}

int
policy_mail(const struct config *cfg, struct dns_resolver *dns,
            const struct policy_client *cl, const char *mail_from,
            struct policy_mail *m)
{
	char ipstr[64], comment[600];
	int is_null;
	const char *helo = cl->helo && *cl->helo ? cl->helo : NULL;
	struct spf_request req;

	memset(m, 0, sizeof(*m));
	ipaddr_format(&cl->ip, ipstr, sizeof(ipstr));
	if (mail_from == NULL)
		mail_from = "";
	spf_identity(mail_from, helo, m->identity, sizeof(m->identity), &is_null);
	if (!is_null) {
		snprintf(m->sender, sizeof(m->sender), "%s", mail_from);
		size_t n = strlen(m->sender);
		if (n >= 2 && m->sender[0] == '<' && m->sender[n - 1] == '>') {
			memmove(m->sender, m->sender + 1, n - 2);
			m->sender[n - 2] = '\0';
		}
	}
	m->verdict = POLICY_ACCEPT;

	/* Trusted clients: say so in the headers, check nothing. */
	if (cidr_list_match(&cfg->relay_networks, &cl->ip)) {
		m->bypass = 1;
		snprintf(m->bypass_reason, sizeof(m->bypass_reason),
		         "client %s is in relay_networks", ipstr);
	} else if (cl->auth && *cl->auth) {
		m->bypass = 2;
		snprintf(m->bypass_reason, sizeof(m->bypass_reason),
		         "client authenticated");
	}
	if (m->bypass) {
		struct policy_header *h;
		struct spf_verdict none = { .result = SPF_RES_NONE };
		snprintf(comment, sizeof(comment), "SPF not checked: %s", m->bypass_reason);
		add_received_spf(m, cfg, &none, ipstr, is_null ? "<>" : m->sender,
		                 helo, is_null ? "helo" : "mailfrom", comment);
		h = &m->headers[m->nheaders++];
		snprintf(h->name, sizeof(h->name), "Authentication-Results");
		snprintf(h->value, sizeof(h->value), "%s;", cfg->mail_name);
		if (m->bypass == 2) {
			snprintf(h->value + strlen(h->value), sizeof(h->value) - strlen(h->value),
			         " auth=pass smtp.auth=");
			authres_value(h->value, sizeof(h->value), cl->auth, VALUE_MAX);
			snprintf(h->value + strlen(h->value), sizeof(h->value) - strlen(h->value), ";");
		}
		snprintf(h->value + strlen(h->value), sizeof(h->value) - strlen(h->value),
		         " spf=none reason=\"not checked: %s\" %s=",
		         m->bypass == 1 ? "relay network" : "authenticated",
		         is_null ? "smtp.helo" : "smtp.mailfrom");
		authres_value(h->value, sizeof(h->value), is_null ? (helo ? helo : "") : m->sender, VALUE_MAX);
		return 0;
	}

	memset(&req, 0, sizeof(req));
	req.client = cl->ip;
	req.helo = helo;
	req.receiver = cfg->mail_name;
	req.timeout_ms = cfg->dns_timeout * 1000;
	/* One budget for the whole MAIL decision, all identities included. */
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);

	/* The MAIL FROM identity (for <>: postmaster@HELO, RFC 7208 §2.4). */
	if (is_null && helo == NULL) {
		m->mailfrom.result = SPF_RES_NONE;
		snprintf(m->mailfrom.reason, sizeof(m->mailfrom.reason),
		         "null sender and no HELO: no identity to check");
	} else {
		req.sender = m->identity;
		spf_check(dns, &req, &m->mailfrom);
	}
	m->mailfrom_checked = 1;

	/* The separate HELO check; for <> it is the same check as above. */
	if (cfg->filterd.helo_check && helo) {
		char hid[ADDR_MAX + 1];
		struct ipaddr lit;
		if (is_null) {
			m->helo = m->mailfrom;
			m->helo.explanation = m->mailfrom.explanation
			                      ? strdup(m->mailfrom.explanation) : NULL;
			m->helo_checked = 1;
		} else if (ipaddr_parse(helo, &lit) == 0) {
			/* An address literal has no SPF record (RFC 7208 §2.3). */
			m->helo.result = SPF_RES_NONE;
			snprintf(m->helo.reason, sizeof(m->helo.reason), "HELO is an address literal");
			m->helo_checked = 1;
		} else {
			struct timespec t1;
			clock_gettime(CLOCK_MONOTONIC, &t1);
			long used = (t1.tv_sec - t0.tv_sec) * 1000L + (t1.tv_nsec - t0.tv_nsec) / 1000000L;
			req.timeout_ms = cfg->dns_timeout * 1000 - (int)used;
			if (req.timeout_ms < 1)
				req.timeout_ms = 1;
			snprintf(hid, sizeof(hid), "postmaster@%s", helo);
			req.sender = hid;
			spf_check(dns, &req, &m->helo);
			m->helo_checked = 1;
		}
	}

	/* Decide: the most severe action over the identities checked. */
	const struct spf_verdict *worst = NULL;
	const char *worst_what = "domain";
	enum policy_verdict verdict = POLICY_ACCEPT;
	const struct spf_verdict *vs[2] = { &m->mailfrom, m->helo_checked ? &m->helo : NULL };
	for (int i = 0; i < 2; i++) {
		if (vs[i] == NULL)
			continue;
		enum policy_verdict pv = verdict_of(cfg->filterd.on_result[vs[i]->result]);
		if (vs[i]->result == SPF_RES_PASS)
			pv = POLICY_ACCEPT;
		int rank = pv == POLICY_REJECT ? 2 : pv == POLICY_TEMPFAIL ? 1 : 0;
		int wrank = verdict == POLICY_REJECT ? 2 : verdict == POLICY_TEMPFAIL ? 1 : 0;
		if (rank > wrank) {
			verdict = pv;
			worst = vs[i];
			worst_what = i == 0 && !is_null ? "sender domain" : "HELO name";
		}
	}
	if (worst)
		build_reply(m, worst, verdict, ipstr, worst_what);
	if (cfg->filterd.dry_run && verdict != POLICY_ACCEPT) {
		m->would_verdict_differ = 1;
		m->dry_verdict = verdict;
		verdict = POLICY_ACCEPT;
	}
	m->verdict = verdict;

	/* Headers, for the accepted case (tag). */
	const char *mf_domain = m->mailfrom.domain[0] ? m->mailfrom.domain : m->identity;
	spf_comment(comment, sizeof(comment), &m->mailfrom, ipstr,
	            is_null ? (helo ? helo : "") : mf_domain);
	add_received_spf(m, cfg, &m->mailfrom, ipstr, is_null ? "<>" : m->sender,
	                 helo, is_null ? "helo" : "mailfrom", comment);
	if (m->helo_checked && !is_null) {
		spf_comment(comment, sizeof(comment), &m->helo, ipstr, helo);
		add_received_spf(m, cfg, &m->helo, ipstr, m->sender, helo, "helo", comment);
	}
	struct policy_header *h = &m->headers[m->nheaders++];
	snprintf(h->name, sizeof(h->name), "Authentication-Results");
	snprintf(h->value, sizeof(h->value), "%s; spf=%s %s=", cfg->mail_name,
	         spf_result_str(m->mailfrom.result), is_null ? "smtp.helo" : "smtp.mailfrom");
	authres_value(h->value, sizeof(h->value), is_null ? (helo ? helo : "") : m->sender, VALUE_MAX);
	if (m->helo_checked && !is_null) {
		snprintf(h->value + strlen(h->value), sizeof(h->value) - strlen(h->value),
		         "; spf=%s smtp.helo=", spf_result_str(m->helo.result));
		authres_value(h->value, sizeof(h->value), helo, VALUE_MAX);
	}
	return 0;
}

void
policy_mail_free(struct policy_mail *m)
{
	spf_verdict_free(&m->mailfrom);
	if (m->helo_checked)
		spf_verdict_free(&m->helo);
}

enum policy_verdict
policy_rcpt(const struct config *cfg, const struct policy_client *cl,
            const char *rcpt, char *reply, size_t len)
{
	struct mailbox mb;
	const char *why;

	reply[0] = '\0';
	if (addr_parse(rcpt, &mb, &why) < 0 || mb.null) {
		snprintf(reply, len, "501 5.1.3 Bad recipient address syntax");
		return POLICY_REJECT;
	}
	if (mb.domain[0] == '\0')       /* bare <postmaster> */
		return POLICY_ACCEPT;
	if (cidr_list_match(&cfg->relay_networks, &cl->ip) || (cl->auth && *cl->auth))
		return POLICY_ACCEPT;
	/*
	 * A local domain is enough only for a plain local part: an MTA behind
	 * us may still honour "u%other@local", "other!u@local", a quoted "@"
	 * or a source route and send the mail on.
	 */
	if (config_is_local_domain(cfg, mb.domain)
	    && !(mb.flags & (ADDR_PERCENT | ADDR_BANG | ADDR_LOCAL_AT | ADDR_ROUTED)))
		return POLICY_ACCEPT;
	char shown[ADDR_MAX + 3];
	reply_text(shown, sizeof(shown), rcpt);
	snprintf(reply, len, "554 5.7.1 %s: Relay access denied", shown);
	return POLICY_REJECT;
}
