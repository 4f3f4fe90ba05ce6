/*
 * lmtp: deliverd's LMTP server (RFC 2033), the sessions.  Event driven
 * with libevent bufferevents: one loop holds every session.  Listening
 * and stopping are in lmtp_server.c, the commit threads in lmtp_commit.c.
 *
 * MAIL and RCPT are answered live: a local recipient is resolved through
 * localdb at once (unknown users are refused here, so nobody upstream
 * ever has to bounce), a remote one is taken as is (relay policy is
 * filterd's job).  DATA is streamed into a spool file as it arrives,
 * dot-unstuffed and with LF line ends; nothing holds a whole message in
 * memory.  After the final dot the spool file is committed (fsync of file
 * and directory) on a commit thread, and only when that has returned does
 * each recipient get its 250; any failure to store answers 452 4.3.1.
 * Session input is not read while a commit is in flight, so pipelined
 * commands after the dot wait their turn.
 *
 * Quarantine: LHLO advertises XQUARANTINE, and MAIL takes the parameter
 * XQUARANTINE=<reason as xtext> (relayd sends it when a milter asked for
 * quarantine).  The message is then committed straight into the hold
 * queue with the reason (spool.c) and the scheduler is not told; the
 * administrator's release delivers it.  Every other unknown parameter is
 * refused (555), as before.
 */
#include "deliverd.h"
#include "lmtp_int.h"
#include "addr.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define LINE_MAX_LEN  2048      /* a command line (RFC 5321 asks for 512) */
#define CMD_TIMEOUT   300       /* seconds: RFC 5321 4.5.3.2 server timeout */
#define MAX_RCPT      1000      /* RCPTs in one transaction */
#define MAX_ERRORS    20        /* bad commands before we hang up */
#define OBUF_SIZE     65536     /* message text gathered per write() */

enum sstate { S_GREET, S_READY, S_MAIL, S_DATA };
enum dstate { D_BOL, D_TEXT, D_CR, D_DOT, D_DOTCR };
enum { BAD_NUL = 1, BAD_CR = 2, TOO_BIG = 4, WRITE_ERR = 8 };

struct lmtp_session {
	struct lmtp_server *srv;
	struct bufferevent *bev;
	struct lmtp_session *prev, *next;
	char peer[INET6_ADDRSTRLEN + 3];
	char helo[256];
	enum sstate state;
	int errors, skipping, closing, busy, dead, eof;
	int throttled;                  /* reading paused: client not reading */

	char *sender;                   /* "" for <> */
	char *quarantine;               /* XQUARANTINE reason, NULL if none */
	char **orig;                    /* accepted RCPTs, in order */
	size_t norig;
	struct spool_rcpt *sr;          /* what goes to the spool */
	size_t nsr, capsr;

	struct spool_writer *w;
	char id[SPOOL_ID_MAX];          /* of the message being received */
	enum dstate ds;
	int bad;
	long limit;
	size_t size;
	size_t olen;
	char *obuf;                     /* OBUF_SIZE, only while in DATA */
	struct commit_job job;
};


static void session_read(struct bufferevent *bev, void *arg);

/* ---------------------------------------------------------------- output */

