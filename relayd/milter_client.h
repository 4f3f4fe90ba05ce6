/*
 * milter_client.h - the MTA side of the Sendmail milter protocol (v6),
 * asynchronous, on libevent.
 *
 * One struct milter_conn is one connection to one milter for one SMTP
 * session.  With several milters configured, the caller opens one
 * connection per milter and calls them in order for every event, stopping
 * at the first verdict other than MILTER_CONTINUE (as Postfix does); the
 * library does not chain.
 *
 * Life of a connection:
 *
 *   m = milter_conn_new(base, &conf, done, arg);
 *   milter_open(m);                       -> done(OPEN)   socket + SMFIC_OPTNEG
 *   milter_connect(m, mac, ...);          -> done(CONNECT)
 *   milter_helo(m, mac, "client.example");-> done(HELO)
 *   per transaction:
 *     milter_mail / milter_rcpt... / milter_data / milter_header... /
 *     milter_eoh / milter_body... / milter_eom   -> done(...) each
 *     milter_abort(m);                    at the end of every transaction
 *                                         (RSET, after EOM, after a refusal):
 *                                         sends SMFIC_ABORT when needed
 *   milter_close(m);                      SMFIC_QUIT, then frees m
 *
 * Every event function returns 0 and then calls done() exactly once,
 * always from the event loop (never from inside the call), unless it
 * returns -1 (API misuse: another event still pending, a NULL argument, a
 * body chunk over MILTER_CHUNK_MAX); then done() is not called.  Only one
 * event may be pending at a time.  done() may start the next event or call
 * milter_close().
 *
 * Events the milter asked not to see (SMFIP_NO*), or that come after it
 * accepted the connection or the message, are not sent: done() reports
 * MILTER_CONTINUE (or the standing verdict, see below) without contacting
 * it.  No-reply steps (SMFIP_NR_*) are sent and reported as CONTINUE.
 *
 * Failure: when the milter cannot be reached, does not answer within the
 * timeout, or breaks the protocol (unknown reply, wrong size, garbage, a
 * modification it did not negotiate or outside EOM, an unsolicited reply,
 * a malformed SMFIR_REPLYCODE), the connection is closed and the pending
 * event (and every later one) reports MILTER_FAILED; the caller applies
 * milter_default_action.  A closed connection cannot desynchronise: no
 * late reply is ever read as the answer to a later command.
 *
 * Standing verdicts: ACCEPT/REJECT/TEMPFAIL/DISCARD/REPLY at CONNECT hold
 * for the whole session; ACCEPT at HELO accepts the connection; ACCEPT or
 * DISCARD at MAIL..BODY, and any refusal at MAIL, holds until the end of
 * the transaction (milter_abort()).  Later events in their scope report the
 * same status without contacting the milter.  REJECT/TEMPFAIL/REPLY at
 * RCPT concern that recipient only; at HELO, that HELO only.
 *
 * Macros: the caller keeps one struct milter_macros per session with the
 * current values ("j", "_", "{daemon_name}", "{if_addr}", "{client_addr}",
 * "{client_name}", "{client_port}", "i", "{auth_type}", "{auth_authen}",
 * "{mail_addr}", "{rcpt_addr}", "{tls_version}", "{cipher}", ...) and
 * passes it with each event.  Before the command of a stage the client
 * sends SMFIC_MACRO with the macros of that stage that have a value: the
 * milter's own list for the stage when it gave one at negotiation, else
 * the configured list (struct milter_conf.macros), else Postfix's defaults.
 *
 * Header values, both ways, are the text after the colon.  Sent: CRLF line
 * breaks become LF (as Postfix and Sendmail send them), and without
 * SMFIP_HDR_LEADSPC leading blanks are removed.  Returned in modifications:
 * LF line breaks become CRLF, and without SMFIP_HDR_LEADSPC one space is
 * prepended, so that "Name:" + value is the header field as it is to be
 * written.  Body chunks and SMFIR_REPLBODY data are raw bytes.
 */
#ifndef SPFGATE_MILTER_CLIENT_H
#define SPFGATE_MILTER_CLIENT_H

#include <stddef.h>
#include <event2/event.h>

#define MILTER_CHUNK_MAX 65535u   /* largest body chunk milter_body() takes */

struct milter_conn;
struct milter_macros;

enum milter_event {
	MILTER_EV_OPEN, MILTER_EV_CONNECT, MILTER_EV_HELO, MILTER_EV_MAIL,
	MILTER_EV_RCPT, MILTER_EV_DATA, MILTER_EV_HEADER, MILTER_EV_EOH,
	MILTER_EV_BODY, MILTER_EV_EOM
};

enum milter_status {
	MILTER_CONTINUE,   /* go on */
	MILTER_ACCEPT,     /* accept the connection / message / no more milter */
	MILTER_REJECT,     /* 5xx (default text is the caller's) */
	MILTER_TEMPFAIL,   /* 4xx (default text is the caller's) */
	MILTER_DISCARD,    /* accept the message and throw it away */
	MILTER_REPLY,      /* the milter's own reply: result->reply, 4xx or 5xx */
	MILTER_SKIP,       /* BODY: send no more body chunks (next: EOM) */
	MILTER_CONNFAIL,   /* SMFIR_CONN_FAIL/SHUTDOWN: answer 421 and close */
	MILTER_FAILED      /* down, slow, broken: apply milter_default_action */
};

