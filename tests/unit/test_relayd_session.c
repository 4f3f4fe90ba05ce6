/*
 * Unit tests: relayd's SMTP session (relayd/smtp_session.c) against a
 * scripted filter (this file defines the filter.h functions, so
 * relayd/filter.c is not linked) and a fake LMTP server on a unix
 * socket in the same event loop.  Covers what the built-in filter never
 * does: refusals at eom, header/body changes, and the envelope replay
 * after a filter changed the sender or recipients.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "relayd.h"
#include "filter.h"
#include "log.h"

/* ------------------------------------------------- scripted filter */

static const char *rcpt_reject;         /* substring: refuse such RCPTs */
static int reject_close;                /* ... with a 421 that ends the session */
static struct filter_reply eom_reply;
static struct filter_mod eom_mods[8];
static size_t neom_mods;
static int filter_ends, filter_closed;

struct filter_session { int dummy; };

const char *
filter_reply_line(const struct filter_reply *r, char *buf, size_t len)
{
	snprintf(buf, len, "%d %s %s", r->code, r->enh, r->text);
	return buf;
}

struct filter_session *
filter_open(const struct config *cfg, struct event_base *base, struct filter_conn *conn)
{
	(void)cfg; (void)base; (void)conn;
	return calloc(1, sizeof(struct filter_session));
}

static void
go(filter_cb cb, void *arg)
{
	struct filter_reply r = { .action = FILTER_CONTINUE };
	cb(arg, &r);
}

void filter_connect(struct filter_session *f, filter_cb cb, void *arg) { (void)f; go(cb, arg); }
void filter_helo(struct filter_session *f, const char *h, filter_cb cb, void *arg)
{ (void)f; (void)h; go(cb, arg); }
void filter_mail(struct filter_session *f, const char *s, const char *p, filter_cb cb, void *arg)
{ (void)f; (void)s; (void)p; go(cb, arg); }
void filter_data(struct filter_session *f, filter_cb cb, void *arg) { (void)f; go(cb, arg); }

void
filter_rcpt(struct filter_session *f, const char *rcpt, const char *params, filter_cb cb, void *arg)
{
	(void)f; (void)params;
	if (rcpt_reject && strstr(rcpt, rcpt_reject)) {
		struct filter_reply r = { .action = FILTER_REPLY, .code = 550, .enh = "5.7.1" };
		snprintf(r.text, sizeof(r.text), "scripted refusal");
		if (reject_close) {
			r.code = 421;
			snprintf(r.enh, sizeof(r.enh), "4.7.0");
			r.close = 1;
		}
		cb(arg, &r);
		return;
	}
	go(cb, arg);
}

void
filter_eom(struct filter_session *f, struct msgbuf *msg, filter_eom_cb cb, void *arg)
{
	struct filter_mods m = { eom_mods, neom_mods };
	(void)f; (void)msg;
	cb(arg, &eom_reply, &m);
}

void filter_end(struct filter_session *f) { (void)f; filter_ends++; }
void filter_close(struct filter_session *f) { filter_closed++; free(f); }

/* ------------------------------------------------- fake LMTP server */

static char transcript[65536];          /* what deliverd was told */
static size_t tlen;
static int lmtp_rcpts, lmtp_in_data;
static const char *data_tempfail;       /* RCPT with this: 452 after DATA */
static int tempfail_idx[16], ntempfail;

static void
record(const char *p, size_t n)
{
	if (tlen + n < sizeof(transcript)) {
		memcpy(transcript + tlen, p, n);
		tlen += n;
		transcript[tlen] = '\0';
	}
}

