/*
 * session_int.h: what smtp_session.c (commands) and smtp_handoff.c (the
 * DATA phase) share: the session, and the helpers both use.  Not part
 * of relayd's interface (relayd.h).
 */
#ifndef RELAYD_SESSION_INT_H
#define RELAYD_SESSION_INT_H

#include "relayd.h"
#include "addr.h"
#include "filter.h"
#include "msgbuf.h"
#include "smtp_parse.h"

#include <stddef.h>

struct bufferevent;
struct event;
struct lmtp_client;

enum state { ST_CONNECT, ST_GREET, ST_READY, ST_MAIL, ST_DATA };

/* Flow control: input is not read from the socket past IN_MAX while a
 * command waits; no more commands are run while more than OUT_MAX of
 * replies wait for a client that does not read them. */
#define IN_MAX  (128 * 1024)
#define OUT_MAX (64 * 1024)

/* A milter's quarantine reason passed on to deliverd: printable ASCII,
 * cut here (xtext may triple it on the MAIL line). */
#define QUARANTINE_REASON_MAX 255

struct session {
	struct relayd *rd;
	const struct config *cfg;
	struct bufferevent *bev;
	struct session *prev, *next;
	struct event *resume;
	struct filter_session *flt;
	struct filter_conn conn;
	char peer[80];                  /* "[addr]" */
	char sid[24];                   /* session id, for the log */
	enum state state;
	int esmtp, waiting, closing, eof, skipping, errors, linger, out_blocked;
	long commands;

	/* transaction */
	char id[32];                    /* queue id, in Received: and the log */
	char *sender;                   /* canonical, "" for <> */
	int body8;
	char **rcpts;                   /* accepted */
	size_t nrcpt;
	char cur_rcpt[ADDR_MAX + 3];    /* canonical form of the RCPT in flight */
	char cur_path[ADDR_MAX + 300];  /* as written */
	struct lmtp_client *lmtp;
	struct data_reader dr;
	struct msgbuf msg;
	int msg_open;
	int too_big;
	size_t nreplies;                /* LMTP replies still to come after DATA */
	size_t lmtp_rcpts;              /* recipients deliverd took */
	int replay_failed;              /* the envelope replay's MAIL was refused */
	int n2, n4, n5;
	char last5[512];
	char queued_as[40];             /* deliverd's queue id, from its 250 */
};

/* smtp_session.c */
void sess_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* a reply that counts as an error (max_errors) */
void sess_err_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* deliverd's reply text, printable only, with its code */
void sess_relay_reply(struct session *s, int code, const char *text);
void sess_filter_refusal(struct session *s, const struct filter_reply *r, int count);
const char *sess_clean(char *buf, size_t len, const char *s);
char *sess_addr_text(const struct mailbox *m);
void sess_txn_reset(struct session *s);
void sess_set_timeout(struct session *s, long secs);
void sess_resume_soon(struct session *s);
void sess_done_waiting(struct session *s);
int sess_maybe_stop(struct session *s);

/* smtp_handoff.c */
void sess_cmd_data(struct session *s, const char *arg);
/* the final dot: checks, the milters' end of message, the handoff */
void sess_data_end(struct session *s);
/* after a refused message or a failed handoff: deliverd forgets it */
void sess_txn_abort(struct session *s);

#endif
