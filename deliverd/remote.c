/*
 * remote: deliverd's remote delivery (see remote.h): pick the route
 * (remote_route.c), open an SMTP session to the first address that
 * works (smtp_client.c), run the transaction, and keep the session a few
 * seconds for the next job to the same destination.
 *
 * Policy decisions:
 *  - smarthost = "host[:port]" looks up host's MX first, "[host]:port" or
 *    an address does not (Postfix's relayhost convention).  The default
 *    port is 25; most submission smarthosts want 587.  MX delivery uses
 *    [deliverd] smtp_port (25; tests use high ports).
 *  - A session that cannot be set up (connect, greeting, EHLO, TLS) at one
 *    address moves on to the next; when all fail, every recipient is
 *    deferred with the last error (4.4.1 for connect failures).  A 5xx
 *    greeting is deferred too, not bounced: the queue lifetime bounds it.
 *  - Opportunistic TLS: STARTTLS when offered; a failed handshake is
 *    retried once at the same address in plain text.  Required TLS:
 *    no STARTTLS or a failed handshake → 4.7.5 (deferred).  Certificates
 *    are not verified (Postfix's "encrypt" level).
 *  - Credentials go to the smarthost only, only over TLS (unless
 *    smarthost_tls = none), only from a file no group or other may read.
 *    Any authentication problem defers (4.7.x) rather than bounces: it is
 *    a configuration error, the mail is not at fault.
 *  - A smarthost whose name does not resolve defers for the same reason.
 *
 * Logging: session events (connect failures, TLS, AUTH) are logged here;
 * the per-recipient result line (with the delay) is the scheduler's.
 *
 * Sessions are kept REMOTE_IDLE_SECS after a transaction, per
 * destination (remote_destination()), and reused after an RSET;
 * remote_expire() closes older ones.  The RFC 5321 timeouts
 * (smtp_client.h) are constants; the environment variable
 * SPFGATE_TEST_SMTP_TIMEOUT (seconds) caps them all, for tests only.
 */
#include "remote.h"
#include "remote_int.h"
#include "smtp_client.h"
#include "log.h"
#include "privs.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REMOTE_IDLE_SECS 5      /* how long an idle session is kept */
#define REMOTE_CACHE_MAX 32     /* idle sessions kept, all destinations */

struct cached {
	struct smtp_session *s;
	char dest[300];
	time_t since;               /* monotonic seconds */
	struct cached *next;
};

struct remote_ctx {
	struct dns_resolver *dns;
	SSL_CTX *tls;
	struct smtp_timeouts to;
	char *mail_name;
	char *auth_file;            /* NULL: no AUTH */
	char sh_spec[300];          /* "" for MX routing */
	char sh_host[256];
	int sh_port, sh_bracketed;
	int sh_tls, mx_tls, mx_port;
	pthread_mutex_t lock;
	struct cached *cache;
	size_t ncache;
	struct remote_self self;    /* relayd's listeners: never a destination */
	struct sockaddr_storage src; /* smtp_bind_address */
	socklen_t srclen;            /* 0: any */
};

static time_t
mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

