/* Unit tests: spfgate-sendmail's message handling (relayd/sendmail_*.c):
 * address lists, reading stdin, the header section, the wire text. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "sendmail.h"

#define DOM "mx.example.test"

/* The list parsed, joined with " ", or "ERR: reason". */
static const char *
parse(const char *s)
{
	static char out[2048];
	char err[256];
	struct strlist l = { 0 };
	size_t o = 0;

	if (addrlist_parse(s, DOM, &l, err, sizeof(err)) < 0) {
		snprintf(out, sizeof(out), "ERR: %s", err);
	} else {
		out[0] = '\0';
		for (size_t i = 0; i < l.n; i++)
			o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s", i ? " " : "", l.v[i]);
	}
	strlist_free(&l);
	return out;
}

static void
address_lists(void **state)
{
	assert_string_equal(parse("bob"), "bob@" DOM);
	assert_string_equal(parse("Bob Smith <bob@example.test>"), "bob@example.test");
	assert_string_equal(parse("\"Smith, Bob\" <bob@example.test>, alice@example.test"),
	                    "bob@example.test alice@example.test");
	assert_string_equal(parse("alice@example.test (Alice, at work), carol"),
	                    "alice@example.test carol@" DOM);
	assert_string_equal(parse("friends: a@x.test, B <b@x.test>;, c@x.test"),
	                    "a@x.test b@x.test c@x.test");
	assert_string_equal(parse("undisclosed-recipients:;"), "");
	assert_string_equal(parse("a@X.Test, A@x.test"), "a@x.test");     /* duplicates */
	assert_string_equal(parse("<@relay.test:u@d.test>"), "u@d.test");
	assert_string_equal(parse("\"john doe\"@x.test"), "\"john doe\"@x.test");
	assert_string_equal(parse("john . doe @ x.test"), "john.doe@x.test");
	assert_string_equal(parse("u@[IPv6:::1]"), "u@[IPv6:::1]");
	assert_string_equal(parse("<a@b.test"), "ERR: missing '>' in a@b.test");
	assert_true(strncmp(parse("a@"), "ERR: bad address", 16) == 0);
	assert_true(strncmp(parse("(open comment a@b.test"), "ERR: unterminated comment", 25) == 0);
	assert_true(strncmp(parse("\"a\x01\"@b.test"), "ERR: control", 12) == 0);
	/* a line end in a command-line argument cannot start a command */
	assert_string_equal(parse("a@b.test\r\nRCPT TO:<x@y.test>"), "x@y.test");
}

static void
envelope_sender(void **state)
{
	char out[SM_ADDR_LEN], err[256];

	assert_int_equal(addr_envelope("", DOM, out, sizeof(out), err, sizeof(err)), 0);
	assert_string_equal(out, "");
	assert_int_equal(addr_envelope("<>", DOM, out, sizeof(out), err, sizeof(err)), 0);
	assert_string_equal(out, "");
	assert_int_equal(addr_envelope("root", DOM, out, sizeof(out), err, sizeof(err)), 0);
	assert_string_equal(out, "root@" DOM);
	assert_int_equal(addr_envelope("<a@b.test>", DOM, out, sizeof(out), err, sizeof(err)), 0);
	assert_string_equal(out, "a@b.test");
	assert_int_equal(addr_envelope("a@b.test, c@d.test", DOM, out, sizeof(out), err,
	                               sizeof(err)), -1);
}

static int
read_str(const char *in, size_t n, int dot_ends, size_t limit, struct msgtext *t)
{
	FILE *f = fmemopen((void *)in, n, "r");
	int rc;

	assert_non_null(f);
	memset(t, 0, sizeof(*t));
	rc = msg_read(f, dot_ends, limit, t);
	fclose(f);
	return rc;
}

