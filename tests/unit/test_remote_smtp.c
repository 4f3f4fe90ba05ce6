/*
 * Unit tests of deliverd's SMTP client protocol without a network: the
 * "server" is the other end of a socketpair, its replies written in
 * advance (they fit in the socket buffer), and what the client sent is
 * read back and compared byte for byte.  Covers reply parsing (multi-line,
 * enhanced codes given or derived, sanitizing, malformed replies, 421),
 * EHLO capabilities and the HELO fallback, and whole transactions:
 * pipelined and not, per-recipient results, SIZE/BODY parameters,
 * dot-stuffing and CRLF on the wire, refusals at MAIL and DATA, a
 * connection lost after the final dot.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtp_client.h"

struct peer {
	int sv[2];
	struct smtp_timeouts to;
	struct smtp_session s;
	char msgpath[64];
	int msgfd;
};

static int setup(void **state)
{
	struct peer *p = calloc(1, sizeof *p);
	if (p == NULL || socketpair(AF_UNIX, SOCK_STREAM, 0, p->sv) < 0)
		return -1;
	smtp_timeouts_init(&p->to, 2);
	p->s.io.fd = p->sv[0];
	fcntl(p->sv[0], F_SETFL, O_NONBLOCK);   /* as smtp_io_connect leaves it */
	p->s.to = &p->to;
	snprintf(p->s.host, sizeof p->s.host, "mx.test");
	snprintf(p->s.relay, sizeof p->s.relay, "mx.test[192.0.2.1]:25");
	p->s.id = "T1";
	p->msgfd = -1;
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	struct peer *p = *state;
	close(p->sv[0]);
	close(p->sv[1]);
	if (p->msgfd >= 0) {
		close(p->msgfd);
		unlink(p->msgpath);
	}
	free(p);
	return 0;
}

static void server_says(struct peer *p, const char *text)
{
	size_t n = strlen(text);
	assert_int_equal(write(p->sv[1], text, n), (ssize_t)n);
}

