/*
 * smtp_session: one ESMTP session (RFC 5321) on a bufferevent.
 *
 * Input is read command by command.  A command whose answer is not known
 * at once (policy through filter.h, MAIL and RCPT through deliverd over
 * LMTP) sets `waiting`: no more input is read until its completion has
 * written the reply, so pipelined commands are answered in order.
 * Completions may come synchronously; they never free anything, and the
 * session carries on from a deferred `resume` event, never recursively.
 *
 * MAIL and RCPT are forwarded to deliverd as they arrive: deliverd's
 * answer to RCPT (550 5.1.1 unknown user, ...) is the client's answer.
 * The message is read strictly (smtp_parse.c) into a msgbuf, checked
 * (bare LF/CR, NUL, size, Received: count), given to filter_eom(), then
 * sent with our Received: header as LMTP DATA; the client's 250 comes
 * only after deliverd's 250 for the recipients.
 *
 * Quarantine (a milter's SMFIR_QUARANTINE): deliverd must hold the
 * message, so before DATA the LMTP transaction is reset and MAIL is
 * replayed with XQUARANTINE=<reason as xtext> and the same RCPTs (the
 * path used for a milter's envelope changes too); deliverd commits the
 * message into its hold queue.  A deliverd whose LHLO does not offer
 * XQUARANTINE gets nothing: the client hears 451 4.3.0 and tries later,
 * rather than have delivered what a milter wanted held.
 *
 * The DATA answer from deliverd's per-recipient replies: every
 * recipient 2xx -> 250; every one 5xx -> 554 with deliverd's text;
 * anything else (a 4xx, a lost connection, or a mix of accepted and
 * refused) -> 451 4.3.0.  relayd keeps no mail and cannot bounce, so a
 * "250 if at least one was accepted" would silently lose the others:
 * we prefer a duplicate on the client's retry to a loss (RFC 5321
 * §6.1).  deliverd commits one spool file for all recipients, so in
 * practice its replies are all alike.
 */
#include "relayd.h"
#include "filter.h"
#include "lmtp_client.h"
#include "msgbuf.h"
#include "msgedit.h"
#include "smtp_parse.h"
#include "addr.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

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

static void session_read(struct bufferevent *bev, void *arg);
static void resume_soon(struct session *s);
static void txn_abort(struct session *s);

/* ------------------------------------------------------------ output */

