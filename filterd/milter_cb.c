/*
 * milter_cb: filterd's libmilter callbacks, a thin adapter over
 * common/policy.c.
 *
 *   negotiate  asks only for the steps filterd needs and no replies for
 *              connect, HELO and headers, so the MTA can send those
 *              without waiting, yet no two small packets in a row that
 *              TCP would hold back (see also filterd.c on TCP_NODELAY);
 *   connect    remembers the client address (IPv4-mapped IPv6 as IPv4);
 *   helo       remembers the HELO name;
 *   envfrom    policy_mail(): reject, tempfail, or keep the headers;
 *   envrcpt    policy_rcpt(): relay only for self;
 *   header     notes the Authentication-Results fields that claim our
 *              authserv-id (RFC 8601 §5: they must go);
 *   eom        deletes those, inserts Received-SPF and
 *              Authentication-Results at the top, logs the decision.
 *
 * A client without an IP address (a unix-domain or unknown-family
 * connection) cannot be SPF-checked: its mail is accepted untagged
 * ("spf=none reason=no client IP address" in the log), it is not in any
 * relay network, and forged Authentication-Results are still removed.
 */
#include "milter.h"
#include "authres.h"
#include "cidr.h"
#include "log.h"
#include "policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define AR_NAME "Authentication-Results"
#define RCPT_LOG_MAX 2000       /* recipients listed in one log line */

static _Atomic(struct milter_env *) current_env;

/* Open mail transactions, so that a stop can let them finish. */
static pthread_mutex_t txn_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t txn_done = PTHREAD_COND_INITIALIZER;
static int txn_open;

struct txn {
	int active;                /* between an accepted MAIL and EOM/abort */
	int checked;               /* pm holds a policy_mail() result */
	struct policy_mail pm;
	char *from;                /* MAIL FROM argument as given */
	char *auth;                /* {auth_authen}, or NULL */
	struct textbuf rcpts;      /* accepted recipients, for the log */
	int ar_seen;               /* Authentication-Results fields so far */
	int *ar_ours;              /* their 1-based indexes that claim our id */
	size_t n_ours, cap_ours;
	int oom;                   /* lost state: tempfail at EOM */
};

struct session {
	int has_ip;
	struct ipaddr ip;
	char ipstr[INET6_ADDRSTRLEN];
	char *helo;
	struct txn t;
};

void
milter_publish(struct milter_env *env)
{
	env->older = atomic_load(&current_env);
	atomic_store(&current_env, env);
}

/* Callbacks read this once each, so one decision uses one configuration. */
const struct milter_env *
milter_env_now(void)
{
	return atomic_load(&current_env);
}

void
milter_env_free_all(void)
{
	struct milter_env *e = atomic_exchange(&current_env, NULL);

	while (e != NULL) {
		struct milter_env *older = e->older;
		dns_free(e->dns);
		config_free(&e->cfg);
		free(e);
		e = older;
	}
}

int
milter_drain(int max_ms)
{
	struct timespec until;
	int left;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += max_ms / 1000;
	until.tv_nsec += (long)(max_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&txn_lock);
	while (txn_open > 0)
		if (pthread_cond_timedwait(&txn_done, &txn_lock, &until) == ETIMEDOUT)
			break;
	left = txn_open;
	pthread_mutex_unlock(&txn_lock);
	return left;
}

static void
txn_reset(struct txn *t)
{
	if (t->active) {
		pthread_mutex_lock(&txn_lock);
		if (--txn_open == 0)
			pthread_cond_broadcast(&txn_done);
		pthread_mutex_unlock(&txn_lock);
	}
	if (t->checked)
		policy_mail_free(&t->pm);
	free(t->from);
	free(t->auth);
	free(t->ar_ours);
	tb_free(&t->rcpts);
	memset(t, 0, sizeof(*t));
}

static void
txn_begin(struct txn *t)
{
	t->active = 1;
	tb_init(&t->rcpts, RCPT_LOG_MAX);
	pthread_mutex_lock(&txn_lock);
	txn_open++;
	pthread_mutex_unlock(&txn_lock);
}

static struct session *
session_get(SMFICTX *ctx)
{
	struct session *s = smfi_getpriv(ctx);

	if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL)
		smfi_setpriv(ctx, s);
	return s;
}