static void
reading(void **state)
{
	struct msgtext t;
	static const char in[] = "a\r\nb\rc\n.\nafter\n";

	assert_int_equal(read_str(in, sizeof(in) - 1, 1, 1000, &t), IN_OK);
	assert_int_equal(t.len, 6);
	assert_memory_equal(t.p, "a\nb\nc\n", 6);
	msg_free(&t);
	assert_int_equal(read_str(in, sizeof(in) - 1, 0, 1000, &t), IN_OK);
	assert_int_equal(t.len, 14);
	assert_memory_equal(t.p, "a\nb\nc\n.\nafter\n", 14);
	msg_free(&t);
	/* NUL dropped, 8-bit noticed, a last line without LF kept */
	static const char nul[] = "x\0y\n\xc3\xa9";
	assert_int_equal(read_str(nul, sizeof(nul) - 1, 1, 1000, &t), IN_OK);
	assert_int_equal(t.len, 6);
	assert_memory_equal(t.p, "xy\n\xc3\xa9\n", 6);
	assert_true(t.eight_bit);
	msg_free(&t);
	/* ".." is not the end, "." with CRLF is */
	static const char dots[] = "..\n.\r\nz\n";
	assert_int_equal(read_str(dots, sizeof(dots) - 1, 1, 1000, &t), IN_OK);
	assert_int_equal(t.len, 3);
	msg_free(&t);
	assert_int_equal(read_str("0123456789\n0123456789\n", 22, 0, 15, &t), IN_TOOBIG);
	msg_free(&t);
}

static void
parse_msg(struct message *m, const char *s)
{
	struct msgtext t = { 0 };
	const char *p = s;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		assert_int_equal(msg_append_line(&t, p, n), IN_OK);
		p += n + (nl != NULL);
	}
	assert_int_equal(msg_parse(m, &t), 0);
}

/* The wire text of m with a, as a string. */
struct sbuf {
	char p[65536];
	size_t n;
};

static int
sink(void *arg, const char *p, size_t n)
{
	struct sbuf *b = arg;
	assert_true(b->n + n < sizeof(b->p));
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = '\0';
	return 0;
}

static const char *
wire_of(const struct message *m, const struct added *a)
{
	static struct sbuf b;
	struct wire w, count;

	b.n = 0;
	b.p[0] = '\0';
	wire_init(&w, sink, &b);
	wire_message(&w, m, a);
	assert_int_equal(wire_flush(&w), 0);
	wire_init(&count, NULL, NULL);
	wire_message(&count, m, a);
	assert_int_equal(count.bytes, b.n);
	return b.p;
}

static void
headers(void **state)
{
	struct message m;
	struct strlist r = { 0 };
	char err[256];

	parse_msg(&m, "From someone Mon Jan  1 00:00:00 2024\n"
	              "Subject: hi\n"
	              "To: Alice <alice@example.test>,\n"
	              "\tbob\n"
	              "Bcc: secret@example.test\n"
	              "cc : carol@example.test\n"
	              "\n"
	              "body\n.dot\n");
	assert_int_equal(m.nh, 4);
	assert_true(m.separated);
	assert_non_null(msg_find(&m, "CC"));
	char *v = msg_value(&m, msg_find(&m, "to"));
	assert_string_equal(v, "Alice <alice@example.test>,\tbob");
	free(v);
	assert_int_equal(msg_extract_rcpts(&m, DOM, &r, err, sizeof(err)), 0);
	assert_int_equal(r.n, 4);
	assert_string_equal(r.v[1], "bob@" DOM);
	assert_string_equal(r.v[2], "secret@example.test");
	msg_drop_bcc(&m);
	assert_string_equal(wire_of(&m, NULL),
	                    "Subject: hi\r\nTo: Alice <alice@example.test>,\r\n\tbob\r\n"
	                    "cc : carol@example.test\r\n\r\nbody\r\n..dot\r\n");
	strlist_free(&r);
	message_free(&m);

	/* Resent- headers: the recipients come from those */
	parse_msg(&m, "To: old@example.test\nResent-To: new@example.test\n\nx\n");
	assert_int_equal(msg_extract_rcpts(&m, DOM, &r, err, sizeof(err)), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.v[0], "new@example.test");
	strlist_free(&r);
	message_free(&m);

	/* a body without the empty line gets one; a bad address is an error */
	parse_msg(&m, "To: x@\nnot a header\nmore\n");
	assert_int_equal(m.nh, 1);
	assert_false(m.separated);
	assert_int_equal(msg_extract_rcpts(&m, DOM, &r, err, sizeof(err)), -1);
	assert_true(strncmp(err, "To: header: bad address", 23) == 0);
	assert_string_equal(wire_of(&m, NULL), "To: x@\r\n\r\nnot a header\r\nmore\r\n");
	strlist_free(&r);
	message_free(&m);

	/* no text at all */
	parse_msg(&m, "");
	assert_int_equal(m.nh, 0);
	assert_string_equal(wire_of(&m, NULL), "\r\n");
	message_free(&m);
}

