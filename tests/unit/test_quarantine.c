/* Unit tests: the pieces of a milter's quarantine on its way to the hold
 * queue: RFC 3461 xtext as relayd writes it (relayd/lmtp_client.c) and
 * deliverd reads it (deliverd/lmtp_util.c), and a spool file committed
 * held with its reason (deliverd/spool.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmtp_client.h"
#include "lmtp_int.h"
#include "spool.h"

static void
xtext_decode_good(void **state)
{
	static const char *const cases[][2] = {
		{ "spam", "spam" },
		{ "Spam+20score+3D12", "Spam score=12" },
		{ "a+2Bb", "a+b" },
		{ "+7E+21", "~!" },
		{ "+C3+A9", "\xc3\xa9" },
		{ "", "" },
	};
	char out[64];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ssize_t n = lmtp_xtext_decode(cases[i][0], strlen(cases[i][0]), out, sizeof(out));
		assert_int_equal(n, (ssize_t)strlen(cases[i][1]));
		assert_string_equal(out, cases[i][1]);
	}
}

static void
xtext_decode_bad(void **state)
{
	static const char *const bad[] = {
		"a b",          /* space is never xtext */
		"a=b",          /* '=' must be encoded */
		"+2",           /* truncated hexchar */
		"+",
		"ab+",
		"+2g",          /* not hex */
		"+2b",          /* hexchar is upper case only */
		"+G0",
		"\x7f",
		"caf\xc3\xa9",  /* 8-bit bytes must be encoded */
		"tab\there",
	};
	char out[64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(lmtp_xtext_decode(bad[i], strlen(bad[i]), out, sizeof(out)), -1);
	/* too small a buffer is a failure, never a silent cut */
	assert_int_equal(lmtp_xtext_decode("abcdef", 6, out, 6), -1);
	assert_int_equal(lmtp_xtext_decode("abcdef", 6, out, 7), 6);
	/* a NUL inside is decoded (the caller refuses it) */
	assert_int_equal(lmtp_xtext_decode("a+00b", 5, out, sizeof(out)), 3);
	assert_int_equal(out[1], '\0');
}

static void
xtext_round_trip(void **state)
{
	char in[256], enc[800], dec[256];

	(void)state;
	for (int i = 1; i < 256; i++)
		in[i - 1] = (char)i;
	in[255] = '\0';
	size_t n = lmtp_client_xtext(in, enc, sizeof(enc));
	assert_int_equal(n, strlen(enc));
	for (size_t i = 0; i < n; i++)
		assert_true(enc[i] > ' ' && enc[i] < 0x7f && enc[i] != '=');
	assert_int_equal(lmtp_xtext_decode(enc, n, dec, sizeof(dec)), 255);
	assert_string_equal(dec, in);

	/* cut at a character boundary: what is left is still xtext */
	assert_int_equal(lmtp_client_xtext("ab=cd", enc, 5), 2);
	assert_string_equal(enc, "ab");
	assert_int_equal(lmtp_client_xtext("ab=cd", enc, 6), 5);
	assert_string_equal(enc, "ab+3D");
	assert_int_equal(lmtp_xtext_decode(enc, 5, dec, sizeof(dec)), 3);
	assert_string_equal(dec, "ab=");
}

static char dir[64];

static int
setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_quarantine.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int
in_dir(const char *sub, const char *id)
{
	char p[256];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s/%s", dir, sub, id);
	return stat(p, &st) == 0;
}

static void
count_id(const char *id, void *arg)
{
	(void)id;
	(*(int *)arg)++;
}

static void
spool_held_at_arrival(void **state)
{
	char err[256], id[SPOOL_ID_MAX], plain[SPOOL_ID_MAX];
	struct spool_rcpt r = { .addr = "bob", .orig = "bob@example.test" };
	struct spool *s = spool_open(dir, err, sizeof(err));
	struct spool_writer *w;
	struct spool_msg m;
	int n = 0;

	(void)state;
	assert_non_null(s);
	w = spool_writer_new_held(s, "a@example.org", &r, 1, "Spam score 12 (\"bad\")",
	                          err, sizeof(err));
	assert_non_null(w);
	snprintf(id, sizeof(id), "%s", spool_writer_id(w));
	assert_int_equal(spool_writer_write(w, "Subject: x\n\nhi\n", 15), 0);
	assert_int_equal(spool_commit(w, err, sizeof(err)), 0);
	assert_true(in_dir("hold", id));
	assert_false(in_dir("queue", id));
	assert_false(in_dir("tmp", id));

	/* an ordinary message beside it goes to queue/ without a reason */
	assert_non_null(w = spool_writer_new(s, "", &r, 1, err, sizeof(err)));
	snprintf(plain, sizeof(plain), "%s", spool_writer_id(w));
	assert_int_equal(spool_commit(w, err, sizeof(err)), 0);
	assert_true(in_dir("queue", plain));
	assert_int_equal(spool_load(s, plain, &m), 0);
	assert_null(m.quarantine);
	assert_false(m.held);
	spool_msg_free(&m);

	/* the scheduler's scan of queue/ never sees it */
	assert_int_equal(spool_scan(s, 0, count_id, &n), 0);
	assert_int_equal(n, 1);

	assert_int_equal(spool_load(s, id, &m), 0);
	assert_true(m.held);
	assert_string_equal(m.quarantine, "Spam score 12 (\"bad\")");
	assert_int_equal(m.body_len, 15);
	spool_msg_free(&m);

	/* released: in queue/, the reason kept as a record */
	assert_int_equal(spool_release(s, id), 0);
	assert_int_equal(spool_load(s, id, &m), 0);
	assert_false(m.held);
	assert_string_equal(m.quarantine, "Spam score 12 (\"bad\")");
	spool_msg_free(&m);
	spool_close(s);
}

static void
spool_refuses_bad_reasons(void **state)
{
	char err[256], big[SPOOL_REASON_MAX + 2];
	struct spool_rcpt r = { .addr = "bob", .orig = "bob@example.test" };
	struct spool *s = spool_open(dir, err, sizeof(err));

	(void)state;
	assert_non_null(s);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_null(spool_writer_new_held(s, "", &r, 1, "", err, sizeof(err)));
	assert_null(spool_writer_new_held(s, "", &r, 1, "a\nrcpt - x\tx", err, sizeof(err)));
	assert_null(spool_writer_new_held(s, "", &r, 1, big, err, sizeof(err)));
	big[SPOOL_REASON_MAX] = '\0';
	struct spool_writer *w = spool_writer_new_held(s, "", &r, 1, big, err, sizeof(err));
	assert_non_null(w);
	spool_abort(w);
	spool_close(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(xtext_decode_good),
		cmocka_unit_test(xtext_decode_bad),
		cmocka_unit_test(xtext_round_trip),
		cmocka_unit_test_setup_teardown(spool_held_at_arrival, setup, teardown),
		cmocka_unit_test_setup_teardown(spool_refuses_bad_reasons, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