static void
session_free(SMFICTX *ctx)
{
	struct session *s = smfi_getpriv(ctx);

	if (s == NULL)
		return;
	txn_reset(&s->t);
	free(s->helo);
	free(s);
	smfi_setpriv(ctx, NULL);
}

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static struct policy_client
client_of(const struct session *s)
{
	struct policy_client cl;

	memset(&cl, 0, sizeof(cl));
	if (s->has_ip)
		cl.ip = s->ip;
	else
		cl.ip.family = AF_UNSPEC;   /* matches no relay network */
	cl.helo = s->helo;
	cl.auth = s->t.auth;
	return cl;
}

static const char *
verdict_word(enum policy_verdict v)
{
	return v == POLICY_REJECT ? "reject" : v == POLICY_TEMPFAIL ? "tempfail" : "accept";
}

/*
 * One line per decision: where it was taken, the client, the envelope,
 * the SPF verdict and the action.
 */
static void
log_decision(SMFICTX *ctx, const struct session *s, const char *stage,
             const char *action, const char *rcpt, const char *reply)
{
	const struct txn *t = &s->t;
	struct textbuf b;
	char *qid = smfi_getsymval(ctx, "i");

	tb_init(&b, 3500);
	tb_add(&b, stage);
	tb_add(&b, ":");
	if (qid && *qid)
		tb_kv(&b, "qid", qid);
	tb_kv(&b, "client", s->has_ip ? s->ipstr : "unknown");
	tb_kv(&b, "helo", s->helo ? s->helo : "");
	tb_kv(&b, "from", t->from ? t->from : "");
	if (t->auth)
		tb_kv(&b, "auth", t->auth);
	if (rcpt)
		tb_kv(&b, "rcpt", rcpt);
	else if (t->rcpts.s)
		tb_kv(&b, "rcpts", t->rcpts.s);
	if (!t->checked) {
		tb_kv(&b, "spf", "none");
		tb_kv(&b, "reason", s->has_ip ? "not checked" : "no client IP address");
	} else if (t->pm.bypass) {
		tb_kv(&b, "spf", "none");
		tb_kv(&b, "reason", t->pm.bypass_reason);
	} else {
		tb_kv(&b, "spf", spf_result_str(t->pm.mailfrom.result));
		tb_kv(&b, "reason", t->pm.mailfrom.reason);
		tb_kv(&b, "identity", t->pm.identity);
		if (t->pm.helo_checked) {
			tb_kv(&b, "helo_spf", spf_result_str(t->pm.helo.result));
			tb_kv(&b, "helo_reason", t->pm.helo.reason);
		}
	}
	tb_kv(&b, "action", action);
	if (t->checked && t->pm.would_verdict_differ)
		tb_kv(&b, "dry_run", verdict_word(t->pm.dry_verdict));
	if (reply && *reply)
		tb_kv(&b, "reply", reply);
	/* refusals also go to the reject log, when logging to files */
	if (strcmp(action, "accept") != 0)
		log_reject("%s", b.s ? b.s : stage);
	else
		log_info("%s", b.s ? b.s : stage);
	tb_free(&b);
}

static sfsistat
cb_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
             unsigned long f2, unsigned long f3, unsigned long *pf0,
             unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	const unsigned long need = SMFIF_ADDHDRS | SMFIF_CHGHDRS;
	/*
	 * Steps filterd has no use for are turned off; steps where it never
	 * says anything but "continue" are sent without a reply (libmilter
	 * fakes the reply for an MTA that cannot do that): fewer round trips.
	 * DATA keeps its reply although filterd does nothing there: Postfix
	 * flushes the DATA macros on their own before it hands the milter
	 * socket to cleanup, and over TCP cleanup's headers would then sit
	 * behind Nagle until filterd's delayed ACK, 40 ms per message.  The
	 * reply acknowledges them at once.
	 */
	const unsigned long steps = SMFIP_NOBODY | SMFIP_NOEOH | SMFIP_NOUNKNOWN
	                            | SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_HDR;

	(void)f2;
	(void)f3;
	if ((f0 & need) != need) {
		log_err("negotiate: the MTA does not allow adding and deleting headers "
		        "(actions 0x%lx): refusing the connection", f0);
		return SMFIS_REJECT;
	}
	*pf0 = need;
	*pf1 = steps & f1;
	*pf2 = 0;
	*pf3 = 0;
	if (f0 & SMFIF_SETSYMLIST) {
		/* Only what filterd reads: less for the MTA to send. */
		*pf0 |= SMFIF_SETSYMLIST;
		if (smfi_setsymlist(ctx, SMFIM_ENVFROM, "i {auth_authen}") != MI_SUCCESS
		    || smfi_setsymlist(ctx, SMFIM_ENVRCPT, "i") != MI_SUCCESS
		    || smfi_setsymlist(ctx, SMFIM_EOM, "i") != MI_SUCCESS)
			log_warn("negotiate: could not set the macro lists");
	}
	return SMFIS_CONTINUE;
}