static void
added_headers(void **state)
{
	struct message m;
	struct added a;
	struct submitter s = { .mail_name = DOM, .sender = "root@" DOM, .user_addr = "root@" DOM,
	                       .fullname = "Cron Daemon", .uid = 0, .now = 1700000000,
	                       .msgid_rand = "R1" };

	parse_msg(&m, "Subject: s\n\nb\n");
	assert_int_equal(msg_added_headers(&m, &s, &a), 0);
	assert_true(strncmp(a.top, "Received: by " DOM " (spfgate-sendmail, from userid 0);\n\t", 54) == 0);
	assert_true(strncmp(a.end, "From: Cron Daemon <root@" DOM ">\nDate: ", 45) == 0);
	assert_non_null(strstr(a.end, "\nMessage-ID: <20231114221320.R1@" DOM ">\n"));
	const char *w = wire_of(&m, &a);
	assert_true(strncmp(w, "Received: by ", 13) == 0);
	assert_non_null(strstr(w, "\r\nSubject: s\r\nFrom: Cron Daemon"));
	assert_non_null(strstr(w, ">\r\n\r\nb\r\n"));
	added_free(&a);
	message_free(&m);

	/* present ones are kept, not added; no name, no phrase */
	parse_msg(&m, "from: x@y.test\nDATE: today\nmessage-id: <1@y.test>\n\nb\n");
	s.fullname = NULL;
	assert_int_equal(msg_added_headers(&m, &s, &a), 0);
	assert_string_equal(a.end, "");
	added_free(&a);
	message_free(&m);
	parse_msg(&m, "\nb\n");
	s.sender = "";                      /* null sender: From: is the user */
	s.user_addr = "alice@" DOM;
	assert_int_equal(msg_added_headers(&m, &s, &a), 0);
	assert_true(strncmp(a.end, "From: alice@" DOM "\n", 28) == 0);
	added_free(&a);
	message_free(&m);
}

static void
phrases(void **state)
{
	char *p;

	assert_string_equal(p = phrase_encode("Cron Daemon"), "Cron Daemon");
	free(p);
	assert_string_equal(p = phrase_encode("Smith, J. \"Bo\""), "\"Smith, J. \\\"Bo\\\"\"");
	free(p);
	assert_string_equal(p = phrase_encode("x\nBcc: evil@x.test"), "\"x Bcc: evil@x.test\"");
	free(p);
	assert_string_equal(p = phrase_encode("J\xc3\xb6rg"), "=?UTF-8?B?SsO2cmc=?=");
	free(p);
	/* long 8-bit names: several words, none cutting a character */
	char name[200] = "";
	for (int i = 0; i < 30; i++)
		strcat(name, "\xc3\xa9");
	p = phrase_encode(name);
	assert_string_equal(p, "=?UTF-8?B?w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6k=?= "
	                       "=?UTF-8?B?w6nDqcOpw6nDqcOpw6nDqQ==?=");
	free(p);
}

