/*
 * milter_client.c - the MTA side of the milter protocol, version 6, on
 * libevent bufferevents.  See milter_client.h for the contract.
 */
#include "milter_client.h"
#include "milter_wire.h"
#include "milter_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/util.h>

#define MILTER_VERSION 6u
#define ALL_ACTIONS (SMFIF_ADDHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT | SMFIF_DELRCPT \
	| SMFIF_CHGHDRS | SMFIF_QUARANTINE | SMFIF_CHGFROM | SMFIF_ADDRCPT_PAR \
	| SMFIF_SETSYMLIST)
/* Every v6 step but SMFIP_RCPT_REJ (we never send refused recipients) and
 * the larger packet sizes. */
#define OFFERED_PROTO (SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT \
	| SMFIP_NOBODY | SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NR_HDR | SMFIP_NOUNKNOWN \
	| SMFIP_NODATA | SMFIP_SKIP | SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL \
	| SMFIP_NR_RCPT | SMFIP_NR_DATA | SMFIP_NR_UNKN | SMFIP_NR_EOH | SMFIP_NR_BODY \
	| SMFIP_HDR_LEADSPC)

/* ---- connection ---- */

static void free_mods(struct milter_conn *m)
{
	for (size_t i = 0; i < m->nmods; i++) {
		free(m->mods[i].name);
		free(m->mods[i].value);
		free(m->mods[i].args);
		free(m->mods[i].body);
	}
	free(m->mods);
	m->mods = NULL;
	m->nmods = m->capmods = 0;
	m->replbody = NONE;
}

static void conn_free(struct milter_conn *m)
{
	if (m->bev)
		bufferevent_free(m->bev);
	if (m->timer)
		event_free(m->timer);
	if (m->defer)
		event_free(m->defer);
	free_mods(m);
	mw_free(&m->pkt);
	free(m->reply);
	free(m->conn_reply);
	free(m->msg_reply);
	free(m->name);
	free(m->socket);
	for (int i = 0; i < MW_NSTAGES; i++) {
		free(m->conf_macros[i]);
		free(m->mlist[i]);
	}
	free(m);
}

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *m = arg;

	(void)fd;
	(void)what;
	m->pending = m->finished = 0;
	m->res.reply = m->res.status == MILTER_REPLY ? m->reply : NULL;
	m->res.error = m->error[0] ? m->error : NULL;
	m->res.mods = m->mods;
	m->res.nmods = m->nmods;
	m->done(m, &m->res, m->arg);   /* may free m: touch nothing after */
}

/* Set the pending event's result and deliver it from the loop. */
static void finish(struct milter_conn *m, enum milter_status st)
{
	if (!m->pending || m->finished)
		return;
	evtimer_del(m->timer);
	m->res.status = st;
	m->finished = 1;
	if (m->state == ST_WAIT || m->state == ST_NEGOTIATING)
		m->state = ST_READY;
	event_active(m->defer, EV_TIMEOUT, 0);
}

/* Close the connection for good; the pending event (even one whose result
 * is already set but not yet delivered) reports st (MILTER_FAILED). */