static sfsistat
cb_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
	struct session *s = session_get(ctx);

	(void)hostname;
	if (s == NULL)
		return SMFIS_NOREPLY;       /* MAIL will tempfail */
	txn_reset(&s->t);
	free(s->helo);
	s->helo = NULL;
	s->has_ip = 0;
	memset(&s->ip, 0, sizeof(s->ip));
	if (sa != NULL && sa->sa_family == AF_INET) {
		s->ip.family = AF_INET;
		s->ip.u.v4 = ((const struct sockaddr_in *)(const void *)sa)->sin_addr;
		s->has_ip = 1;
	} else if (sa != NULL && sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			s->ip.family = AF_INET;
			memcpy(&s->ip.u.v4, &a6->s6_addr[12], 4);
		} else {
			s->ip.family = AF_INET6;
			s->ip.u.v6 = *a6;
		}
		s->has_ip = 1;
	}
	if (s->has_ip)
		ipaddr_format(&s->ip, s->ipstr, sizeof(s->ipstr));
	else
		strcpy(s->ipstr, "unknown");
	return SMFIS_NOREPLY;
}

static sfsistat
cb_helo(SMFICTX *ctx, char *name)
{
	struct session *s = session_get(ctx);

	if (s == NULL)
		return SMFIS_NOREPLY;
	free(s->helo);
	s->helo = strdup(name ? name : "");
	return SMFIS_NOREPLY;
}

static sfsistat
tempfail_oom(SMFICTX *ctx)
{
	log_err("out of memory: answering tempfail");
	(void)milter_setreply(ctx, "451 4.3.0 Temporary local problem, try again later");
	return SMFIS_TEMPFAIL;
}

static sfsistat
cb_envfrom(SMFICTX *ctx, char **argv)
{
	struct session *s = session_get(ctx);
	struct policy_client cl;
	const char *from = argv && argv[0] ? argv[0] : "<>";

	if (s == NULL)
		return tempfail_oom(ctx);
	txn_reset(&s->t);
	s->t.from = strdup(from);
	s->t.auth = dup_or_null(smfi_getsymval(ctx, "{auth_authen}"));
	if (s->t.auth && s->t.auth[0] == '\0') {
		free(s->t.auth);
		s->t.auth = NULL;
	}
	if (s->t.from == NULL)
		return tempfail_oom(ctx);
	/* Open before the SPF check, so that a stop waits for the check too. */
	txn_begin(&s->t);

	if (s->has_ip) {
		const struct milter_env *e = milter_env_now();
		cl = client_of(s);
		policy_mail(&e->cfg, e->dns, &cl, from, &s->t.pm);
		s->t.checked = 1;
		if (s->t.pm.verdict != POLICY_ACCEPT) {
			const char *act = verdict_word(s->t.pm.verdict);
			sfsistat r = s->t.pm.verdict == POLICY_REJECT ? SMFIS_REJECT : SMFIS_TEMPFAIL;
			log_decision(ctx, s, "mail", act, NULL, s->t.pm.reply);
			if (milter_setreply(ctx, s->t.pm.reply) < 0)
				log_warn("mail: could not use the reply \"%s\"", s->t.pm.reply);
			txn_reset(&s->t);
			return r;
		}
	}
	return SMFIS_CONTINUE;
}