struct remote_ctx *
remote_new(const struct config *cfg, struct dns_resolver *dns, char *err, size_t errlen)
{
	struct remote_ctx *rc = calloc(1, sizeof *rc);
	if (rc == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rc->dns = dns;
	pthread_mutex_init(&rc->lock, NULL);
	/* tests shorten every SMTP timeout; nothing else may */
	const char *cap = getenv("SPFGATE_TEST_SMTP_TIMEOUT");
	smtp_timeouts_init(&rc->to, cap ? atoi(cap) : 0);
	rc->mail_name = strdup(cfg->mail_name ? cfg->mail_name : "localhost");
	if (cfg->deliverd.smarthost_auth_file && cfg->deliverd.smarthost_auth_file[0])
		rc->auth_file = strdup(cfg->deliverd.smarthost_auth_file);
	rc->sh_tls = cfg->deliverd.smarthost_tls;
	rc->mx_tls = cfg->deliverd.smtp_tls;
	rc->mx_port = (int)cfg->deliverd.smtp_port;
	const char *ba = cfg->deliverd.smtp_bind_address;
	if (ba && ba[0]) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&rc->src;
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&rc->src;
		if (inet_pton(AF_INET, ba, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			rc->srclen = sizeof *s4;
		} else if (inet_pton(AF_INET6, ba, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			rc->srclen = sizeof *s6;
		}
	}
	if (remote_self_init(&rc->self, &cfg->relayd.listen) < 0) {
		snprintf(err, errlen, "out of memory");
		remote_free(rc);
		return NULL;
	}
	if (cfg->deliverd.smarthost && cfg->deliverd.smarthost[0]) {
		snprintf(rc->sh_spec, sizeof rc->sh_spec, "%s", cfg->deliverd.smarthost);
		if (remote_parse_hostport(rc->sh_spec, 25, rc->sh_host, sizeof rc->sh_host,
		                          &rc->sh_port, &rc->sh_bracketed) < 0) {
			snprintf(err, errlen, "smarthost: expected host[:port] or [host]:port");
			remote_free(rc);
			return NULL;
		}
	}
	if (rc->mail_name == NULL || (cfg->deliverd.smarthost_auth_file &&
	    cfg->deliverd.smarthost_auth_file[0] && rc->auth_file == NULL)) {
		snprintf(err, errlen, "out of memory");
		remote_free(rc);
		return NULL;
	}
	rc->tls = smtp_tls_ctx_new(err, errlen);
	if (rc->tls == NULL) {
		remote_free(rc);
		return NULL;
	}
	/* A peer closing during a TLS write must be an error, not a signal
	 * that kills the daemon (plain writes use MSG_NOSIGNAL). */
	struct sigaction sa;
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	return rc;
}

static void
close_list(struct cached *c)
{
	while (c) {
		struct cached *next = c->next;
		smtp_quit_nowait(c->s);
		free(c->s);
		free(c);
		c = next;
	}
}

void
remote_free(struct remote_ctx *rc)
{
	if (rc == NULL)
		return;
	close_list(rc->cache);
	if (rc->tls)
		SSL_CTX_free(rc->tls);
	pthread_mutex_destroy(&rc->lock);
	free(rc->mail_name);
	free(rc->auth_file);
	remote_self_free(&rc->self);
	free(rc);
}

void
remote_expire(struct remote_ctx *rc)
{
	struct cached *stale = NULL, **pp;
	time_t now = mono();

	pthread_mutex_lock(&rc->lock);
	for (pp = &rc->cache; *pp; ) {
		struct cached *c = *pp;
		if (now - c->since >= REMOTE_IDLE_SECS) {
			*pp = c->next;
			c->next = stale;
			stale = c;
			rc->ncache--;
		} else
			pp = &c->next;
	}
	pthread_mutex_unlock(&rc->lock);
	close_list(stale);   /* outside the lock */
}

void
remote_destination(const struct remote_ctx *rc, const char *domain, char *buf, size_t len)
{
	if (rc->sh_spec[0])
		snprintf(buf, len, "%s", rc->sh_spec);
	else {
		snprintf(buf, len, "%s", domain);
		for (char *p = buf; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
	}
}

/* An idle session for dest that still answers RSET, or NULL. */
static struct smtp_session *
cache_take(struct remote_ctx *rc, const char *dest)
{
	for (;;) {
		struct cached *c = NULL, **pp;
		pthread_mutex_lock(&rc->lock);
		for (pp = &rc->cache; *pp; pp = &(*pp)->next)
			if (strcmp((*pp)->dest, dest) == 0) {
				c = *pp;
				*pp = c->next;
				rc->ncache--;
				break;
			}
		pthread_mutex_unlock(&rc->lock);
		if (c == NULL)
			return NULL;
		struct smtp_session *s = c->s;
		int fresh = mono() - c->since < REMOTE_IDLE_SECS;
		free(c);
		if (fresh && smtp_rset(s) == 0)
			return s;
		smtp_quit(s);
		free(s);
	}
}

static void
cache_put(struct remote_ctx *rc, const char *dest, struct smtp_session *s)
{
	struct cached *c = calloc(1, sizeof *c), *evict = NULL;

	if (c == NULL) {
		smtp_quit(s);
		free(s);
		return;
	}
	c->s = s;
	snprintf(c->dest, sizeof c->dest, "%s", dest);
	c->since = mono();
	s->id = NULL;
	pthread_mutex_lock(&rc->lock);
	if (rc->ncache >= REMOTE_CACHE_MAX) {
		/* the list is newest first: drop its last entry */
		struct cached **pp = &rc->cache;
		while ((*pp)->next)
			pp = &(*pp)->next;
		evict = *pp;
		*pp = NULL;
		rc->ncache--;
	}
	c->next = rc->cache;
	rc->cache = c;
	rc->ncache++;
	pthread_mutex_unlock(&rc->lock);
	close_list(evict);
}

enum open_rc { OPEN_OK, OPEN_NEXT, OPEN_FATAL, OPEN_PLAIN_RETRY };

static void
fmt_relay(const struct remote_target *t, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (t->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&t->ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof a);
		port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&t->ss;
		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof a);
		port = ntohs(s4->sin_port);
	}
	snprintf(buf, len, "%s[%s]:%d", t->host, a, port);
	/* a DNS name may hold any byte: keep logs and DSNs safe */
	for (char *p = buf; *p; p++)
		if (!(isalnum((unsigned char)*p) || strchr(".-_:[]", *p)))
			*p = '?';
}

/* Turn a 5.x.y into 4.x.y: a session-level failure is never a bounce. */
static void
soften(struct smtp_reply *r)
{
	if (r->dsn[0] == '5')
		r->dsn[0] = '4';
}

static enum open_rc
open_session(struct remote_ctx *rc, const struct remote_job *job,
             const struct remote_target *t, int smarthost, int no_tls,
             const char *user, const char *pass,
             struct smtp_session **out, struct smtp_reply *r)
{
	char err[200], q[600];
	int policy = smarthost ? rc->sh_tls : rc->mx_tls;
	struct smtp_session *s = calloc(1, sizeof *s);
	enum open_rc orc = OPEN_NEXT;

	*out = NULL;
	if (s == NULL) {
		smtp_local_error(r, "4.3.0", "out of memory");
		return OPEN_FATAL;
	}
	s->to = &rc->to;
	s->id = job->id;
	snprintf(s->host, sizeof s->host, "%s", t->host);
	fmt_relay(t, s->relay, sizeof s->relay);
	if (smtp_io_connect(&s->io, (const struct sockaddr *)&t->ss, t->sslen,
	                    rc->srclen ? (const struct sockaddr *)&rc->src : NULL, rc->srclen,
	                    rc->to.connect, err, sizeof err) < 0) {
		smtp_local_error(r, "4.4.1", "%s: %s", s->relay, err);
		goto fail;
	}
	if (smtp_greeting(s, r) < 0 || smtp_hello(s, rc->mail_name, r) < 0) {
		soften(r);
		goto fail;
	}
	if (policy != TLS_NONE && !no_tls) {
		if (s->caps & SMTP_CAP_STARTTLS) {
			int tr = smtp_starttls(s, rc->tls, r);
			if (tr < 0 && policy == TLS_OPPORTUNISTIC) {
				if (r->code != 0) {     /* 421 to STARTTLS */
					soften(r);
					goto fail;
				}
				log_info("id=%s relay=%s tls=failed reason=%s action=retry-plaintext",
				         job->id, s->relay, log_quote(q, sizeof q, r->text));
				orc = OPEN_PLAIN_RETRY;
				goto fail;
			}
			if (tr < 0)
				goto tls_fail;
			if (tr == 1 && policy == TLS_REQUIRED)
				goto tls_fail;
			if (tr == 0 && smtp_hello(s, rc->mail_name, r) < 0) {
				soften(r);
				goto fail;
			}
		} else if (policy == TLS_REQUIRED) {
			smtp_local_error(r, "4.7.5", "%s does not offer STARTTLS, and TLS is "
			                 "required (smarthost_tls = required)", s->relay);
			goto fail;
		}
	}
	if (user) {
		if (!s->tls && policy != TLS_NONE) {
			smtp_local_error(r, "4.7.5", "not sending credentials to %s without TLS",
			                 s->relay);
			orc = OPEN_FATAL;
			goto fail;
		}
		if (!(s->caps & SMTP_CAP_AUTH)) {
			log_warn("id=%s relay=%s auth=skipped reason=\"server offers no AUTH\"",
			         job->id, s->relay);
		} else if (smtp_auth(s, user, pass, r) < 0) {
			char text[sizeof r->text], dsn[sizeof r->dsn];
			snprintf(text, sizeof text, "%s", r->text);
			snprintf(dsn, sizeof dsn, "%s", r->code == 0 ? r->dsn : "4.7.8");
			smtp_local_error(r, dsn, "authentication to %s failed: %s", s->relay, text);
			soften(r);
			log_err("id=%s relay=%s auth=failed reply=%s", job->id, s->relay,
			        log_quote(q, sizeof q, text));
			orc = OPEN_FATAL;
			goto fail;
		} else
			log_info("id=%s relay=%s auth=ok user=%s", job->id, s->relay,
			         log_quote(q, sizeof q, user));
	}
	*out = s;
	return OPEN_OK;
tls_fail:
	{
		char text[sizeof r->text];
		snprintf(text, sizeof text, "%s", r->text);
		smtp_local_error(r, "4.7.5", "TLS is required but failed with %s: %s",
		                 s->relay, text);
	}
fail:
	if (orc != OPEN_PLAIN_RETRY)
		log_info("id=%s relay=%s session=failed reason=%s", job->id, s->relay,
		         log_quote(q, sizeof q, r->text));
	smtp_quit(s);
	free(s);
	return orc;
}

static void
fail_all(const struct remote_job *job, struct remote_result *res,
         enum remote_status st, const char *dsn, const char *relay, const char *text)
{
	for (size_t i = 0; i < job->nrcpt; i++) {
		res[i].status = st;
		snprintf(res[i].dsn, sizeof res[i].dsn, "%s", dsn);
		snprintf(res[i].relay, sizeof res[i].relay, "%s", relay);
		snprintf(res[i].text, sizeof res[i].text, "%s", text);
	}
}

/* Connect to the first target that gives a usable session. */
static struct smtp_session *
connect_route(struct remote_ctx *rc, const struct remote_job *job,
              const struct remote_route *route, int smarthost,
              const char *user, const char *pass, struct smtp_reply *last)
{
	struct smtp_session *s = NULL;

	smtp_local_error(last, "4.4.1", "no address to try");
	for (size_t i = 0; i < route->n; i++) {
		enum open_rc orc = open_session(rc, job, &route->t[i], smarthost, 0,
		                                user, pass, &s, last);
		if (orc == OPEN_PLAIN_RETRY)
			orc = open_session(rc, job, &route->t[i], smarthost, 1,
			                   user, pass, &s, last);
		if (orc == OPEN_OK || orc == OPEN_FATAL)
			break;
	}
	return s;
}

void
remote_deliver(struct remote_ctx *rc, const struct remote_job *job,
               struct remote_result *res)
{
	char dest[300], user[256] = "", pass[512] = "", err[400], q[600];
	const char *name;
	struct remote_route *route = NULL;
	struct smtp_reply last;
	int smarthost = rc->sh_spec[0] != '\0', mx;
	int port = smarthost ? rc->sh_port : rc->mx_port;

	fail_all(job, res, REMOTE_DEFER, "4.4.1", "none", "not attempted");
	if (job->nrcpt == 0)
		return;
	remote_destination(rc, job->domain, dest, sizeof dest);
	struct smtp_session *s = cache_take(rc, dest);
	if (s) {
		s->id = job->id;
		goto deliver;
	}

	if (smarthost && rc->auth_file) {
		/* a file only root may read: after the drop, with the one
		 * capability kept for it, raised for this read alone */
		privs_raise(CAP_DAC_READ_SEARCH);
		int ar = remote_read_auth(rc->auth_file, user, sizeof user, pass, sizeof pass,
		                          err, sizeof err);
		privs_lower(CAP_DAC_READ_SEARCH);
		if (ar < 0) {
			log_err("id=%s smarthost=%s error=%s", job->id, rc->sh_spec,
			        log_quote(q, sizeof q, err));
			fail_all(job, res, REMOTE_DEFER, "4.7.0", "none", err);
			goto out;
		}
	}
	route = malloc(sizeof *route);
	if (route == NULL) {
		fail_all(job, res, REMOTE_DEFER, "4.3.0", "none", "out of memory");
		goto out;
	}
	char lit[300];
	if (smarthost) {
		name = rc->sh_host;
		mx = !rc->sh_bracketed;
	} else if (job->domain[0] == '[') {
		/* an address literal: that host, no DNS (RFC 5321 §5.1) */
		int bracketed, lport;
		struct in6_addr a6;
		if (remote_parse_hostport(job->domain, port, lit, sizeof lit, &lport,
		                          &bracketed) < 0 || lport != port ||
		    (inet_pton(AF_INET, lit, &a6) != 1 && inet_pton(AF_INET6, lit, &a6) != 1)) {
			fail_all(job, res, REMOTE_FAIL, "5.1.2", "none", "invalid address literal");
			goto out;
		}
		name = lit;
		mx = 0;
	} else {
		name = job->domain;
		mx = 1;
	}
	if (remote_route_lookup(rc->dns, rc->mail_name, name, port, mx, route) < 0) {
		if (smarthost && route->status == REMOTE_FAIL) {
			/* our smarthost being unresolvable is no fault of the mail */
			route->status = REMOTE_DEFER;
			route->dsn[0] = '4';
		}
		log_info("id=%s domain=%s route=none dsn=%s reason=%s", job->id,
		         log_quote(err, sizeof err, job->domain), route->dsn,
		         log_quote(q, sizeof q, route->text));
		fail_all(job, res, route->status, route->dsn, "none", route->text);
		goto out;
	}
	if (remote_route_drop_self(route, &rc->self) > 0 && route->n == 0) {
		/* every address is one of our own SMTP listeners: a loop */
		snprintf(route->text, sizeof route->text,
		         "mail for %s loops back to myself (its addresses are this host's)", name);
		log_info("id=%s domain=%s route=none dsn=5.4.6 reason=%s", job->id,
		         log_quote(err, sizeof err, job->domain), log_quote(q, sizeof q, route->text));
		/* a smarthost pointing at ourselves is a configuration error: keep the mail */
		fail_all(job, res, smarthost ? REMOTE_DEFER : REMOTE_FAIL,
		         smarthost ? "4.4.6" : "5.4.6", "none", route->text);
		goto out;
	}
	s = connect_route(rc, job, route, smarthost, smarthost && rc->auth_file ? user : NULL,
	                  pass, &last);
	if (s == NULL) {
		fail_all(job, res, REMOTE_DEFER, last.dsn, "none", last.text);
		goto out;
	}
deliver:
	smtp_transaction(s, job, res);
	if (s->io.broken) {
		smtp_quit(s);
		free(s);
	} else
		cache_put(rc, dest, s);
out:
	explicit_bzero(pass, sizeof pass);
	free(route);
}
