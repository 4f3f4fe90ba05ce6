/*
 * spfgate-sendmail: the parts of the sendmail(1) interface, shared
 * between the program (sendmail.c) and its unit tests.
 *
 *   sendmail_input.c  reading the message from stdin into plain lines
 *   sendmail_addr.c   RFC 5322 address lists -> envelope addresses
 *   sendmail_hdr.c    the header section: Bcc, -t, missing headers
 *   sendmail_wire.c   lines -> SMTP DATA text (CRLF, dots, 998 octets)
 *   sendmail_smtp.c   the SMTP client that submits to relayd
 *   sendmail_bs.c     -bs: an SMTP session on stdin/stdout, relayed
 */
#ifndef RELAYD_SENDMAIL_H
#define RELAYD_SENDMAIL_H

#include <stddef.h>
#include <stdio.h>

#include "strlist.h"

#define SM_NAME "spfgate-sendmail"
#define SM_LINE_MAX 998         /* RFC 5321 4.5.3.1.6, without CRLF */
#define SM_ADDR_LEN 700         /* an envelope address, quoted, with its NUL */

/* ------------------------------------------------------------- input */

/*
 * The message as read: every line ends with '\n' and holds no CR and no
 * NUL.  CRLF and LF end a line; a CR alone ends one too (progress
 * meters in cron output); NUL bytes are dropped (SMTP cannot carry
 * them and relayd refuses them).
 */
struct msgtext {
	char *p;
	size_t len, cap;
	int eight_bit;          /* some byte >= 0x80 */
};

enum { IN_OK = 0, IN_IOERR = -1, IN_TOOBIG = -2, IN_NOMEM = -3 };

/* Read in until EOF, or until a line that is only "." when dot_ends
 * (sendmail without -i).  IN_TOOBIG once the text passes limit bytes. */
int msg_read(FILE *in, int dot_ends, size_t limit, struct msgtext *t);
/* Append bytes as read_input would (for tests and for -bs). */
int msg_append_line(struct msgtext *t, const char *p, size_t n);
void msg_free(struct msgtext *t);

/* ----------------------------------------------------------- headers */

struct hdr {
	size_t off, len;        /* in msgtext: the field with its continuation
	                           lines, every '\n' included */
	size_t namelen;         /* the name, without white space or ':' */
	int drop;               /* not sent (Bcc) */
};

struct message {
	struct msgtext text;
	size_t start;           /* after a leading "From " line, if any */
	struct hdr *h;
	size_t nh, hcap;
	size_t body;            /* offset of the body */
	int separated;          /* an empty line ended the headers */
};

/* Split text (taken over by m) into headers and body. 0 or -1 (ENOMEM). */
int msg_parse(struct message *m, struct msgtext *text);
void message_free(struct message *m);
/* The first header named name (case-insensitive), or NULL. */
const struct hdr *msg_find(const struct message *m, const char *name);
/* The field's value, unfolded (continuation line ends become spaces),
 * in a malloc'd string; NULL on ENOMEM. */
char *msg_value(const struct message *m, const struct hdr *h);
/*
 * -t: recipients from To:, Cc: and Bcc: (from Resent-To:, Resent-Cc:
 * and Resent-Bcc: when the message has any Resent- header), added to rcpts.
 * 0, or -1 with the reason in err.
 */
int msg_extract_rcpts(const struct message *m, const char *domain,
                      struct strlist *rcpts, char *err, size_t errlen);
/* Mark Bcc: and Resent-Bcc: as not to be sent. */
void msg_drop_bcc(struct message *m);

/*
 * The headers a local submission gets (Postfix's cleanup adds the same
 * ones): a Received: line naming the uid on top; From:, Date: and
 * Message-ID: at the end of the header section when missing.
 */