static sfsistat
cb_envrcpt(SMFICTX *ctx, char **argv)
{
	struct session *s = session_get(ctx);
	struct policy_client cl;
	char reply[POLICY_REPLY_MAX];
	const char *rcpt = argv && argv[0] ? argv[0] : "";
	enum policy_verdict v;

	if (s == NULL)
		return tempfail_oom(ctx);
	cl = client_of(s);
	v = policy_rcpt(&milter_env_now()->cfg, &cl, rcpt, reply, sizeof(reply));
	if (v != POLICY_ACCEPT) {
		log_decision(ctx, s, "rcpt", verdict_word(v), rcpt, reply);
		if (milter_setreply(ctx, reply) < 0)
			log_warn("rcpt: could not use the reply \"%s\"", reply);
		return v == POLICY_REJECT ? SMFIS_REJECT : SMFIS_TEMPFAIL;
	}
	if (s->t.rcpts.len)
		tb_add(&s->t.rcpts, ",");
	tb_add(&s->t.rcpts, rcpt);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_header(SMFICTX *ctx, char *name, char *value)
{
	struct session *s = session_get(ctx);
	struct txn *t;

	if (s == NULL || name == NULL || strcasecmp(name, AR_NAME) != 0)
		return SMFIS_NOREPLY;
	t = &s->t;
	t->ar_seen++;
	if (value == NULL || !authres_is_ours(value, milter_env_now()->cfg.mail_name))
		return SMFIS_NOREPLY;
	if (t->n_ours == t->cap_ours) {
		size_t cap = t->cap_ours ? t->cap_ours * 2 : 4;
		int *v = realloc(t->ar_ours, cap * sizeof(*v));
		if (v == NULL) {
			t->oom = 1;
			return SMFIS_NOREPLY;
		}
		t->ar_ours = v;
		t->cap_ours = cap;
	}
	t->ar_ours[t->n_ours++] = t->ar_seen;
	return SMFIS_NOREPLY;
}

static sfsistat
cb_eom(SMFICTX *ctx)
{
	struct session *s = session_get(ctx);
	struct txn *t;
	char folded[2 * POLICY_HDR_MAX + 64], name[sizeof(((struct policy_header *)0)->name)];

	if (s == NULL)
		return tempfail_oom(ctx);
	t = &s->t;
	if (t->oom) {
		txn_reset(t);
		return tempfail_oom(ctx);
	}

	/*
	 * Delete from the last one up, so that a deletion never renumbers
	 * a field still to be deleted whichever way the MTA counts.
	 */
	for (size_t i = t->n_ours; i > 0; i--) {
		if (smfi_chgheader(ctx, AR_NAME, t->ar_ours[i - 1], NULL) != MI_SUCCESS) {
			log_err("eom: could not delete a forged %s field", AR_NAME);
			txn_reset(t);
			return SMFIS_TEMPFAIL;
		}
	}
	/* Inserted last to first at the top, they end up in policy order. */
	if (t->checked) {
		for (int i = t->pm.nheaders; i > 0; i--) {
			const struct policy_header *h = &t->pm.headers[i - 1];
			snprintf(name, sizeof(name), "%s", h->name);
			if (milter_fold(h->name, h->value, folded, sizeof(folded)) == NULL
			    || smfi_insheader(ctx, 0, name, folded) != MI_SUCCESS) {
				log_err("eom: could not insert the %s field", h->name);
				txn_reset(t);
				return SMFIS_TEMPFAIL;
			}
		}
	}
	log_decision(ctx, s, "eom", "accept", NULL, NULL);
	txn_reset(t);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_abort(SMFICTX *ctx)
{
	struct session *s = smfi_getpriv(ctx);

	if (s != NULL)
		txn_reset(&s->t);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_close(SMFICTX *ctx)
{
	session_free(ctx);
	return SMFIS_CONTINUE;
}

struct smfiDesc filterd_milter = {
	.xxfi_name = "spfgate-filterd",
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS,
	.xxfi_connect = cb_connect,
	.xxfi_helo = cb_helo,
	.xxfi_envfrom = cb_envfrom,
	.xxfi_envrcpt = cb_envrcpt,
	.xxfi_header = cb_header,
	.xxfi_eoh = NULL,
	.xxfi_body = NULL,
	.xxfi_eom = cb_eom,
	.xxfi_abort = cb_abort,
	.xxfi_close = cb_close,
	.xxfi_unknown = NULL,
	.xxfi_data = NULL,
	.xxfi_negotiate = cb_negotiate,
};
