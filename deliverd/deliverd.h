/*
 * deliverd.h: what deliverd's parts share.  One process: an event loop
 * (libevent) runs the LMTP server and the control socket; a pool of
 * worker threads (sched.c) runs deliveries, which may block on DNS,
 * SMTP or a mailbox lock without ever stalling the loop.
 */
#ifndef SPFGATE_DELIVERD_H
#define SPFGATE_DELIVERD_H

#include "config.h"
#include "dns.h"
#include "localdb.h"
#include "spool.h"

struct event_base;
struct sched;
struct lmtp_server;

struct deliverd {
	struct config *cfg;
	struct event_base *base;
	struct spool *spool;
	struct localdb *localdb;     /* swapped on SIGHUP */
	struct dns_resolver *dns;
	struct sched *sched;
	struct lmtp_server *lmtp;
	int privileged;              /* running as root: mailboxes written
	                                with the recipient's identity */
};

/* --- sched.c: the scheduler and delivery workers --- */
struct sched *sched_new(struct deliverd *d, char *err, size_t errlen);
/* A message was committed to queue/: deliver it now.  Thread-safe. */
void sched_submit(struct sched *s, const char *id);
/* Retry every deferred message now (queue tool "flush", SIGUSR1). */
void sched_flush(struct sched *s);
/* Forget a message (deleted or held by the administrator). */
void sched_forget(struct sched *s, const char *id);
/* Finish running deliveries, stop the workers. */
void sched_free(struct sched *s);

/* --- lmtp.c: the LMTP server (RFC 2033) --- */
struct lmtp_server *lmtp_listen(struct deliverd *d, char *err, size_t errlen);
/* Stop accepting; sessions in progress finish.  Then free. */
void lmtp_close(struct lmtp_server *l);

/* --- control.c: the control socket (queue tool); added by part B --- */
/* A listening unix socket (non-blocking), or -1 with err: created 0600
 * and then given mode (no moment with wider rights than asked), a stale
 * file replaced, one a server still answers on refused, anything that is
 * not a socket left alone (lmtp_util.c; for LMTP and the control socket). */
int deliverd_listen_unix(const char *path, int mode, int backlog, char *err, size_t errlen);

struct control;
struct control *control_open(struct deliverd *d, char *err, size_t errlen);
void control_close(struct control *c);

#endif