static void
reply(struct lmtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
reply(struct lmtp_session *s, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

/* ------------------------------------------------------- session life */

static void
txn_reset(struct lmtp_session *s)
{
	free(s->sender);
	s->sender = NULL;
	free(s->quarantine);
	s->quarantine = NULL;
	for (size_t i = 0; i < s->norig; i++)
		free(s->orig[i]);
	free(s->orig);
	s->orig = NULL;
	s->norig = 0;
	for (size_t i = 0; i < s->nsr; i++) {
		free(s->sr[i].addr);
		free(s->sr[i].orig);
	}
	free(s->sr);
	s->sr = NULL;
	s->nsr = s->capsr = 0;
	if (s->w) {
		spool_abort(s->w);
		s->w = NULL;
	}
	free(s->obuf);
	s->obuf = NULL;
	if (s->state != S_GREET)
		s->state = S_READY;
}

static void
session_free(struct lmtp_session *s)
{
	struct lmtp_server *l = s->srv;

	if (s->busy) {          /* a commit thread still has it: later */
		s->dead = 1;
		if (s->bev) {
			bufferevent_free(s->bev);
			s->bev = NULL;
		}
		return;
	}
	txn_reset(s);
	if (s->bev)
		bufferevent_free(s->bev);
	if (s->job.done)
		event_free(s->job.done);
	if (s->prev)
		s->prev->next = s->next;
	else
		l->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	l->nsessions--;
	free(s);
}

/*
 * A client that pipelines commands without reading the replies must not
 * make us buffer replies without bound: above OUT_HIGH bytes of unsent
 * replies reading stops, and resumes once they drained to OUT_LOW.
 */
#define OUT_HIGH (64 * 1024)
#define OUT_LOW (16 * 1024)

static void
session_drained(struct bufferevent *bev, void *arg)
{
	struct lmtp_session *s = arg;

	if (s->closing) {
		/* the write callback fires at OUT_LOW: hang up only when empty */
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			session_free(s);
		else
			bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		return;
	}
	if (s->throttled && evbuffer_get_length(bufferevent_get_output(bev)) <= OUT_LOW) {
		s->throttled = 0;
		if (!s->eof && !s->busy)
			bufferevent_enable(bev, EV_READ);
		if (!s->busy)
			session_read(bev, s);
	}
}

/* Hang up once the replies so far have been written. */
static void
session_close(struct lmtp_session *s)
{
	s->closing = 1;
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		session_free(s);
}

static void
session_event(struct bufferevent *bev, short what, void *arg)
{
	struct lmtp_session *s = arg;

	(void)bev;
	if (what & BEV_EVENT_TIMEOUT) {
		log_info("lmtp: timeout client=%s", s->peer);
		reply(s, "421 4.4.2 %s timeout, closing", s->srv->d->cfg->mail_name);
		bufferevent_set_timeouts(s->bev, NULL, NULL);
		session_close(s);
		return;
	}
	if (!s->busy && (s->state == S_DATA || s->state == S_MAIL))
		log_info("lmtp: lost connection client=%s in %s", s->peer,
		         s->state == S_DATA ? "DATA" : "transaction");
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !s->closing) {
		/* a client that only shut down its sending side still reads
		   the replies to what it sent */
		s->eof = 1;
		if (!s->busy)
			session_close(s);
		return;
	}
	session_free(s);
}

/* Between transactions: the moment a stopping server lets a client go. */
static int
maybe_stop(struct lmtp_session *s)
{
	if (!s->srv->closing || s->state == S_MAIL || s->state == S_DATA || s->busy)
		return 0;
	reply(s, "421 4.3.2 %s shutting down", s->srv->d->cfg->mail_name);
	session_close(s);
	return 1;
}

static int
add_target(struct lmtp_session *s, const char *addr, const char *orig)
{
	for (size_t i = 0; i < s->nsr; i++)
		if (strcmp(s->sr[i].addr, addr) == 0)
			return 0;       /* one copy per mailbox, as Postfix does */
	if (s->nsr == s->capsr) {
		size_t n = s->capsr ? 2 * s->capsr : 8;
		struct spool_rcpt *v = realloc(s->sr, n * sizeof(*v));
		if (v == NULL)
			return -1;
		s->sr = v;
		s->capsr = n;
	}
	memset(&s->sr[s->nsr], 0, sizeof(s->sr[0]));
	s->sr[s->nsr].addr = strdup(addr);
	s->sr[s->nsr].orig = strdup(orig);
	s->sr[s->nsr].state = RCPT_PENDING;
	if (!s->sr[s->nsr].addr || !s->sr[s->nsr].orig) {
		free(s->sr[s->nsr].addr);
		free(s->sr[s->nsr].orig);
		return -1;
	}
	s->nsr++;
	return 0;
}

/* ------------------------------------------------------------ commands */

static void
cmd_lhlo(struct lmtp_session *s, const char *arg)
{
	const struct config *cfg = s->srv->d->cfg;

	while (*arg == ' ')
		arg++;
	if (*arg == '\0') {
		reply(s, "501 5.5.4 LHLO needs a host name");
		return;
	}
	txn_reset(s);
	snprintf(s->helo, sizeof(s->helo), "%.*s", (int)strcspn(arg, " "), arg);
	s->state = S_READY;
	reply(s, "250-%s", cfg->mail_name);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %ld", cfg->deliverd.message_size_limit);
	reply(s, "250-8BITMIME");
	reply(s, "250-XQUARANTINE");
	reply(s, "250 ENHANCEDSTATUSCODES");
}

/*
 * XQUARANTINE=<xtext>: the reason into r (SPOOL_REASON_MAX + 1 bytes).
 * NULL, or the 501 reply's text: the reason must be xtext, not empty,
 * not too long, and printable once decoded (it goes into the spool's
 * header and the log).
 */
static const char *
quarantine_param(const char *v, size_t n, char *r)
{
	char t[LINE_MAX_LEN + 1];       /* decoding never makes it longer */
	ssize_t len = lmtp_xtext_decode(v, n, t, sizeof(t));

	if (len < 0)
		return "XQUARANTINE value is not xtext (RFC 3461)";
	if (len == 0)
		return "XQUARANTINE needs a reason";
	if (len > SPOOL_REASON_MAX)
		return "XQUARANTINE reason too long";
	for (ssize_t i = 0; i < len; i++)
		if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f)
			return "XQUARANTINE reason contains control characters";
	memcpy(r, t, (size_t)len + 1);
	return NULL;
}