static void reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
reply(struct session *s, const char *fmt, ...)
{
	struct evbuffer *out;
	va_list ap;

	if (s->bev == NULL)
		return;
	out = bufferevent_get_output(s->bev);
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

/* An error reply: counts toward max_errors. */
static void err_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
err_reply(struct session *s, const char *fmt, ...)
{
	struct evbuffer *out;
	va_list ap;

	s->errors++;
	if (s->bev == NULL)
		return;
	out = bufferevent_get_output(s->bev);
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

/* Client text made safe for a reply or a header: printable ASCII. */
static const char *
clean(char *buf, size_t len, const char *s)
{
	size_t o = 0;

	for (; *s && o + 1 < len; s++)
		buf[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
	buf[o] = '\0';
	return buf;
}

/* ----------------------------------------------------------- lifetime */

static void
txn_reset(struct session *s)
{
	if (s->state == ST_MAIL || s->state == ST_DATA)
		filter_end(s->flt);
	free(s->sender);
	s->sender = NULL;
	for (size_t i = 0; i < s->nrcpt; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpt = 0;
	if (s->msg_open)
		msgbuf_free(&s->msg);
	s->msg_open = 0;
	s->too_big = 0;
	s->id[0] = '\0';
	s->conn.queue_id[0] = '\0';
	if (s->state > ST_READY)
		s->state = ST_READY;
}

static void
session_free(struct session *s)
{
	struct relayd *rd = s->rd;

	txn_reset(s);
	if (s->lmtp)
		lmtp_client_free(s->lmtp);
	if (s->flt)
		filter_close(s->flt);
	if (s->bev)
		bufferevent_free(s->bev);
	if (s->resume)
		event_free(s->resume);
	if (s->prev)
		s->prev->next = s->next;
	else
		rd->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	rd->nsessions--;
	log_info("disconnect sid=%s client=%s commands=%ld errors=%d", s->sid, s->peer,
	         s->commands, s->errors);
	free(s);
}

/* Hang up once the replies so far are written (freed from the loop). */
static void
session_close(struct session *s)
{
	s->closing = 1;
	if (s->bev)
		bufferevent_disable(s->bev, EV_READ);
	resume_soon(s);
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	(void)what;
	if (s->closing) {
		if (s->bev && evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
			return;         /* on_written comes back here */
		if (s->bev && s->conn.tls && s->linger++ < 500) {
			/* TLS: the last reply may still sit below, in the socket's
			   bufferevent; give it a moment (bounded: 10s) */
			struct bufferevent *u = bufferevent_get_underlying(s->bev);
			if (u && evbuffer_get_length(bufferevent_get_output(u)) > 0) {
				struct timeval tv = { 0, 20000 };
				event_add(s->resume, &tv);
				return;
			}
		}
		session_free(s);
		return;
	}
	if (s->waiting)
		return;
	session_read(s->bev, s);
}

static void
resume_soon(struct session *s)
{
	event_active(s->resume, EV_TIMEOUT, 0);
}

static void
on_written(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	(void)bev;
	if (s->closing || s->out_blocked) {
		s->out_blocked = 0;
		resume_soon(s);
	}
}

static void
set_timeout(struct session *s, long secs)
{
	struct timeval tv = { secs > 0 ? secs : 300, 0 };
	bufferevent_set_timeouts(s->bev, &tv, &tv);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {       /* TLS handshake done */
		SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
		if (ssl) {
			snprintf(s->conn.tls_version, sizeof(s->conn.tls_version), "%s",
			         SSL_get_version(ssl));
			snprintf(s->conn.tls_cipher, sizeof(s->conn.tls_cipher), "%s",
			         SSL_get_cipher_name(ssl));
			log_info("starttls sid=%s client=%s version=%s cipher=%s", s->sid, s->peer,
			         s->conn.tls_version, s->conn.tls_cipher);
		}
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		log_info("timeout sid=%s client=%s state=%s", s->sid, s->peer,
		         s->state == ST_DATA ? "DATA" : "command");
		bufferevent_set_timeouts(s->bev, NULL, NULL);
		reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->mail_name);
		session_close(s);
		return;
	}
	if ((s->state == ST_MAIL || s->state == ST_DATA) && !s->eof)
		log_info("lost connection sid=%s client=%s in %s", s->sid, s->peer,
		         s->state == ST_DATA ? "DATA" : "transaction");
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !s->closing) {
		/* the client only shut down its side: answer what it sent */
		s->eof = 1;
		bufferevent_disable(s->bev, EV_READ);
		/* what is still buffered gets answered first (session_read
		 * closes once nothing is pending) */
		session_read(s->bev, s);
		return;
	}
	if (s->closing) {
		/* cannot write the rest any more */
		if (s->bev) {
			bufferevent_free(s->bev);
			s->bev = NULL;
		}
		resume_soon(s);
		return;
	}
	if (s->bev) {
		bufferevent_free(s->bev);
		s->bev = NULL;
	}
	s->closing = 1;
	resume_soon(s);
}

/* A stopping relayd lets a client go between transactions. */
static int
maybe_stop(struct session *s)
{
	if (!s->rd->closing || s->closing || s->state == ST_MAIL || s->state == ST_DATA
	    || s->waiting)
		return 0;
	reply(s, "421 4.3.2 %s Service shutting down, closing", s->cfg->mail_name);
	session_close(s);
	return 1;
}

static void
done_waiting(struct session *s)
{
	s->waiting = 0;
	if (s->cfg->relayd.max_errors > 0 && s->errors >= s->cfg->relayd.max_errors
	    && !s->closing) {
		reply(s, "421 4.7.0 %s Error: too many errors", s->cfg->mail_name);
		session_close(s);
	}
	resume_soon(s);
}

/* A filter's refusal: its reply, and the end of the session if it says so
 * (a milter's SMFIR_CONN_FAIL / SHUTDOWN, a refusal at connect). */
static void
filter_refusal(struct session *s, const struct filter_reply *r, int count)
{
	char line[FILTER_TEXT_MAX + 32];

	filter_reply_line(r, line, sizeof(line));
	if (count)
		err_reply(s, "%s", line);
	else
		reply(s, "%s", line);
	if (r->close && !s->closing)
		session_close(s);
}

/* ------------------------------------------------------------ helpers */

/* "local@domain" with the local part quoted unless it is a dot-atom. */
static char *
addr_text(const struct mailbox *m)
{
	char buf[2 * ADDR_MAX + 8];
	size_t o = 0;
	int atom = m->local[0] != '\0' && m->local[0] != '.';

	for (const char *p = m->local; *p && atom; p++) {
		unsigned char c = (unsigned char)*p;
		if (!(isalnum(c) || c >= 0x80 || strchr("!#$%&'*+-/=?^_`{|}~", c)
		      || (c == '.' && p[1] != '.' && p[1] != '\0')))
			atom = 0;
	}
	if (!atom) {
		buf[o++] = '"';
		for (const char *p = m->local; *p; p++) {
			if (*p == '"' || *p == '\\')
				buf[o++] = '\\';
			buf[o++] = *p;
		}
		buf[o++] = '"';
	} else {
		memcpy(buf, m->local, strlen(m->local));
		o = strlen(m->local);
	}
	if (m->domain[0])
		snprintf(buf + o, sizeof(buf) - o, "@%s", m->domain);
	else
		buf[o] = '\0';
	return strdup(buf);
}

static void
new_id(struct session *s)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(s->id, sizeof(s->id), "%08lX%05lX", (unsigned long)ts.tv_sec,
	         (s->rd->serial++ ^ (unsigned long)getpid() << 8) & 0xFFFFF);
	snprintf(s->conn.queue_id, sizeof(s->conn.queue_id), "%s", s->id);
}

/* Reply text from deliverd, printable only, and its code. */
static void
relay_reply(struct session *s, int code, const char *text)
{
	char t[600];
	reply(s, "%d %s", code, clean(t, sizeof(t), text) [0] ? t : "");
}

/* -------------------------------------------------------------- HELO */

static void
helo_done(void *arg, const struct filter_reply *r)
{
	struct session *s = arg;
	const struct config *cfg = s->cfg;
	char h[300];

	if (r->action == FILTER_REPLY) {
		filter_refusal(s, r, 1);
		done_waiting(s);
		return;
	}
	s->state = ST_READY;
	clean(h, sizeof(h), s->conn.helo);
	if (!s->esmtp) {
		reply(s, "250 %s", cfg->mail_name);
	} else {
		reply(s, "250-%s Hello %s %s", cfg->mail_name, h, s->peer);
		reply(s, "250-PIPELINING");
		reply(s, "250-SIZE %ld", cfg->relayd.message_size_limit);
		if (s->rd->tls && !s->conn.tls)
			reply(s, "250-STARTTLS");
		reply(s, "250-8BITMIME");
		reply(s, "250 ENHANCEDSTATUSCODES");
	}
	done_waiting(s);
}

static void
cmd_helo(struct session *s, const char *arg, int esmtp)
{
	size_t n;

	while (*arg == ' ')
		arg++;
	n = strcspn(arg, " ");
	if (n == 0) {
		err_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	if (s->state == ST_MAIL)
		txn_abort(s);           /* deliverd forgets it too */
	snprintf(s->conn.helo, sizeof(s->conn.helo), "%.*s", (int)n, arg);
	s->esmtp = esmtp;
	s->waiting = 1;
	filter_helo(s->flt, s->conn.helo, helo_done, s);
}

/* -------------------------------------------------------------- MAIL */

static void
mail_lmtp_done(void *arg, int code, const char *text)
{
	struct session *s = arg;
	char lb[ADDR_MAX + 8];

	if (code == 0 || code >= 400) {
		if (code == 0)
			err_reply(s, "451 4.3.0 Error: delivery agent unavailable, try again later");
		else if (code >= 500)
			err_reply(s, "%d %s", code, text);
		else
			err_reply(s, "451 4.3.0 Error: delivery agent: %.200s", text);
		log_reject("id=%s reject from=<%s> reply=%d client=%s", s->id,
		           log_quote(lb, sizeof(lb), s->sender), code ? code : 451, s->peer);
		free(s->sender);
		s->sender = NULL;
		filter_end(s->flt);
		s->state = ST_READY;
	} else {
		reply(s, "250 2.1.0 Ok");
	}
	done_waiting(s);
}

static void
mail_filtered(void *arg, const struct filter_reply *r)
{
	struct session *s = arg;
	char line[FILTER_TEXT_MAX + 32], err[256], lb[ADDR_MAX + 8];

	if (r->action == FILTER_REPLY) {
		filter_refusal(s, r, 1);
		log_reject("id=%s reject from=<%s> reply=\"%d %s\" client=%s", s->id,
		           log_quote(lb, sizeof(lb), s->sender), r->code, r->enh, s->peer);
		free(s->sender);
		s->sender = NULL;
		filter_end(s->flt);
		s->state = ST_READY;
		done_waiting(s);
		return;
	}
	if (s->lmtp && lmtp_client_broken(s->lmtp)) {
		lmtp_client_free(s->lmtp);
		s->lmtp = NULL;
	}
	if (s->lmtp == NULL)
		s->lmtp = lmtp_client_new(s->rd->base, s->cfg->relayd.lmtp, s->cfg->mail_name,
		                          s->cfg->relayd.data_timeout, err, sizeof(err));
	if (s->lmtp == NULL) {
		log_err("lmtp: %s", err);
		mail_lmtp_done(s, 0, "");
		return;
	}
	snprintf(line, sizeof(line), "MAIL FROM:<%s>%s", s->sender,
	         s->body8 ? " BODY=8BITMIME" : "");
	lmtp_client_cmd(s->lmtp, line, mail_lmtp_done, s);
}

static void
cmd_mail(struct session *s, const char *arg)
{
	char path[ADDR_MAX + 300], bad[64];
	const char *params, *why = "syntax";
	struct mailbox m;
	struct mail_params mp;
	int rc;

	if (s->state == ST_GREET) {
		err_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (maybe_stop(s))
		return;
	if (s->state != ST_READY) {
		err_reply(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (smtp_split_path(arg, "FROM:", path, sizeof(path), &params) < 0) {
		err_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if (addr_parse(path, &m, &why) < 0) {
		char q[100];
		err_reply(s, "501 5.1.7 Bad sender address syntax: %s", clean(q, sizeof(q), why));
		return;
	}
	if ((rc = smtp_mail_params(params, &mp, bad, sizeof(bad))) < 0) {
		char q[100];
		if (rc == -2 && s->esmtp)
			err_reply(s, "555 5.5.4 Unsupported option: %s", clean(q, sizeof(q), bad));
		else
			err_reply(s, "501 5.5.4 Bad parameter: %s", clean(q, sizeof(q), bad));
		return;
	}
	if (mp.size > s->cfg->relayd.message_size_limit) {
		err_reply(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	s->sender = m.null ? strdup("") : addr_text(&m);
	if (s->sender == NULL) {
		reply(s, "451 4.3.0 Error: out of memory");
		return;
	}
	s->body8 = mp.body8;
	new_id(s);
	s->state = ST_MAIL;
	s->waiting = 1;
	filter_mail(s->flt, path, params, mail_filtered, s);
}

/* -------------------------------------------------------------- RCPT */

static void
rcpt_lmtp_done(void *arg, int code, const char *text)
{
	struct session *s = arg;
	char lb[ADDR_MAX + 8];

	if (code == 0) {
		err_reply(s, "451 4.3.0 Error: delivery agent unavailable, try again later");
	} else if (code >= 400) {
		s->errors++;
		relay_reply(s, code, text);
		log_reject("id=%s reject rcpt=<%s> reply=%d client=%s", s->id,
		           log_quote(lb, sizeof(lb), s->cur_rcpt), code, s->peer);
	} else {
		char **v = realloc(s->rcpts, (s->nrcpt + 1) * sizeof(*v));
		char *dup = strdup(s->cur_rcpt);
		if (v == NULL || dup == NULL) {
			free(dup);
			if (v)
				s->rcpts = v;
			/* deliverd has it: RSET is the only way back; say 451 */
			reply(s, "451 4.3.0 Error: out of memory");
		} else {
			s->rcpts = v;
			s->rcpts[s->nrcpt++] = dup;
			reply(s, "250 2.1.5 Ok");
		}
	}
	done_waiting(s);
}

static void
rcpt_filtered(void *arg, const struct filter_reply *r)
{
	struct session *s = arg;
	char line[FILTER_TEXT_MAX + 32], lb[ADDR_MAX + 8];

	if (r->action == FILTER_REPLY) {
		filter_refusal(s, r, 1);
		log_reject("id=%s reject rcpt=%s reply=\"%d %s\" client=%s", s->id,
		           log_quote(lb, sizeof(lb), s->cur_path), r->code, r->enh, s->peer);
		done_waiting(s);
		return;
	}
	snprintf(line, sizeof(line), "RCPT TO:<%s>", s->cur_rcpt);
	lmtp_client_cmd(s->lmtp, line, rcpt_lmtp_done, s);
}

static void
cmd_rcpt(struct session *s, const char *arg)
{
	const char *params, *why = "syntax";
	struct mailbox m;
	char *t;

	if (s->state != ST_MAIL) {
		err_reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (smtp_split_path(arg, "TO:", s->cur_path, sizeof(s->cur_path), &params) < 0) {
		err_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (addr_parse(s->cur_path, &m, &why) < 0 || m.null) {
		char q[100];
		err_reply(s, "501 5.1.3 Bad recipient address syntax: %s",
		          m.null ? "empty" : clean(q, sizeof(q), why));
		return;
	}
	if (*params) {
		err_reply(s, "555 5.5.4 Unsupported RCPT option");
		return;
	}
	if (s->cfg->relayd.recipient_limit > 0
	    && (long)s->nrcpt >= s->cfg->relayd.recipient_limit) {
		reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	if ((t = addr_text(&m)) == NULL || strlen(t) >= sizeof(s->cur_rcpt)) {
		free(t);
		err_reply(s, "501 5.1.3 Bad recipient address syntax: too long");
		return;
	}
	snprintf(s->cur_rcpt, sizeof(s->cur_rcpt), "%s", t);
	free(t);
	s->waiting = 1;
	filter_rcpt(s->flt, s->cur_path, params, rcpt_filtered, s);
}

/* -------------------------------------------------------------- DATA */

/* Our Received: header (RFC 5321 §4.4), the first line of the buffered
 * message, so that filters see it as they would with Postfix. */
static void
received_header(struct session *s)
{
	char date[64], h[300], buf[2048], lb[ADDR_MAX + 8];
	time_t now = time(NULL);
	struct tm tm;
	int n;
	const char *with = s->conn.tls ? (s->esmtp ? "ESMTPS" : "SMTPS")
	                               : (s->esmtp ? "ESMTP" : "SMTP");

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	clean(h, sizeof(h), s->conn.helo);
	/* the HELO name must not close or open a comment of the field */
	for (char *p = h; *p; p++)
		if (strchr("()\\\";", *p))
			*p = '?';
	n = snprintf(buf, sizeof(buf), "Received: from %s (%s)\r\n\tby %s (spfgate relayd)",
	             h, s->peer, s->cfg->mail_name);
	if (s->conn.tls)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n,
		              "\r\n\t(using %s with cipher %s)", s->conn.tls_version,
		              s->conn.tls_cipher);
	n += snprintf(buf + n, sizeof(buf) - (size_t)n, "\r\n\twith %s id %s", with, s->id);
	if (s->nrcpt == 1)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "\r\n\tfor <%s>",
		              clean(lb, sizeof(lb), s->rcpts[0]));
	n += snprintf(buf + n, sizeof(buf) - (size_t)n, "; %s\r\n", date);
	if (n >= (int)sizeof(buf))
		n = (int)sizeof(buf) - 1;
	msgbuf_add(&s->msg, buf, (size_t)n);
}

static void
data_filtered(void *arg, const struct filter_reply *r)
{
	struct session *s = arg;

	if (r->action == FILTER_REPLY) {
		filter_refusal(s, r, 1);
		done_waiting(s);
		return;
	}
	if (msgbuf_init(&s->msg, MSGBUF_MEM_MAX) < 0) {
		reply(s, "451 4.3.0 Error: out of memory");
		done_waiting(s);
		return;
	}
	s->msg_open = 1;
	s->too_big = 0;
	received_header(s);
	s->state = ST_DATA;
	set_timeout(s, s->cfg->relayd.data_timeout);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	done_waiting(s);
}

static void
data_sink_cb(void *arg, const char *p, size_t n)
{
	struct session *s = arg;

	if (s->too_big || s->dr.flaws)
		return;
	if (s->dr.size > (size_t)s->cfg->relayd.message_size_limit) {
		s->too_big = 1;
		return;
	}
	msgbuf_add(&s->msg, p, n);
}

static void
cmd_data(struct session *s, const char *arg)
{
	if (s->state != ST_MAIL) {
		err_reply(s, "503 5.5.1 Error: need %s command", s->sender ? "RCPT" : "MAIL");
		return;
	}
	if (*arg) {
		err_reply(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->nrcpt == 0) {
		err_reply(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	data_reader_init(&s->dr, data_sink_cb, s);
	s->waiting = 1;
	filter_data(s->flt, data_filtered, s);
}

/* After a refused message or a failed handoff: deliverd forgets it. */
static void
txn_abort(struct session *s)
{
	if (s->lmtp && !lmtp_client_broken(s->lmtp))
		lmtp_client_cmd(s->lmtp, "RSET", NULL, NULL);
	txn_reset(s);
}

static void
txn_finish(struct session *s)
{
	txn_reset(s);
	set_timeout(s, s->cfg->relayd.command_timeout);
	s->waiting = 0;
	if (!maybe_stop(s))
		done_waiting(s);
}

static void
handoff_reply(void *arg, int code, const char *text)
{
	struct session *s = arg;
	char lb[ADDR_MAX + 8], hb[300];

	if (code / 100 == 2) {
		/* "2.0.0 <rcpt> Ok: queued as ID": the id that deliverd's log
		 * lines carry, so that one message can be followed across both */
		const char *as = text ? strstr(text, " as ") : NULL;
		if (as && !s->queued_as[0]) {
			size_t n = strspn(as + 4, "0123456789ABCDEFabcdef");
			if (n > 0 && n < sizeof(s->queued_as))
				snprintf(s->queued_as, sizeof(s->queued_as), "%.*s", (int)n, as + 4);
		}
		s->n2++;
	} else if (code / 100 == 5) {
		s->n5++;
		snprintf(s->last5, sizeof(s->last5), "%s", text);
	} else
		s->n4++;
	if (--s->nreplies > 0)
		return;
	if (s->n2 && !s->n4 && !s->n5)
		reply(s, "250 2.0.0 Ok: queued as %s", s->id);
	else if (s->n5 && !s->n2 && !s->n4)
		relay_reply(s, 554, s->last5);
	else
		reply(s, "451 4.3.0 Error: delivery agent did not take the message, try again later");
	log_info("id=%s from=<%s> nrcpt=%zu size=%zu received=%d tls=%s client=%s helo=%s "
	         "status=%s%s%s", s->id, log_quote(lb, sizeof(lb), s->sender), s->nrcpt,
	         s->dr.size, s->dr.received, s->conn.tls ? s->conn.tls_version : "no",
	         s->peer, log_quote(hb, sizeof(hb), s->conn.helo),
	         s->n2 && !s->n4 && !s->n5 ? "sent" : s->n5 && !s->n2 && !s->n4
	         ? "bounced" : "deferred", s->queued_as[0] ? " queued_as=" : "", s->queued_as);
	txn_finish(s);
}

static void
lmtp_put(void *arg, const char *p, size_t n)
{
	lmtp_client_write(arg, p, n);
}

static void
stuff_sink(void *arg, const char *p, size_t n)
{
	lmtp_client_write(((struct session *)arg)->lmtp, p, n);
}

struct stuffer {
	struct session *s;
	int bol;
};

static void
stuff_chunk(void *arg, const char *p, size_t n)
{
	struct stuffer *st = arg;
	smtp_dot_stuff(p, n, &st->bol, stuff_sink, st->s);
}

static void
lmtp_data_go(void *arg, int code, const char *text)
{
	struct session *s = arg;
	struct stuffer st = { s, 1 };

	if (code != 354 || s->replay_failed) {
		if (code == 354) {
			/* the replayed MAIL failed: end this DATA unused */
			lmtp_client_free(s->lmtp);
			s->lmtp = NULL;
		}
		/* a refused replay (DATA then says "need MAIL") is our trouble,
		   not the client's: never a 5xx for it */
		if (s->replay_failed)
			code = 0;
		if (code / 100 == 5)
			relay_reply(s, 554, text);
		else
			reply(s, "451 4.3.0 Error: delivery agent unavailable, try again later");
		log_info("id=%s handoff refused: %d %s", s->id, code, code ? text : "(no reply)");
		txn_abort(s);
		s->state = ST_READY;
		txn_finish(s);
		return;
	}
	/* message text is CRLF-ended; stuff its leading dots */
	if (msgbuf_foreach(&s->msg, stuff_chunk, &st) < 0) {
		/* never end a message we could not send whole: drop the
		   connection, deliverd forgets the unfinished DATA */
		log_err("id=%s cannot read the message buffer: %s", s->id, strerror(errno));
		lmtp_client_free(s->lmtp);
		s->lmtp = NULL;
		reply(s, "451 4.3.0 Error: local error reading the message, try again later");
		txn_finish(s);
		return;
	}
	if (!st.bol)
		lmtp_put(s->lmtp, "\r\n", 2);
	lmtp_put(s->lmtp, ".\r\n", 3);
	s->nreplies = s->lmtp_rcpts;
	s->n2 = s->n4 = s->n5 = 0;
	s->queued_as[0] = '\0';
	for (size_t i = 0; i < s->lmtp_rcpts; i++)
		lmtp_client_expect(s->lmtp, handoff_reply, s);
}

/* Angle brackets off, for comparing and re-sending addresses. */
static char *
canon(const char *a)
{
	struct mailbox m;
	char buf[ADDR_MAX + 300];

	if (a == NULL)
		return NULL;
	if (a[0] != '<')
		snprintf(buf, sizeof(buf), "<%s>", a);
	else
		snprintf(buf, sizeof(buf), "%s", a);
	if (addr_parse(buf, &m, NULL) < 0)
		return NULL;
	return m.null ? strdup("") : addr_text(&m);
}

/* Envelope changes: new sender and recipient list.  1 if changed. */
static int
envelope_mods(struct session *s, const struct filter_mods *mods)
{
	int changed = 0;

	for (size_t i = 0; i < mods->n; i++) {
		const struct filter_mod *m = &mods->v[i];
		char *a;

		if (m->type != FM_CHGFROM && m->type != FM_ADDRCPT && m->type != FM_DELRCPT)
			continue;
		if ((a = canon(m->value)) == NULL) {
			char lb[ADDR_MAX + 8];
			log_warn("id=%s filter: ignored bad address %s", s->id,
			         log_quote(lb, sizeof(lb), m->value));
			continue;
		}
		changed = 1;
		if (m->type == FM_CHGFROM) {
			free(s->sender);
			s->sender = a;
		} else if (m->type == FM_DELRCPT) {
			for (size_t j = 0; j < s->nrcpt; j++)
				if (strcasecmp(s->rcpts[j], a) == 0) {
					free(s->rcpts[j]);
					memmove(s->rcpts + j, s->rcpts + j + 1,
					        (s->nrcpt - j - 1) * sizeof(*s->rcpts));
					s->nrcpt--;
					break;
				}
			free(a);
		} else {
			char **v;
			size_t j;
			for (j = 0; j < s->nrcpt && strcasecmp(s->rcpts[j], a) != 0; j++)
				;
			if (j < s->nrcpt || a[0] == '\0'
			    || (v = realloc(s->rcpts, (s->nrcpt + 1) * sizeof(*v))) == NULL) {
				free(a);
				continue;
			}
			s->rcpts = v;
			s->rcpts[s->nrcpt++] = a;
		}
	}
	return changed;
}

static void
replay_mail(void *arg, int code, const char *text)
{
	struct session *s = arg;

	if (code / 100 != 2) {
		s->replay_failed = 1;
		log_info("id=%s replayed MAIL refused: %d %s", s->id, code, text);
	}
}

static void
replay_rcpt(void *arg, int code, const char *text)
{
	struct session *s = arg;

	if (code / 100 == 2)
		s->lmtp_rcpts++;
	else
		log_info("id=%s replayed RCPT refused: %d %s", s->id, code, text);
}

/* deliverd has the old envelope (or none marked for quarantine): start
 * it again with the current one.  The replies come before DATA's. */
static void
replay_envelope(struct session *s, const char *quarantine)
{
	char line[2 * ADDR_MAX + 3 * QUARANTINE_REASON_MAX + 64];
	int n;

	lmtp_client_cmd(s->lmtp, "RSET", NULL, NULL);
	n = snprintf(line, sizeof(line), "MAIL FROM:<%s>%s%s", s->sender,
	             s->body8 ? " BODY=8BITMIME" : "", quarantine ? " XQUARANTINE=" : "");
	if (n < 0 || (size_t)n >= sizeof(line)) {
		/* cannot happen with these bounds; never send a cut envelope */
		s->replay_failed = 1;
		n = 0;
	}
	if (quarantine)
		lmtp_client_xtext(quarantine, line + n, sizeof(line) - (size_t)n);
	lmtp_client_cmd(s->lmtp, line, replay_mail, s);
	s->lmtp_rcpts = 0;
	for (size_t i = 0; i < s->nrcpt; i++) {
		snprintf(line, sizeof(line), "RCPT TO:<%s>", s->rcpts[i]);
		lmtp_client_cmd(s->lmtp, line, replay_rcpt, s);
	}
}

static void
eom_done(void *arg, const struct filter_reply *r, const struct filter_mods *mods)
{
	struct session *s = arg;
	char line[FILTER_TEXT_MAX + 32], quarantine[QUARANTINE_REASON_MAX + 1] = "";
	int changed = 0;

	if (r->action == FILTER_REPLY || r->action == FILTER_DISCARD) {
		if (r->action == FILTER_DISCARD)
			reply(s, "250 2.0.0 Ok: discarded as %s", s->id);
		else
			filter_refusal(s, r, 0);
		log_info("id=%s filter %s", s->id, r->action == FILTER_DISCARD ? "discard"
		         : filter_reply_line(r, line, sizeof(line)));
		txn_abort(s);
		txn_finish(s);
		return;
	}
	s->lmtp_rcpts = s->nrcpt;
	s->replay_failed = 0;
	for (size_t i = 0; mods && i < mods->n; i++)
		if (mods->v[i].type == FM_QUARANTINE) {
			/* the last one wins, as in Sendmail and Postfix */
			clean(quarantine, sizeof(quarantine), mods->v[i].value);
		}
	if (quarantine[0] && !lmtp_client_has(s->lmtp, "XQUARANTINE")) {
		/* never deliver what a filter wanted held */
		char lb[2 * QUARANTINE_REASON_MAX + 8];
		reply(s, "451 4.3.0 Error: cannot quarantine the message now, try again later");
		log_warn("id=%s filter asked for quarantine (%s) but the delivery agent does "
		         "not offer XQUARANTINE: deferred", s->id,
		         log_quote(lb, sizeof(lb), quarantine));
		txn_abort(s);
		txn_finish(s);
		return;
	}
	if (mods && mods->n) {
		if (msgedit_needed(mods->v, mods->n)) {
			struct msgbuf edited;
			if (msgbuf_init(&edited, MSGBUF_MEM_MAX) < 0
			    || msgedit_apply(&s->msg, mods->v, mods->n, &edited) < 0) {
				msgbuf_free(&edited);
				reply(s, "451 4.3.0 Error: cannot apply the filter's changes now");
				txn_abort(s);
				txn_finish(s);
				return;
			}
			msgbuf_free(&s->msg);
			s->msg = edited;
		}
		if ((changed = envelope_mods(s, mods)) && s->nrcpt == 0) {
			reply(s, "250 2.0.0 Ok: no recipients left, discarded as %s", s->id);
			log_info("id=%s filter removed every recipient", s->id);
			txn_abort(s);
			txn_finish(s);
			return;
		}
	}
	if (quarantine[0]) {
		char lb[2 * QUARANTINE_REASON_MAX + 8];
		log_info("id=%s quarantined by filter reason=%s", s->id,
		         log_quote(lb, sizeof(lb), quarantine));
	}
	if (changed || quarantine[0])
		replay_envelope(s, quarantine[0] ? quarantine : NULL);
	lmtp_client_cmd(s->lmtp, "DATA", lmtp_data_go, s);
}

static void
data_end(struct session *s)
{
	const struct data_reader *r = &s->dr;
	const char *why = NULL;

	set_timeout(s, s->cfg->relayd.command_timeout);
	if (r->flaws & (DATA_BARE_LF | DATA_BARE_CR))
		why = "554 5.6.0 Error: bare <LF> or <CR> in message, lines must end with <CR><LF>";
	else if (r->flaws & DATA_NUL)
		why = "554 5.6.0 Error: NUL byte in message";
	else if (s->too_big || r->size > (size_t)s->cfg->relayd.message_size_limit)
		why = "552 5.3.4 Error: message size exceeds fixed limit";
	else if (s->msg.err)
		why = "451 4.3.0 Error: cannot buffer the message now";
	else if (s->cfg->relayd.max_received_headers > 0
	         && r->received >= s->cfg->relayd.max_received_headers)
		why = "554 5.4.6 Error: too many Received headers: mail loop";
	if (why) {
		char lb[ADDR_MAX + 8];
		reply(s, "%s", why);
		log_reject("id=%s refused from=<%s> size=%zu reply=\"%.9s\" client=%s", s->id,
		           log_quote(lb, sizeof(lb), s->sender), r->size, why, s->peer);
		txn_abort(s);
		s->state = ST_READY;
		resume_soon(s);
		return;
	}
	s->waiting = 1;
	filter_eom(s->flt, &s->msg, eom_done, s);
}

/* ----------------------------------------------------------- STARTTLS */

static void
cmd_starttls(struct session *s, const char *arg)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct bufferevent *tb;
	SSL *ssl;

	if (s->rd->tls == NULL) {
		err_reply(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (s->conn.tls) {
		err_reply(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (*arg) {
		err_reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if ((ssl = SSL_new(s->rd->tls)) == NULL) {
		reply(s, "454 4.7.0 TLS not available due to local problem");
		return;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	/* anything the client sent after STARTTLS was in the clear: discard */
	if (evbuffer_get_length(in)) {
		log_info("starttls sid=%s client=%s discarded %zu pipelined bytes", s->sid,
		         s->peer, evbuffer_get_length(in));
		evbuffer_drain(in, evbuffer_get_length(in));
	}
	bufferevent_set_timeouts(s->bev, NULL, NULL);
	tb = bufferevent_openssl_filter_new(s->rd->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                    BEV_OPT_CLOSE_ON_FREE);
	if (tb == NULL) {
		SSL_free(ssl);
		session_close(s);
		return;
	}
	s->bev = tb;
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	bufferevent_setcb(tb, session_read, on_written, on_event, s);
	bufferevent_setwatermark(tb, EV_READ, 0, IN_MAX);
	set_timeout(s, s->cfg->relayd.command_timeout);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
	/* RFC 3207: forget everything learned before */
	if (s->state == ST_MAIL)
		txn_abort(s);
	s->conn.tls = 1;
	s->state = ST_GREET;
	s->esmtp = 0;
	s->conn.helo[0] = '\0';
}

/* ------------------------------------------------------------- input */

static void
command(struct session *s, char *line, size_t len)
{
	const char *arg;
	int flaws = smtp_line_flaws(line, len);

	s->commands++;
	if (flaws) {
		err_reply(s, "500 5.5.2 Error: %s in command refused: commands end with <CR><LF> only",
		          flaws & LINE_NUL ? "NUL byte" : flaws & LINE_BARE_LF ? "bare <LF>"
		          : "bare <CR>");
		return;
	}
	switch (smtp_verb(line, &arg)) {
	case V_HELO: cmd_helo(s, arg, 0); break;
	case V_EHLO: cmd_helo(s, arg, 1); break;
	case V_MAIL: cmd_mail(s, arg); break;
	case V_RCPT: cmd_rcpt(s, arg); break;
	case V_DATA: cmd_data(s, arg); break;
	case V_STARTTLS: cmd_starttls(s, arg); break;
	case V_RSET:
		if (s->state == ST_MAIL)
			txn_abort(s);
		reply(s, "250 2.0.0 Ok");
		maybe_stop(s);
		break;
	case V_NOOP:
		reply(s, "250 2.0.0 Ok");
		break;
	case V_QUIT:
		reply(s, "221 2.0.0 Bye");
		session_close(s);
		break;
	case V_VRFY:
		reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
		break;
	case V_HELP:
		reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP%s",
		      s->rd->tls ? " STARTTLS" : "");
		break;
	case V_EXPN:
	case V_AUTH:
	case V_BDAT:
		err_reply(s, "502 5.5.1 Error: command not implemented");
		break;
	default:
		err_reply(s, "500 5.5.2 Error: command not recognized");
		break;
	}
	if (!s->waiting && s->cfg->relayd.max_errors > 0
	    && s->errors >= s->cfg->relayd.max_errors && !s->closing) {
		reply(s, "421 4.7.0 %s Error: too many errors", s->cfg->mail_name);
		session_close(s);
	}
}

static void
session_read(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	struct evbuffer *in;

	if (s->bev == NULL)
		return;
	in = bufferevent_get_input(s->bev);
	(void)bev;
	while (!s->waiting && !s->closing && s->bev
	       && evbuffer_get_length(in = bufferevent_get_input(s->bev)) > 0) {
		if (s->state == ST_DATA) {
			struct evbuffer_iovec v[8];
			int n = evbuffer_peek(in, -1, NULL, v, 8), end = 0;
			size_t used = 0;

			for (int i = 0; i < n && i < 8 && !end; i++)
				used += data_reader_feed(&s->dr, v[i].iov_base, v[i].iov_len, &end);
			evbuffer_drain(in, used);
			if (end)
				data_end(s);
			continue;
		}
		if (s->state == ST_CONNECT)
			break;          /* early talker: read after the greeting */
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) > OUT_MAX) {
			s->out_blocked = 1;     /* on_written resumes */
			break;
		}
		struct evbuffer_ptr p = evbuffer_search(in, "\r\n", 2, NULL);
		if (s->skipping) {
			if (p.pos < 0) {
				/* keep the last byte: it may be the CR of the CRLF */
				evbuffer_drain(in, evbuffer_get_length(in) - 1);
				break;
			}
			evbuffer_drain(in, (size_t)p.pos + 2);
			s->skipping = 0;
			continue;
		}
		if (p.pos < 0) {
			if (evbuffer_get_length(in) > SMTP_LINE_MAX) {
				err_reply(s, "500 5.5.2 Error: line too long");
				s->skipping = 1;
				/* keep the last byte: it may be the CR of the CRLF */
				evbuffer_drain(in, evbuffer_get_length(in) - 1);
			}
			break;
		}
		if ((size_t)p.pos > SMTP_LINE_MAX) {
			err_reply(s, "500 5.5.2 Error: line too long");
			evbuffer_drain(in, (size_t)p.pos + 2);
			continue;
		}
		char line[SMTP_LINE_MAX + 1];
		evbuffer_remove(in, line, (size_t)p.pos);
		line[p.pos] = '\0';
		evbuffer_drain(in, 2);
		command(s, line, (size_t)p.pos);
	}
	/* Not before the greeting is out (an early talker's commands wait
	 * for it) and not while replies are held back: both resume here. */
	if (s->eof && !s->waiting && !s->closing && !s->out_blocked
	    && s->state != ST_CONNECT)
		session_close(s);
}

/* ------------------------------------------------------------ accept */

static void
connect_done(void *arg, const struct filter_reply *r)
{
	struct session *s = arg;

	if (r->action == FILTER_REPLY) {
		/* the greeting may only be 220, 554 or 421 (RFC 5321 3.1,
		 * 4.3.2): a refusal at connect is one of the last two */
		struct filter_reply g = *r;
		g.code = g.code >= 500 ? 554 : 421;
		filter_refusal(s, &g, 0);
		session_close(s);
		s->waiting = 0;
		return;
	}
	s->state = ST_GREET;
	reply(s, "220 %s ESMTP spfgate relayd", s->cfg->mail_name);
	done_waiting(s);
}

static void
refuse(int fd, const char *msg)
{
	/* best effort on a fresh socket: one short write, then close */
	ssize_t w = write(fd, msg, strlen(msg));
	(void)w;
	close(fd);
}

void
session_accept(struct relayd *rd, int fd, const struct sockaddr *sa, int salen)
{
	const struct config *cfg = rd->cfg;
	struct session *s;
	struct ipaddr ip;
	char a[INET6_ADDRSTRLEN] = "?", line[300];
	int port = 0, one = 1;
	struct sockaddr_storage me;
	socklen_t melen = sizeof(me);

	(void)salen;
	memset(&ip, 0, sizeof(ip));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		ip.family = AF_INET;
		ip.u.v4 = in->sin_addr;
		port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		ip.family = AF_INET6;
		ip.u.v6 = in6->sin6_addr;
		port = ntohs(in6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&ip.u.v6)) {
			ip.family = AF_INET;
			memcpy(&ip.u.v4, &in6->sin6_addr.s6_addr[12], 4);
		}
	}
	ipaddr_format(&ip, a, sizeof(a));
	if (rd->closing) {
		snprintf(line, sizeof(line), "421 4.3.2 %s Service shutting down\r\n", cfg->mail_name);
		refuse(fd, line);
		return;
	}
	if (cfg->relayd.max_sessions > 0 && rd->nsessions >= cfg->relayd.max_sessions) {
		log_warn("refuse client=[%s]: max_sessions %ld reached", a, cfg->relayd.max_sessions);
		snprintf(line, sizeof(line), "421 4.7.0 %s Error: too many sessions, try again later\r\n",
		         cfg->mail_name);
		refuse(fd, line);
		return;
	}
	/* a session holds one descriptor per milter besides its own, and
	 * one for deliverd from MAIL on: past what RLIMIT_NOFILE leaves, a
	 * clean 421 now, rather than failing accept()s and milter
	 * connections later (descriptors are handed out lowest first, so
	 * the new one's number tells how many are in use) */
	if (rd->fd_limit > 0 &&
	    fd + 1 + (long)cfg->relayd.milters.n + RELAYD_FD_RESERVE >= rd->fd_limit) {
		log_warn("refuse client=[%s]: out of descriptors (RLIMIT_NOFILE %ld)", a,
		         rd->fd_limit);
		snprintf(line, sizeof(line), "421 4.3.2 %s Error: too many sessions, try again later\r\n",
		         cfg->mail_name);
		refuse(fd, line);
		return;
	}
	if (cfg->relayd.max_sessions_per_client > 0) {
		long same = 0;
		for (struct session *o = rd->sessions; o; o = o->next)
			if (o->conn.ip.family == ip.family
			    && memcmp(&o->conn.ip.u, &ip.u, ip.family == AF_INET ? 4 : 16) == 0)
				same++;
		if (same >= cfg->relayd.max_sessions_per_client) {
			log_warn("refuse client=[%s]: max_sessions_per_client %ld reached", a,
			         cfg->relayd.max_sessions_per_client);
			snprintf(line, sizeof(line),
			         "421 4.7.0 %s Error: too many sessions from you, try again later\r\n",
			         cfg->mail_name);
			refuse(fd, line);
			return;
		}
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		close(fd);
		return;
	}
	s->rd = rd;
	s->cfg = cfg;
	s->conn.ip = ip;
	snprintf(s->conn.addr, sizeof(s->conn.addr), "%s", a);
	s->conn.port = port;
	s->conn.mail_name = cfg->mail_name;
	s->conn.daemon_name = "relayd";
	if (getsockname(fd, (struct sockaddr *)&me, &melen) == 0) {
		struct ipaddr mi;
		memset(&mi, 0, sizeof(mi));
		if (me.ss_family == AF_INET) {
			mi.family = AF_INET;
			mi.u.v4 = ((struct sockaddr_in *)&me)->sin_addr;
			ipaddr_format(&mi, s->conn.if_addr, sizeof(s->conn.if_addr));
		} else if (me.ss_family == AF_INET6) {
			mi.family = AF_INET6;
			mi.u.v6 = ((struct sockaddr_in6 *)&me)->sin6_addr;
			ipaddr_format(&mi, s->conn.if_addr, sizeof(s->conn.if_addr));
		}
	}
	snprintf(s->peer, sizeof(s->peer), ip.family == AF_INET6 ? "[IPv6:%s]" : "[%s]", a);
	snprintf(s->sid, sizeof(s->sid), "%lX", ++rd->sessions_started);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->bev = bufferevent_socket_new(rd->base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->resume = event_new(rd->base, -1, 0, on_resume, s);
	s->flt = filter_open(cfg, rd->base, &s->conn);
	if (s->bev == NULL || s->resume == NULL || s->flt == NULL) {
		if (s->bev)
			bufferevent_free(s->bev);
		else
			close(fd);
		if (s->resume)
			event_free(s->resume);
		if (s->flt)
			filter_close(s->flt);
		free(s);
		return;
	}
	s->next = rd->sessions;
	if (rd->sessions)
		rd->sessions->prev = s;
	rd->sessions = s;
	rd->nsessions++;
	log_info("connect sid=%s client=%s port=%d", s->sid, s->peer, port);
	bufferevent_setcb(s->bev, session_read, on_written, on_event, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, IN_MAX);
	set_timeout(s, cfg->relayd.command_timeout);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	s->state = ST_CONNECT;
	s->waiting = 1;
	filter_connect(s->flt, connect_done, s);
}

void
sessions_stop(struct relayd *rd)
{
	for (struct session *s = rd->sessions; s; s = s->next)
		maybe_stop(s);
}

void
sessions_free_all(struct relayd *rd)
{
	while (rd->sessions)
		session_free(rd->sessions);
}
