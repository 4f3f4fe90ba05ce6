/*
 * relayd: spfgate's SMTP front end.  What main.c and smtp_session.c share.
 */
#ifndef RELAYD_H
#define RELAYD_H

#include <stddef.h>
#include "config.h"

#define RELAYD_MAX_LISTEN 16
#define RELAYD_MAX_WORKERS 64   /* [relayd] processes */
#define RELAYD_DRAIN_S    30    /* a stop waits this long for open mail */
#define RELAYD_FD_RESERVE 64    /* descriptors kept for transactions, logs, DNS */

struct event_base;
struct evconnlistener;
struct session;
typedef struct ssl_ctx_st SSL_CTX;

struct relayd {
	struct config *cfg;             /* current; sessions keep the one they began with */
	struct event_base *base;
	SSL_CTX *tls;                   /* NULL: no STARTTLS */
	struct evconnlistener *ls[RELAYD_MAX_LISTEN];
	int nls;
	/* bound sockets: one per listen address and worker (SO_REUSEPORT) */
	int lfd[RELAYD_MAX_LISTEN][RELAYD_MAX_WORKERS];
	char *lspec[RELAYD_MAX_LISTEN];
	int naddr;
	int nworkers, worker;           /* this process is worker `worker` of nworkers */
	struct session *sessions;       /* every open session */
	long nsessions;
	int closing;                    /* stopping: drain */
	unsigned long serial;           /* for queue ids */
	unsigned long sessions_started; /* for session ids */
	long fd_limit;                  /* RLIMIT_NOFILE, 0: unknown */
};

/* smtp_session.c */
void session_accept(struct relayd *rd, int fd, const struct sockaddr *sa, int salen);
/* Stopping: idle sessions get 421 now, the others after their transaction. */
void sessions_stop(struct relayd *rd);
/* At exit: free whatever is left. */
void sessions_free_all(struct relayd *rd);

/* main.c: a TLS context from the configuration (NULL with err, or NULL
 * and err "" when no certificate is configured). */
SSL_CTX *relayd_tls_ctx(const struct config *c, char *err, size_t errlen);

#endif