/* Everything the client has sent so far. */
static char *client_sent(struct peer *p)
{
	static char buf[65536];
	size_t n = 0;

	fcntl(p->sv[1], F_SETFL, O_NONBLOCK);
	for (;;) {
		ssize_t r = read(p->sv[1], buf + n, sizeof buf - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	return buf;
}

static void message(struct peer *p, const char *text)
{
	strcpy(p->msgpath, "/tmp/test_remote_smtp.XXXXXX");
	p->msgfd = mkstemp(p->msgpath);
	assert_true(p->msgfd >= 0);
	assert_int_equal(write(p->msgfd, text, strlen(text)), (ssize_t)strlen(text));
}

static void test_reply_parsing(void **state)
{
	struct peer *p = *state;
	struct smtp_reply r;

	server_says(p, "250-first line\r\n250-second\r\n250 2.1.0 last\r\n");
	assert_int_equal(smtp_read_reply(&p->s, 2, &r), 0);
	assert_int_equal(r.code, 250);
	/* the code is a line's first word only on the first line */
	assert_string_equal(r.text, "250 first line second 2.1.0 last");
	assert_string_equal(r.dsn, "2.0.0");

	server_says(p, "550 5.1.1 <x@y>: no\001such\033[1muser\xff\r\n");
	assert_int_equal(smtp_read_reply(&p->s, 2, &r), 0);
	assert_string_equal(r.dsn, "5.1.1");
	assert_string_equal(r.text, "550 5.1.1 <x@y>: no?such?[1muser?");

	server_says(p, "451 try later\r\n");
	assert_int_equal(smtp_read_reply(&p->s, 2, &r), 0);
	assert_string_equal(r.dsn, "4.0.0");

	/* an enhanced code of the wrong class is not believed */
	server_says(p, "250 5.1.1 confused\r\n");
	assert_int_equal(smtp_read_reply(&p->s, 2, &r), 0);
	assert_string_equal(r.dsn, "2.0.0");

	server_says(p, "354\r\n");
	assert_int_equal(smtp_read_reply(&p->s, 2, &r), 0);
	assert_int_equal(r.code, 354);
	assert_string_equal(r.text, "354");
	assert_int_equal(p->s.io.broken, 0);

	server_says(p, "421 4.3.2 shutting down\r\n");
	assert_int_equal(smtp_read_reply(&p->s, 2, &r), 0);
	assert_int_equal(p->s.io.broken, 1);       /* never reused */
}

static void test_malformed_and_lost(void **state)
{
	struct peer *p = *state;
	struct smtp_reply r;

	server_says(p, "hello there\r\n");
	assert_int_equal(smtp_read_reply(&p->s, 2, &r), -1);
	assert_int_equal(r.code, 0);
	assert_string_equal(r.dsn, "4.4.2");
	assert_non_null(strstr(r.text, "malformed reply"));
	assert_int_equal(p->s.io.broken, 1);
}

static void test_lost_connection(void **state)
{
	struct peer *p = *state;
	struct smtp_reply r;

	server_says(p, "250-partial\r\n");
	shutdown(p->sv[1], SHUT_WR);
	assert_int_equal(smtp_read_reply(&p->s, 2, &r), -1);
	assert_string_equal(r.dsn, "4.4.2");
	assert_non_null(strstr(r.text, "connection closed by the server"));
}

static void test_timeout(void **state)
{
	struct peer *p = *state;
	struct smtp_reply r;

	assert_int_equal(smtp_read_reply(&p->s, 1, &r), -1);
	assert_non_null(strstr(r.text, "timed out"));
}

static void test_ehlo_capabilities(void **state)
{
	struct peer *p = *state;
	struct smtp_reply r;

	server_says(p, "250-mx.test hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	               "250-STARTTLS\r\n250-AUTH=LOGIN\r\n250-auth CRAM-MD5 plain login\r\n"
	               "250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n");
	assert_int_equal(smtp_hello(&p->s, "relay.test", &r), 0);
	assert_string_equal(client_sent(p), "EHLO relay.test\r\n");
	assert_int_equal(p->s.esmtp, 1);
	assert_int_equal(p->s.caps, SMTP_CAP_PIPELINING | SMTP_CAP_SIZE | SMTP_CAP_STARTTLS |
	                 SMTP_CAP_AUTH | SMTP_CAP_ENHANCED | SMTP_CAP_8BITMIME);
	assert_int_equal(p->s.size_max, 10240000);
	assert_int_equal(p->s.auth_mechs, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
}

static void test_helo_fallback(void **state)
{
	struct peer *p = *state;
	struct smtp_reply r;

	server_says(p, "502 5.5.2 EHLO not implemented\r\n250 mx.test\r\n");
	assert_int_equal(smtp_hello(&p->s, "relay.test", &r), 0);
	assert_string_equal(client_sent(p), "EHLO relay.test\r\nHELO relay.test\r\n");
	assert_int_equal(p->s.esmtp, 0);
	assert_int_equal(p->s.caps, 0);
}

static void test_auth_plain_and_login(void **state)
{
	struct peer *p = *state;
	struct smtp_reply r;

	p->s.auth_mechs = SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN;
	server_says(p, "235 2.7.0 ok\r\n");
	assert_int_equal(smtp_auth(&p->s, "alice", "pw", &r), 0);
	/* base64 of "\0alice\0pw" */
	assert_string_equal(client_sent(p), "AUTH PLAIN AGFsaWNlAHB3\r\n");

	p->s.auth_mechs = SMTP_AUTH_LOGIN;
	server_says(p, "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n535 5.7.8 no\r\n");
	assert_int_equal(smtp_auth(&p->s, "alice", "pw", &r), -1);
	assert_int_equal(r.code, 535);
	assert_string_equal(client_sent(p), "AUTH LOGIN\r\nYWxpY2U=\r\ncHc=\r\n");
}

static const char *const RCPTS[] = { "a@x.test", "b@x.test", "c@x.test", "d@x.test" };

static void test_pipelined_transaction(void **state)
{
	struct peer *p = *state;
	struct remote_result res[4];
	static const char msg[] = "Subject: t\n\n.\n..x\nmid.dle\ncaf\xc3\xa9\nno newline";
	message(p, msg);
	struct remote_job job = { .domain = "x.test", .sender = "s@y.test", .rcpts = RCPTS,
	                          .nrcpt = 4, .fd = p->msgfd, .off = 0,
	                          .len = (off_t)strlen(msg), .id = "T1" };

	p->s.caps = SMTP_CAP_PIPELINING | SMTP_CAP_SIZE | SMTP_CAP_8BITMIME;
	server_says(p, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n"
	               "552 too many recipients\r\n250 2.1.5 ok\r\n354 go\r\n"
	               "250 2.0.0 queued as X\r\n");
	smtp_transaction(&p->s, &job, res);
	char want[512];
	snprintf(want, sizeof want,
	         "MAIL FROM:<s@y.test> SIZE=%zu BODY=8BITMIME\r\n"
	         "RCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\n"
	         "RCPT TO:<d@x.test>\r\nDATA\r\n"
	         "Subject: t\r\n\r\n..\r\n...x\r\nmid.dle\r\ncaf\xc3\xa9\r\nno newline\r\n.\r\n",
	         strlen(msg) + 6 + 2);
	assert_string_equal(client_sent(p), want);
	assert_int_equal(res[0].status, REMOTE_DONE);
	assert_string_equal(res[0].dsn, "2.0.0");
	assert_string_equal(res[0].text, "250 2.0.0 queued as X");
	assert_string_equal(res[0].relay, "mx.test[192.0.2.1]:25");
	assert_int_equal(res[1].status, REMOTE_FAIL);
	assert_string_equal(res[1].dsn, "5.1.1");
	/* 552 to RCPT is "too many recipients": temporary (RFC 5321) */
	assert_int_equal(res[2].status, REMOTE_DEFER);
	assert_string_equal(res[2].dsn, "4.5.3");
	assert_int_equal(res[3].status, REMOTE_DONE);
	assert_int_equal(p->s.io.broken, 0);
}

static void test_mail_refused_without_pipelining(void **state)
{
	struct peer *p = *state;
	struct remote_result res[2];
	message(p, "x\n");
	struct remote_job job = { .domain = "x.test", .sender = "", .rcpts = RCPTS,
	                          .nrcpt = 2, .fd = p->msgfd, .off = 0, .len = 2, .id = "T1" };

	server_says(p, "553 5.1.8 bad sender\r\n");
	smtp_transaction(&p->s, &job, res);
	assert_string_equal(client_sent(p), "MAIL FROM:<>\r\n");
	for (int i = 0; i < 2; i++) {
		assert_int_equal(res[i].status, REMOTE_FAIL);
		assert_string_equal(res[i].dsn, "5.1.8");
	}
}

static void test_size_over_limit_not_sent(void **state)
{
	struct peer *p = *state;
	struct remote_result res[1];
	message(p, "0123456789\n");
	struct remote_job job = { .domain = "x.test", .sender = "s@y.test", .rcpts = RCPTS,
	                          .nrcpt = 1, .fd = p->msgfd, .off = 0, .len = 11, .id = "T1" };

	p->s.caps = SMTP_CAP_SIZE;
	p->s.size_max = 11;                 /* 12 bytes as sent */
	smtp_transaction(&p->s, &job, res);
	assert_string_equal(client_sent(p), "");
	assert_int_equal(res[0].status, REMOTE_FAIL);
	assert_string_equal(res[0].dsn, "5.3.4");
}

static void test_data_refused(void **state)
{
	struct peer *p = *state;
	struct remote_result res[2];
	message(p, "x\n");
	struct remote_job job = { .domain = "x.test", .sender = "s@y.test", .rcpts = RCPTS,
	                          .nrcpt = 2, .fd = p->msgfd, .off = 0, .len = 2, .id = "T1" };

	server_says(p, "250 ok\r\n250 ok\r\n550 5.1.1 no\r\n554 5.6.0 no thanks\r\n");
	smtp_transaction(&p->s, &job, res);
	assert_string_equal(client_sent(p), "MAIL FROM:<s@y.test>\r\nRCPT TO:<a@x.test>\r\n"
	                    "RCPT TO:<b@x.test>\r\nDATA\r\n");
	assert_int_equal(res[0].status, REMOTE_FAIL);
	assert_string_equal(res[0].dsn, "5.6.0");       /* DATA's reply */
	assert_string_equal(res[1].dsn, "5.1.1");       /* its RCPT reply */
}

/* A server that says 250 to DATA never got the text: not delivered. */
static void test_data_answered_250_defers(void **state)
{
	struct peer *p = *state;
	struct remote_result res[2];
	message(p, "x\n");
	struct remote_job job = { .domain = "x.test", .sender = "s@y.test", .rcpts = RCPTS,
	                          .nrcpt = 2, .fd = p->msgfd, .off = 0, .len = 2, .id = "T1" };

	server_says(p, "250 ok\r\n250 ok\r\n250 ok\r\n250 2.0.0 ok whatever\r\n");
	smtp_transaction(&p->s, &job, res);
	assert_string_equal(client_sent(p), "MAIL FROM:<s@y.test>\r\nRCPT TO:<a@x.test>\r\n"
	                    "RCPT TO:<b@x.test>\r\nDATA\r\n");
	assert_int_equal(res[0].status, REMOTE_DEFER);
	assert_int_equal(res[1].status, REMOTE_DEFER);
	assert_string_equal(res[0].dsn, "4.5.0");
}

static void test_lost_after_dot_defers(void **state)
{
	struct peer *p = *state;
	struct remote_result res[1];
	message(p, "x\n");
	struct remote_job job = { .domain = "x.test", .sender = "s@y.test", .rcpts = RCPTS,
	                          .nrcpt = 1, .fd = p->msgfd, .off = 0, .len = 2, .id = "T1" };

	server_says(p, "250 ok\r\n250 ok\r\n354 go\r\n");
	shutdown(p->sv[1], SHUT_WR);
	smtp_transaction(&p->s, &job, res);
	assert_int_equal(res[0].status, REMOTE_DEFER);
	assert_string_equal(res[0].dsn, "4.4.2");
	assert_non_null(strstr(res[0].text, "after end of data"));
	assert_int_equal(p->s.io.broken, 1);
}

static void test_unsafe_addresses_refused(void **state)
{
	struct peer *p = *state;
	struct remote_result res[2];
	static const char *const bad[] = { "a@x.test>\r\nDATA", "b@x.test" };
	message(p, "x\n");
	struct remote_job job = { .domain = "x.test", .sender = "s@y.test", .rcpts = bad,
	                          .nrcpt = 2, .fd = p->msgfd, .off = 0, .len = 2, .id = "T1" };

	server_says(p, "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n");
	smtp_transaction(&p->s, &job, res);
	assert_string_equal(client_sent(p), "MAIL FROM:<s@y.test>\r\nRCPT TO:<b@x.test>\r\n"
	                    "DATA\r\nx\r\n.\r\n");
	assert_int_equal(res[0].status, REMOTE_FAIL);
	assert_string_equal(res[0].dsn, "5.1.3");
	assert_int_equal(res[1].status, REMOTE_DONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reply_parsing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_and_lost, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ehlo_capabilities, setup, teardown),
		cmocka_unit_test_setup_teardown(test_helo_fallback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_plain_and_login, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mail_refused_without_pipelining, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_over_limit_not_sent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_answered_250_defers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_after_dot_defers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsafe_addresses_refused, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
