/* Unit tests: relayd's command parser, DATA reader and dot-stuffing
 * (relayd/smtp_parse.c), and the message buffer (relayd/msgbuf.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"
#include "msgbuf.h"

/* ---------------------------------------------------------- commands */

static void
verbs(void **state)
{
	const char *arg;

	assert_int_equal(smtp_verb("EHLO client.test", &arg), V_EHLO);
	assert_string_equal(arg, "client.test");
	assert_int_equal(smtp_verb("ehlo x", &arg), V_EHLO);
	assert_int_equal(smtp_verb("MAIL FROM:<a@b>", &arg), V_MAIL);
	assert_string_equal(arg, "FROM:<a@b>");
	assert_int_equal(smtp_verb("QUIT", &arg), V_QUIT);
	assert_string_equal(arg, "");
	assert_int_equal(smtp_verb("starttls", &arg), V_STARTTLS);
	assert_int_equal(smtp_verb("DATAX", &arg), V_UNKNOWN);
	assert_int_equal(smtp_verb("", &arg), V_UNKNOWN);
	assert_int_equal(smtp_verb("MAI", &arg), V_UNKNOWN);
	assert_int_equal(smtp_verb("VRFY bob", &arg), V_VRFY);
	assert_int_equal(smtp_verb("HELP", &arg), V_HELP);
}

static void
line_flaws(void **state)
{
	assert_int_equal(smtp_line_flaws("NOOP", 4), LINE_OK);
	assert_int_equal(smtp_line_flaws("NOOP\nQUIT", 9), LINE_BARE_LF);
	assert_int_equal(smtp_line_flaws("NOOP\rQUIT", 9), LINE_BARE_CR);
	assert_int_equal(smtp_line_flaws("NO\0OP", 5), LINE_NUL);
	assert_int_equal(smtp_line_flaws("a\r\nb", 4), LINE_BARE_LF | LINE_BARE_CR);
}

static void
split_path(void **state)
{
	char p[400];
	const char *params;

	assert_int_equal(smtp_split_path("FROM:<a@b.test>", "FROM:", p, sizeof(p), &params), 0);
	assert_string_equal(p, "<a@b.test>");
	assert_string_equal(params, "");
	assert_int_equal(smtp_split_path("from: <a@b> SIZE=10  BODY=8BITMIME", "FROM:", p,
	                                 sizeof(p), &params), 0);
	assert_string_equal(p, "<a@b>");
	assert_string_equal(params, "SIZE=10  BODY=8BITMIME");
	assert_int_equal(smtp_split_path("FROM:<>", "FROM:", p, sizeof(p), &params), 0);
	assert_string_equal(p, "<>");
	/* a '>' inside a quoted local part does not end the path */
	assert_int_equal(smtp_split_path("TO:<\"a>b\"@c.test>", "TO:", p, sizeof(p), &params), 0);
	assert_string_equal(p, "<\"a>b\"@c.test>");
	assert_int_equal(smtp_split_path("TO:a@b", "TO:", p, sizeof(p), &params), -1);
	assert_int_equal(smtp_split_path("TO:<a@b", "TO:", p, sizeof(p), &params), -1);
	assert_int_equal(smtp_split_path("TO:<a@b>x", "TO:", p, sizeof(p), &params), -1);
	assert_int_equal(smtp_split_path("TO:<a<b>", "TO:", p, sizeof(p), &params), -1);
	assert_int_equal(smtp_split_path("FROM:<a@b>", "TO:", p, sizeof(p), &params), -1);
	assert_int_equal(smtp_split_path("TO:<a@b>", "TO:", p, 4, &params), -1);
}

