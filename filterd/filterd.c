/*
 * filterd: the SPF and relay-policy milter of spfgate.
 *
 *   filterd [-c FILE] [-t] [-d]
 *
 * -c names the configuration file, -t only checks it (exit 0, or 2 with
 * "FILE:LINE: message"), -d logs to stderr instead of syslog.  filterd
 * stays in the foreground and listens where [filterd] listen says, in
 * libmilter's syntax: unix:PATH (or local:PATH), inet:PORT@ADDR,
 * inet6:PORT@ADDR.  libmilter runs one thread per MTA connection; the
 * callbacks are in milter_cb.c.
 *
 * Signals are taken by the main thread, not by libmilter (which would
 * treat SIGHUP as a stop and notice a stop only every 5 seconds):
 * SIGHUP reloads the configuration for new decisions without dropping
 * sessions; SIGTERM and SIGINT close the listening socket at once and
 * give open mail transactions up to DRAIN_MS to finish.
 */
#include "milter.h"
#include "config.h"
#include "dns.h"
#include "daemon.h"
#include "log.h"
#include "privs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_MS 10000          /* how long a stop waits for open mail */
#define LISTEN_BACKLOG 1024     /* libmilter's default (20) is too short a
                                   queue for a burst of MTA connections */
#define FD_SCAN_MAX 4096
#define POKE_MS 50              /* how often a stop wakes the listener */
#define STOP_MS 15000           /* bound on waiting for the listener */

/* smfi_main() runs in its own thread; main waits for signals. */
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t run_cond = PTHREAD_COND_INITIALIZER;
static int run_done, run_rc;

/* The listening socket libmilter opened, to wake its listener. */
static struct sockaddr_storage listen_addr;
static socklen_t listen_len;

/* The path of a unix:/local: socket specification, or NULL. */
static const char *
unix_path(const char *spec)
{
	if (strncmp(spec, "unix:", 5) == 0)
		return spec + 5;
	if (strncmp(spec, "local:", 6) == 0)
		return spec + 6;
	return NULL;
}

/*
 * libmilter removes a leftover socket file at start; refuse to start
 * instead when another filterd still answers on it, rather than
 * silently stealing its address.
 */
static int
unix_socket_in_use(const char *path)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return 0;
	if (strlen(path) >= sizeof(sun.sun_path))
		return 0;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return 0;
	rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	return rc == 0;
}

/*
 * Find the socket libmilter opened (filterd opens no other listening
 * socket) and remember its address.  On Linux an accepted TCP socket
 * inherits TCP_NODELAY from its listening socket, and libmilter gives
 * no other hook for socket options: at end of message filterd sends
 * several small packets in a row (header edits, then the verdict), and
 * with Nagle on every one after the first would wait for the MTA's
 * delayed ACK, about 40 ms per message.
 */
static int
find_listener(void)
{
	int one = 1;

	for (int fd = 0; fd < FD_SCAN_MAX; fd++) {
		int v = 0, dom = 0;
		socklen_t len = sizeof(v);

		if (fcntl(fd, F_GETFD) < 0)
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || !v)
			continue;
		len = sizeof(dom);
		if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) < 0)
			continue;
		listen_len = sizeof(listen_addr);
		if (getsockname(fd, (struct sockaddr *)&listen_addr, &listen_len) < 0)
			continue;
		if ((dom == AF_INET || dom == AF_INET6)
		    && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
			log_warn("cannot set TCP_NODELAY on the listening socket: %s",
			         strerror(errno));
		return 0;
	}
	return -1;
}

/*
 * libmilter's listener waits up to 5 s in poll() before it looks at the
 * stop flag: a connection of our own wakes it at once.
 */
