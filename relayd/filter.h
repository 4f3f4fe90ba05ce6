/*
 * filter: every policy decision of an SMTP session goes through here.
 *
 * The session calls one function per SMTP event and waits (reading no
 * more client input) until the completion callback has run.  The
 * callback may run before the call returns (the built-in policy is
 * synchronous) or later from the event loop (a milter answers over a
 * socket); the session copes with both.  After filter_close() no
 * callback runs any more.
 *
 *   filter_open()     at accept: the client, the local address, mail_name
 *   filter_connect()  before the greeting    (milter SMFIC_CONNECT)
 *   filter_helo()     HELO/EHLO              (SMFIC_HELO)
 *   filter_mail()     MAIL FROM              (SMFIC_MAIL)
 *   filter_rcpt()     RCPT TO, per recipient (SMFIC_RCPT)
 *   filter_data()     DATA, before the 354   (SMFIC_DATA)
 *   filter_eom()      the whole message read (SMFIC_HEADER.., BODY.., EOB);
 *                     the callback also carries the modifications
 *   filter_end()      the transaction is over, by RSET, a new HELO or
 *                     after the message         (SMFIC_ABORT)
 *   filter_close()    the session ends         (SMFIC_QUIT)
 *
 * FILTER_CONTINUE means "go on" (milter continue/accept); FILTER_REPLY
 * carries the reply the client gets (4xx/5xx; the session adds nothing
 * but the CRLF; close = 1 ends the session after it).  FILTER_DISCARD at
 * eom: say 250 to the client and deliver nothing.  At RCPT a refusal
 * concerns that recipient only; at MAIL, DATA or eom the transaction.
 *
 * The built-in implementation (no [relayd] milters configured) decides
 * what filterd would: relay only for self at RCPT through policy_rcpt()
 * (common/policy.c, the code filterd uses); every other step continues.
 *
 * Plugging in the milter client (milter_client.h), all inside filter.c:
 *   - filter_open(): one milter_conn_new() per cfg->relayd.milters entry,
 *     in order, and a struct milter_macros kept from conn (j, _,
 *     {daemon_name}, {if_addr}, {client_addr}, {client_port}, i,
 *     {tls_version}, {cipher}, {mail_addr}, {rcpt_addr}); conn's fields
 *     are kept current by the session (helo, tls, queue_id).
 *   - each event: milter_open() (first time) then the event on milter 1,
 *     its done() starts milter 2, ... until one answers other than
 *     CONTINUE; only then the session's callback runs (exactly once).
 *   - status -> struct filter_reply: CONTINUE/ACCEPT -> FILTER_CONTINUE;
 *     REJECT -> FILTER_REPLY 550 5.7.1 (554 at connect); TEMPFAIL ->
 *     451 4.7.1; REPLY -> parsed "CODE X.Y.Z text"; DISCARD -> remembered
 *     and reported as FILTER_DISCARD at eom; CONNFAIL -> 421 4.7.0 with
 *     close = 1; FAILED -> cfg->relayd.milter_default_action (accept:
 *     continue without that milter; reject: 550 5.7.1; tempfail: 451
 *     4.7.1).
 *   - filter_eom(): msg holds the message (CRLF, unstuffed, relayd's own
 *     Received: first); filter.c splits it into milter_header() per
 *     field, milter_eoh(), milter_body() in chunks of at most
 *     MILTER_CHUNK_MAX, milter_eom(); each milter's mods are converted
 *     one to one (MILTER_MOD_x -> FM_x, same index meaning) and the
 *     concatenation of every milter's list is passed to the callback
 *     (valid during the callback only).  If later milters are to see
 *     earlier milters' changes, msgedit_apply() produces that message
 *     between milters.
 *   - filter_end() -> milter_abort() on each; filter_close() ->
 *     milter_close() on each.
 * The relay check (policy_rcpt) stays in filter_rcpt() in front of the
 * milters whether or not milters are configured: a milter list without
 * filterd (opendkim alone, say) must never make relayd an open relay.
 */
#ifndef RELAYD_FILTER_H
#define RELAYD_FILTER_H

#include <stddef.h>
#include "cidr.h"
#include "config.h"

struct event_base;
struct msgbuf;

#define FILTER_TEXT_MAX 512

enum filter_action { FILTER_CONTINUE = 0, FILTER_REPLY, FILTER_DISCARD };

struct filter_reply {
	enum filter_action action;
	int code;                       /* 0, or 4xx/5xx with FILTER_REPLY */
	char enh[16];                   /* "5.7.1", "" if none */
	char text[FILTER_TEXT_MAX];     /* printable ASCII, no CR/LF */
	int close;                      /* end the session after this reply
	                                   (421 on SMFIR_CONN_FAIL/SHUTDOWN) */
};