static void
cmd_mail(struct lmtp_session *s, const char *arg)
{
	char path[ADDR_MAX + 300], lbuf[ADDR_MAX + 8];
	const char *params, *why = NULL;
	struct mailbox m;
	long limit = s->srv->d->cfg->deliverd.message_size_limit;
	char qr[SPOOL_REASON_MAX + 1];
	int quarantined = 0;

	if (s->state == S_GREET) {
		reply(s, "503 5.5.1 say LHLO first");
		return;
	}
	if (maybe_stop(s))      /* stopping: no new transaction */
		return;
	if (s->state != S_READY) {
		reply(s, "503 5.5.1 nested MAIL command");
		return;
	}
	if (strncasecmp(arg, "FROM:", 5) != 0 || lmtp_split_path(arg + 5, path, sizeof(path), &params) < 0) {
		reply(s, "501 5.5.4 syntax: MAIL FROM:<address>");
		return;
	}
	if (addr_parse(path, &m, &why) < 0) {
		reply(s, "501 5.1.7 bad sender address: %s", why);
		return;
	}
	while (*params) {
		size_t n = strcspn(params, " ");
		char p[64];

		snprintf(p, sizeof(p), "%.*s", (int)(n < sizeof(p) ? n : sizeof(p) - 1), params);
		if (n >= 11 && strncasecmp(params, "XQUARANTINE", 11) == 0
		    && (n == 11 || params[11] == '=')) {
			const char *bad = quarantined ? "duplicate XQUARANTINE parameter"
			                  : n == 11 ? "XQUARANTINE needs a reason"
			                  : quarantine_param(params + 12, n - 12, qr);
			if (bad) {
				reply(s, "501 5.5.4 %s", bad);
				return;
			}
			quarantined = 1;
		} else if (strncasecmp(p, "SIZE=", 5) == 0) {
			char *end;
			unsigned long long v = strtoull(p + 5, &end, 10);
			if (p[5] == '\0' || *end != '\0' || n >= sizeof(p)) {
				reply(s, "501 5.5.4 bad SIZE parameter");
				return;
			}
			if (v > (unsigned long long)limit) {
				reply(s, "552 5.3.4 message too big (limit %ld bytes)", limit);
				return;
			}
		} else if (strcasecmp(p, "BODY=7BIT") != 0 && strcasecmp(p, "BODY=8BITMIME") != 0) {
			reply(s, "555 5.5.4 unsupported parameter %s", p);
			return;
		}
		params += n;
		while (*params == ' ')
			params++;
	}
	s->sender = m.null ? strdup("") : lmtp_addr_text(&m);
	if (quarantined)
		s->quarantine = strdup(qr);
	if (s->sender == NULL || (quarantined && s->quarantine == NULL)) {
		txn_reset(s);
		reply(s, "451 4.3.0 out of memory");
		return;
	}
	s->state = S_MAIL;
	reply(s, "250 2.1.0 sender <%s> ok", log_quote(lbuf, sizeof(lbuf), s->sender));
}

