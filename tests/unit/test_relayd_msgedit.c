/* Unit tests: applying a filter's header and body changes (relayd/msgedit.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "msgedit.h"

static void
collect(void *arg, const char *p, size_t n)
{
	char *buf = arg;
	size_t l = strlen(buf);
	assert_true(l + n < 8192);
	memcpy(buf + l, p, n);
	buf[l + n] = '\0';
}

/* Apply mods to text (fed in chunks of mem so the file path is used too). */
static char *
edit(const char *text, const struct filter_mod *mods, size_t n, size_t mem)
{
	struct msgbuf in, out;
	static char buf[8192];

	assert_int_equal(msgbuf_init(&in, mem), 0);
	assert_int_equal(msgbuf_init(&out, mem), 0);
	for (size_t k = 0, len = strlen(text); k < len; k += 3)
		msgbuf_add(&in, text + k, len - k < 3 ? len - k : 3);
	assert_int_equal(msgedit_apply(&in, mods, n, &out), 0);
	buf[0] = '\0';
	assert_int_equal(msgbuf_foreach(&out, collect, buf), 0);
	msgbuf_free(&in);
	msgbuf_free(&out);
	return buf;
}

static const char MSG[] =
	"Received: from a\r\n\tby b; now\r\n"
	"Subject: hello\r\n"
	"X-Spam: yes\r\n"
	"X-Spam: again\r\n"
	"\r\n"
	"body line\r\n"
	"Subject: not a header\r\n";

static void
no_mods(void **state)
{
	for (size_t mem = 4; mem <= 4096; mem *= 8)
		assert_string_equal(edit(MSG, NULL, 0, mem), MSG);
}

static void
add_insert(void **state)
{
	const struct filter_mod mods[] = {
		{ .type = FM_ADDHDR, .name = "X-Added", .value = " last" },
		{ .type = FM_INSHDR, .index = 0, .name = "X-Top", .value = " first" },
		{ .type = FM_INSHDR, .index = 2, .name = "Authentication-Results",
		  .value = " mx; spf=pass\r\n\tsmtp.mailfrom=a@b" },
	};
	for (size_t mem = 4; mem <= 4096; mem *= 8)
		assert_string_equal(edit(MSG, mods, 3, mem),
		        "X-Top: first\r\n"
		        "Received: from a\r\n\tby b; now\r\n"
		        "Authentication-Results: mx; spf=pass\r\n\tsmtp.mailfrom=a@b\r\n"
		        "Subject: hello\r\nX-Spam: yes\r\nX-Spam: again\r\nX-Added: last\r\n"
		        "\r\nbody line\r\nSubject: not a header\r\n");
}

static void
change_delete(void **state)
{
	const struct filter_mod mods[] = {
		{ .type = FM_CHGHDR, .index = 2, .name = "x-spam", .value = NULL },
		{ .type = FM_CHGHDR, .index = 1, .name = "Subject", .value = " [tag] hello" },
		{ .type = FM_CHGHDR, .index = 1, .name = "X-New", .value = " made" },
		{ .type = FM_CHGHDR, .index = 5, .name = "X-Spam", .value = NULL },
	};
	assert_string_equal(edit(MSG, mods, 4, 4096),
	        "Received: from a\r\n\tby b; now\r\n"
	        "Subject: [tag] hello\r\nX-Spam: yes\r\nX-New: made\r\n"
	        "\r\nbody line\r\nSubject: not a header\r\n");
}

static void
replace_body(void **state)
{
	static const unsigned char body[] = "new\nbody\r\nend\n";
	const struct filter_mod mods[] = {
		{ .type = FM_REPLBODY, .body = body, .body_len = sizeof(body) - 1 },
		{ .type = FM_CHGFROM, .value = "<x@y>" },       /* not msgedit's */
	};
	assert_true(msgedit_needed(mods, 2));
	assert_false(msgedit_needed(mods + 1, 1));
	for (size_t mem = 4; mem <= 4096; mem *= 8)
		assert_string_equal(edit(MSG, mods, 2, mem),
		        "Received: from a\r\n\tby b; now\r\nSubject: hello\r\n"
		        "X-Spam: yes\r\nX-Spam: again\r\n\r\nnew\r\nbody\r\nend\r\n");
}

static void
headers_only(void **state)
{
	const struct filter_mod mods[] = {
		{ .type = FM_ADDHDR, .name = "X-A", .value = " 1" },
	};
	assert_string_equal(edit("Subject: x\r\n", mods, 1, 4096),
	                    "Subject: x\r\nX-A: 1\r\n");
	assert_string_equal(edit("Subject: x\r\n\r\n", mods, 1, 4096),
	                    "Subject: x\r\nX-A: 1\r\n\r\n");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(no_mods),
		cmocka_unit_test(add_insert),
		cmocka_unit_test(change_delete),
		cmocka_unit_test(replace_body),
		cmocka_unit_test(headers_only),
	};
	return cmocka_run_group_tests_name("relayd_msgedit", tests, NULL, NULL);
}