static void
mail_params(void **state)
{
	struct mail_params mp;
	char bad[64];

	assert_int_equal(smtp_mail_params("", &mp, bad, sizeof(bad)), 0);
	assert_int_equal(mp.size, -1);
	assert_int_equal(smtp_mail_params("SIZE=1000 BODY=8BITMIME", &mp, bad, sizeof(bad)), 0);
	assert_int_equal(mp.size, 1000);
	assert_int_equal(mp.body8, 1);
	assert_int_equal(smtp_mail_params("body=7bit", &mp, bad, sizeof(bad)), 0);
	assert_int_equal(mp.body8, 0);
	assert_int_equal(smtp_mail_params("SIZE=", &mp, bad, sizeof(bad)), -1);
	assert_int_equal(smtp_mail_params("SIZE=12x", &mp, bad, sizeof(bad)), -1);
	assert_int_equal(smtp_mail_params("SIZE=-1", &mp, bad, sizeof(bad)), -1);
	assert_int_equal(smtp_mail_params("AUTH=<>", &mp, bad, sizeof(bad)), -2);
	assert_string_equal(bad, "AUTH=<>");
	assert_int_equal(smtp_mail_params("SMTPUTF8", &mp, bad, sizeof(bad)), -2);
}

/* -------------------------------------------------------------- DATA */

struct collect {
	char buf[4096];
	size_t len;
};

static void
sink(void *arg, const char *p, size_t n)
{
	struct collect *c = arg;
	assert_true(c->len + n < sizeof(c->buf));
	memcpy(c->buf + c->len, p, n);
	c->len += n;
	c->buf[c->len] = '\0';
}

/* Feed in chunks of `step` bytes; returns bytes used, *end, flaws. */
static size_t
feed(const char *in, size_t n, size_t step, struct data_reader *r, struct collect *c, int *end)
{
	size_t used = 0;

	memset(c, 0, sizeof(*c));
	data_reader_init(r, sink, c);
	*end = 0;
	while (used < n && !*end) {
		size_t k = n - used < step ? n - used : step;
		used += data_reader_feed(r, in + used, k, end);
	}
	return used;
}

static void
data_plain(void **state)
{
	static const char in[] = "Subject: x\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n";
	for (size_t step = 1; step <= sizeof(in); step++) {
		struct data_reader r;
		struct collect c;
		int end;
		size_t used = feed(in, sizeof(in) - 1, step, &r, &c, &end);
		assert_int_equal(end, 1);
		assert_int_equal(used, strlen("Subject: x\r\n\r\nhello\r\n..dot\r\n.\r\n"));
		assert_string_equal(c.buf, "Subject: x\r\n\r\nhello\r\n.dot\r\n");
		assert_int_equal(r.flaws, 0);
		assert_int_equal(r.size, c.len);
	}
}

static void
data_empty(void **state)
{
	struct data_reader r;
	struct collect c;
	int end;

	assert_int_equal(feed(".\r\n", 3, 3, &r, &c, &end), 3);
	assert_int_equal(end, 1);
	assert_int_equal(c.len, 0);
}

/* The smuggling probes: none of these ends the message. */
static void
data_smuggling(void **state)
{
	static const char *const probes[] = {
		"x\r\nhi\n.\nMAIL FROM:<e@vil>\r\n",          /* <LF>.<LF> */
		"x\r\nhi\r.\rMAIL FROM:<e@vil>\r\n",          /* <CR>.<CR> */
		"x\r\nhi\n.\r\nMAIL FROM:<e@vil>\r\n",        /* <LF>.<CR><LF> */
		"x\r\nhi\r\n.\nMAIL FROM:<e@vil>\r\n",        /* <CR><LF>.<LF> */
		"x\r\nhi\r\n.\rMAIL FROM:<e@vil>\r\n",        /* <CR><LF>.<CR> */
		"x\r\nhi\r\r\n.\r\r\nMAIL\r\n",               /* CR CR LF */
		"x\n.\r\n",                                   /* bare LF then dot */
	};
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		for (size_t step = 1; step <= 7; step += 6) {
			struct data_reader r;
			struct collect c;
			int end;
			size_t n = strlen(probes[i]);
			size_t used = feed(probes[i], n, step, &r, &c, &end);
			assert_int_equal(end, 0);
			assert_int_equal(used, n);
			assert_true(r.flaws & (DATA_BARE_LF | DATA_BARE_CR));
			/* the real end still ends it, and the flaw stays */
			used = data_reader_feed(&r, "\r\n.\r\n", 5, &end);
			assert_int_equal(end, 1);
			assert_true(r.flaws & (DATA_BARE_LF | DATA_BARE_CR));
		}
}

