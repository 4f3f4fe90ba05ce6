/*
 * smtp_client: the SMTP client protocol of deliverd's remote delivery
 * (RFC 5321, with RFC 3207 STARTTLS, RFC 4954 AUTH PLAIN/LOGIN, RFC 1870
 * SIZE, RFC 6152 8BITMIME, RFC 2920 PIPELINING for MAIL and RCPT, RFC 2034
 * enhanced status codes).  One session = one connection; remote.c
 * decides where to connect, what TLS/AUTH policy applies and which
 * sessions are kept for reuse.
 */
#ifndef SPFGATE_SMTP_CLIENT_H
#define SPFGATE_SMTP_CLIENT_H

#include <stddef.h>
#include <sys/types.h>

#include "remote.h"
#include "smtp_io.h"

/* RFC 5321 §4.5.3.2 time limits, in seconds (connect: Postfix's default). */
#define SMTP_TIMEOUT_CONNECT     30
#define SMTP_TIMEOUT_GREETING   300
#define SMTP_TIMEOUT_HELO       300
#define SMTP_TIMEOUT_TLS        300
#define SMTP_TIMEOUT_AUTH       300
#define SMTP_TIMEOUT_MAIL       300
#define SMTP_TIMEOUT_RCPT       300
#define SMTP_TIMEOUT_DATA_INIT  120
#define SMTP_TIMEOUT_DATA_BLOCK 180
#define SMTP_TIMEOUT_DATA_END   600
#define SMTP_TIMEOUT_RSET       120
#define SMTP_TIMEOUT_QUIT        30

/* At most this many RCPTs are pipelined before their replies are read,
 * so neither side can block on a full socket buffer. */
#define SMTP_PIPELINE_MAX 100

struct smtp_timeouts {
	int connect, greeting, helo, tls, auth, mail, rcpt;
	int data_init, data_block, data_end, rset, quit;
};

/* The RFC values; with cap > 0, none is longer than cap seconds. */
void smtp_timeouts_init(struct smtp_timeouts *t, int cap);

enum {
	SMTP_CAP_STARTTLS   = 1 << 0,
	SMTP_CAP_SIZE       = 1 << 1,
	SMTP_CAP_8BITMIME   = 1 << 2,
	SMTP_CAP_PIPELINING = 1 << 3,
	SMTP_CAP_AUTH       = 1 << 4,
	SMTP_CAP_ENHANCED   = 1 << 5,
};
enum { SMTP_AUTH_PLAIN = 1 << 0, SMTP_AUTH_LOGIN = 1 << 1 };

struct smtp_reply {
	int code;               /* 0: no reply (local error, see text) */
	char dsn[16];           /* enhanced code, given or derived */
	char text[512];         /* "550 5.1.1 <x>: unknown" one line, safe */
	char raw[2048];         /* each line's text after the code, '\n' */
};

struct smtp_session {
	struct smtp_io io;
	const struct smtp_timeouts *to;
	char host[256];         /* the name we connected to (SNI, logs) */
	char relay[300];        /* "host[addr]:port" */
	int esmtp;              /* EHLO accepted */
	unsigned caps;          /* SMTP_CAP_* of the last EHLO */
	unsigned auth_mechs;    /* SMTP_AUTH_* offered */
	long size_max;          /* SIZE parameter, 0 = none given */
	int tls;                /* STARTTLS completed */
	int authed;
	const char *id;         /* queue id of the current job, for logs */
};

/* Set r to a local (non-reply) error with its enhanced code. */
void smtp_local_error(struct smtp_reply *r, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Read one (possibly multi-line) reply.  0, or -1 when the connection
 * broke or the reply was malformed (r is then a 4.4.2 local error).
 */
int smtp_read_reply(struct smtp_session *s, int timeout_s, struct smtp_reply *r);

/* Greeting; then EHLO name (HELO on a 5xx), capabilities into s.  0, or
 * -1 with r the failing reply or local error. */
int smtp_greeting(struct smtp_session *s, struct smtp_reply *r);
int smtp_hello(struct smtp_session *s, const char *name, struct smtp_reply *r);
/*
 * STARTTLS and the handshake.  0 done; 1 the server refused STARTTLS
 * (the session is still usable in plain text); -1 the session is broken.
 */
int smtp_starttls(struct smtp_session *s, SSL_CTX *ctx, struct smtp_reply *r);
/* AUTH PLAIN if offered, else LOGIN.  0 on 235, -1 with r the reply. */
int smtp_auth(struct smtp_session *s, const char *user, const char *pass,
              struct smtp_reply *r);
/* RSET on a reused session: 0 on 250. */
int smtp_rset(struct smtp_session *s);
/* QUIT (reply awaited briefly), then close.  Safe on a broken session. */
void smtp_quit(struct smtp_session *s);
/* QUIT without waiting for the reply (closing idle cached sessions). */
void smtp_quit_nowait(struct smtp_session *s);

/*
 * One mail transaction: MAIL, RCPT for each recipient, DATA, the message
 * (job->fd from job->off, job->len bytes, LF line ends) as CRLF,
 * dot-stuffed.  Fills res[i] for every recipient (status, dsn, relay,
 * text).  Afterwards s->io.broken tells whether the session may be
 * reused.
 */
void smtp_transaction(struct smtp_session *s, const struct remote_job *job,
                      struct remote_result *res);

/*
 * SMTP DATA encoding of a chunk of an LF-terminated message: "\n"
 * becomes "\r\n", a '.' at the start of a line is doubled.  *bol carries
 * "at the beginning of a line" across chunks (start with 1).  out must
 * hold 2 * len bytes.  Returns the bytes written.
 */
size_t smtp_data_encode(const char *in, size_t len, char *out, int *bol);

#endif
