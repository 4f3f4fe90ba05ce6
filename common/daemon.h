/*
 * daemon: start-up steps every spfgate daemon shares.
 */
#ifndef SPFGATE_DAEMON_H
#define SPFGATE_DAEMON_H

/* The command line every daemon takes: [-c FILE] [-t] [-d]. */
struct daemon_opts {
	const char *config;      /* -c, else the default path */
	int check;               /* -t: check the configuration, exit */
	int to_stderr;           /* -d: log to stderr */
};

/* Parse it into o (config preset by the caller); on anything else print
 * "usage: NAME [-c FILE] [-t] [-d]" and exit 2. */
void daemon_options(int argc, char **argv, const char *name, struct daemon_opts *o);

/* Soft RLIMIT_NOFILE up to the hard limit: every session holds
 * descriptors, and the limit is the administrator's (LimitNOFILE=). */
void daemon_raise_fd_limit(void);

#endif