static void
data_flaws(void **state)
{
	struct data_reader r;
	struct collect c;
	int end;

	feed("a\0b\r\n.\r\n", 8, 8, &r, &c, &end);
	assert_int_equal(end, 1);
	assert_int_equal(r.flaws, DATA_NUL);
	feed("a\rb\r\n.\r\n", 8, 1, &r, &c, &end);
	assert_int_equal(end, 1);
	assert_int_equal(r.flaws, DATA_BARE_CR);
	feed("a\nb\r\n.\r\n", 8, 2, &r, &c, &end);
	assert_int_equal(end, 1);
	assert_int_equal(r.flaws, DATA_BARE_LF);
	/* ".\r" followed by something else is a bare CR, not an end */
	feed("x\r\n.\rx\r\n.\r\n", 11, 1, &r, &c, &end);
	assert_int_equal(end, 1);
	assert_int_equal(r.flaws, DATA_BARE_CR);
}

static void
data_received_count(void **state)
{
	static const char in[] = "Received: from a\r\n\tby b\r\nreceived: x\r\n"
	                         "X-Received: no\r\nSubject: s\r\n\r\n"
	                         "Received: in the body\r\n.\r\n";
	for (size_t step = 1; step <= 9; step += 4) {
		struct data_reader r;
		struct collect c;
		int end;
		feed(in, sizeof(in) - 1, step, &r, &c, &end);
		assert_int_equal(end, 1);
		assert_int_equal(r.received, 2);
		assert_int_equal(r.in_body, 1);
	}
}

static void
dot_stuff(void **state)
{
	static const char in[] = ".a\r\nb\r\n..c\r\n.\r\n";
	for (size_t step = 1; step <= sizeof(in); step++) {
		struct collect c;
		int bol = 1;
		memset(&c, 0, sizeof(c));
		for (size_t k = 0; k < sizeof(in) - 1; k += step) {
			size_t n = sizeof(in) - 1 - k < step ? sizeof(in) - 1 - k : step;
			smtp_dot_stuff(in + k, n, &bol, sink, &c);
		}
		assert_string_equal(c.buf, "..a\r\nb\r\n...c\r\n..\r\n");
		/* and back through the reader: the same text */
		struct data_reader r;
		struct collect back;
		int end;
		char wire[4200];
		snprintf(wire, sizeof(wire), "%s.\r\n", c.buf);
		feed(wire, strlen(wire), step, &r, &back, &end);
		assert_int_equal(end, 1);
		assert_string_equal(back.buf, in);
	}
}

/* ------------------------------------------------------------ msgbuf */

static void
collect_all(void *arg, const char *p, size_t n)
{
	struct collect *c = arg;
	sink(c, p, n);
}

static void
msgbuf_spill(void **state)
{
	struct msgbuf m;
	struct collect c;
	char exp[4096] = "";

	assert_int_equal(msgbuf_init(&m, 100), 0);
	for (int i = 0; i < 50; i++) {
		char line[32];
		snprintf(line, sizeof(line), "line %d\r\n", i);
		msgbuf_add(&m, line, strlen(line));
		strcat(exp, line);
	}
	assert_true(m.fd >= 0);         /* spilled to a file */
	assert_int_equal(m.err, 0);
	assert_int_equal(m.len, strlen(exp));
	memset(&c, 0, sizeof(c));
	assert_int_equal(msgbuf_foreach(&m, collect_all, &c), 0);
	assert_string_equal(c.buf, exp);
	msgbuf_free(&m);

	assert_int_equal(msgbuf_init(&m, 1 << 20), 0);
	msgbuf_add(&m, "small\r\n", 7);
	assert_true(m.fd < 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(msgbuf_foreach(&m, collect_all, &c), 0);
	assert_string_equal(c.buf, "small\r\n");
	msgbuf_free(&m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(verbs),
		cmocka_unit_test(line_flaws),
		cmocka_unit_test(split_path),
		cmocka_unit_test(mail_params),
		cmocka_unit_test(data_plain),
		cmocka_unit_test(data_empty),
		cmocka_unit_test(data_smuggling),
		cmocka_unit_test(data_flaws),
		cmocka_unit_test(data_received_count),
		cmocka_unit_test(dot_stuff),
		cmocka_unit_test(msgbuf_spill),
	};
	return cmocka_run_group_tests_name("relayd_parse", tests, NULL, NULL);
}