static void
cmd_rcpt(struct lmtp_session *s, const char *arg)
{
	struct deliverd *d = s->srv->d;
	char path[ADDR_MAX + 300], why[256], lb[ADDR_MAX + 8];
	const char *params, *perr = NULL;
	struct mailbox m;
	char *orig = NULL;
	size_t first = s->nsr;

	if (s->state != S_MAIL) {
		reply(s, "503 5.5.1 need MAIL before RCPT");
		return;
	}
	if (strncasecmp(arg, "TO:", 3) != 0 || lmtp_split_path(arg + 3, path, sizeof(path), &params) < 0) {
		reply(s, "501 5.5.4 syntax: RCPT TO:<address>");
		return;
	}
	if (*params) {
		reply(s, "555 5.5.4 unsupported RCPT parameter");
		return;
	}
	if (addr_parse(path, &m, &perr) < 0 || m.null) {
		reply(s, "501 5.1.3 bad recipient address: %s", perr ? perr : "empty");
		return;
	}
	if (s->norig >= MAX_RCPT) {
		reply(s, "452 4.5.3 too many recipients");
		return;
	}
	if ((orig = lmtp_addr_text(&m)) == NULL)
		goto oom;
	if (m.domain[0] == '\0' || config_is_local_domain(d->cfg, m.domain)) {
		struct local_target *t = NULL;
		size_t nt = 0;
		enum local_status st;

		why[0] = '\0';
		st = localdb_resolve(d->localdb, m.local, &t, &nt, why, sizeof(why));
		if (st == LOCAL_OK && nt == 0)
			st = LOCAL_UNKNOWN;
		if (st != LOCAL_OK) {
			static const char *const codes[] = {
				[LOCAL_UNKNOWN] = "550 5.1.1", [LOCAL_REFUSED] = "550 5.7.1",
				[LOCAL_LOOP] = "550 5.4.6", [LOCAL_TEMP] = "451 4.3.0",
			};
			const char *code = st <= LOCAL_TEMP ? codes[st] : "451 4.3.0";
			reply(s, "%s <%s>: %s", code, log_quote(lb, sizeof(lb), orig),
			      why[0] ? why : st == LOCAL_UNKNOWN ? "no such user here"
			      : "cannot resolve this recipient now");
			log_reject("lmtp: reject rcpt=%s reply=\"%s\" client=%s",
			           log_quote(lb, sizeof(lb), orig), code, s->peer);
			local_targets_free(t, nt);
			free(orig);
			return;
		}
		for (size_t i = 0; i < nt; i++)
			if (add_target(s, t[i].user ? t[i].user : t[i].addr, orig) < 0) {
				local_targets_free(t, nt);
				goto oom;
			}
		local_targets_free(t, nt);
	} else if (add_target(s, orig, orig) < 0) {
		goto oom;
	}
	{
		char **v = realloc(s->orig, (s->norig + 1) * sizeof(*v));
		if (v == NULL)
			goto oom;
		s->orig = v;
		s->orig[s->norig++] = orig;
	}
	reply(s, "250 2.1.5 recipient <%s> ok", log_quote(lb, sizeof(lb), orig));
	return;
oom:
	while (s->nsr > first) {        /* take back this RCPT's targets */
		s->nsr--;
		free(s->sr[s->nsr].addr);
		free(s->sr[s->nsr].orig);
	}
	free(orig);
	reply(s, "451 4.3.0 out of memory");
}