static void
poke_listener(void)
{
	struct sockaddr_storage a = listen_addr;
	int fd;

	if (a.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&a;
		if (in->sin_addr.s_addr == htonl(INADDR_ANY))
			in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (a.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a;
		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			in6->sin6_addr = in6addr_loopback;
	}
	if ((fd = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		return;
	(void)connect(fd, (struct sockaddr *)&a, listen_len);
	close(fd);
}

static void *
run_milter(void *arg)
{
	int rc = smfi_main();

	pthread_mutex_lock(&run_lock);
	run_done = 1;
	run_rc = rc;
	pthread_cond_broadcast(&run_cond);
	pthread_mutex_unlock(&run_lock);
	return arg;
}

static void *
run_stop(void *arg)
{
	smfi_stop();
	return arg;
}

/* Wait up to ms for smfi_main() to return; 1 if it has. */
static int
wait_done(int ms)
{
	struct timespec t;
	int done;

	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_nsec += (long)ms * 1000000L;
	t.tv_sec += t.tv_nsec / 1000000000L;
	t.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&run_lock);
	while (!run_done)
		if (pthread_cond_timedwait(&run_cond, &run_lock, &t) == ETIMEDOUT)
			break;
	done = run_done;
	pthread_mutex_unlock(&run_lock);
	return done;
}

static struct milter_env *
env_load(const char *path, char *err, size_t errlen)
{
	struct milter_env *e = calloc(1, sizeof(*e));

	if (e == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (config_load(&e->cfg, path, err, errlen) < 0) {
		config_free(&e->cfg);   /* the defaults it had filled in */
		free(e);
		return NULL;
	}
	return e;
}

static int
env_resolver(struct milter_env *e, char *err, size_t errlen)
{
	e->dns = dns_new_network((const char *const *)e->cfg.nameservers.v,
	                         e->cfg.nameservers.n, e->cfg.dns_timeout * 1000,
	                         err, errlen);
	return e->dns ? 0 : -1;
}

static void
env_discard(struct milter_env *e)
{
	if (e->dns)
		dns_free(e->dns);
	config_free(&e->cfg);
	free(e);
}

static void
reload(const char *path)
{
	char err[512];
	struct milter_env *e = env_load(path, err, sizeof(err));

	if (e == NULL || env_resolver(e, err, sizeof(err)) < 0) {
		log_err("reload: %s; keeping the running configuration", err);
		if (e)
			env_discard(e);
		return;
	}
	if (strcmp(e->cfg.filterd.listen, milter_env_now()->cfg.filterd.listen) != 0)
		log_warn("reload: listen changed to %s: takes a restart", e->cfg.filterd.listen);
	milter_publish(e);
	log_info("reload: config=%s mail_name=%s", path, e->cfg.mail_name);
}

int
main(int argc, char **argv)
{
	const char *path, *sock;
	int rc, left, sig;
	struct milter_env *env;
	char err[512];
	mode_t old_mask;
	sigset_t sigs;
	pthread_t milter_thread, stop_thread;

	struct daemon_opts o = { .config = CONFIG_DEFAULT_PATH };
	daemon_options(argc, argv, "filterd", &o);
	path = o.config;

	if ((env = env_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (o.check) {
		env_discard(env);
		return 0;
	}

	if (log_open_spec("filterd", env->cfg.log, o.to_stderr, err, sizeof(err)) < 0) {
		fprintf(stderr, "filterd: %s\n", err);
		env_discard(env);
		return 2;
	}
	/* A write to an MTA that hung up must fail, not kill the process. */
	signal(SIGPIPE, SIG_IGN);
	/* Blocked before any thread exists, so that only main takes them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	if (env_resolver(env, err, sizeof(err)) < 0) {
		log_err("cannot set up DNS: %s", err);
		env_discard(env);
		return 1;
	}
	milter_publish(env);

	sock = unix_path(env->cfg.filterd.listen);
	if (sock && unix_socket_in_use(sock)) {
		log_err("%s is in use by a running milter; not starting", sock);
		goto fail;
	}
	if (smfi_setconn(env->cfg.filterd.listen) != MI_SUCCESS
	    || smfi_setbacklog(LISTEN_BACKLOG) != MI_SUCCESS
	    || smfi_register(filterd_milter) != MI_SUCCESS) {
		log_err("cannot set up libmilter for %s", env->cfg.filterd.listen);
		goto fail;
	}
	/*
	 * The MTA's smtpd runs as its own user (postfix): the unix socket
	 * must be writable for it.  Who may reach it is decided by the
	 * permissions of the directory it is in.
	 */
	old_mask = umask(0111);
	errno = 0;
	rc = smfi_opensocket(1);
	umask(old_mask);
	if (rc != MI_SUCCESS) {
		log_err("cannot listen on %s: %s", env->cfg.filterd.listen,
		        errno ? strerror(errno) : "libmilter error");
		goto fail;
	}
	if (find_listener() < 0)
		log_warn("cannot find the listening socket of %s", env->cfg.filterd.listen);
	/* listening: the rest runs as [filterd] user, which owns the socket
	 * (to remove it at stop) */
	{
		struct privs_user u;
		int t = privs_target(env->cfg.filterd.user, &u, err, sizeof(err));
		if (t < 0 || (t > 0 && sock && privs_give(sock, &u, 0666, err, sizeof(err)) < 0) ||
		    privs_drop(env->cfg.filterd.user, 0, 0, err, sizeof(err)) < 0) {
			log_err("cannot drop privileges: %s", err);
			goto fail;
		}
	}

	if (pthread_create(&milter_thread, NULL, run_milter, NULL) != 0) {
		log_err("cannot start the milter thread");
		goto fail;
	}
	log_info("start: listen=%s mail_name=%s config=%s uid=%ld", env->cfg.filterd.listen,
	         env->cfg.mail_name, path, (long)geteuid());

	for (;;) {
		struct timespec second = { 1, 0 };
		sig = sigtimedwait(&sigs, NULL, &second);
		if (sig == SIGHUP) {
			log_reopen();
			reload(path);
			continue;
		}
		if (sig == SIGTERM || sig == SIGINT || wait_done(0))
			break;
	}
	if (!wait_done(0)) {
		log_info("stop: %s, closing %s", sig > 0 ? strsignal(sig) : "exiting",
		         env->cfg.filterd.listen);
		if (pthread_create(&stop_thread, NULL, run_stop, NULL) == 0)
			pthread_detach(stop_thread);
		for (int waited = 0; !wait_done(POKE_MS) && waited < STOP_MS; waited += POKE_MS)
			poke_listener();
	}
	pthread_join(milter_thread, NULL);
	rc = run_rc;
	left = milter_drain(DRAIN_MS);
	if (left) {
		/* Their threads may still read the configuration: leave it be. */
		log_warn("stop: %d mail transaction(s) still open, dropped", left);
		return 1;
	}
	log_info("stop");
	if (sock) {
		struct stat st;
		if (lstat(sock, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(sock);
	}
	milter_env_free_all();
	return rc == MI_SUCCESS ? 0 : 1;

fail:
	milter_env_free_all();
	return 1;
}
