/* Unit tests: RFC 5321 envelope address parsing (common/addr.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "addr.h"

static void
plain(void **state)
{
	struct mailbox m;
	assert_int_equal(addr_parse("<Alice@Example.TEST>", &m, NULL), 0);
	assert_string_equal(m.local, "Alice");
	assert_string_equal(m.domain, "example.test");
	assert_int_equal(m.flags, 0);
	assert_int_equal(addr_parse("bob@example.test.", &m, NULL), 0);
	assert_string_equal(m.domain, "example.test");
}

static void
null_sender(void **state)
{
	struct mailbox m;
	assert_int_equal(addr_parse("<>", &m, NULL), 0);
	assert_true(m.null);
	assert_int_equal(addr_parse("  <>  ", &m, NULL), 0);
	assert_true(m.null);
}

static void
quoted(void **state)
{
	struct mailbox m;
	assert_int_equal(addr_parse("<\"john doe\"@example.test>", &m, NULL), 0);
	assert_string_equal(m.local, "john doe");
	assert_true(m.flags & ADDR_QUOTED);
	assert_int_equal(addr_parse("<\"u@other.test\"@example.test>", &m, NULL), 0);
	assert_string_equal(m.domain, "example.test");
	assert_true(m.flags & ADDR_LOCAL_AT);
	assert_int_equal(addr_parse("<\"a\\\"b\"@example.test>", &m, NULL), 0);
	assert_string_equal(m.local, "a\"b");
	assert_int_equal(addr_parse("<\"unterminated@example.test>", &m, NULL), -1);
}

static void
routing_tricks(void **state)
{
	struct mailbox m;
	assert_int_equal(addr_parse("<u%other.test@example.test>", &m, NULL), 0);
	assert_true(m.flags & ADDR_PERCENT);
	assert_string_equal(m.domain, "example.test");
	assert_int_equal(addr_parse("<other.test!u@example.test>", &m, NULL), 0);
	assert_true(m.flags & ADDR_BANG);
	assert_int_equal(addr_parse("<@relay.test,@x.test:u@other.test>", &m, NULL), 0);
	assert_true(m.flags & ADDR_ROUTED);
	assert_string_equal(m.domain, "other.test");
	assert_int_equal(addr_parse("<u@[192.0.2.1]>", &m, NULL), 0);
	assert_true(m.flags & ADDR_LITERAL);
	assert_string_equal(m.domain, "[192.0.2.1]");
}

static void
rejects(void **state)
{
	struct mailbox m;
	const char *why = NULL;
	const char *bad[] = {
		"<a@b@example.test>", "<a b@example.test>", "<a@-x.test>",
		"<a@x..test>", "<a@>", "<a>", "<a@example.test", "<a@ex\rample.test>",
		"<a\n@example.test>", "<a@exa_mple.test>",
		"<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.test>",
		"<a@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		if (addr_parse(bad[i], &m, &why) != -1)
			fail_msg("accepted %s", bad[i]);
		assert_non_null(why);
	}
}

static void
lenient_local_parts(void **state)
{
	struct mailbox m;
	assert_int_equal(addr_parse("<u.@example.test>", &m, NULL), 0);
	assert_string_equal(m.local, "u.");
	assert_int_equal(addr_parse("<a..b@example.test>", &m, NULL), 0);
	assert_int_equal(addr_parse("<j\xc3\xb6" "e@example.test>", &m, NULL), 0);
	assert_string_equal(m.local, "j\xc3\xb6" "e");
	assert_string_equal(m.domain, "example.test");
}

static void
bare_postmaster(void **state)
{
	struct mailbox m;
	assert_int_equal(addr_parse("<Postmaster>", &m, NULL), 0);
	assert_string_equal(m.domain, "");
	assert_int_equal(addr_parse("<alice>", &m, NULL), -1);
}

static void
domain_syntax(void **state)
{
	assert_true(addr_domain_valid("example.test"));
	assert_true(addr_domain_valid("a-b.example.test."));
	assert_true(addr_domain_valid("[IPv6:2001:db8::1]"));
	assert_false(addr_domain_valid(""));
	assert_false(addr_domain_valid("a..b"));
	assert_false(addr_domain_valid(".a"));
	assert_false(addr_domain_valid("a-.b"));
	assert_false(addr_domain_valid("a;b"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(plain),
		cmocka_unit_test(null_sender),
		cmocka_unit_test(quoted),
		cmocka_unit_test(routing_tricks),
		cmocka_unit_test(rejects),
		cmocka_unit_test(lenient_local_parts),
		cmocka_unit_test(bare_postmaster),
		cmocka_unit_test(domain_syntax),
	};
	return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
