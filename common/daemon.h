/*
 * daemon: start-up steps every spfgate daemon shares.
 */
#ifndef SPFGATE_DAEMON_H
#define SPFGATE_DAEMON_H

/* Soft RLIMIT_NOFILE up to the hard limit: every session holds
 * descriptors, and the limit is the administrator's (LimitNOFILE=). */
void daemon_raise_fd_limit(void);

#endif
