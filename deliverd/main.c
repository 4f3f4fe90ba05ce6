/*
 * deliverd: spfgate's queue and delivery daemon.
 *
 *   deliverd [-c FILE] [-t] [-d]
 *
 * -c names the configuration file, -t only checks it (and the users and
 * aliases tables it names): exit 0, or 2 with "FILE:LINE: message"; -d
 * logs to stderr instead of syslog.  deliverd stays in the foreground.
 *
 * One event loop (libevent) runs the LMTP server and the control socket;
 * the scheduler's worker threads deliver.  Signals arrive as libevent
 * signal events, so their work runs in the loop, never in a handler:
 *   SIGHUP   reload the configuration and the users/aliases tables; a
 *            broken file is logged and the running one kept
 *   SIGTERM, SIGINT   stop accepting, let open LMTP sessions finish
 *            (bounded), stop the scheduler, exit 0
 *   SIGUSR1  retry every deferred message now
 *
 * What a reload replaces is retired, not freed, until exit: worker
 * threads may still be reading the old configuration or tables.
 */
#include "deliverd.h"
#include "log.h"
#include "daemon.h"
#include "privs.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

struct retired {
	struct config *cfg;
	struct localdb *db;
	struct dns_resolver *dns;
	struct retired *next;
};

static const char *config_path = CONFIG_DEFAULT_PATH;
static struct retired *retired;
static struct control *ctl;

static struct dns_resolver *
resolver(const struct config *c, char *err, size_t errlen)
{
	return dns_new_network((const char *const *)c->nameservers.v, c->nameservers.n,
	                       c->dns_timeout * 1000, err, errlen);
}

static void
reload(struct deliverd *d)
{
	char err[512];
	struct config *c;
	struct localdb *db;
	struct dns_resolver *dns = NULL;
	struct retired *r;

	if ((c = config_new(config_path, err, sizeof(err))) == NULL) {
		log_err("reload: %s; keeping the running configuration", err);
		return;
	}
	if ((db = localdb_open(c, err, sizeof(err))) == NULL) {
		log_err("reload: %s; keeping the running configuration", err);
		config_destroy(c);
		return;
	}
	if ((!strlist_equal(&c->nameservers, &d->cfg->nameservers)
	     || c->dns_timeout != d->cfg->dns_timeout)
	    && (dns = resolver(c, err, sizeof(err))) == NULL) {
		log_err("reload: DNS: %s; keeping the running configuration", err);
		localdb_free(db);
		config_destroy(c);
		return;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		log_err("reload: out of memory; keeping the running configuration");
		if (dns)
			dns_free(dns);
		localdb_free(db);
		config_destroy(c);
		return;
	}
	if (!strlist_equal(&c->deliverd.listen, &d->cfg->deliverd.listen)
	    || strcmp(c->deliverd.control, d->cfg->deliverd.control) != 0
	    || strcmp(c->deliverd.spool, d->cfg->deliverd.spool) != 0)
		log_warn("reload: listen, control or spool changed: takes a restart");
	r->cfg = d->cfg;
	r->db = d->localdb;
	r->dns = dns ? d->dns : NULL;
	r->next = retired;
	retired = r;
	__atomic_store_n(&d->localdb, db, __ATOMIC_RELEASE);
	if (dns)
		__atomic_store_n(&d->dns, dns, __ATOMIC_RELEASE);
	__atomic_store_n(&d->cfg, c, __ATOMIC_RELEASE);
	log_info("reload: config=%s mail_name=%s", config_path, c->mail_name);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct deliverd *d = arg;

	(void)what;
	switch (sig) {
	case SIGHUP:
		log_reopen();
		reload(d);
		break;
	case SIGUSR1:
		log_info("flush: SIGUSR1");
		sched_flush(d->sched);
		break;
	default:
		log_info("stop: %s", strsignal((int)sig));
		event_base_loopbreak(d->base);
		break;
	}
}

/*
 * spool_open() takes the spool's lock when it is free and carries on
 * without it otherwise (that is how the queue tool reads a live spool).
 * Two daemons on one spool would deliver everything twice: refuse to
 * start while another process holds the lock.  A queue tool holds it
 * only for a moment, so a held lock is retried for a while first.
 */
static int
spool_taken(const char *dir)
{
	char path[4096];
	int fd, busy = 0;

	snprintf(path, sizeof(path), "%s/.lock", dir);
	if ((fd = open(path, O_RDWR | O_CLOEXEC)) < 0)
		return 0;       /* no lock file yet: a new spool */
	for (int i = 0; i < 40; i++) {
		busy = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
		if (!busy)
			break;
		usleep(50000);
	}
	close(fd);              /* releases it for spool_open() */
	return busy;
}

/*
 * Started as root: hand the spool and the sockets to [deliverd] user
 * (LMTP sockets 0660 for its group, the spfgate group that relayd and a
 * Postfix using deliverd belong to; the control socket 0600, for root's
 * queue tool), then become that user.  It keeps what writing each
 * mailbox as its recipient takes (CAP_SETUID, CAP_SETGID, CAP_CHOWN), and
 * may raise CAP_DAC_READ_SEARCH only to read the smarthost's password
 * file, which only root may read.  Before any worker thread exists:
 * capabilities are per thread.
 */
