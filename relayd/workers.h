/*
 * workers: relayd as several processes, one event loop each ([relayd]
 * processes), under a parent that only supervises them.
 */
#ifndef RELAYD_WORKERS_H
#define RELAYD_WORKERS_H

#include "relayd.h"

/*
 * What the parent needs from main.c: run worker idx to its end (its exit
 * status); reload the parent's own configuration (for the workers it
 * starts later); close the parent's copies of the listening sockets.
 */
struct workers_ops {
	int (*run)(struct relayd *rd, int idx);
	void (*reload)(struct relayd *rd);
	void (*close_listeners)(struct relayd *rd);
};

/*
 * Start rd->nworkers workers and supervise them until SIGTERM or SIGINT
 * has stopped them all: a worker that dies is started again (after a
 * second, if it died within one of its start), SIGHUP is passed on to
 * every worker.  Returns the exit status for relayd: 0 when every worker
 * stopped cleanly.
 */
int workers_supervise(struct relayd *rd, const struct workers_ops *ops);

/*
 * The n sockets of one listen address (one per worker, bound with
 * SO_REUSEPORT in this order) share its connections by client address:
 * all of one client's sessions reach the same worker, so that
 * max_sessions_per_client holds across them.  0, or -1 with errno.
 */
int workers_share_by_client(int fd, int family, int n);

#endif
