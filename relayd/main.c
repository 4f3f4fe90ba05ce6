/*
 * relayd: spfgate's SMTP front end.
 *
 *   relayd [-c FILE] [-t] [-d]
 *
 * -c names the configuration file, -t only checks it (and that the TLS
 * certificate and key load): exit 0, or 2 with "FILE:LINE: message";
 * -d logs to stderr instead of syslog.  relayd stays in the foreground.
 *
 * One event loop (libevent) holds every session.  It listens on every
 * [relayd] listen address ("ADDR:PORT", "[V6]:PORT"; IPv6 sockets are
 * IPv6-only so that 0.0.0.0:25 and [::]:25 can both be bound).  Signals
 * are libevent signal events:
 *   SIGHUP   reload the configuration (and the TLS certificate); new
 *            sessions get it, open ones keep theirs; a broken file is
 *            logged and the running one kept; listen changes need a restart
 *   SIGTERM, SIGINT  stop accepting; idle sessions get 421 at once,
 *            sessions in a transaction finish it (bounded by
 *            RELAYD_DRAIN_S), then exit 0
 * What a reload replaces is retired, not freed, until exit: sessions
 * still point at their configuration.
 */
#include "relayd.h"
#include "log.h"
#include "daemon.h"
#include "privs.h"
#include "workers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

struct retired {
	struct config *cfg;
	struct retired *next;
};

static const char *config_path = CONFIG_DEFAULT_PATH;
static struct retired *retired;
static struct event *drain_ev;
static struct timespec drain_t0;

SSL_CTX *
relayd_tls_ctx(const struct config *c, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	unsigned long e;

	err[0] = '\0';
	if (c->relayd.tls_cert_file[0] == '\0' && c->relayd.tls_key_file[0] == '\0')
		return NULL;
	if (c->relayd.tls_cert_file[0] == '\0' || c->relayd.tls_key_file[0] == '\0') {
		snprintf(err, errlen, "tls_cert_file and tls_key_file go together");
		return NULL;
	}
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, c->relayd.tls_cert_file) != 1
	    || SSL_CTX_use_PrivateKey_file(ctx, c->relayd.tls_key_file, SSL_FILETYPE_PEM) != 1
	    || SSL_CTX_check_private_key(ctx) != 1) {
		e = ERR_get_error();
		snprintf(err, errlen, "TLS certificate %s / key %s: %s", c->relayd.tls_cert_file,
		         c->relayd.tls_key_file, e ? ERR_reason_error_string(e) : "unusable");
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static void
on_accept(struct evconnlistener *el, evutil_socket_t fd, struct sockaddr *sa, int salen,
          void *arg)
{
	(void)el;
	session_accept(arg, fd, sa, salen);
}

static void
on_accept_error(struct evconnlistener *el, void *arg)
{
	(void)arg;
	log_warn("accept: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	(void)el;
}

/* Bind spec: one socket per worker (SO_REUSEPORT, shared by client
 * address), in rd->lfd[rd->naddr][...]. */
static int
bind_one(struct relayd *rd, const char *spec, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss), one = 1, a = rd->naddr;

	if (a == RELAYD_MAX_LISTEN) {
		snprintf(err, errlen, "too many listen addresses");
		return -1;
	}
	memset(&ss, 0, sizeof(ss));
	if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) < 0) {
		snprintf(err, errlen, "%s: bad listen address", spec);
		return -1;
	}
	for (int w = 0; w < rd->nworkers; w++) {
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			snprintf(err, errlen, "%s: socket: %s", spec, strerror(errno));
			goto fail;
		}
		rd->lfd[a][w] = fd;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (rd->nworkers > 1)
			setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		if (ss.ss_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&ss, (socklen_t)sslen) < 0 || listen(fd, 1024) < 0) {
			snprintf(err, errlen, "%s: %s", spec, strerror(errno));
			goto fail;
		}
		if (w == 0 && rd->nworkers > 1 &&
		    workers_share_by_client(fd, ss.ss_family, rd->nworkers) < 0) {
			snprintf(err, errlen, "%s: SO_ATTACH_REUSEPORT_CBPF: %s", spec, strerror(errno));
			goto fail;
		}
	}
	rd->lspec[a] = strdup(spec);
	rd->naddr++;
	log_info("listening on %s", spec);
	return 0;
fail:
	for (int w = 0; w < rd->nworkers; w++)
		if (rd->lfd[a][w] >= 0) {
			close(rd->lfd[a][w]);
			rd->lfd[a][w] = -1;
		}
	return -1;
}