/* Received: trace header, the first line of the spool's message text. */
static int
write_received(struct lmtp_session *s)
{
	const struct config *cfg = s->srv->d->cfg;
	char date[64], buf[1024], lb[ADDR_MAX + 8], hb[300];
	time_t now = time(NULL);
	struct tm tm;
	int n;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	/* the LHLO name is the client's word: shown only if harmless */
	log_quote(hb, sizeof(hb), s->helo);
	n = snprintf(buf, sizeof(buf), "Received: from %s (%s)\n\tby %s (spfgate deliverd)"
	             " with LMTP id %s", hb, s->peer, cfg->mail_name, spool_writer_id(s->w));
	if (s->norig == 1)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "\n\tfor <%s>",
		              log_quote(lb, sizeof(lb), s->orig[0]));
	/* The pieces are bounded (LHLO 255, address 320, name 255): the date
	 * and the line end always fit, so the header never runs into the next. */
	if (n > (int)sizeof(buf) - 64)
		n = (int)sizeof(buf) - 64;
	n += snprintf(buf + n, sizeof(buf) - (size_t)n, "; %s\n", date);
	s->size = 0;
	return spool_writer_write(s->w, buf, (size_t)n);
}

static void
cmd_data(struct lmtp_session *s)
{
	char err[256];

	if (s->state != S_MAIL) {
		reply(s, "503 5.5.1 need MAIL before DATA");
		return;
	}
	if (s->norig == 0) {
		reply(s, "503 5.5.1 no valid recipients");
		return;
	}
	if ((s->obuf = malloc(OBUF_SIZE)) == NULL) {
		reply(s, "452 4.3.1 out of memory, try again later");
		return;
	}
	s->w = spool_writer_new_held(s->srv->d->spool, s->sender, s->sr, s->nsr, s->quarantine,
	                             err, sizeof(err));
	if (s->w == NULL || write_received(s) < 0) {
		log_err("lmtp: cannot start a spool file: %s client=%s",
		        s->w ? strerror(errno) : err, s->peer);
		reply(s, "452 4.3.1 cannot write to the queue now, try again later");
		if (s->w)
			spool_abort(s->w);
		s->w = NULL;
		free(s->obuf);
		s->obuf = NULL;
		return;
	}
	snprintf(s->id, sizeof(s->id), "%s", spool_writer_id(s->w));
	s->state = S_DATA;
	s->ds = D_BOL;
	s->bad = 0;
	s->olen = 0;
	s->limit = s->srv->d->cfg->deliverd.message_size_limit;
	reply(s, "354 3.0.0 go ahead, end with <CRLF>.<CRLF>");
}

/* ----------------------------------------------------------------- DATA */

static void
obuf_flush(struct lmtp_session *s)
{
	if (s->olen && !s->bad) {
		if (spool_writer_write(s->w, s->obuf, s->olen) < 0) {
			log_err("lmtp: queue write failed: %s id=%s", strerror(errno),
			        spool_writer_id(s->w));
			s->bad |= WRITE_ERR;
		}
	}
	s->olen = 0;
}

static void
emit(struct lmtp_session *s, char c)
{
	if (c == '\0')
		s->bad |= BAD_NUL;
	if (++s->size > (size_t)s->limit)
		s->bad |= TOO_BIG;
	if (s->bad)
		return;         /* refused anyway: keep reading, store nothing */
	s->obuf[s->olen++] = c;
	if (s->olen == OBUF_SIZE)
		obuf_flush(s);
}

