/*
 * smtp_client: deliverd's SMTP client protocol (see smtp_client.h).
 *
 * Reply handling: a reply's enhanced status code (RFC 3463) is taken from
 * its text when it starts with one of the reply's class, else derived
 * from the class (2.0.0, 4.0.0, 5.0.0).  Reply text is kept as one line
 * with every control or 8-bit byte replaced by '?', so a remote server
 * cannot inject log lines or headers into a DSN.
 *
 * Message text: the spool holds LF line ends; it is read with pread() in
 * blocks and sent CRLF-terminated and dot-stuffed, never held whole in
 * memory.  A message whose last line lacks its LF gets a CRLF before the
 * final dot.
 */
#include "smtp_client.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define SMTP_REPLY_LINES_MAX 200    /* a longer reply is a broken server */

static int
cap_at(int v, int cap)
{
	return cap > 0 && v > cap ? cap : v;
}

void
smtp_timeouts_init(struct smtp_timeouts *t, int cap)
{
	t->connect = cap_at(SMTP_TIMEOUT_CONNECT, cap);
	t->greeting = cap_at(SMTP_TIMEOUT_GREETING, cap);
	t->helo = cap_at(SMTP_TIMEOUT_HELO, cap);
	t->tls = cap_at(SMTP_TIMEOUT_TLS, cap);
	t->auth = cap_at(SMTP_TIMEOUT_AUTH, cap);
	t->mail = cap_at(SMTP_TIMEOUT_MAIL, cap);
	t->rcpt = cap_at(SMTP_TIMEOUT_RCPT, cap);
	t->data_init = cap_at(SMTP_TIMEOUT_DATA_INIT, cap);
	t->data_block = cap_at(SMTP_TIMEOUT_DATA_BLOCK, cap);
	t->data_end = cap_at(SMTP_TIMEOUT_DATA_END, cap);
	t->rset = cap_at(SMTP_TIMEOUT_RSET, cap);
	t->quit = cap_at(SMTP_TIMEOUT_QUIT, cap);
}

