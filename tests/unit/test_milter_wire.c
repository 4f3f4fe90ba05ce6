/* Unit tests for relayd/milter_wire.c: milter packet encoding/decoding. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "milter_wire.h"

static void test_encode_optneg(void **state)
{
	struct mw_pkt p = { 0 };
	static const unsigned char want[] = { 0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 1, 0xff,
	                                      0, 0x1f, 0xf7, 0xff };
	(void)state;
	assert_int_equal(mw_enc_optneg(&p, 6, 0x1ff, 0x1ff7ff), 0);
	assert_int_equal(p.len, sizeof(want));
	assert_memory_equal(p.buf, want, sizeof(want));
	mw_free(&p);
}

static void test_encode_connect(void **state)
{
	struct mw_pkt p = { 0 };
	static const unsigned char want[] = "\0\0\0\x19" "Chost.example\0" "4\x11\xd7" "1.2.3.4";
	(void)state;
	mw_begin(&p, SMFIC_CONNECT);
	mw_put_str(&p, "host.example");
	mw_put_bytes(&p, "4", 1);
	mw_put_u16(&p, 4567);
	mw_put_str(&p, "1.2.3.4");
	assert_int_equal(mw_end(&p), 0);
	assert_int_equal(p.len, 4 + 0x19);
	assert_memory_equal(p.buf, want, p.len);
	mw_free(&p);
}

static void test_encode_limit(void **state)
{
	struct mw_pkt p = { 0 };
	unsigned char *big = calloc(1, MW_MAX_DATA + 1);
	(void)state;
	assert_non_null(big);
	mw_begin(&p, SMFIC_BODY);
	mw_put_bytes(&p, big, MW_MAX_DATA);          /* exactly the limit: fine */
	assert_int_equal(mw_end(&p), 0);
	assert_int_equal(p.len, 5 + MW_MAX_DATA);
	assert_int_equal(mw_data_len(&p), MW_MAX_DATA);
	mw_put_bytes(&p, "x", 1);                    /* one more: refused */
	assert_int_equal(mw_end(&p), -1);
	mw_begin(&p, SMFIC_HEADER);                  /* a new packet starts clean */
	mw_put_str(&p, "Subject");
	assert_int_equal(mw_end(&p), 0);
	mw_begin(&p, SMFIC_BODY);
	mw_put_bytes(&p, big, MW_MAX_DATA + 1);
	assert_int_equal(mw_end(&p), -1);
	mw_free(&p);
	free(big);
}

static void test_frame(void **state)
{
	static const unsigned char two[] = { 0, 0, 0, 1, 'c', 0, 0, 0, 3, 'y', 'a', 0 };
	const unsigned char *d;
	size_t n, used;
	char cmd;
	(void)state;
	assert_int_equal(mw_frame(two, 3, MW_MAX_DATA, &cmd, &d, &n, &used), MW_MORE);
	assert_int_equal(mw_frame(two, 4, MW_MAX_DATA, &cmd, &d, &n, &used), MW_MORE);
	assert_int_equal(mw_frame(two, sizeof(two), MW_MAX_DATA, &cmd, &d, &n, &used), MW_OK);
	assert_int_equal(cmd, 'c');
	assert_int_equal(n, 0);
	assert_int_equal(used, 5);
	/* the second one, truncated then whole */
	assert_int_equal(mw_frame(two + 5, 6, MW_MAX_DATA, &cmd, &d, &n, &used), MW_MORE);
	assert_int_equal(mw_frame(two + 5, 7, MW_MAX_DATA, &cmd, &d, &n, &used), MW_OK);
	assert_int_equal(cmd, 'y');
	assert_int_equal(n, 2);
	assert_memory_equal(d, "a", 2);
}

static void test_frame_bad_lengths(void **state)
{
	static const unsigned char zero[] = { 0, 0, 0, 0, 'c' };
	static const unsigned char over[] = { 0, 1, 0, 1, 'b' };      /* 65537: 65536 data */
	static const unsigned char max[] = { 0, 1, 0, 0, 'b' };       /* 65535 data: ok */
	static const unsigned char huge[] = { 0xff, 0xff, 0xff, 0xff, 'c' };
	const unsigned char *d;
	size_t n, used;
	char cmd;
	(void)state;
	assert_int_equal(mw_frame(zero, 5, MW_MAX_DATA, &cmd, &d, &n, &used), MW_ERR);
	assert_int_equal(mw_frame(over, 5, MW_MAX_DATA, &cmd, &d, &n, &used), MW_ERR);
	assert_int_equal(mw_frame(huge, 5, MW_MAX_DATA, &cmd, &d, &n, &used), MW_ERR);
	assert_int_equal(mw_frame(max, 5, MW_MAX_DATA, &cmd, &d, &n, &used), MW_MORE);
}

