/*
 * smtp_parse: relayd's input rules, kept free of I/O so that they can be
 * unit tested byte for byte.
 *
 * Command lines: a line is everything up to CRLF; a bare LF, a bare CR or
 * a NUL inside it makes the whole line (up to that CRLF) one refused
 * command -- never two commands (SMTP smuggling).
 *
 * DATA: only CRLF "." CRLF ends a message.  A bare LF or bare CR is never
 * a line end: it is flagged, reading goes on to the real end, and the
 * message is refused there.  Dot-unstuffing per RFC 5321 §4.5.2.  The
 * reader also counts Received: headers in the header section.
 */
#ifndef RELAYD_SMTP_PARSE_H
#define RELAYD_SMTP_PARSE_H

#include <stddef.h>

#define SMTP_LINE_MAX 1024      /* command line, without CRLF */

enum smtp_verb {
	V_UNKNOWN, V_HELO, V_EHLO, V_MAIL, V_RCPT, V_DATA, V_RSET, V_NOOP,
	V_QUIT, V_VRFY, V_HELP, V_STARTTLS, V_EXPN, V_AUTH, V_BDAT
};

enum line_flaw { LINE_OK = 0, LINE_BARE_LF = 1, LINE_BARE_CR = 2, LINE_NUL = 4 };

/* Flaws of a command line (the bytes before its CRLF). */
int smtp_line_flaws(const char *line, size_t len);

/* The verb of a command line; *arg points after the verb and one space
 * (or at the end). */
enum smtp_verb smtp_verb(const char *line, const char **arg);

/*
 * "FROM:<path> params" / "TO:<path> params" (kw is "FROM:" or "TO:";
 * case-insensitive; a space after the colon is tolerated as Postfix
 * does).  The path with its angle brackets goes into path, *params at
 * what follows (spaces skipped).  0, or -1 on syntax errors.
 */
int smtp_split_path(const char *arg, const char *kw, char *path, size_t len,
                    const char **params);

/* MAIL parameters.  0 ok, -1 syntax (501), -2 unknown parameter (555). */
struct mail_params {
	long long size;         /* -1: none given */
	int body8;              /* BODY=8BITMIME */
};
int smtp_mail_params(const char *params, struct mail_params *out, char *bad, size_t badlen);

/* --------------------------------------------------------------- DATA */

enum data_flaw { DATA_BARE_LF = 1, DATA_BARE_CR = 2, DATA_NUL = 4 };

enum dr_state { DR_BOL, DR_TEXT, DR_CR, DR_DOT, DR_DOTCR };

typedef void (*data_sink)(void *arg, const char *p, size_t n);

struct data_reader {
	enum dr_state st;
	int flaws;              /* enum data_flaw */
	size_t size;            /* unstuffed bytes emitted (CRLF line ends) */
	int received;           /* Received: headers in the header section */
	int in_body;            /* past the empty line ending the headers */
	int hpos;               /* bytes of the current header line seen */
	char hbuf[10];          /* its first bytes, lower-cased */
	data_sink sink;
	void *arg;
};

void data_reader_init(struct data_reader *r, data_sink sink, void *arg);
/* Feed n bytes; returns how many were used.  *end set when the final
 * CRLF.CRLF was consumed (bytes after it are not used). */
size_t data_reader_feed(struct data_reader *r, const char *p, size_t n, int *end);

/* Dot-stuff text (CRLF line ends) for the wire; *bol carries the state
 * across calls (start with 1).  sink gets the stuffed bytes. */
void smtp_dot_stuff(const char *p, size_t n, int *bol, data_sink sink, void *arg);

#endif
