/*
 * smtp_session: one ESMTP session (RFC 5321) on a bufferevent: accepting
 * it (the session limits), reading commands, HELO/EHLO, MAIL, RCPT,
 * STARTTLS; the DATA phase is smtp_handoff.c.
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
 */
#include "relayd.h"
#include "filter.h"
#include "lmtp_client.h"
#include "msgbuf.h"
#include "msgedit.h"
#include "smtp_parse.h"
#include "session_int.h"
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


static void session_read(struct bufferevent *bev, void *arg);

/* ------------------------------------------------------------ output */


void
sess_reply(struct session *s, const char *fmt, ...)
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

void
sess_err_reply(struct session *s, const char *fmt, ...)
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
const char *
sess_clean(char *buf, size_t len, const char *s)
{
	size_t o = 0;

	for (; *s && o + 1 < len; s++)
		buf[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
	buf[o] = '\0';
	return buf;
}

/* ----------------------------------------------------------- lifetime */

void
sess_txn_reset(struct session *s)
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

	sess_txn_reset(s);
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
	sess_resume_soon(s);
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

void
sess_resume_soon(struct session *s)
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
		sess_resume_soon(s);
	}
}

void
sess_set_timeout(struct session *s, long secs)
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
		sess_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->mail_name);
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
		sess_resume_soon(s);
		return;
	}
	if (s->bev) {
		bufferevent_free(s->bev);
		s->bev = NULL;
	}
	s->closing = 1;
	sess_resume_soon(s);
}

/* A stopping relayd lets a client go between transactions. */
int
sess_maybe_stop(struct session *s)
{
	if (!s->rd->closing || s->closing || s->state == ST_MAIL || s->state == ST_DATA
	    || s->waiting)
		return 0;
	sess_reply(s, "421 4.3.2 %s Service shutting down, closing", s->cfg->mail_name);
	session_close(s);
	return 1;
}

void
sess_done_waiting(struct session *s)
{
	s->waiting = 0;
	if (s->cfg->relayd.max_errors > 0 && s->errors >= s->cfg->relayd.max_errors
	    && !s->closing) {
		sess_reply(s, "421 4.7.0 %s Error: too many errors", s->cfg->mail_name);
		session_close(s);
	}
	sess_resume_soon(s);
}

/* A filter's refusal: its reply, and the end of the session if it says so
 * (a milter's SMFIR_CONN_FAIL / SHUTDOWN, a refusal at connect). */
void
sess_filter_refusal(struct session *s, const struct filter_reply *r, int count)
{
	char line[FILTER_TEXT_MAX + 32];

	filter_reply_line(r, line, sizeof(line));
	if (count)
		sess_err_reply(s, "%s", line);
	else
		sess_reply(s, "%s", line);
	if (r->close && !s->closing)
		session_close(s);
}

/* ------------------------------------------------------------ helpers */

/* "local@domain" with the local part quoted unless it is a dot-atom. */
char *
sess_addr_text(const struct mailbox *m)
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
	/* the worker's number in the low part: workers never share an id */
	unsigned long n = s->rd->nworkers > 1 ? (unsigned long)s->rd->nworkers : 1;
	snprintf(s->id, sizeof(s->id), "%08lX%05lX", (unsigned long)ts.tv_sec,
	         (((s->rd->serial++ ^ (unsigned long)getpid() << 8) * n +
	           (unsigned long)s->rd->worker) & 0xFFFFF));
	snprintf(s->conn.queue_id, sizeof(s->conn.queue_id), "%s", s->id);
}

/* Reply text from deliverd, printable only, and its code. */
void
sess_relay_reply(struct session *s, int code, const char *text)
{
	char t[600];
	sess_reply(s, "%d %s", code, sess_clean(t, sizeof(t), text) [0] ? t : "");
}

/* -------------------------------------------------------------- HELO */

static void
helo_done(void *arg, const struct filter_reply *r)
{
	struct session *s = arg;
	const struct config *cfg = s->cfg;
	char h[300];

	if (r->action == FILTER_REPLY) {
		sess_filter_refusal(s, r, 1);
		sess_done_waiting(s);
		return;
	}
	s->state = ST_READY;
	sess_clean(h, sizeof(h), s->conn.helo);
	if (!s->esmtp) {
		sess_reply(s, "250 %s", cfg->mail_name);
	} else {
		sess_reply(s, "250-%s Hello %s %s", cfg->mail_name, h, s->peer);
		sess_reply(s, "250-PIPELINING");
		sess_reply(s, "250-SIZE %ld", cfg->relayd.message_size_limit);
		if (s->rd->tls && !s->conn.tls)
			sess_reply(s, "250-STARTTLS");
		sess_reply(s, "250-8BITMIME");
		sess_reply(s, "250 ENHANCEDSTATUSCODES");
	}
	sess_done_waiting(s);
}