enum milter_mod_type {
	MILTER_MOD_ADDHDR,     /* name, value: append a header field */
	MILTER_MOD_INSHDR,     /* index, name, value: insert before field #index
	                          (0 = at the top) */
	MILTER_MOD_CHGHDR,     /* index, name, value: change the index-th field
	                          (1-based) named name; value NULL: delete it */
	MILTER_MOD_CHGFROM,    /* value: new sender, args: ESMTP args or NULL */
	MILTER_MOD_ADDRCPT,    /* value: recipient, args: ESMTP args or NULL */
	MILTER_MOD_DELRCPT,    /* value: recipient */
	MILTER_MOD_REPLBODY,   /* body, body_len: the whole new body (all
	                          SMFIR_REPLBODY chunks joined; at most one) */
	MILTER_MOD_QUARANTINE  /* value: reason */
};

struct milter_mod {
	enum milter_mod_type type;
	unsigned long index;
	char *name, *value, *args;
	unsigned char *body;
	size_t body_len;
};

struct milter_result {
	enum milter_event event;
	enum milter_status status;
	const char *reply;   /* MILTER_REPLY: "550 5.7.1 text", lines joined by
	                        CRLF, validated as Postfix does, "%%" unescaped */
	const char *error;   /* MILTER_FAILED/CONNFAIL: why, for the log */
	const struct milter_mod *mods;   /* EOM: in the order received */
	size_t nmods;
};

/* Valid only during the call; m is the connection that reports. */
typedef void (*milter_done_fn)(struct milter_conn *m, const struct milter_result *r,
                               void *arg);

struct milter_conf {
	const char *name;        /* for messages; default: the socket */
	const char *socket;      /* "unix:/path" "local:/path"
	                            "inet:PORT@HOST" "inet6:PORT@HOST"
	                            "inet:HOST:PORT" (HOST numeric) */
	long connect_timeout;    /* seconds: socket connect */
	long command_timeout;    /* seconds: OPTNEG, CONNECT..DATA, QUIT */
	long content_timeout;    /* seconds: HEADER, EOH, BODY, EOM */
	unsigned long actions;   /* SMFIF_* offered; 0 = all v6 actions */
	const char *macros[7];   /* per SMFIM_* stage, space separated; NULL =
	                            Postfix's default list for the stage */
};

/* ---- macros ---- */

struct milter_macros *milter_macros_new(void);
/* Set (value != NULL) or remove a macro.  "x" and "{x}" are the same
 * name.  Returns 0, or -1 when out of memory. */
int milter_macros_set(struct milter_macros *t, const char *name, const char *value);
const char *milter_macros_get(const struct milter_macros *t, const char *name);
void milter_macros_free(struct milter_macros *t);

/* ---- connection ---- */

/* conf is copied.  NULL when out of memory or conf->socket is NULL. */
struct milter_conn *milter_conn_new(struct event_base *base, const struct milter_conf *conf,
                                    milter_done_fn done, void *arg);
const char *milter_name(const struct milter_conn *m);
/* After OPEN: what was negotiated (SMFIF_* actions, SMFIP_* steps). */
unsigned long milter_actions(const struct milter_conn *m);
unsigned long milter_protocol(const struct milter_conn *m);

int milter_open(struct milter_conn *m);
/* family: '4', '6', 'L' (unix) or 'U' (unknown: port and addr unused). */
int milter_connect(struct milter_conn *m, const struct milter_macros *mac,
                   const char *hostname, char family, unsigned port, const char *addr);
int milter_helo(struct milter_conn *m, const struct milter_macros *mac, const char *helo);
/* sender/rcpt with angle brackets, args: NULL-terminated ESMTP args or NULL */
int milter_mail(struct milter_conn *m, const struct milter_macros *mac,
                const char *sender, const char *const *args);
int milter_rcpt(struct milter_conn *m, const struct milter_macros *mac,
                const char *rcpt, const char *const *args);
int milter_data(struct milter_conn *m, const struct milter_macros *mac);
int milter_header(struct milter_conn *m, const char *name, const char *value);
int milter_eoh(struct milter_conn *m, const struct milter_macros *mac);
int milter_body(struct milter_conn *m, const void *chunk, size_t len);
int milter_eom(struct milter_conn *m, const struct milter_macros *mac);
/* End of a transaction: SMFIC_ABORT if a MAIL was sent and no EOM answered
 * (no reply expected).  Returns -1 only while an event is pending. */
int milter_abort(struct milter_conn *m);
/* SMFIC_QUIT (if connected and sane), then free m once the packet is
 * written or the command timeout passes.  No callback is called after. */
void milter_close(struct milter_conn *m);

const char *milter_status_name(enum milter_status s);
const char *milter_event_name(enum milter_event e);

#endif
