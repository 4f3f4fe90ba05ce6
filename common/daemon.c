/*
 * daemon: start-up steps every spfgate daemon shares (see daemon.h).
 */
#include "daemon.h"

#include <sys/resource.h>

void
daemon_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}