static void test_strings(void **state)
{
	const char *s[3];
	(void)state;
	assert_int_equal(mw_strings((const unsigned char *)"a\0bc\0", 5, s, 2, 2), 2);
	assert_string_equal(s[0], "a");
	assert_string_equal(s[1], "bc");
	assert_int_equal(mw_strings((const unsigned char *)"a\0bc", 4, s, 1, 2), -1); /* no NUL */
	assert_int_equal(mw_strings((const unsigned char *)"a\0b\0c\0", 6, s, 1, 2), -1); /* many */
	assert_int_equal(mw_strings((const unsigned char *)"a\0", 2, s, 2, 2), -1);      /* few */
	assert_int_equal(mw_strings((const unsigned char *)"", 0, s, 1, 1), -1);
	assert_int_equal(mw_strings((const unsigned char *)"\0", 1, s, 1, 1), 1);
	assert_string_equal(s[0], "");
}

static void test_optneg_reply(void **state)
{
	static const unsigned char r[] = { 0, 0, 0, 6, 0, 0, 0, 0x11, 0, 0, 0x31, 0xd0,
	                                   0, 0, 0, 2, 'i', ' ', '{', 'a', '}', 0,
	                                   0, 0, 0, 5, 'i', 0 };
	struct mw_optneg o;
	(void)state;
	assert_int_equal(mw_dec_optneg(r, sizeof(r), &o), 0);
	assert_int_equal(o.version, 6);
	assert_int_equal(o.actions, 0x11);
	assert_int_equal(o.protocol, 0x31d0);
	assert_string_equal(o.macros[SMFIM_ENVFROM], "i {a}");
	assert_string_equal(o.macros[SMFIM_EOM], "i");
	assert_null(o.macros[SMFIM_CONNECT]);
	assert_int_equal(mw_dec_optneg(r, 12, &o), 0);
	assert_int_equal(mw_dec_optneg(r, 11, &o), -1);                  /* truncated */
	assert_int_equal(mw_dec_optneg(r, sizeof(r) - 1, &o), -1);       /* list without NUL */
	assert_int_equal(mw_dec_optneg(r, 14, &o), -1);                  /* half a stage */
	unsigned char bad[sizeof(r)];
	memcpy(bad, r, sizeof(r));
	bad[15] = 7;                                                     /* no such stage */
	assert_int_equal(mw_dec_optneg(bad, sizeof(bad), &o), -1);
}

static void test_idx_header(void **state)
{
	static const unsigned char r[] = "\0\0\0\x02" "Subject\0" "new\0";
	uint32_t idx;
	const char *name, *value;
	(void)state;
	assert_int_equal(mw_dec_idx_header(r, sizeof(r) - 1, &idx, &name, &value), 0);
	assert_int_equal(idx, 2);
	assert_string_equal(name, "Subject");
	assert_string_equal(value, "new");
	assert_int_equal(mw_dec_idx_header(r, 3, &idx, &name, &value), -1);
	assert_int_equal(mw_dec_idx_header(r, sizeof(r) - 2, &idx, &name, &value), -1);
	assert_int_equal(mw_dec_idx_header((const unsigned char *)"\0\0\0\0\0x\0", 7, &idx,
	                                   &name, &value), -1);      /* empty name */
}

static void test_replycode(void **state)
{
	char out[256];
	(void)state;
	assert_int_equal(mw_replycode("550 5.7.1 go away", out, sizeof(out)), 0);
	assert_string_equal(out, "550 5.7.1 go away");
	assert_int_equal(mw_replycode("451 4.7.1 100%% busy", out, sizeof(out)), 0);
	assert_string_equal(out, "451 4.7.1 100% busy");
	assert_int_equal(mw_replycode("550-5.7.1 a\r\n550 5.7.1 b", out, sizeof(out)), 0);
	assert_int_equal(mw_replycode("550", out, sizeof(out)), 0);
	assert_int_equal(mw_replycode("554 no enhanced code", out, sizeof(out)), 0);
	/* refused */
	assert_int_equal(mw_replycode("250 ok", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550 4.7.1 class mismatch", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("450 5.7.1 class mismatch", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("55", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("5x0 text", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550_text", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550 text\nmore", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550 text\rmore", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550 text\r\n", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550-a\r\n451 b", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550 a\r\n550 b", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550 50% off", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550 5.7 short", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550 5.7.1234 long", out, sizeof(out)), -1);
	assert_int_equal(mw_replycode("550 5.7.1 ok", out, 5), -1);   /* no room */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encode_optneg),
		cmocka_unit_test(test_encode_connect),
		cmocka_unit_test(test_encode_limit),
		cmocka_unit_test(test_frame),
		cmocka_unit_test(test_frame_bad_lengths),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_optneg_reply),
		cmocka_unit_test(test_idx_header),
		cmocka_unit_test(test_replycode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