/* Every bound socket that is not this worker's (or all, idx -1). */
static void
close_others(struct relayd *rd, int idx)
{
	for (int a = 0; a < rd->naddr; a++)
		for (int w = 0; w < rd->nworkers; w++)
			if (w != idx && rd->lfd[a][w] >= 0) {
				close(rd->lfd[a][w]);
				rd->lfd[a][w] = -1;
			}
}

static void
close_listeners(struct relayd *rd)
{
	close_others(rd, -1);
}

static void
reload(struct relayd *rd)
{
	char err[512];
	struct config *c;
	struct retired *r;
	SSL_CTX *tls;

	if ((c = config_new(config_path, err, sizeof(err))) == NULL) {
		log_err("reload: %s; keeping the running configuration", err);
		return;
	}
	tls = relayd_tls_ctx(c, err, sizeof(err));
	if (tls == NULL && err[0]) {
		log_err("reload: %s; keeping the running configuration", err);
		config_destroy(c);
		return;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		log_err("reload: out of memory; keeping the running configuration");
		SSL_CTX_free(tls);
		config_destroy(c);
		return;
	}
	if (!strlist_equal(&c->relayd.listen, &rd->cfg->relayd.listen))
		log_warn("reload: listen changed: takes a restart");
	r->cfg = rd->cfg;
	r->next = retired;
	retired = r;
	rd->cfg = c;
	/* SSL objects of open sessions hold their own reference to the old one */
	SSL_CTX_free(rd->tls);
	rd->tls = tls;
	log_info("reload: config=%s mail_name=%s tls=%s", config_path, c->mail_name,
	         tls ? "yes" : "no");
}

static void
drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct relayd *rd = arg;
	struct timespec now;

	(void)fd;
	(void)what;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (rd->nsessions == 0 || now.tv_sec - drain_t0.tv_sec >= RELAYD_DRAIN_S) {
		if (rd->nsessions)
			log_warn("stop: %ld session(s) still open after %ds, dropped",
			         rd->nsessions, RELAYD_DRAIN_S);
		event_base_loopbreak(rd->base);
	}
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct relayd *rd = arg;
	struct timeval tv = { 0, 50000 };

	(void)what;
	if (sig == SIGHUP) {
		log_reopen();
		reload(rd);
		return;
	}
	if (rd->closing)
		return;
	log_info("stop: %s; draining %ld session(s)", strsignal((int)sig), rd->nsessions);
	rd->closing = 1;
	for (int i = 0; i < rd->nls; i++)
		evconnlistener_free(rd->ls[i]);
	rd->nls = 0;
	sessions_stop(rd);
	clock_gettime(CLOCK_MONOTONIC, &drain_t0);
	drain_ev = event_new(rd->base, -1, EV_PERSIST, drain_tick, rd);
	if (drain_ev == NULL || event_add(drain_ev, &tv) < 0)
		event_base_loopbreak(rd->base);
}

static int
check_only(const char *path)
{
	char err[512];
	struct config *c = config_new(path, err, sizeof(err));
	SSL_CTX *tls;

	if (c == NULL) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	tls = relayd_tls_ctx(c, err, sizeof(err));
	if (tls == NULL && err[0]) {
		fprintf(stderr, "%s: %s\n", path, err);
		config_destroy(c);
		return 2;
	}
	SSL_CTX_free(tls);
	config_destroy(c);
	return 0;
}