/*
 * One byte of DATA through the unstuffing state machine.  Returns 1 when
 * it was the end of the message.  CRLF and a bare LF both end a line (the
 * spool stores LF); a CR not followed by LF spoils the message.
 */
static int
data_byte(struct lmtp_session *s, char c)
{
	switch (s->ds) {
	case D_BOL:
		if (c == '.') {
			s->ds = D_DOT;
			return 0;
		}
		break;
	case D_DOT:
		if (c == '\r') {
			s->ds = D_DOTCR;
			return 0;
		}
		if (c == '\n')
			return 1;
		break;          /* the leading dot is dropped (unstuffed) */
	case D_DOTCR:
		if (c == '\n')
			return 1;
		s->bad |= BAD_CR;
		break;
	case D_CR:
		if (c == '\n') {
			emit(s, '\n');
			s->ds = D_BOL;
			return 0;
		}
		s->bad |= BAD_CR;
		break;
	case D_TEXT:
		break;
	}
	if (c == '\r') {
		s->ds = D_CR;
	} else if (c == '\n') {
		emit(s, '\n');
		s->ds = D_BOL;
	} else {
		emit(s, c);
		s->ds = D_TEXT;
	}
	return 0;
}

/*
 * n bytes of DATA; returns how many were taken (all, unless the end of the
 * message came first: *end set).  Runs of ordinary bytes in mid-line, by
 * far the most of a message, are copied at once.
 */
static size_t
data_run(struct lmtp_session *s, const char *p, size_t n, int *end)
{
	size_t k = 0;

	while (k < n) {
		if (s->ds == D_TEXT) {
			size_t run = 0;

			while (k + run < n && p[k + run] != '\r' && p[k + run] != '\n'
			       && p[k + run] != '\0')
				run++;
			if (run) {
				s->size += run;
				if (s->size > (size_t)s->limit)
					s->bad |= TOO_BIG;
				for (size_t done = 0; !s->bad && done < run; ) {
					size_t room = OBUF_SIZE - s->olen;
					size_t c = run - done < room ? run - done : room;
					memcpy(s->obuf + s->olen, p + k + done, c);
					s->olen += c;
					done += c;
					if (s->olen == OBUF_SIZE)
						obuf_flush(s);
				}
				k += run;
				continue;
			}
		}
		if (data_byte(s, p[k++])) {
			*end = 1;
			break;
		}
	}
	return k;
}

static void commit_done(evutil_socket_t fd, short what, void *arg);

static void
data_end(struct lmtp_session *s)
{
	struct lmtp_server *l = s->srv;
	const char *code = NULL;

	obuf_flush(s);
	if (s->bad & (BAD_NUL | BAD_CR))
		code = "554 5.6.0 message refused: NUL byte or bare CR in the message";
	else if (s->bad & TOO_BIG)
		code = "552 5.3.4 message too big";
	else if (s->bad & WRITE_ERR)
		code = "452 4.3.1 cannot write to the queue now, try again later";
	if (code) {
		char lb[ADDR_MAX + 8];
		log_info("id=%s lmtp: refused from=<%s> size=%zu reply=\"%.9s\" client=%s",
		         spool_writer_id(s->w), log_quote(lb, sizeof(lb), s->sender),
		         s->size, code, s->peer);
		for (size_t i = 0; i < s->norig; i++)
			reply(s, "%s", code);
		txn_reset(s);
		return;
	}
	if (s->job.done == NULL
	    && (s->job.done = event_new(s->srv->d->base, -1, 0, commit_done, s)) == NULL) {
		for (size_t i = 0; i < s->norig; i++)
			reply(s, "452 4.3.1 cannot commit now, try again later");
		txn_reset(s);
		return;
	}
	s->job.w = s->w;
	s->job.arg = s;
	s->w = NULL;
	free(s->obuf);
	s->obuf = NULL;
	s->busy = 1;
	bufferevent_disable(s->bev, EV_READ);
	commit_pool_submit(l->commits, &s->job);
}