/* What the client is: filled by the session before filter_open(). */
struct filter_conn {
	struct ipaddr ip;
	char addr[64];                  /* client address, text */
	int port;
	char if_addr[64];               /* our address it connected to */
	const char *mail_name;          /* macro j */
	const char *daemon_name;        /* {daemon_name}: "relayd" */
	/* updated by the session as the session goes on: */
	char helo[256];
	int tls;                        /* STARTTLS done */
	char tls_version[32], tls_cipher[64];
	char queue_id[32];              /* macro i, per transaction */
};

/*
 * Changes a filter asks for at end of message, in the order they came;
 * the same shape as the milter client's struct milter_mod
 * (milter_client.h), so its result converts one to one.  The session
 * applies them before the LMTP handoff (msgedit.c for the message,
 * an LMTP RSET and replay for the envelope and for a quarantine).  Header values are the text
 * after the colon as it is to be written (CRLF inside folded values).
 * The headers a filter indexes include relayd's own Received: (the
 * first one), as with Postfix.  Built-in filter: never any.
 */
enum filter_mod_type {
	FM_ADDHDR,      /* name, value: append a header field */
	FM_INSHDR,      /* index, name, value: insert before field #index (0 = top) */
	FM_CHGHDR,      /* index, name, value: change the index-th (1-based) field
	                   named name; value NULL: delete it */
	FM_CHGFROM,     /* value: new sender (with or without <>) */
	FM_ADDRCPT,     /* value: recipient to add */
	FM_DELRCPT,     /* value: recipient to remove */
	FM_REPLBODY,    /* body, body_len: the whole new body */
	FM_QUARANTINE   /* value: reason: deliverd holds the message
	                   (LMTP MAIL ... XQUARANTINE=reason) */
};

struct filter_mod {
	enum filter_mod_type type;
	unsigned long index;
	const char *name, *value, *args;
	const unsigned char *body;
	size_t body_len;
};

struct filter_mods {
	const struct filter_mod *v;
	size_t n;
};

typedef void (*filter_cb)(void *arg, const struct filter_reply *r);
typedef void (*filter_eom_cb)(void *arg, const struct filter_reply *r,
                              const struct filter_mods *mods);

struct filter_session;

struct filter_session *filter_open(const struct config *cfg, struct event_base *base,
                                   struct filter_conn *conn);
void filter_connect(struct filter_session *f, filter_cb cb, void *arg);
void filter_helo(struct filter_session *f, const char *helo, filter_cb cb, void *arg);
/* sender: the path as the client wrote it ("<a@b>"); params: after it */
void filter_mail(struct filter_session *f, const char *sender, const char *params,
                 filter_cb cb, void *arg);
void filter_rcpt(struct filter_session *f, const char *rcpt, const char *params,
                 filter_cb cb, void *arg);
void filter_data(struct filter_session *f, filter_cb cb, void *arg);
void filter_eom(struct filter_session *f, struct msgbuf *msg, filter_eom_cb cb, void *arg);
void filter_end(struct filter_session *f);
void filter_close(struct filter_session *f);

/* "CODE ENH TEXT" of a reply into buf (without CRLF). */
const char *filter_reply_line(const struct filter_reply *r, char *buf, size_t len);
/* "554 5.7.1 text" (one line) into a FILTER_REPLY; a code outside
 * 400..599 becomes 451. */
void filter_reply_parse(struct filter_reply *r, const char *line);

/*
 * The milter chain (filter_milter.c), for filter.c only: the same events
 * with the same contract as above, run through cfg->relayd.milters.
 * filter_milters_open() returns NULL when out of memory; it is called
 * only with at least one milter configured.
 */
struct filter_milters;

struct filter_milters *filter_milters_open(const struct config *cfg, struct event_base *base,
                                           struct filter_conn *conn);
void filter_milters_connect(struct filter_milters *f, filter_cb cb, void *arg);
void filter_milters_helo(struct filter_milters *f, const char *helo, filter_cb cb, void *arg);
void filter_milters_mail(struct filter_milters *f, const char *sender, const char *params,
                         filter_cb cb, void *arg);
void filter_milters_rcpt(struct filter_milters *f, const char *rcpt, const char *params,
                         filter_cb cb, void *arg);
void filter_milters_data(struct filter_milters *f, filter_cb cb, void *arg);
void filter_milters_eom(struct filter_milters *f, struct msgbuf *msg, filter_eom_cb cb,
                        void *arg);
void filter_milters_end(struct filter_milters *f);
void filter_milters_close(struct filter_milters *f);

#endif