/* Over-long lines: split, never over 998 octets, never mid-character. */
static void
long_lines(void **state)
{
	static char line[3000], want[6100];
	struct message m;
	const char *w;

	/* body: 998 octets a line, nothing added */
	memset(line, 'x', 2500);
	line[0] = '.';
	{
		struct sbuf *b = calloc(1, sizeof(*b));
		struct wire wr;
		wire_init(&wr, sink, b);
		wire_line(&wr, line, 2500, 0);
		wire_flush(&wr);
		assert_int_equal(b->n, 2500 + 1 + 3 * 2);
		assert_memory_equal(b->p, "..xxx", 5);
		assert_memory_equal(b->p + 999, "\r\nxx", 4);      /* 998 + the stuffed dot */
		assert_memory_equal(b->p + 999 + 2 + 998, "\r\nxx", 4);
		/* a UTF-8 character across the limit moves to the next line */
		b->n = 0;
		memset(line, 'y', 1100);
		memcpy(line + 997, "\xc3\xa9", 2);
		wire_line(&wr, line, 1100, 0);
		wire_flush(&wr);
		assert_memory_equal(b->p + 995, "yy\r\n\xc3\xa9y", 7);
		/* a header: folded before the last blank within the limit */
		b->n = 0;
		memset(line, 'h', 1500);
		memcpy(line, "Subject:", 8);
		line[500] = ' ';
		line[900] = '\t';
		wire_line(&wr, line, 1500, 1);
		wire_flush(&wr);
		assert_memory_equal(b->p + 898, "hh\r\n\thh", 7);
		assert_int_equal(b->n, 1500 + 4);
		/* no blank: broken, the rest on a continuation line */
		b->n = 0;
		memset(line, 'h', 1500);
		wire_line(&wr, line, 1500, 1);
		wire_flush(&wr);
		assert_memory_equal(b->p + 996, "hh\r\n hh", 7);
		assert_int_equal(b->n, 1500 + 4 + 1);
		free(b);
	}
	/* a whole message with a long header and body line */
	memset(line, 'z', 1200);
	memcpy(line, "X-Long: ", 8);
	line[1200] = '\0';
	snprintf(want, sizeof(want), "%s\n\n%s\n", line, line + 8);
	parse_msg(&m, want);
	w = wire_of(&m, NULL);
	assert_int_equal(strlen(w), 1200 + 2 + 1 + 2 + 2 + 1192 + 2 + 2);
	for (const char *p = w; *p; ) {
		const char *e = strstr(p, "\r\n");
		assert_non_null(e);
		assert_true(e - p <= SM_LINE_MAX);
		p = e + 2;
	}
	message_free(&m);
}

static void
exit_codes(void **state)
{
	assert_int_equal(smtp_exit_code(451, "451 4.3.0 x", 0), EX_TEMPFAIL);
	assert_int_equal(smtp_exit_code(421, "421 x", 1), EX_TEMPFAIL);
	assert_int_equal(smtp_exit_code(550, "550 5.1.1 <g@x>: unknown", 1), EX_NOUSER);
	assert_int_equal(smtp_exit_code(550, "550 5.1.2 bad host", 1), EX_NOHOST);
	assert_int_equal(smtp_exit_code(554, "554 5.6.0 bare LF", 0), EX_DATAERR);
	assert_int_equal(smtp_exit_code(552, "552 5.3.4 too big", 0), EX_DATAERR);
	assert_int_equal(smtp_exit_code(554, "554 5.7.1 relay denied", 1), EX_NOPERM);
	assert_int_equal(smtp_exit_code(554, "554 5.4.6 loop", 0), EX_UNAVAILABLE);
	assert_int_equal(smtp_exit_code(550, "550 no such user", 1), EX_NOUSER);
	assert_int_equal(smtp_exit_code(554, "554 Transaction failed", 0), EX_UNAVAILABLE);
}

static void
targets(void **state)
{
	struct strlist listen = { 0 }, out = { 0 };

	strlist_add(&listen, "192.0.2.1:25");
	strlist_add(&listen, "[::]:2525");
	strlist_add(&listen, "127.0.0.1:25");
	assert_int_equal(smtp_targets(&listen, NULL, &out), 0);
	assert_int_equal(out.n, 3);
	assert_string_equal(out.v[0], "[::]:2525");
	assert_string_equal(out.v[1], "127.0.0.1:25");
	assert_string_equal(out.v[2], "192.0.2.1:25");
	strlist_free(&out);
	assert_int_equal(smtp_targets(&listen, "127.0.0.1:9", &out), 0);
	assert_int_equal(out.n, 1);
	strlist_free(&out);
	strlist_free(&listen);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(address_lists),
		cmocka_unit_test(envelope_sender),
		cmocka_unit_test(reading),
		cmocka_unit_test(headers),
		cmocka_unit_test(added_headers),
		cmocka_unit_test(phrases),
		cmocka_unit_test(long_lines),
		cmocka_unit_test(exit_codes),
		cmocka_unit_test(targets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
