/*
 * smtp_handoff: the DATA phase of a session (smtp_session.c): the message
 * is read strictly (smtp_parse.c) into a msgbuf, checked (bare LF/CR,
 * NUL, size, Received: count), given to filter_eom(), then sent with our
 * Received: header as LMTP DATA; the client's 250 comes only after
 * deliverd's 250 for the recipients.
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
	sess_clean(h, sizeof(h), s->conn.helo);
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
		              sess_clean(lb, sizeof(lb), s->rcpts[0]));
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
		sess_filter_refusal(s, r, 1);
		sess_done_waiting(s);
		return;
	}
	if (msgbuf_init(&s->msg, MSGBUF_MEM_MAX) < 0) {
		sess_reply(s, "451 4.3.0 Error: out of memory");
		sess_done_waiting(s);
		return;
	}
	s->msg_open = 1;
	s->too_big = 0;
	received_header(s);
	s->state = ST_DATA;
	sess_set_timeout(s, s->cfg->relayd.data_timeout);
	sess_reply(s, "354 End data with <CR><LF>.<CR><LF>");
	sess_done_waiting(s);
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

void
sess_cmd_data(struct session *s, const char *arg)
{
	if (s->state != ST_MAIL) {
		sess_err_reply(s, "503 5.5.1 Error: need %s command", s->sender ? "RCPT" : "MAIL");
		return;
	}
	if (*arg) {
		sess_err_reply(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->nrcpt == 0) {
		sess_err_reply(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	data_reader_init(&s->dr, data_sink_cb, s);
	s->waiting = 1;
	filter_data(s->flt, data_filtered, s);
}

/* After a refused message or a failed handoff: deliverd forgets it. */
void
sess_txn_abort(struct session *s)
{
	if (s->lmtp && !lmtp_client_broken(s->lmtp))
		lmtp_client_cmd(s->lmtp, "RSET", NULL, NULL);
	sess_txn_reset(s);
}

static void
txn_finish(struct session *s)
{
	sess_txn_reset(s);
	sess_set_timeout(s, s->cfg->relayd.command_timeout);
	s->waiting = 0;
	if (!sess_maybe_stop(s))
		sess_done_waiting(s);
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
		sess_reply(s, "250 2.0.0 Ok: queued as %s", s->id);
	else if (s->n5 && !s->n2 && !s->n4)
		sess_relay_reply(s, 554, s->last5);
	else
		sess_reply(s, "451 4.3.0 Error: delivery agent did not take the message, try again later");
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
			sess_relay_reply(s, 554, text);
		else
			sess_reply(s, "451 4.3.0 Error: delivery agent unavailable, try again later");
		log_info("id=%s handoff refused: %d %s", s->id, code, code ? text : "(no reply)");
		sess_txn_abort(s);
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
		sess_reply(s, "451 4.3.0 Error: local error reading the message, try again later");
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
	return m.null ? strdup("") : sess_addr_text(&m);
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
			sess_reply(s, "250 2.0.0 Ok: discarded as %s", s->id);
		else
			sess_filter_refusal(s, r, 0);
		log_info("id=%s filter %s", s->id, r->action == FILTER_DISCARD ? "discard"
		         : filter_reply_line(r, line, sizeof(line)));
		sess_txn_abort(s);
		txn_finish(s);
		return;
	}
	s->lmtp_rcpts = s->nrcpt;
	s->replay_failed = 0;
	for (size_t i = 0; mods && i < mods->n; i++)
		if (mods->v[i].type == FM_QUARANTINE) {
			/* the last one wins, as in Sendmail and Postfix */
			sess_clean(quarantine, sizeof(quarantine), mods->v[i].value);
		}
	if (quarantine[0] && !lmtp_client_has(s->lmtp, "XQUARANTINE")) {
		/* never deliver what a filter wanted held */
		char lb[2 * QUARANTINE_REASON_MAX + 8];
		sess_reply(s, "451 4.3.0 Error: cannot quarantine the message now, try again later");
		log_warn("id=%s filter asked for quarantine (%s) but the delivery agent does "
		         "not offer XQUARANTINE: deferred", s->id,
		         log_quote(lb, sizeof(lb), quarantine));
		sess_txn_abort(s);
		txn_finish(s);
		return;
	}
	if (mods && mods->n) {
		if (msgedit_needed(mods->v, mods->n)) {
			struct msgbuf edited;
			if (msgbuf_init(&edited, MSGBUF_MEM_MAX) < 0
			    || msgedit_apply(&s->msg, mods->v, mods->n, &edited) < 0) {
				msgbuf_free(&edited);
				sess_reply(s, "451 4.3.0 Error: cannot apply the filter's changes now");
				sess_txn_abort(s);
				txn_finish(s);
				return;
			}
			msgbuf_free(&s->msg);
			s->msg = edited;
		}
		if ((changed = envelope_mods(s, mods)) && s->nrcpt == 0) {
			sess_reply(s, "250 2.0.0 Ok: no recipients left, discarded as %s", s->id);
			log_info("id=%s filter removed every recipient", s->id);
			sess_txn_abort(s);
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

void
sess_data_end(struct session *s)
{
	const struct data_reader *r = &s->dr;
	const char *why = NULL;

	sess_set_timeout(s, s->cfg->relayd.command_timeout);
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
		sess_reply(s, "%s", why);
		log_reject("id=%s refused from=<%s> size=%zu reply=\"%.9s\" client=%s", s->id,
		           log_quote(lb, sizeof(lb), s->sender), r->size, why, s->peer);
		sess_txn_abort(s);
		s->state = ST_READY;
		sess_resume_soon(s);
		return;
	}
	s->waiting = 1;
	filter_eom(s->flt, &s->msg, eom_done, s);
}

/* ----------------------------------------------------------- STARTTLS */