static int
become_user(struct deliverd *d, char *err, size_t errlen)
{
	const struct config *c = d->cfg;
	struct privs_user u;
	int t = privs_target(c->deliverd.user, &u, err, errlen);

	if (t <= 0)
		return t;
	if (privs_give_tree(c->deliverd.spool, &u, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < c->deliverd.listen.n; i++)
		if (!strncmp(c->deliverd.listen.v[i], "unix:", 5) &&
		    privs_give(c->deliverd.listen.v[i] + 5, &u, 0660, err, errlen) < 0)
			return -1;
	if (privs_give(c->deliverd.control, &u, 0600, err, errlen) < 0)
		return -1;
	return privs_drop(c->deliverd.user,
	                  PRIVS_CAP(CAP_SETUID) | PRIVS_CAP(CAP_SETGID) | PRIVS_CAP(CAP_CHOWN),
	                  PRIVS_CAP(CAP_DAC_READ_SEARCH), err, errlen);
}

static int
check_only(const char *path)
{
	char err[512];
	struct config *c = config_new(path, err, sizeof(err));
	struct localdb *db;

	if (c == NULL) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if ((db = localdb_open(c, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		config_destroy(c);
		return 2;
	}
	localdb_free(db);
	config_destroy(c);
	return 0;
}

int
main(int argc, char **argv)
{
	struct deliverd d;
	static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGUSR1 };
	struct event *sigev[4] = { 0 };
	int rc = 1;
	char err[512];

	struct daemon_opts o = { .config = config_path };
	daemon_options(argc, argv, "deliverd", &o);
	config_path = o.config;
	if (o.check)
		return check_only(config_path);

	memset(&d, 0, sizeof(d));
	if ((d.cfg = config_new(config_path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (log_open_spec("deliverd", d.cfg->log, o.to_stderr, err, sizeof(err)) < 0) {
		fprintf(stderr, "deliverd: %s\n", err);
		config_destroy(d.cfg);
		return 2;
	}
	/* a write to a client that hung up must fail, not kill the process */
	signal(SIGPIPE, SIG_IGN);
	/* A file size limit must fail one write (4.2.2), not kill the daemon. */
	signal(SIGXFSZ, SIG_IGN);
	daemon_raise_fd_limit();
	d.privileged = geteuid() == 0;

	if (evthread_use_pthreads() < 0) {
		log_err("cannot set up libevent for threads");
		goto out;
	}
	if (spool_taken(d.cfg->deliverd.spool)) {
		log_err("spool %s is in use by another deliverd; not starting",
		        d.cfg->deliverd.spool);
		goto out;
	}
	if ((d.spool = spool_open(d.cfg->deliverd.spool, err, sizeof(err))) == NULL) {
		log_err("cannot open the spool: %s", err);
		goto out;
	}
	if ((d.localdb = localdb_open(d.cfg, err, sizeof(err))) == NULL) {
		log_err("cannot load local users: %s", err);
		goto out;
	}
	if ((d.dns = resolver(d.cfg, err, sizeof(err))) == NULL) {
		log_err("cannot set up DNS: %s", err);
		goto out;
	}
	if ((d.base = event_base_new()) == NULL) {
		log_err("cannot create the event loop");
		goto out;
	}
	/* listen before the scheduler starts: a second deliverd stops here */
	if ((d.lmtp = lmtp_listen(&d, err, sizeof(err))) == NULL) {
		log_err("cannot listen: %s", err);
		goto out;
	}
	if ((ctl = control_open(&d, err, sizeof(err))) == NULL) {
		log_err("cannot open the control socket: %s", err);
		goto out;
	}
	if (become_user(&d, err, sizeof(err)) < 0) {
		log_err("cannot drop privileges: %s", err);
		goto out;
	}
	if ((d.sched = sched_new(&d, err, sizeof(err))) == NULL) {
		log_err("cannot start the scheduler: %s", err);
		goto out;
	}
	for (int i = 0; i < 4; i++)
		if ((sigev[i] = evsignal_new(d.base, sigs[i], on_signal, &d)) == NULL
		    || event_add(sigev[i], NULL) < 0) {
			log_err("cannot set up signal handling");
			goto out;
		}
	log_info("start: config=%s spool=%s mail_name=%s privileged=%s uid=%ld", config_path,
	         d.cfg->deliverd.spool, d.cfg->mail_name, d.privileged ? "yes" : "no",
	         (long)geteuid());

	rc = event_base_dispatch(d.base) < 0 ? 1 : 0;

out:
	/* stop taking work first, then let what was taken finish */
	if (ctl)
		control_close(ctl);
	if (d.lmtp)
		lmtp_close(d.lmtp);
	if (d.sched)
		sched_free(d.sched);
	for (int i = 0; i < 4; i++)
		if (sigev[i])
			event_free(sigev[i]);
	if (d.base)
		event_base_free(d.base);
	if (d.dns)
		dns_free(d.dns);
	if (d.localdb)
		localdb_free(d.localdb);
	if (d.spool)
		spool_close(d.spool);
	while (retired) {
		struct retired *r = retired;
		retired = r->next;
		if (r->dns)
			dns_free(r->dns);
		localdb_free(r->db);
		config_destroy(r->cfg);
		free(r);
	}
	if (rc == 0)
		log_info("stop: done");
	config_destroy(d.cfg);
	return rc;
}