static void
sanitize(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

void
smtp_local_error(struct smtp_reply *r, const char *dsn, const char *fmt, ...)
{
	va_list ap;

	r->code = 0;
	snprintf(r->dsn, sizeof r->dsn, "%s", dsn);
	va_start(ap, fmt);
	vsnprintf(r->text, sizeof r->text, fmt, ap);
	va_end(ap);
	sanitize(r->text);
	r->raw[0] = '\0';
}

/* "5.1.1" at the start of text, of the reply's class: its length, or 0. */
static size_t
enhanced_code(const char *t, int code)
{
	const char *p = t;

	if (*p != '2' && *p != '4' && *p != '5')
		return 0;
	if (*p - '0' != code / 100)
		return 0;
	p++;
	for (int part = 0; part < 2; part++) {
		if (*p++ != '.')
			return 0;
		int n = 0;
		while (isdigit((unsigned char)*p) && n < 4) {
			p++;
			n++;
		}
		if (n == 0 || n > 3)
			return 0;
	}
	if (*p != '\0' && *p != ' ')
		return 0;
	return (size_t)(p - t);
}

int
smtp_read_reply(struct smtp_session *s, int timeout_s, struct smtp_reply *r)
{
	char line[SMTP_LINE_MAX];
	size_t tl = 0, rl = 0;

	r->code = 0;
	r->text[0] = r->raw[0] = '\0';
	for (int n = 0; ; n++) {
		if (n == SMTP_REPLY_LINES_MAX) {
			s->io.broken = 1;
			smtp_local_error(r, "4.4.2", "reply from %s has too many lines", s->relay);
			return -1;
		}
		if (smtp_io_readline(&s->io, line, sizeof line, timeout_s) < 0) {
			smtp_local_error(r, "4.4.2", "lost connection with %s: %s",
			                 s->relay, s->io.err);
			return -1;
		}
		if (!isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
		    !isdigit((unsigned char)line[2]) ||
		    (line[3] != '\0' && line[3] != ' ' && line[3] != '-') ||
		    line[0] < '2' || line[0] > '5') {
			s->io.broken = 1;
			sanitize(line);
			smtp_local_error(r, "4.4.2", "malformed reply from %s: %.200s",
			                 s->relay, line);
			return -1;
		}
		int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (n == 0)
			r->code = code;
		else if (code != r->code) {
			s->io.broken = 1;
			smtp_local_error(r, "4.4.2", "inconsistent reply codes from %s",
			                 s->relay);
			return -1;
		}
		const char *txt = line[3] ? line + 4 : "";
		int tn = n == 0
		         ? snprintf(r->text + tl, sizeof r->text - tl, "%d%s%s", code,
		                    *txt ? " " : "", txt)
		         : snprintf(r->text + tl, sizeof r->text - tl, " %s", txt);
		if (tn > 0)
			tl = tl + (size_t)tn < sizeof r->text ? tl + (size_t)tn : sizeof r->text - 1;
		int rn = snprintf(r->raw + rl, sizeof r->raw - rl, "%s\n", txt);
		if (rn > 0)
			rl = rl + (size_t)rn < sizeof r->raw ? rl + (size_t)rn : sizeof r->raw - 1;
		if (line[3] != '-')
			break;
	}
	sanitize(r->text);
	size_t el = strlen(r->text) > 4 ? enhanced_code(r->text + 4, r->code) : 0;
	if (el > 0 && el < sizeof r->dsn)
		snprintf(r->dsn, sizeof r->dsn, "%.*s", (int)el, r->text + 4);
	else
		snprintf(r->dsn, sizeof r->dsn, "%d.0.0", r->code / 100);
	if (r->code == 421)
		s->io.broken = 1;   /* the server is closing the session */
	return 0;
}

/* Send one command line and read its reply.  0 / -1 as smtp_read_reply. */
static int
command(struct smtp_session *s, int timeout_s, struct smtp_reply *r,
        const char *cmd)
{
	if (smtp_io_printf(&s->io, timeout_s, "%s\r\n", cmd) < 0 ||
	    smtp_io_flush(&s->io, timeout_s) < 0) {
		smtp_local_error(r, "4.4.2", "lost connection with %s: %s",
		                 s->relay, s->io.err);
		return -1;
	}
	return smtp_read_reply(s, timeout_s, r);
}

int
smtp_greeting(struct smtp_session *s, struct smtp_reply *r)
{
	if (smtp_read_reply(s, s->to->greeting, r) < 0)
		return -1;
	return r->code / 100 == 2 ? 0 : -1;
}

static void
parse_ehlo(struct smtp_session *s, const char *raw)
{
	s->caps = 0;
	s->auth_mechs = 0;
	s->size_max = 0;
	const char *p = strchr(raw, '\n');      /* first line: the greeting */
	while (p && *++p) {
		char kw[64], rest[512];
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		size_t k = 0;
		while (k < n && k + 1 < sizeof kw && p[k] != ' ' && p[k] != '=') {
			kw[k] = (char)toupper((unsigned char)p[k]);
			k++;
		}
		kw[k] = '\0';
		size_t rn = n > k ? n - k - 1 : 0;
		if (rn >= sizeof rest)
			rn = sizeof rest - 1;
		memcpy(rest, n > k ? p + k + 1 : "", rn);
		rest[rn] = '\0';
		if (strcmp(kw, "STARTTLS") == 0)
			s->caps |= SMTP_CAP_STARTTLS;
		else if (strcmp(kw, "SIZE") == 0) {
			s->caps |= SMTP_CAP_SIZE;
			s->size_max = strtol(rest, NULL, 10);
		} else if (strcmp(kw, "8BITMIME") == 0)
			s->caps |= SMTP_CAP_8BITMIME;
		else if (strcmp(kw, "PIPELINING") == 0)
			s->caps |= SMTP_CAP_PIPELINING;
		else if (strcmp(kw, "ENHANCEDSTATUSCODES") == 0)
			s->caps |= SMTP_CAP_ENHANCED;
		else if (strcmp(kw, "AUTH") == 0) {
			s->caps |= SMTP_CAP_AUTH;
			char *save = NULL;
			for (char *m = strtok_r(rest, " ", &save); m; m = strtok_r(NULL, " ", &save)) {
				if (strcasecmp(m, "PLAIN") == 0)
					s->auth_mechs |= SMTP_AUTH_PLAIN;
				else if (strcasecmp(m, "LOGIN") == 0)
					s->auth_mechs |= SMTP_AUTH_LOGIN;
			}
		}
		p = eol;
	}
}

int
smtp_hello(struct smtp_session *s, const char *name, struct smtp_reply *r)
{
	char cmd[300];

	snprintf(cmd, sizeof cmd, "EHLO %s", name);
	if (command(s, s->to->helo, r, cmd) < 0)
		return -1;
	if (r->code == 250) {
		s->esmtp = 1;
		parse_ehlo(s, r->raw);
		return 0;
	}
	if (r->code / 100 != 5)
		return -1;
	snprintf(cmd, sizeof cmd, "HELO %s", name);
	if (command(s, s->to->helo, r, cmd) < 0 || r->code != 250)
		return -1;
	s->esmtp = 0;
	s->caps = s->auth_mechs = 0;
	s->size_max = 0;
	return 0;
}

int
smtp_starttls(struct smtp_session *s, SSL_CTX *ctx, struct smtp_reply *r)
{
	char err[200], info[120];

	if (command(s, s->to->tls, r, "STARTTLS") < 0)
		return -1;
	if (r->code != 220)
		return s->io.broken ? -1 : 1;
	/* a literal address is no name to send as SNI */
	const char *sni = strchr(s->host, ':') || strspn(s->host, "0123456789.") == strlen(s->host)
	                  ? NULL : s->host;
	if (smtp_io_starttls(&s->io, ctx, sni, s->to->tls, err, sizeof err) < 0) {
		smtp_local_error(r, "4.7.5", "TLS with %s failed: %s", s->relay, err);
		return -1;
	}
	s->tls = 1;
	smtp_io_tls_info(&s->io, info, sizeof info);
	log_info("id=%s relay=%s tls=\"%s\"", s->id ? s->id : "-", s->relay, info);
	return 0;
}

static void
b64(const unsigned char *in, size_t len, char *out, size_t outlen)
{
	if (4 * ((len + 2) / 3) + 1 > outlen) {
		out[0] = '\0';
		return;
	}
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

int
smtp_auth(struct smtp_session *s, const char *user, const char *pass,
          struct smtp_reply *r)
{
	char cmd[1200], enc[1100];
	unsigned char plain[800];
	size_t ul = strlen(user), pl = strlen(pass);
	int rc = -1;

	if (ul + pl + 2 > sizeof plain) {
		smtp_local_error(r, "4.7.0", "credentials too long");
		return -1;
	}
	if (s->auth_mechs & SMTP_AUTH_PLAIN) {
		plain[0] = '\0';
		memcpy(plain + 1, user, ul);
		plain[1 + ul] = '\0';
		memcpy(plain + 2 + ul, pass, pl);
		b64(plain, ul + pl + 2, enc, sizeof enc);
		snprintf(cmd, sizeof cmd, "AUTH PLAIN %s", enc);
		if (command(s, s->to->auth, r, cmd) == 0 && r->code == 235)
			rc = 0;
	} else if (s->auth_mechs & SMTP_AUTH_LOGIN) {
		if (command(s, s->to->auth, r, "AUTH LOGIN") < 0 || r->code != 334)
			goto out;
		b64((const unsigned char *)user, ul, cmd, sizeof cmd);
		if (command(s, s->to->auth, r, cmd) < 0 || r->code != 334)
			goto out;
		b64((const unsigned char *)pass, pl, cmd, sizeof cmd);
		if (command(s, s->to->auth, r, cmd) == 0 && r->code == 235)
			rc = 0;
	} else
		smtp_local_error(r, "4.7.0", "%s offers neither AUTH PLAIN nor LOGIN", s->relay);
out:
	if (rc < 0 && r->code == 334) {
		/* abandon the exchange (RFC 4954 §4) so the session stays sane */
		struct smtp_reply r2;
		command(s, s->to->auth, &r2, "*");
	}
	OPENSSL_cleanse(plain, sizeof plain);
	OPENSSL_cleanse(enc, sizeof enc);
	OPENSSL_cleanse(cmd, sizeof cmd);
	OPENSSL_cleanse(s->io.wbuf, sizeof s->io.wbuf);
	if (rc == 0)
		s->authed = 1;
	return rc;
}

int
smtp_rset(struct smtp_session *s)
{
	struct smtp_reply r;

	if (s->io.broken)
		return -1;
	return command(s, s->to->rset, &r, "RSET") == 0 && r.code == 250 ? 0 : -1;
}

void
smtp_quit(struct smtp_session *s)
{
	struct smtp_reply r;

	if (!s->io.broken)
		command(s, s->to->quit, &r, "QUIT");
	smtp_io_close(&s->io);
}

/*
 * Close an idle cached session without waiting for the reply to QUIT:
 * this runs on the scheduler's timer thread, which must never sit in a
 * server's QUIT timeout while deferred mail waits to be woken.
 */
void
smtp_quit_nowait(struct smtp_session *s)
{
	if (!s->io.broken && smtp_io_printf(&s->io, 2, "QUIT\r\n") == 0)
		(void)smtp_io_flush(&s->io, 2);
	smtp_io_close(&s->io);
}

size_t
smtp_data_encode(const char *in, size_t len, char *out, int *bol)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (*bol && c == '.')
			out[o++] = '.';
		if (c == '\n') {
			out[o++] = '\r';
			out[o++] = '\n';
			*bol = 1;
		} else {
			out[o++] = c;
			*bol = 0;
		}
	}
	return o;
}