static void
lmtp_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(bev);
	char *line;
	size_t len;

	(void)arg;
	for (;;) {
		if (lmtp_in_data) {
			struct evbuffer_ptr e = evbuffer_search(in, "\r\n.\r\n", 5, NULL);
			if (e.pos < 0)
				return;
			char *d = malloc((size_t)e.pos + 5);
			evbuffer_remove(in, d, (size_t)e.pos + 5);
			record("<DATA>", 6);
			record(d, (size_t)e.pos + 2);
			record("</DATA>\n", 8);
			free(d);
			lmtp_in_data = 0;
			for (int i = 0; i < lmtp_rcpts; i++) {
				int tf = 0;
				for (int k = 0; k < ntempfail; k++)
					tf |= tempfail_idx[k] == i;
				evbuffer_add_printf(out, tf ? "452 4.3.1 full\r\n" : "250 2.0.0 ok\r\n");
			}
			lmtp_rcpts = 0;
			ntempfail = 0;
			continue;
		}
		if ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF_STRICT)) == NULL)
			return;
		record(line, len);
		record("\n", 1);
		if (strncmp(line, "LHLO", 4) == 0)
			evbuffer_add_printf(out, "250-fake\r\n250 PIPELINING\r\n");
		else if (strncmp(line, "MAIL", 4) == 0 || strncmp(line, "RSET", 4) == 0) {
			lmtp_rcpts = 0;
			ntempfail = 0;
			evbuffer_add_printf(out, "250 2.1.0 ok\r\n");
		} else if (strncmp(line, "RCPT", 4) == 0) {
			if (strstr(line, "unknown")) {
				evbuffer_add_printf(out, "550 5.1.1 <x>: no such user here\r\n");
			} else {
				if (data_tempfail && strstr(line, data_tempfail) && ntempfail < 16)
					tempfail_idx[ntempfail++] = lmtp_rcpts;
				lmtp_rcpts++;
				evbuffer_add_printf(out, "250 2.1.5 ok\r\n");
			}
		} else if (strcmp(line, "DATA") == 0) {
			if (lmtp_rcpts) {
				lmtp_in_data = 1;
				evbuffer_add_printf(out, "354 go\r\n");
			} else {
				evbuffer_add_printf(out, "503 5.5.1 no valid recipients\r\n");
			}
		} else
			evbuffer_add_printf(out, "500 what\r\n");
		free(line);
	}
}

static struct bufferevent *lmtp_conns[16];     /* freed at teardown */

static void
lmtp_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what; (void)arg;
	for (int i = 0; i < 16; i++)
		if (lmtp_conns[i] == bev)
			lmtp_conns[i] = NULL;
	bufferevent_free(bev);
}

