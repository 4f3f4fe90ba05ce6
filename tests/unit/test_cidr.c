/* Unit tests: address and network matching (common/cidr.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <sys/socket.h>

#include "cidr.h"

static int
matches(const char *net, const char *ip)
{
	struct cidr c;
	struct ipaddr a;
	assert_int_equal(cidr_parse(net, &c), 0);
	assert_int_equal(ipaddr_parse(ip, &a), 0);
	return cidr_match(&c, &a);
}

static void
v4(void **state)
{
	assert_true(matches("192.0.2.0/24", "192.0.2.200"));
	assert_false(matches("192.0.2.0/24", "192.0.3.1"));
	assert_true(matches("0.0.0.0/0", "203.0.113.9"));
	assert_true(matches("192.0.2.1", "192.0.2.1"));
	assert_false(matches("192.0.2.1", "192.0.2.2"));
	assert_true(matches("10.0.0.0/9", "10.127.255.255"));
	assert_false(matches("10.0.0.0/9", "10.128.0.0"));
}

static void
v6(void **state)
{
	assert_true(matches("2001:db8::/32", "2001:db8:ffff::1"));
	assert_false(matches("2001:db8::/32", "2001:db9::1"));
	assert_true(matches("::1", "::1"));
	assert_false(matches("::1", "127.0.0.1"));
	assert_true(matches("::/0", "2001:db8::1"));
	assert_false(matches("::/0", "192.0.2.1"));
}

static void
mapped(void **state)
{
	struct ipaddr a;
	char buf[64];
	assert_int_equal(ipaddr_parse("::ffff:192.0.2.7", &a), 0);
	assert_int_equal(a.family, AF_INET);
	assert_string_equal(ipaddr_format(&a, buf, sizeof(buf)), "192.0.2.7");
	assert_true(matches("192.0.2.0/24", "::ffff:192.0.2.7"));
	assert_true(matches("::ffff:192.0.2.0/120", "192.0.2.7"));
	assert_int_equal(ipaddr_parse("[IPv6:2001:db8::1]", &a), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(ipaddr_parse("[192.0.2.1]", &a), 0);
	assert_int_equal(a.family, AF_INET);
}

static void
bad(void **state)
{
	struct cidr c;
	struct ipaddr a;
	assert_int_equal(cidr_parse("192.0.2.1/24", &c), -1);     /* host bits */
	assert_int_equal(cidr_parse("192.0.2.0/33", &c), -1);
	assert_int_equal(cidr_parse("192.0.2.0/", &c), -1);
	assert_int_equal(cidr_parse("192.0.2.0/-1", &c), -1);
	assert_int_equal(cidr_parse("2001:db8::/129", &c), -1);
	assert_int_equal(cidr_parse("example.test", &c), -1);
	assert_int_equal(ipaddr_parse("256.1.1.1", &a), -1);
	assert_int_equal(ipaddr_parse("", &a), -1);
}

static void
list(void **state)
{
	struct cidr_list l = { 0 };
	struct ipaddr a;
	const char *badp = NULL;
	assert_int_equal(cidr_list_parse(&l, "127.0.0.0/8, ::1 192.0.2.0/24", &badp), 0);
	assert_int_equal(l.n, 3);
	assert_int_equal(ipaddr_parse("::1", &a), 0);
	assert_true(cidr_list_match(&l, &a));
	assert_int_equal(ipaddr_parse("198.51.100.1", &a), 0);
	assert_false(cidr_list_match(&l, &a));
	assert_int_equal(cidr_list_parse(&l, "10.0.0.0/8, nonsense", &badp), -1);
	assert_string_equal(badp, "nonsense");
	cidr_list_free(&l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(v4),
		cmocka_unit_test(v6),
		cmocka_unit_test(mapped),
		cmocka_unit_test(bad),
		cmocka_unit_test(list),
	};
	return cmocka_run_group_tests_name("cidr", tests, NULL, NULL);
}