static void fail_as(struct milter_conn *m, enum milter_status st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail_as(struct milter_conn *m, enum milter_status st, const char *fmt, ...)
{
	va_list ap;

	if (m->state == ST_FAILED && !m->pending)
		return;
	va_start(ap, fmt);
	vsnprintf(m->error, sizeof(m->error), fmt, ap);
	va_end(ap);
	if (m->bev) {
		bufferevent_free(m->bev);
		m->bev = NULL;
	}
	evtimer_del(m->timer);
	m->state = ST_FAILED;
	if (m->pending) {
		if (m->finished)
			m->res.status = st;
		else
			finish(m, st);
	}
}
#define fail(m, ...) fail_as((m), MILTER_FAILED, __VA_ARGS__)

static void arm(struct milter_conn *m, long secs)
{
	struct timeval tv = { secs > 0 ? secs : 1, 0 };

	m->timeout = secs;
	evtimer_add(m->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *m = arg;

	(void)fd;
	(void)what;
	if (m->state == ST_CLOSING) {
		conn_free(m);
		return;
	}
	fail(m, "milter %s: timeout after %lds (%s)", m->name, m->timeout,
	     milter_event_name(m->res.event));
}

struct milter_conn *milter_conn_new(struct event_base *base, const struct milter_conf *conf,
                                    milter_done_fn done, void *arg)
{
	struct milter_conn *m;

	if (conf == NULL || conf->socket == NULL || done == NULL)
		return NULL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return NULL;
	m->base = base;
	m->conf = *conf;
	m->done = done;
	m->arg = arg;
	m->conn_verdict = m->msg_verdict = NONE;
	m->replbody = NONE;
	m->socket = strdup(conf->socket);
	m->name = strdup(conf->name ? conf->name : conf->socket);
	m->timer = evtimer_new(base, timer_cb, m);
	m->defer = event_new(base, -1, 0, defer_cb, m);
	int bad = !m->socket || !m->name || !m->timer || !m->defer;
	for (int i = 0; i < MW_NSTAGES; i++) {
		m->conf.macros[i] = NULL;
		if (conf->macros[i] && !(m->conf_macros[i] = strdup(conf->macros[i])))
			bad = 1;
	}
	if (!m->conf.actions)
		m->conf.actions = ALL_ACTIONS;
	m->conf.actions &= ALL_ACTIONS;
	if (bad) {
		conn_free(m);
		return NULL;
	}
	return m;
}

const char *milter_name(const struct milter_conn *m) { return m->name; }
unsigned long milter_actions(const struct milter_conn *m) { return m->actions; }
unsigned long milter_protocol(const struct milter_conn *m) { return m->protocol; }

/* Start an event; -1 if one is pending already. */
static int begin(struct milter_conn *m, enum milter_event ev)
{
	if (m == NULL || m->pending || m->state == ST_CLOSING)
		return -1;
	free_mods(m);
	free(m->reply);
	m->reply = NULL;
	m->error[0] = '\0';
	memset(&m->res, 0, sizeof(m->res));
	m->res.event = ev;
	m->pending = 1;
	m->finished = 0;
	if (m->state == ST_FAILED)
		finish(m, MILTER_FAILED);
	return 0;
}

/* ---- receiving ---- */

/* Verdicts that outlive the event (see milter_client.h). */
static void standing(struct milter_conn *m, enum milter_status st)
{
	int conn = 0, msg = 0;

	if (m->res.event == MILTER_EV_EOM)
		m->in_msg = 0;
	if (st == MILTER_CONTINUE)
		return;
	switch (m->res.event) {
	case MILTER_EV_CONNECT: conn = 1; break;
	case MILTER_EV_HELO: conn = st == MILTER_ACCEPT; break;
	case MILTER_EV_RCPT: msg = st == MILTER_ACCEPT || st == MILTER_DISCARD; break;
	case MILTER_EV_EOM: break;
	default: msg = 1; break;   /* MAIL, DATA, HEADER, EOH, BODY */
	}
	if (conn) {
		m->conn_verdict = st;
		if (st == MILTER_REPLY)
			m->conn_reply = strdup(m->reply);
	} else if (msg) {
		m->msg_verdict = st;
		free(m->msg_reply);
		m->msg_reply = st == MILTER_REPLY ? strdup(m->reply) : NULL;
	}
}

/* Report a standing verdict again. */
static void again(struct milter_conn *m, int verdict, const char *text)
{
	if (verdict == MILTER_REPLY) {
		if (text == NULL || (m->reply = strdup(text)) == NULL)
			verdict = MILTER_TEMPFAIL;   /* out of memory */
	}
	finish(m, (enum milter_status)verdict);
}

static int negotiated(struct milter_conn *m, const unsigned char *d, size_t n)
{
	struct mw_optneg o;

	if (mw_dec_optneg(d, n, &o) < 0)
		return fail(m, "milter %s: malformed negotiation reply", m->name), -1;
	if (o.version < 2 || o.version > MILTER_VERSION)
		return fail(m, "milter %s: unsupported protocol version %u", m->name,
		            (unsigned)o.version), -1;
	if (o.actions & ~m->conf.actions)
		return fail(m, "milter %s: asks for actions 0x%lx, offered 0x%lx", m->name,
		            (unsigned long)o.actions, m->conf.actions), -1;
	if (o.protocol & ~(uint32_t)OFFERED_PROTO)
		return fail(m, "milter %s: asks for protocol steps 0x%lx not offered", m->name,
		            (unsigned long)(o.protocol & ~(uint32_t)OFFERED_PROTO)), -1;
	m->actions = o.actions;
	m->protocol = o.protocol;
	for (int i = 0; i < MW_NSTAGES; i++)
		if (o.macros[i] && (m->mlist[i] = strdup(o.macros[i])) == NULL)
			return fail(m, "milter %s: out of memory", m->name), -1;
	finish(m, MILTER_CONTINUE);
	return 0;
}

/* One reply packet; -1 when the connection failed. */
static int reply(struct milter_conn *m, char cmd, const unsigned char *d, size_t n)
{
	enum milter_status st;
	const char *s[1];

	if (m->state == ST_NEGOTIATING) {
		if (cmd != SMFIC_OPTNEG)
			return fail(m, "milter %s: reply '%c' to negotiation", m->name, cmd), -1;
		return negotiated(m, d, n);
	}
	if (m->state != ST_WAIT || m->finished)
		return fail(m, "milter %s: unsolicited reply '%c'", m->name, cmd), -1;
	switch (cmd) {
	case SMFIR_PROGRESS:
		if (n != 0)
			break;
		arm(m, m->timeout);
		return 0;
	case SMFIR_CONTINUE: st = MILTER_CONTINUE; goto simple;
	case SMFIR_ACCEPT: st = MILTER_ACCEPT; goto simple;
	case SMFIR_REJECT: st = MILTER_REJECT; goto simple;
	case SMFIR_TEMPFAIL: st = MILTER_TEMPFAIL; goto simple;
	case SMFIR_DISCARD: st = MILTER_DISCARD; goto simple;
	case SMFIR_SKIP:
		if (n != 0 || m->res.event != MILTER_EV_BODY || !(m->protocol & SMFIP_SKIP))
			break;
		m->skip_body = 1;
		finish(m, MILTER_SKIP);
		return 0;
	case SMFIR_CONN_FAIL:
	case SMFIR_SHUTDOWN:
		if (n != 0)
			break;
		fail_as(m, MILTER_CONNFAIL, "milter %s: asks to close the SMTP connection",
		        m->name);
		return -1;
	case SMFIR_REPLYCODE:
		if (mw_strings(d, n, s, 1, 1) != 1 || (m->reply = malloc(n)) == NULL
		    || mw_replycode(s[0], m->reply, n) < 0)
			return fail(m, "milter %s: malformed reply code", m->name), -1;
		st = MILTER_REPLY;
		goto final;
	case SMFIR_ADDHEADER: case SMFIR_INSHEADER: case SMFIR_CHGHEADER:
	case SMFIR_CHGFROM: case SMFIR_ADDRCPT: case SMFIR_ADDRCPT_PAR:
	case SMFIR_DELRCPT: case SMFIR_REPLBODY: case SMFIR_QUARANTINE:
		if (milter_modification(m, cmd, d, n) < 0) {
			char why[sizeof(m->error)];
			memcpy(why, m->error, sizeof(why));
			return fail(m, "%s", why), -1;
		}
		return 0;
	default:
		return fail(m, "milter %s: unknown reply 0x%02x", m->name, (unsigned char)cmd), -1;
	}
	return fail(m, "milter %s: malformed reply '%c' (%zu bytes)", m->name, cmd, n), -1;
simple:
	if (n != 0)
		return fail(m, "milter %s: malformed reply '%c' (%zu bytes)", m->name, cmd, n), -1;
final:
	standing(m, st);
	finish(m, st);
	return 0;
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct milter_conn *m = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {   /* each round consumes a packet: bounded by the input */
		size_t avail = evbuffer_get_length(in), dlen, used;
		const unsigned char *p, *data;
		char cmd;
		int rc;

		if (avail < 4)
			return;
		p = evbuffer_pullup(in, 4);
		rc = mw_frame(p, 4, MW_MAX_DATA, &cmd, &data, &dlen, &used);
		if (rc == MW_ERR) {
			fail(m, "milter %s: bad packet length", m->name);
			return;
		}
		uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16
		             | (uint32_t)p[2] << 8 | p[3];
		if (avail < 4 + (size_t)len)
			return;
		p = evbuffer_pullup(in, 4 + (ssize_t)len);
		if (p == NULL || mw_frame(p, 4 + len, MW_MAX_DATA, &cmd, &data, &dlen, &used) != MW_OK) {
			fail(m, "milter %s: bad packet", m->name);
			return;
		}
		if (reply(m, cmd, data, dlen) < 0)
			return;   /* m->bev is gone */
		evbuffer_drain(in, used);
	}
}

static void event_cb(struct bufferevent *bev, short what, void *arg);

static void closing_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_free(arg);
}

static void closing_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	conn_free(arg);
}