static void
commit_done(evutil_socket_t fd, short what, void *arg)
{
	struct lmtp_session *s = arg;
	char lb[ADDR_MAX + 8];
	const char *id = s->id;
	int ok = s->job.rc == 0;

	(void)fd;
	(void)what;
	s->busy = 0;
	if (ok) {
		char hb[300];
		log_info("id=%s from=<%s> size=%zu nrcpt=%zu client=%s helo=%s", id,
		         log_quote(lb, sizeof(lb), s->sender), s->size, s->nsr, s->peer,
		         log_quote(hb, sizeof(hb), s->helo));
		if (s->quarantine) {
			/* in hold/ already: the scheduler never sees it */
			char qb[SPOOL_REASON_MAX * 4 + 8];
			log_info("id=%s held reason=%s", id,
			         log_quote(qb, sizeof(qb), s->quarantine));
		} else {
			sched_submit(s->srv->d->sched, id);
		}
	} else {
		log_err("id=%s lmtp: queue commit failed: %s from=<%s> client=%s", id, s->job.err,
		        log_quote(lb, sizeof(lb), s->sender), s->peer);
	}
	if (s->dead) {
		s->state = S_READY;
		session_free(s);
		return;
	}
	for (size_t i = 0; i < s->norig; i++) {
		if (ok)
			reply(s, "250 2.0.0 <%s> Ok: %s as %s",
			      log_quote(lb, sizeof(lb), s->orig[i]),
			      s->quarantine ? "held" : "queued", id);
		else
			reply(s, "452 4.3.1 <%s> cannot write to the queue now, try again later",
			      log_quote(lb, sizeof(lb), s->orig[i]));
	}
	txn_reset(s);
	if (maybe_stop(s))
		return;
	if (!s->eof && !s->throttled)
		bufferevent_enable(s->bev, EV_READ);
	session_read(s->bev, s);        /* pipelined commands already here */
	if (s->eof && !s->closing && !s->busy)
		session_close(s);
}

/* --------------------------------------------------------------- input */

