/*
 * lmtp_int.h: what the LMTP server's files share (lmtp.c sessions,
 * lmtp_server.c listeners, lmtp_commit.c commit threads, lmtp_util.c);
 * not part of the contract between deliverd's parts.
 */
#ifndef SPFGATE_LMTP_INT_H
#define SPFGATE_LMTP_INT_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "spool.h"
#include "addr.h"

#define MAX_LISTEN 16

struct event;
struct evconnlistener;
struct sockaddr;
struct deliverd;
struct commit_pool;
struct lmtp_session;

struct lmtp_server {
	struct deliverd *d;
	struct evconnlistener *ls[MAX_LISTEN];
	char *paths[MAX_LISTEN];        /* unix socket files to remove */
	int nls;
	struct lmtp_session *sessions;  /* every open session (lmtp.c links them) */
	int nsessions;
	int closing;                    /* stopping: no new transactions */
	struct commit_pool *commits;
	struct event *resume;           /* re-enables accepting after EMFILE */
};

/* lmtp.c: a session on an accepted connection (sa: the peer). */
void lmtp_session_start(struct lmtp_server *l, int fd, const struct sockaddr *sa);
/* Stopping: an idle session gets 421 and goes; 1 if it went. */
int lmtp_session_stop(struct lmtp_session *s);
int lmtp_session_busy(const struct lmtp_session *s);     /* commit in flight */
struct lmtp_session *lmtp_session_next(const struct lmtp_session *s);
/* Free at once; only when no commit thread runs any more. */
void lmtp_session_drop(struct lmtp_session *s);

/* One commit to run on the commit threads (spool_commit_sync, then
 * spool_commit_batch together with the commits synced at the same time:
 * group commit, lmtp_commit.c); done is made active in the event loop
 * when it is durable or has failed (rc, err filled). */
struct commit_job {
	struct spool_writer *w;
	int rc;
	char err[256];
	struct event *done;
	void *arg;
	struct commit_job *next;
};

struct commit_pool *commit_pool_new(char *err, size_t errlen);
void commit_pool_submit(struct commit_pool *p, struct commit_job *j);
/* Finish queued commits, stop the threads, free. */
void commit_pool_free(struct commit_pool *p);

struct mailbox;
/* "local@domain" (local part quoted unless a dot-atom); malloc'd. */
char *lmtp_addr_text(const struct mailbox *m);
/* Split the text after "FROM:"/"TO:" into the <path> (into buf) and the
 * parameters after it.  0, or -1 on a syntax error. */
int lmtp_split_path(const char *arg, char *buf, size_t len, const char **params);
/* RFC 3461 xtext (the n bytes at in) decoded into out and NUL-terminated:
 * the decoded length, or -1 when in is not xtext ("+" without two upper
 * case hex digits, a byte outside 33..126, "=") or out is too small.
 * The value may contain any byte, NUL included: the caller checks. */
ssize_t lmtp_xtext_decode(const char *in, size_t n, char *out, size_t outlen);
/* A listening TCP socket (non-blocking), or -1 with err: inet[6]:PORT@ADDR
 * (loopback when no address is given).  Unix sockets: deliverd.h. */
int lmtp_listen_inet(const char *spec, char *err, size_t errlen);

#endif
