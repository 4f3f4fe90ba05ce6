/*
 * daemon: start-up steps every spfgate daemon shares (see daemon.h).
 */
#include "daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

void
daemon_options(int argc, char **argv, const char *name, struct daemon_opts *o)
{
	int c;

	while ((c = getopt(argc, argv, "c:tdh")) != -1) {
		switch (c) {
		case 'c': o->config = optarg; break;
		case 't': o->check = 1; break;
		case 'd': o->to_stderr = 1; break;
		default: goto usage;
		}
	}
	if (optind == argc)
		return;
usage:
	fprintf(stderr, "usage: %s [-c FILE] [-t] [-d]\n", name);
	exit(2);
}

void
daemon_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}