/* ---- sending ---- */

/* Write m->pkt; 0, or -1 when the connection failed. */
static int send_pkt(struct milter_conn *m)
{
	if (mw_end(&m->pkt) < 0)
		return fail(m, "milter %s: command too large for a packet", m->name), -1;
	if (bufferevent_write(m->bev, m->pkt.buf, m->pkt.len) < 0)
		return fail(m, "milter %s: out of memory", m->name), -1;
	if (m->pkt.cap > 4096)
		mw_free(&m->pkt);
	return 0;
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct milter_conn *m = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		m->state = ST_NEGOTIATING;
		if (mw_enc_optneg(&m->pkt, MILTER_VERSION, (uint32_t)m->conf.actions,
		                  OFFERED_PROTO) < 0) {
			fail(m, "milter %s: out of memory", m->name);
			return;
		}
		if (send_pkt(m) == 0)
			arm(m, m->conf.command_timeout);
		return;
	}
	if (what & BEV_EVENT_EOF)
		fail(m, "milter %s: connection closed by the milter", m->name);
	else
		fail(m, "milter %s: %s", m->name,
		     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/* SMFIC_MACRO for a stage: the macros with a value among those asked for. */
static int send_macros(struct milter_conn *m, int stage, char cmd,
                       const struct milter_macros *mac)
{
	const char *list = m->mlist[stage] ? m->mlist[stage]
	                 : m->conf_macros[stage] ? m->conf_macros[stage] : milter_default_macros[stage];
	int any = 0;

	mw_begin(&m->pkt, SMFIC_MACRO);
	mw_put_bytes(&m->pkt, &cmd, 1);
	while (mac && *list) {
		char tok[256], c[256];
		size_t n = strcspn(list, " ,\t");
		const char *v;

		if (n > 0 && n < sizeof(tok)) {
			memcpy(tok, list, n);
			tok[n] = '\0';
			if (milter_canon(tok, c, sizeof(c)) == 0 && (v = milter_macros_get(mac, c)) != NULL
			    && mw_data_len(&m->pkt) + strlen(c) + strlen(v) + 2 <= MW_MAX_DATA) {
				mw_put_str(&m->pkt, c);
				mw_put_str(&m->pkt, v);
				any = 1;
			}
		}
		list += n;
		list += strspn(list, " ,\t");
	}
	return any ? send_pkt(m) : 0;
}

/*
 * The common part of every event after the packet is built in m->pkt:
 * returns 0 always (the result comes through finish()).
 */
static int send_cmd(struct milter_conn *m, int stage, char stage_cmd,
                    const struct milter_macros *mac, int noreply, long timeout)
{
	if (stage >= 0) {
		/* the command is in m->pkt: keep it aside while macros go out */
		struct mw_pkt cmdpkt = m->pkt;

		memset(&m->pkt, 0, sizeof(m->pkt));
		if (send_macros(m, stage, stage_cmd, mac) < 0) {
			mw_free(&cmdpkt);
			return 0;
		}
		mw_free(&m->pkt);
		m->pkt = cmdpkt;
	}
	if (send_pkt(m) < 0)
		return 0;
	if (noreply) {
		finish(m, MILTER_CONTINUE);
	} else {
		m->state = ST_WAIT;
		arm(m, timeout);
	}
	return 0;
}

/* Whether the event is decided without the milter; finishes it if so. */
static int decided(struct milter_conn *m, int message, unsigned long nostep)
{
	if (m->finished)
		return 1;   /* failed already */
	if (m->state != ST_READY) {
		m->pending = 0;   /* not opened: misuse */
		return -1;
	}
	if (m->conn_verdict != NONE) {
		again(m, m->conn_verdict, m->conn_reply);
		return 1;
	}
	if (message && m->msg_verdict != NONE) {
		again(m, m->msg_verdict, m->msg_reply);
		return 1;
	}
	if (m->protocol & nostep) {
		finish(m, MILTER_CONTINUE);
		return 1;
	}
	return 0;
}

int milter_open(struct milter_conn *m)
{
	struct sockaddr_storage ss;
	int len;

	if (m == NULL || m->state != ST_NEW || begin(m, MILTER_EV_OPEN) < 0)
		return -1;
	if (milter_parse_socket(m->socket, &ss, &len) < 0) {
		fail(m, "milter %s: bad socket address", m->name);
		return 0;
	}
	m->bev = bufferevent_socket_new(m->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (m->bev == NULL) {
		fail(m, "milter %s: out of memory", m->name);
		return 0;
	}
	bufferevent_setcb(m->bev, read_cb, NULL, event_cb, m);
	/* a whole packet fits; more waits until it is read */
	bufferevent_setwatermark(m->bev, EV_READ, 0, MW_HDR_LEN + MW_MAX_DATA + 16);
	bufferevent_enable(m->bev, EV_READ | EV_WRITE);
	m->state = ST_CONNECTING;
	arm(m, m->conf.connect_timeout);
	if (bufferevent_socket_connect(m->bev, (struct sockaddr *)&ss, len) < 0)
		fail(m, "milter %s: connect: %s", m->name, strerror(errno));
	return 0;
}

int milter_connect(struct milter_conn *m, const struct milter_macros *mac,
                   const char *hostname, char family, unsigned port, const char *addr)
{
	int d;

	if (hostname == NULL || (family != 'U' && addr == NULL) || begin(m, MILTER_EV_CONNECT) < 0)
		return -1;
	if ((d = decided(m, 0, SMFIP_NOCONNECT)) != 0)
		return d < 0 ? -1 : 0;
	mw_begin(&m->pkt, SMFIC_CONNECT);
	mw_put_str(&m->pkt, hostname);
	mw_put_bytes(&m->pkt, &family, 1);
	if (family != 'U') {
		mw_put_u16(&m->pkt, (uint16_t)port);
		mw_put_str(&m->pkt, addr);
	}
	return send_cmd(m, SMFIM_CONNECT, SMFIC_CONNECT, mac, !!(m->protocol & SMFIP_NR_CONN),
	                m->conf.command_timeout);
}

int milter_helo(struct milter_conn *m, const struct milter_macros *mac, const char *helo)
{
	int d;

	if (helo == NULL || begin(m, MILTER_EV_HELO) < 0)
		return -1;
	if ((d = decided(m, 0, SMFIP_NOHELO)) != 0)
		return d < 0 ? -1 : 0;
	mw_begin(&m->pkt, SMFIC_HELO);
	mw_put_str(&m->pkt, helo);
	return send_cmd(m, SMFIM_HELO, SMFIC_HELO, mac, !!(m->protocol & SMFIP_NR_HELO),
	                m->conf.command_timeout);
}

static int envelope(struct milter_conn *m, const struct milter_macros *mac, const char *who,
                    const char *const *args, enum milter_event ev)
{
	int mail = ev == MILTER_EV_MAIL, d;

	if (who == NULL || begin(m, ev) < 0)
		return -1;
	if (mail && m->state == ST_READY && m->conn_verdict == NONE) {
		m->msg_verdict = NONE;   /* a new transaction */
		free(m->msg_reply);
		m->msg_reply = NULL;
		m->skip_body = 0;
		m->in_msg = 1;
	}
	if ((d = decided(m, 1, mail ? SMFIP_NOMAIL : SMFIP_NORCPT)) != 0)
		return d < 0 ? -1 : 0;
	mw_begin(&m->pkt, mail ? SMFIC_MAIL : SMFIC_RCPT);
	mw_put_str(&m->pkt, who);
	for (; args && *args; args++)
		mw_put_str(&m->pkt, *args);
	return send_cmd(m, mail ? SMFIM_ENVFROM : SMFIM_ENVRCPT, mail ? SMFIC_MAIL : SMFIC_RCPT,
	                mac, !!(m->protocol & (mail ? SMFIP_NR_MAIL : SMFIP_NR_RCPT)),
	                m->conf.command_timeout);
}

int milter_mail(struct milter_conn *m, const struct milter_macros *mac,
                const char *sender, const char *const *args)
{
	return envelope(m, mac, sender, args, MILTER_EV_MAIL);
}

int milter_rcpt(struct milter_conn *m, const struct milter_macros *mac,
                const char *rcpt, const char *const *args)
{
	return envelope(m, mac, rcpt, args, MILTER_EV_RCPT);
}

int milter_data(struct milter_conn *m, const struct milter_macros *mac)
{
	int d;

	if (begin(m, MILTER_EV_DATA) < 0)
		return -1;
	if ((d = decided(m, 1, SMFIP_NODATA)) != 0)
		return d < 0 ? -1 : 0;
	mw_begin(&m->pkt, SMFIC_DATA);
	return send_cmd(m, SMFIM_DATA, SMFIC_DATA, mac, !!(m->protocol & SMFIP_NR_DATA),
	                m->conf.command_timeout);
}

int milter_header(struct milter_conn *m, const char *name, const char *value)
{
	int d;

	if (name == NULL || value == NULL || begin(m, MILTER_EV_HEADER) < 0)
		return -1;
	if ((d = decided(m, 1, SMFIP_NOHDRS)) != 0)
		return d < 0 ? -1 : 0;
	if (!(m->protocol & SMFIP_HDR_LEADSPC))
		value += strspn(value, " \t");
	mw_begin(&m->pkt, SMFIC_HEADER);
	mw_put_str(&m->pkt, name);
	for (const char *p = value; *p; p++)   /* CRLF -> LF */
		if (!(p[0] == '\r' && p[1] == '\n'))
			mw_put_bytes(&m->pkt, p, 1);
	mw_put_bytes(&m->pkt, "", 1);
	return send_cmd(m, -1, 0, NULL, !!(m->protocol & SMFIP_NR_HDR), m->conf.content_timeout);
}

int milter_eoh(struct milter_conn *m, const struct milter_macros *mac)
{
	int d;

	if (begin(m, MILTER_EV_EOH) < 0)
		return -1;
	if ((d = decided(m, 1, SMFIP_NOEOH)) != 0)
		return d < 0 ? -1 : 0;
	mw_begin(&m->pkt, SMFIC_EOH);
	return send_cmd(m, SMFIM_EOH, SMFIC_EOH, mac, !!(m->protocol & SMFIP_NR_EOH),
	                m->conf.content_timeout);
}

int milter_body(struct milter_conn *m, const void *chunk, size_t len)
{
	int d;

	if ((chunk == NULL && len) || len > MILTER_CHUNK_MAX || begin(m, MILTER_EV_BODY) < 0)
		return -1;
	if ((d = decided(m, 1, SMFIP_NOBODY)) != 0)
		return d < 0 ? -1 : 0;
	if (m->skip_body || len == 0) {
		finish(m, MILTER_CONTINUE);
		return 0;
	}
	mw_begin(&m->pkt, SMFIC_BODY);
	mw_put_bytes(&m->pkt, chunk, len);
	return send_cmd(m, -1, 0, NULL, !!(m->protocol & SMFIP_NR_BODY), m->conf.content_timeout);
}

int milter_eom(struct milter_conn *m, const struct milter_macros *mac)
{
	int d;

	if (begin(m, MILTER_EV_EOM) < 0)
		return -1;
	if ((d = decided(m, 1, 0)) != 0)
		return d < 0 ? -1 : 0;
	mw_begin(&m->pkt, SMFIC_BODYEOB);
	return send_cmd(m, SMFIM_EOM, SMFIC_BODYEOB, mac, 0, m->conf.content_timeout);
}

int milter_abort(struct milter_conn *m)
{
	if (m == NULL || m->pending)
		return -1;
	if (m->state == ST_READY && m->in_msg && m->conn_verdict == NONE) {
		mw_begin(&m->pkt, SMFIC_ABORT);
		send_pkt(m);
	}
	m->in_msg = m->skip_body = 0;
	m->msg_verdict = NONE;
	free(m->msg_reply);
	m->msg_reply = NULL;
	free_mods(m);
	return 0;
}

void milter_close(struct milter_conn *m)
{
	if (m == NULL || m->state == ST_CLOSING)
		return;
	event_del(m->defer);
	m->pending = 0;
	if (m->bev && (m->state == ST_READY || m->state == ST_WAIT)) {
		mw_begin(&m->pkt, SMFIC_QUIT);
		if (mw_end(&m->pkt) == 0 && bufferevent_write(m->bev, m->pkt.buf, m->pkt.len) == 0) {
			m->state = ST_CLOSING;
			bufferevent_disable(m->bev, EV_READ);
			bufferevent_setcb(m->bev, NULL, closing_cb, closing_event_cb, m);
			arm(m, m->conf.command_timeout);
			return;
		}
	}
	conn_free(m);
}
