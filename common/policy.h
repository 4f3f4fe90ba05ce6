/*
 * policy: what filterd decides, shared by the milter, the command line
 * harness (spfgate-policy) and relayd.
 *
 *   policy_mail()  SPF on the MAIL FROM identity (HELO identity for the
 *                  null sender), optional HELO check, bypass for relay
 *                  networks and authenticated clients, per-result action;
 *   policy_rcpt()  relay only for self;
 *   the headers to add: Received-SPF and Authentication-Results, built
 *   here with every client-supplied value quoted.
 */
#ifndef SPFGATE_POLICY_H
#define SPFGATE_POLICY_H

#include "addr.h"
#include "cidr.h"
#include "config.h"
#include "dns.h"
#include "spf.h"

enum policy_verdict { POLICY_ACCEPT, POLICY_REJECT, POLICY_TEMPFAIL };

struct policy_client {
	struct ipaddr ip;
	const char *helo;          /* may be NULL */
	const char *auth;          /* authenticated user ({auth_authen}) or NULL */
};

#define POLICY_REPLY_MAX 512
#define POLICY_HDR_MAX 4096

struct policy_header {
	char name[32];
	char value[POLICY_HDR_MAX];  /* unfolded; no CR or LF ever */
};

struct policy_mail {
	/* inputs as understood */
	char sender[ADDR_MAX + 1];      /* "" for the null sender */
	char identity[ADDR_MAX + 300];  /* what SPF checked for MAIL FROM */
	/* SPF */
	int bypass;                    /* 0, or why not checked: */
	char bypass_reason[128];
	int mailfrom_checked, helo_checked;
	struct spf_verdict mailfrom, helo;
	/* decision */
	enum policy_verdict verdict;
	int would_verdict_differ;      /* dry_run: verdict was softened */
	enum policy_verdict dry_verdict;
	char reply[POLICY_REPLY_MAX];  /* full SMTP reply line, "" on accept */
	struct policy_header headers[4];
	int nheaders;
};

int policy_mail(const struct config *cfg, struct dns_resolver *dns,
                const struct policy_client *cl, const char *mail_from,
                struct policy_mail *out);
void policy_mail_free(struct policy_mail *m);

/* Relay only for self: POLICY_ACCEPT, or POLICY_REJECT with the reply. */
enum policy_verdict policy_rcpt(const struct config *cfg,
                                const struct policy_client *cl,
                                const char *rcpt, char *reply, size_t len);

#endif