static void
command(struct lmtp_session *s, char *line, size_t len)
{
	char *arg;
	size_t vl;

	if (memchr(line, '\0', len)) {
		reply(s, "500 5.5.2 NUL byte in command");
		s->errors++;
		return;
	}
	vl = strcspn(line, " ");
	arg = line + vl + (line[vl] == ' ');
	if (vl == 4 && strncasecmp(line, "LHLO", 4) == 0)
		cmd_lhlo(s, arg);
	else if (vl == 4 && strncasecmp(line, "MAIL", 4) == 0)
		cmd_mail(s, arg);
	else if (vl == 4 && strncasecmp(line, "RCPT", 4) == 0)
		cmd_rcpt(s, arg);
	else if (vl == 4 && strncasecmp(line, "DATA", 4) == 0 && *arg == '\0')
		cmd_data(s);
	else if (vl == 4 && strncasecmp(line, "RSET", 4) == 0) {
		txn_reset(s);
		reply(s, "250 2.0.0 ok");
		maybe_stop(s);
	} else if (vl == 4 && strncasecmp(line, "NOOP", 4) == 0)
		reply(s, "250 2.0.0 ok");
	else if (vl == 4 && strncasecmp(line, "QUIT", 4) == 0) {
		reply(s, "221 2.0.0 %s closing", s->srv->d->cfg->mail_name);
		session_close(s);
	} else if (vl == 4 && strncasecmp(line, "VRFY", 4) == 0)
		reply(s, "252 2.5.2 cannot verify, but will accept and try");
	else if (vl == 4 && strncasecmp(line, "HELP", 4) == 0)
		reply(s, "214 2.0.0 commands: LHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
	else if (vl == 4 && (strncasecmp(line, "HELO", 4) == 0 || strncasecmp(line, "EHLO", 4) == 0)) {
		reply(s, "500 5.5.1 this is LMTP: say LHLO");
		s->errors++;
	} else {
		reply(s, "500 5.5.2 command not recognised");
		s->errors++;
	}
	if (s->errors >= MAX_ERRORS && !s->closing) {
		reply(s, "421 4.7.0 too many errors, closing");
		session_close(s);
	}
}

static void
session_read(struct bufferevent *bev, void *arg)
{
	struct lmtp_session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!s->busy && !s->closing && evbuffer_get_length(in) > 0) {
		if (s->state == S_DATA) {
			struct evbuffer_iovec v[8];
			int n = evbuffer_peek(in, -1, NULL, v, 8), end = 0;
			size_t used = 0;

			for (int i = 0; i < n && i < 8 && !end; i++)
				used += data_run(s, v[i].iov_base, v[i].iov_len, &end);
			evbuffer_drain(in, used);
			if (end)
				data_end(s);
			else
				obuf_flush(s);
			continue;
		}
		if (s->skipping) {
			struct evbuffer_ptr p = evbuffer_search(in, "\n", 1, NULL);
			evbuffer_drain(in, p.pos < 0 ? evbuffer_get_length(in) : (size_t)p.pos + 1);
			if (p.pos >= 0)
				s->skipping = 0;
			continue;
		}
		if (evbuffer_get_length(bufferevent_get_output(bev)) > OUT_HIGH) {
			s->throttled = 1;
			bufferevent_disable(bev, EV_READ);
			break;
		}
		size_t len;
		char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
		if (line == NULL) {
			if (evbuffer_get_length(in) > LINE_MAX_LEN) {
				reply(s, "500 5.5.2 line too long");
				s->skipping = 1;
				s->errors++;
			}
			break;
		}
		if (len > LINE_MAX_LEN) {
			reply(s, "500 5.5.2 line too long");
			s->errors++;
		} else {
			command(s, line, len);
		}
		free(line);
	}
}

/* ------------------------------------------------- for lmtp_server.c */

void
lmtp_session_start(struct lmtp_server *l, int fd, const struct sockaddr *sa)
{
	struct lmtp_session *s;
	struct timeval tv = { CMD_TIMEOUT, 0 };

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		evutil_closesocket(fd);
		return;
	}
	s->srv = l;
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
		char a[INET6_ADDRSTRLEN] = "?";
		int one = 1;
		const void *ip = sa->sa_family == AF_INET
		    ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
		    : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
		inet_ntop(sa->sa_family, ip, a, sizeof(a));
		snprintf(s->peer, sizeof(s->peer), "[%s]", a);
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	} else {
		snprintf(s->peer, sizeof(s->peer), "local");
	}
	s->bev = bufferevent_socket_new(l->d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		evutil_closesocket(fd);
		free(s);
		return;
	}
	s->next = l->sessions;
	if (l->sessions)
		l->sessions->prev = s;
	l->sessions = s;
	l->nsessions++;
	bufferevent_setcb(s->bev, session_read, session_drained, session_event, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, OUT_LOW, 0);
	bufferevent_set_timeouts(s->bev, &tv, &tv);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	reply(s, "220 %s LMTP spfgate deliverd ready", l->d->cfg->mail_name);
}

int
lmtp_session_stop(struct lmtp_session *s)
{
	return s->closing ? 0 : maybe_stop(s);
}

int
lmtp_session_busy(const struct lmtp_session *s)
{
	return s->busy;
}

struct lmtp_session *
lmtp_session_next(const struct lmtp_session *s)
{
	return s->next;
}

/* Only once no commit is running (the commit threads are joined). */
void
lmtp_session_drop(struct lmtp_session *s)
{
	s->busy = 0;
	session_free(s);
}