static void
cmd_helo(struct session *s, const char *arg, int esmtp)
{
	size_t n;

	while (*arg == ' ')
		arg++;
	n = strcspn(arg, " ");
	if (n == 0) {
		sess_err_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	if (s->state == ST_MAIL)
		sess_txn_abort(s);           /* deliverd forgets it too */
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
			sess_err_reply(s, "451 4.3.0 Error: delivery agent unavailable, try again later");
		else if (code >= 500)
			sess_err_reply(s, "%d %s", code, text);
		else
			sess_err_reply(s, "451 4.3.0 Error: delivery agent: %.200s", text);
		log_reject("id=%s reject from=<%s> reply=%d client=%s", s->id,
		           log_quote(lb, sizeof(lb), s->sender), code ? code : 451, s->peer);
		free(s->sender);
		s->sender = NULL;
		filter_end(s->flt);
		s->state = ST_READY;
	} else {
		sess_reply(s, "250 2.1.0 Ok");
	}
	sess_done_waiting(s);
}

static void
mail_filtered(void *arg, const struct filter_reply *r)
{
	struct session *s = arg;
	char line[FILTER_TEXT_MAX + 32], err[256], lb[ADDR_MAX + 8];

	if (r->action == FILTER_REPLY) {
		sess_filter_refusal(s, r, 1);
		log_reject("id=%s reject from=<%s> reply=\"%d %s\" client=%s", s->id,
		           log_quote(lb, sizeof(lb), s->sender), r->code, r->enh, s->peer);
		free(s->sender);
		s->sender = NULL;
		filter_end(s->flt);
		s->state = ST_READY;
		sess_done_waiting(s);
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
		sess_err_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (sess_maybe_stop(s))
		return;
	if (s->state != ST_READY) {
		sess_err_reply(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (smtp_split_path(arg, "FROM:", path, sizeof(path), &params) < 0) {
		sess_err_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if (addr_parse(path, &m, &why) < 0) {
		char q[100];
		sess_err_reply(s, "501 5.1.7 Bad sender address syntax: %s", sess_clean(q, sizeof(q), why));
		return;
	}
	if ((rc = smtp_mail_params(params, &mp, bad, sizeof(bad))) < 0) {
		char q[100];
		if (rc == -2 && s->esmtp)
			sess_err_reply(s, "555 5.5.4 Unsupported option: %s", sess_clean(q, sizeof(q), bad));
		else
			sess_err_reply(s, "501 5.5.4 Bad parameter: %s", sess_clean(q, sizeof(q), bad));
		return;
	}
	if (mp.size > s->cfg->relayd.message_size_limit) {
		sess_err_reply(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	s->sender = m.null ? strdup("") : sess_addr_text(&m);
	if (s->sender == NULL) {
		sess_reply(s, "451 4.3.0 Error: out of memory");
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
		sess_err_reply(s, "451 4.3.0 Error: delivery agent unavailable, try again later");
	} else if (code >= 400) {
		s->errors++;
		sess_relay_reply(s, code, text);
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
			sess_reply(s, "451 4.3.0 Error: out of memory");
		} else {
			s->rcpts = v;
			s->rcpts[s->nrcpt++] = dup;
			sess_reply(s, "250 2.1.5 Ok");
		}
	}
	sess_done_waiting(s);
}

static void
rcpt_filtered(void *arg, const struct filter_reply *r)
{
	struct session *s = arg;
	char line[FILTER_TEXT_MAX + 32], lb[ADDR_MAX + 8];

	if (r->action == FILTER_REPLY) {
		sess_filter_refusal(s, r, 1);
		log_reject("id=%s reject rcpt=%s reply=\"%d %s\" client=%s", s->id,
		           log_quote(lb, sizeof(lb), s->cur_path), r->code, r->enh, s->peer);
		sess_done_waiting(s);
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
		sess_err_reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (smtp_split_path(arg, "TO:", s->cur_path, sizeof(s->cur_path), &params) < 0) {
		sess_err_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (addr_parse(s->cur_path, &m, &why) < 0 || m.null) {
		char q[100];
		sess_err_reply(s, "501 5.1.3 Bad recipient address syntax: %s",
		          m.null ? "empty" : sess_clean(q, sizeof(q), why));
		return;
	}
	if (*params) {
		sess_err_reply(s, "555 5.5.4 Unsupported RCPT option");
		return;
	}
	if (s->cfg->relayd.recipient_limit > 0
	    && (long)s->nrcpt >= s->cfg->relayd.recipient_limit) {
		sess_reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	if ((t = sess_addr_text(&m)) == NULL || strlen(t) >= sizeof(s->cur_rcpt)) {
		free(t);
		sess_err_reply(s, "501 5.1.3 Bad recipient address syntax: too long");
		return;
	}
	snprintf(s->cur_rcpt, sizeof(s->cur_rcpt), "%s", t);
	free(t);
	s->waiting = 1;
	filter_rcpt(s->flt, s->cur_path, params, rcpt_filtered, s);
}

/* -------------------------------------------------------------- DATA */

static void
cmd_starttls(struct session *s, const char *arg)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct bufferevent *tb;
	SSL *ssl;

	if (s->rd->tls == NULL) {
		sess_err_reply(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (s->conn.tls) {
		sess_err_reply(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (*arg) {
		sess_err_reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if ((ssl = SSL_new(s->rd->tls)) == NULL) {
		sess_reply(s, "454 4.7.0 TLS not available due to local problem");
		return;
	}
	sess_reply(s, "220 2.0.0 Ready to start TLS");
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
	sess_set_timeout(s, s->cfg->relayd.command_timeout);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
	/* RFC 3207: forget everything learned before */
	if (s->state == ST_MAIL)
		sess_txn_abort(s);
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
		sess_err_reply(s, "500 5.5.2 Error: %s in command refused: commands end with <CR><LF> only",
		          flaws & LINE_NUL ? "NUL byte" : flaws & LINE_BARE_LF ? "bare <LF>"
		          : "bare <CR>");
		return;
	}
	switch (smtp_verb(line, &arg)) {
	case V_HELO: cmd_helo(s, arg, 0); break;
	case V_EHLO: cmd_helo(s, arg, 1); break;
	case V_MAIL: cmd_mail(s, arg); break;
	case V_RCPT: cmd_rcpt(s, arg); break;
	case V_DATA: sess_cmd_data(s, arg); break;
	case V_STARTTLS: cmd_starttls(s, arg); break;
	case V_RSET:
		if (s->state == ST_MAIL)
			sess_txn_abort(s);
		sess_reply(s, "250 2.0.0 Ok");
		sess_maybe_stop(s);
		break;
	case V_NOOP:
		sess_reply(s, "250 2.0.0 Ok");
		break;
	case V_QUIT:
		sess_reply(s, "221 2.0.0 Bye");
		session_close(s);
		break;
	case V_VRFY:
		sess_reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
		break;
	case V_HELP:
		sess_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP%s",
		      s->rd->tls ? " STARTTLS" : "");
		break;
	case V_EXPN:
	case V_AUTH:
	case V_BDAT:
		sess_err_reply(s, "502 5.5.1 Error: command not implemented");
		break;
	default:
		sess_err_reply(s, "500 5.5.2 Error: command not recognized");
		break;
	}
	if (!s->waiting && s->cfg->relayd.max_errors > 0
	    && s->errors >= s->cfg->relayd.max_errors && !s->closing) {
		sess_reply(s, "421 4.7.0 %s Error: too many errors", s->cfg->mail_name);
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
				sess_data_end(s);
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
				sess_err_reply(s, "500 5.5.2 Error: line too long");
				s->skipping = 1;
				/* keep the last byte: it may be the CR of the CRLF */
				evbuffer_drain(in, evbuffer_get_length(in) - 1);
			}
			break;
		}
		if ((size_t)p.pos > SMTP_LINE_MAX) {
			sess_err_reply(s, "500 5.5.2 Error: line too long");
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
		sess_filter_refusal(s, &g, 0);
		session_close(s);
		s->waiting = 0;
		return;
	}
	s->state = ST_GREET;
	sess_reply(s, "220 %s ESMTP spfgate relayd", s->cfg->mail_name);
	sess_done_waiting(s);
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
	/* with several workers, each takes its share of max_sessions */
	long max = cfg->relayd.max_sessions;
	if (rd->nworkers > 1)
		max = (max + rd->nworkers - 1) / rd->nworkers;
	if (max > 0 && rd->nsessions >= max) {
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
	sess_set_timeout(s, cfg->relayd.command_timeout);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	s->state = ST_CONNECT;
	s->waiting = 1;
	filter_connect(s->flt, connect_done, s);
}

void
sessions_stop(struct relayd *rd)
{
	for (struct session *s = rd->sessions; s; s = s->next)
		sess_maybe_stop(s);
}

void
sessions_free_all(struct relayd *rd)
{
	while (rd->sessions)
		session_free(rd->sessions);
}