struct added {
	char *top;              /* Received: ..., "\n"-separated lines */
	char *end;              /* the missing headers */
};
struct submitter {
	const char *mail_name;
	const char *sender;     /* envelope sender, "" for <> */
	const char *user_addr;  /* the invoking user's address */
	const char *fullname;   /* NULL or the name for a new From: */
	unsigned long uid;
	long long now;          /* time(2), for tests */
	const char *msgid_rand; /* NULL: random; tests give a fixed string */
};
int msg_added_headers(const struct message *m, const struct submitter *s,
                      struct added *out);
void added_free(struct added *a);
/* name as an RFC 5322 phrase: atoms as they are, a quoted string when
 * it has specials, an RFC 2047 encoded word when it has 8-bit bytes;
 * control characters become spaces.  Malloc'd, NULL on ENOMEM. */
char *phrase_encode(const char *name);

/* --------------------------------------------------------- addresses */

/*
 * Parse an RFC 5322 address list ("Name <a@b>, c@d, group: e@f;") and
 * add each mailbox to out in envelope form (local@domain, the local part
 * quoted when it must be); a mailbox without '@' gets "@domain".
 * Comments, display names and group names are dropped.  0, or -1 with
 * the reason in err.
 */
int addrlist_parse(const char *s, const char *domain, struct strlist *out,
                   char *err, size_t errlen);
/* One address (for -f): "" or "<>" give "" (the null sender). */
int addr_envelope(const char *s, const char *domain, char *out, size_t outlen,
                  char *err, size_t errlen);

/* -------------------------------------------------------------- wire */

typedef int (*wire_sink)(void *arg, const char *p, size_t n);

struct wire {
	wire_sink sink;         /* NULL: only count */
	void *arg;
	char buf[16384];
	size_t n;
	unsigned long long bytes;   /* text sent, CRLF and stuffing included */
	int err;                /* a sink failed */
};

void wire_init(struct wire *w, wire_sink sink, void *arg);
/* One line of text (no line end): CRLF added, a leading '.' doubled, a
 * line over SM_LINE_MAX octets split (the rules: sendmail_wire.c). */
void wire_line(struct wire *w, const char *p, size_t len, int header);
/* Raw bytes (the final ".\r\n"). */
void wire_raw(struct wire *w, const char *p, size_t len);
int wire_flush(struct wire *w);
/* The whole message: added headers, the kept headers, the separating
 * empty line, the body. */
void wire_message(struct wire *w, const struct message *m, const struct added *a);

/* -------------------------------------------------------------- smtp */

struct smtp {
	int fd;
	char peer[80];          /* "127.0.0.1:25", for messages */
	int verbose;            /* dialogue to stderr */
	char in[8192];
	size_t have, pos;
	int code;               /* last reply */
	char text[2048];        /* its lines, joined with "\n" */
	char err[256];          /* why the last call failed (I/O) */
	int ext_8bit, ext_size, ext_enh;
	long long size_max;     /* SIZE n; 0: no limit given */
};

/* The addresses to try, in order: the env override, else [relayd]
 * listen, loopback and wildcard ones (as loopback) first. */
int smtp_targets(const struct strlist *listen, const char *override,
                 struct strlist *out);
/* Connect to the first target that answers.  0, or -1 with s->err. */
int smtp_connect(struct smtp *s, const struct strlist *targets, int timeout);
/* Read one reply into s->code/s->text; the code, or -1 with s->err. */
int smtp_reply(struct smtp *s, int timeout);
/* Send a command line (CRLF added) and read its reply: the code or -1. */
int smtp_cmd(struct smtp *s, int timeout, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* EHLO (HELO when EHLO is refused); the code or -1. */
int smtp_hello(struct smtp *s, const char *name);
int smtp_sink(void *arg, const char *p, size_t n);
void smtp_close(struct smtp *s);

/* A refused reply -> a <sysexits.h> code: 4xx EX_TEMPFAIL; 5xx by the
 * enhanced status code, else by the command (rcpt: to a recipient). */
int smtp_exit_code(int code, const char *text, int rcpt);

/* ---------------------------------------------------------------- bs */

/* Relay an SMTP session between stdin/stdout and s; the exit status. */
int bs_relay(struct smtp *s, int in, int out);

#endif
