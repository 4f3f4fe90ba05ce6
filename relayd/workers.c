/*
 * workers: the supervising parent of relayd's worker processes.
 *
 * The parent binds every listening socket (one per worker and address,
 * SO_REUSEPORT, chosen by client address: main.c), drops privileges,
 * then forks the workers and only waits: for a worker's death (started
 * again), for SIGHUP (passed on; the parent reloads too, so that a worker
 * it starts later has the new configuration) and for SIGTERM or SIGINT
 * (its own copies of the listening sockets are closed at once, so new
 * clients are refused; the workers drain their sessions as a single
 * relayd does).  Signals are taken with sigtimedwait(): nothing runs in
 * a handler.
 */
#include "workers.h"
#include "log.h"

#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RESTART_DELAY_S 1     /* a worker that died within this is started later */
#define STOP_GRACE_S    (RELAYD_DRAIN_S + 10)

struct worker {
	pid_t pid;            /* 0: not running */
	time_t started;       /* monotonic seconds */
	time_t due;           /* start again at (monotonic), when pid is 0 */
};

static time_t
mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static pid_t
start(struct relayd *rd, const struct workers_ops *ops, int idx, const sigset_t *old)
{
	pid_t pid = fork();
	if (pid == 0) {
		/* the child: signals back as the single relayd has them */
		signal(SIGCHLD, SIG_DFL);
		sigprocmask(SIG_SETMASK, old, NULL);
		rd->worker = idx;
		_exit(ops->run(rd, idx));
	}
	if (pid < 0)
		log_err("worker %d: fork: %s", idx, strerror(errno));
	else
		log_info("worker %d: started pid=%ld", idx, (long)pid);
	return pid > 0 ? pid : 0;
}

static const char *
how(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal %s", strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "status %d", status);
	return buf;
}

int
workers_supervise(struct relayd *rd, const struct workers_ops *ops)
{
	struct worker w[RELAYD_MAX_WORKERS] = { 0 };
	sigset_t set, old;
	int n = rd->nworkers, stopping = 0, rc = 0;
	time_t stop_at = 0;
	char hb[64];

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	for (int i = 0; i < n; i++) {
		w[i].pid = start(rd, ops, i, &old);
		w[i].started = mono();
		w[i].due = w[i].started + RESTART_DELAY_S;
	}

	for (;;) {
		int alive = 0;
		for (int i = 0; i < n; i++)
			alive += w[i].pid != 0;
		if (stopping && alive == 0)
			break;
		if (stopping && mono() >= stop_at) {
			log_warn("stop: %d worker(s) still running after %ds, killed", alive,
			         STOP_GRACE_S);
			for (int i = 0; i < n; i++)
				if (w[i].pid)
					kill(w[i].pid, SIGKILL);
			stop_at = mono() + 3600;    /* only reaping is left */
			rc = 1;
		}
		/* workers due to start again */
		for (int i = 0; i < n && !stopping; i++)
			if (w[i].pid == 0 && mono() >= w[i].due) {
				w[i].pid = start(rd, ops, i, &old);
				w[i].started = mono();
				w[i].due = w[i].started + RESTART_DELAY_S;
			}

		struct timespec tick = { 1, 0 };
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, &tick);
		if (sig == SIGHUP) {
			log_reopen();
			ops->reload(rd);
			for (int i = 0; i < n; i++)
				if (w[i].pid)
					kill(w[i].pid, SIGHUP);
		} else if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
			log_info("stop: %s; stopping %d worker(s)", strsignal(sig), alive);
			stopping = 1;
			stop_at = mono() + STOP_GRACE_S;
			ops->close_listeners(rd);
			for (int i = 0; i < n; i++)
				if (w[i].pid)
					kill(w[i].pid, SIGTERM);
		}
		/* reap, whatever woke us (SIGCHLD may have been merged) */
		int status;
		pid_t pid;
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (int i = 0; i < n; i++) {
				if (w[i].pid != pid)
					continue;
				w[i].pid = 0;
				if (stopping) {
					if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
						rc = 1;
					break;
				}
				time_t now = mono();
				w[i].due = now - w[i].started < RESTART_DELAY_S ? now + RESTART_DELAY_S : now;
				log_err("worker %d: pid=%ld ended (%s); starting it again", i, (long)pid,
				        how(status, hb, sizeof(hb)));
				break;
			}
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

int
workers_share_by_client(int fd, int family, int n)
{
	/* a classic BPF program run on each new connection: the last 32 bits
	 * of the source address (IPv4: all of it; IPv6: the interface
	 * identifier's end) modulo n picks the socket */
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		         (unsigned)(SKF_NET_OFF + (family == AF_INET6 ? 20 : 12))),
		BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (unsigned)n),
		BPF_STMT(BPF_RET | BPF_A, 0),
	};
	struct sock_fprog prog = { sizeof(code) / sizeof(code[0]), code };

	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog));
}