/* One event loop: worker idx of rd->nworkers (0 of 1 without workers). */
static int
serve(struct relayd *rd, int idx)
{
	static const int sigs[] = { SIGHUP, SIGTERM, SIGINT };
	struct event *sigev[3] = { 0 };
	int rc = 1;

	close_others(rd, idx);
	if ((rd->base = event_base_new()) == NULL) {
		log_err("cannot create the event loop");
		goto out;
	}
	for (int a = 0; a < rd->naddr; a++) {
		/* backlog 0: already listening (with 1024); -1 would make
		 * libevent call listen() again with its default of 128 */
		rd->ls[a] = evconnlistener_new(rd->base, on_accept, rd, LEV_OPT_CLOSE_ON_FREE,
		                               0, rd->lfd[a][idx]);
		if (rd->ls[a] == NULL) {
			log_err("%s: cannot set up the listener", rd->lspec[a]);
			goto out;
		}
		rd->lfd[a][idx] = -1;       /* the listener's now */
		evconnlistener_set_error_cb(rd->ls[a], on_accept_error);
		rd->nls++;
	}
	for (int i = 0; i < 3; i++)
		if ((sigev[i] = evsignal_new(rd->base, sigs[i], on_signal, rd)) == NULL
		    || event_add(sigev[i], NULL) < 0) {
			log_err("cannot set up signal handling");
			goto out;
		}
	log_info("start: config=%s mail_name=%s lmtp=%s tls=%s uid=%ld worker=%d/%d", config_path,
	         rd->cfg->mail_name, rd->cfg->relayd.lmtp, rd->tls ? "yes" : "no",
	         (long)geteuid(), idx + 1, rd->nworkers);

	rc = event_base_dispatch(rd->base) < 0 ? 1 : 0;
out:
	for (int i = 0; i < rd->nls; i++)
		evconnlistener_free(rd->ls[i]);
	rd->nls = 0;
	sessions_free_all(rd);
	if (drain_ev)
		event_free(drain_ev);
	drain_ev = NULL;
	for (int i = 0; i < 3; i++)
		if (sigev[i])
			event_free(sigev[i]);
	if (rd->base)
		event_base_free(rd->base);
	rd->base = NULL;
	if (rc == 0)
		log_info("stop: done");
	return rc;
}

static const struct workers_ops worker_ops = { serve, reload, close_listeners };

int
main(int argc, char **argv)
{
	struct relayd rd;
	int rc = 1;
	char err[512];

	struct daemon_opts o = { .config = config_path };
	daemon_options(argc, argv, "relayd", &o);
	config_path = o.config;
	if (o.check)
		return check_only(config_path);

	memset(&rd, 0, sizeof(rd));
	memset(rd.lfd, -1, sizeof(rd.lfd));
	if ((rd.cfg = config_new(config_path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (log_open_spec("relayd", rd.cfg->log, o.to_stderr, err, sizeof(err)) < 0) {
		fprintf(stderr, "relayd: %s\n", err);
		config_destroy(rd.cfg);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	rd.nworkers = (int)rd.cfg->relayd.processes;
	if (rd.nworkers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		rd.nworkers = n < 1 ? 1 : n > RELAYD_MAX_WORKERS ? RELAYD_MAX_WORKERS : (int)n;
	}
	daemon_raise_fd_limit();
	{
		struct rlimit rl;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
			rd.fd_limit = (long)rl.rlim_cur;
			long per = 1 + (long)rd.cfg->relayd.milters.n;
			long fit = (rd.fd_limit - RELAYD_FD_RESERVE) / per * rd.nworkers;
			if (rd.cfg->relayd.max_sessions > fit)
				log_warn("max_sessions %ld: RLIMIT_NOFILE %ld holds about %ld sessions "
				         "with %zu milter(s); past that, new clients get 421 "
				         "(raise LimitNOFILE=)", rd.cfg->relayd.max_sessions,
				         rd.fd_limit, fit, rd.cfg->relayd.milters.n);
		}
	}
	rd.tls = relayd_tls_ctx(rd.cfg, err, sizeof(err));
	if (rd.tls == NULL && err[0]) {
		log_err("%s", err);
		goto out;
	}
	for (size_t i = 0; i < rd.cfg->relayd.listen.n; i++)
		if (bind_one(&rd, rd.cfg->relayd.listen.v[i], err, sizeof(err)) < 0) {
			log_err("cannot listen: %s", err);
			goto out;
		}
	/* bound and the key read: nothing more needs root (a reload reads
	 * the certificate and key as [relayd] user) */
	if (privs_drop(rd.cfg->relayd.user, 0, 0, err, sizeof(err)) < 0) {
		log_err("cannot drop privileges: %s", err);
		goto out;
	}
	if (rd.nworkers == 1)
		rc = serve(&rd, 0);
	else {
		log_info("start: %d worker processes", rd.nworkers);
		rc = workers_supervise(&rd, &worker_ops);
		if (rc == 0)
			log_info("stop: done");
	}

out:
	close_listeners(&rd);
	for (int a = 0; a < rd.naddr; a++)
		free(rd.lspec[a]);
	SSL_CTX_free(rd.tls);
	while (retired) {
		struct retired *r = retired;
		retired = r->next;
		config_destroy(r->cfg);
		free(r);
	}
	config_destroy(rd.cfg);
	return rc;
}