static void
lmtp_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int n, void *arg)
{
	struct bufferevent *bev = bufferevent_socket_new(arg, fd, BEV_OPT_CLOSE_ON_FREE);
	(void)l; (void)sa; (void)n;
	lmtp_rcpts = lmtp_in_data = 0;
	for (int i = 0; i < 16; i++)
		if (lmtp_conns[i] == NULL) {
			lmtp_conns[i] = bev;
			break;
		}
	bufferevent_setcb(bev, lmtp_read, NULL, lmtp_event, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	evbuffer_add_printf(bufferevent_get_output(bev), "220 fake LMTP\r\n");
}

/* ------------------------------------------------------- harness */

static struct relayd rd;
static struct evconnlistener *lmtp_listener;
static char sockpath[108];
static int cfd = -1;                    /* the SMTP client's end */
static char rbuf[65536];
static size_t rlen;

static int
setup(void **state)
{
	char err[256];
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct sockaddr_in peer = { .sin_family = AF_INET };
	int sv[2];

	(void)state;
	alarm(20);              /* a stuck loop fails the test, never hangs it */
	memset(&rd, 0, sizeof(rd));
	rd.cfg = calloc(1, sizeof(*rd.cfg));
	assert_int_equal(config_load(rd.cfg, "/dev/null", err, sizeof(err)), 0);
	free(rd.cfg->mail_name);
	rd.cfg->mail_name = strdup("mx.example.test");
	snprintf(sockpath, sizeof(sockpath), "/tmp/rdsess.%d.sock", (int)getpid());
	unlink(sockpath);
	free(rd.cfg->relayd.lmtp);
	rd.cfg->relayd.lmtp = malloc(strlen(sockpath) + 6);
	sprintf(rd.cfg->relayd.lmtp, "unix:%s", sockpath);
	rd.base = event_base_new();
	strcpy(sun.sun_path, sockpath);
	lmtp_listener = evconnlistener_new_bind(rd.base, lmtp_accept, rd.base,
	                                        LEV_OPT_CLOSE_ON_FREE, 16,
	                                        (struct sockaddr *)&sun, sizeof(sun));
	assert_non_null(lmtp_listener);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	cfd = sv[0];
	inet_pton(AF_INET, "192.0.2.1", &peer.sin_addr);
	evutil_make_socket_nonblocking(sv[1]);
	session_accept(&rd, sv[1], (struct sockaddr *)&peer, sizeof(peer));
	tlen = 0;
	transcript[0] = '\0';
	rlen = 0;
	rcpt_reject = NULL;
	reject_close = 0;
	data_tempfail = NULL;
	memset(&eom_reply, 0, sizeof(eom_reply));
	neom_mods = 0;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (cfd >= 0)
		close(cfd);
	cfd = -1;
	/* let the session notice and go */
	for (int i = 0; i < 50 && rd.nsessions; i++)
		event_base_loop(rd.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	sessions_free_all(&rd);
	for (int i = 0; i < 16; i++)
		if (lmtp_conns[i]) {
			bufferevent_free(lmtp_conns[i]);
			lmtp_conns[i] = NULL;
		}
	evconnlistener_free(lmtp_listener);
	event_base_free(rd.base);
	config_free(rd.cfg);
	free(rd.cfg);
	unlink(sockpath);
	alarm(0);
	return 0;
}

/* Send text, run the loop until n complete replies came; returns them. */
static const char *
converse(const char *text, int n)
{
	static char out[65536];
	size_t got = 0;

	if (text && *text)
		assert_int_equal(write(cfd, text, strlen(text)), (ssize_t)strlen(text));
	out[0] = '\0';
	for (int done = 0; done < n; ) {
		char *eol;
		while ((eol = memmem(rbuf, rlen, "\r\n", 2)) != NULL) {
			size_t l = (size_t)(eol - rbuf) + 2;
			memcpy(out + got, rbuf, l);
			got += l;
			out[got] = '\0';
			if (l >= 4 && rbuf[3] == ' ')
				done++;
			memmove(rbuf, rbuf + l, rlen - l);
			rlen -= l;
			if (done == n)
				return out;
		}
		event_base_loop(rd.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		ssize_t r = recv(cfd, rbuf + rlen, sizeof(rbuf) - rlen - 1, MSG_DONTWAIT);
		if (r > 0)
			rlen += (size_t)r;
		else if (r == 0)
			fail_msg("session closed; got so far: %s", out);
		else
			event_base_loop(rd.base, EVLOOP_ONCE);
	}
	return out;
}

static void
start(const char *rcpts)
{
	char buf[1024];
	int n = 3;

	assert_non_null(strstr(converse("", 1), "220 mx.example.test"));
	snprintf(buf, sizeof(buf), "EHLO client.test\r\nMAIL FROM:<a@example.test>\r\n");
	for (const char *p = rcpts; *p; ) {
		size_t l = strcspn(p, ",");
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "RCPT TO:<%.*s>\r\n", (int)l, p);
		n++;
		p += l + (p[l] == ',');
	}
	strcat(buf, "DATA\r\n");
	converse(buf, n);
}

/* ---------------------------------------------------------- tests */

static void
plain_handoff(void **state)
{
	(void)state;
	start("b@example.test");
	const char *r = converse("Subject: hi\r\n\r\n..dotted\r\nbody\r\n.\r\n", 1);
	assert_non_null(strstr(r, "250 2.0.0 Ok: queued as"));
	assert_non_null(strstr(transcript, "LHLO mx.example.test\nMAIL FROM:<a@example.test>\n"
	                                   "RCPT TO:<b@example.test>\nDATA\n<DATA>Received: from "
	                                   "client.test ([192.0.2.1])\r\n\tby mx.example.test"));
	assert_non_null(strstr(transcript, "for <b@example.test>; "));
	assert_non_null(strstr(transcript, "\r\nSubject: hi\r\n\r\n..dotted\r\nbody\r\n</DATA>"));
	assert_non_null(strstr(converse("QUIT\r\n", 1), "221"));
}

static void
rcpt_refusals(void **state)
{
	(void)state;
	rcpt_reject = "evil";
	assert_non_null(strstr(converse("", 1), "220"));
	const char *r = converse("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@evil.test>\r\n"
	                         "RCPT TO:<unknown@example.test>\r\nRCPT TO:<ok@example.test>\r\n", 5);
	assert_non_null(strstr(r, "550 5.7.1 scripted refusal\r\n"));
	assert_non_null(strstr(r, "550 5.1.1 <x>: no such user here\r\n"));
	assert_non_null(strstr(r, "250 2.1.5 Ok\r\n"));
	assert_null(strstr(transcript, "evil"));        /* never reached deliverd */
}

static void
eom_refusal(void **state)
{
	(void)state;
	eom_reply.action = FILTER_REPLY;
	eom_reply.code = 554;
	snprintf(eom_reply.enh, sizeof(eom_reply.enh), "5.7.1");
	snprintf(eom_reply.text, sizeof(eom_reply.text), "no thanks");
	start("b@example.test");
	assert_non_null(strstr(converse("x\r\n.\r\n", 1), "554 5.7.1 no thanks"));
	converse("NOOP\r\n", 1);        /* the RSET to deliverd went before this */
	assert_null(strstr(transcript, "<DATA>"));
	assert_non_null(strstr(transcript, "RSET\n"));
	assert_true(filter_ends >= 1);
}

static void
discard(void **state)
{
	(void)state;
	eom_reply.action = FILTER_DISCARD;
	start("b@example.test");
	assert_non_null(strstr(converse("x\r\n.\r\n", 1), "250 2.0.0 Ok: discarded"));
	assert_null(strstr(transcript, "<DATA>"));
}

static void
modifications(void **state)
{
	static const unsigned char body[] = "replaced\n.dot\n";
	(void)state;
	eom_mods[0] = (struct filter_mod){ .type = FM_INSHDR, .index = 1,
	                                   .name = "X-Checked", .value = " yes" };
	eom_mods[1] = (struct filter_mod){ .type = FM_CHGHDR, .index = 1,
	                                   .name = "Subject", .value = " [tag] hi" };
	eom_mods[2] = (struct filter_mod){ .type = FM_CHGFROM, .value = "<new@sender.test>" };
	eom_mods[3] = (struct filter_mod){ .type = FM_DELRCPT, .value = "<b@example.test>" };
	eom_mods[4] = (struct filter_mod){ .type = FM_ADDRCPT, .value = "<added@example.test>" };
	eom_mods[5] = (struct filter_mod){ .type = FM_REPLBODY, .body = body,
	                                   .body_len = sizeof(body) - 1 };
	neom_mods = 6;
	start("b@example.test,c@example.test");
	assert_non_null(strstr(converse("Subject: hi\r\n\r\nold\r\n.\r\n", 1), "250 2.0.0 Ok"));
	const char *replay = strstr(transcript, "RSET\nMAIL FROM:<new@sender.test>\n"
	                                        "RCPT TO:<c@example.test>\n"
	                                        "RCPT TO:<added@example.test>\nDATA\n<DATA>");
	assert_non_null(replay);
	assert_non_null(strstr(replay, "\r\nX-Checked: yes\r\nSubject: [tag] hi\r\n\r\n"
	                               "replaced\r\n..dot\r\n</DATA>"));
}

static void
every_recipient_removed(void **state)
{
	(void)state;
	eom_mods[0] = (struct filter_mod){ .type = FM_DELRCPT, .value = "b@example.test" };
	neom_mods = 1;
	start("b@example.test");
	assert_non_null(strstr(converse("x\r\n.\r\n", 1), "250 2.0.0 Ok: no recipients left"));
	assert_null(strstr(transcript, "<DATA>"));
}

static void
mixed_data_replies_tempfail(void **state)
{
	(void)state;
	data_tempfail = "full@";
	start("b@example.test,full@example.test");
	assert_non_null(strstr(converse("x\r\n.\r\n", 1), "451 4.3.0"));
	/* the session goes on */
	assert_non_null(strstr(converse("NOOP\r\n", 1), "250"));
}

static void
filter_ends_session(void **state)
{
	char b[256];
	ssize_t r = -1;

	(void)state;
	rcpt_reject = "evil";
	reject_close = 1;
	assert_non_null(strstr(converse("", 1), "220"));
	const char *out = converse("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@evil.test>\r\n"
	                           "NOOP\r\n", 3);
	assert_non_null(strstr(out, "421 4.7.0 scripted refusal\r\n"));
	/* no answer to the NOOP: the session is over (bounded loop) */
	for (int i = 0; i < 1000 && r != 0; i++) {
		event_base_loop(rd.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		r = recv(cfd, b, sizeof(b), MSG_DONTWAIT);
		assert_true(r <= 0);
	}
	assert_int_equal(r, 0);
	assert_int_equal(rd.nsessions, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(plain_handoff, setup, teardown),
		cmocka_unit_test_setup_teardown(rcpt_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(eom_refusal, setup, teardown),
		cmocka_unit_test_setup_teardown(discard, setup, teardown),
		cmocka_unit_test_setup_teardown(modifications, setup, teardown),
		cmocka_unit_test_setup_teardown(every_recipient_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(mixed_data_replies_tempfail, setup, teardown),
		cmocka_unit_test_setup_teardown(filter_ends_session, setup, teardown),
	};
	log_open("test_relayd_session", LOG_TARGET_STDERR);
	return cmocka_run_group_tests_name("relayd_session", tests, NULL, NULL);
}
