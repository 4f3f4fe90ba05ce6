/* Unit tests: the RFC 7208 macro expander (common/spf_macro.c), with the
 * examples of RFC 7208 §7.4 and the cases libspf2 gets wrong. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "spf_macro.h"

static struct ipaddr ip4, ip6;

static const char *validated(void *arg, const char *domain)
{
	(void)domain;
	return arg;
}

static struct spf_macro_env env_for(const char *sender, const struct ipaddr *ip)
{
	static char local[128], dom[128];
	const char *at = strrchr(sender, '@');
	snprintf(local, sizeof(local), "%.*s", (int)(at - sender), sender);
	snprintf(dom, sizeof(dom), "%s", at + 1);
	struct spf_macro_env e = {
		.sender = sender, .local = local, .sender_domain = dom,
		.domain = dom, .ip = ip, .helo = "mx.example.org",
		.receiver = NULL, .now = 1234567890,
		.validated_name = validated, .arg = "mail.example.com",
	};
	return e;
}

static void expect(const struct spf_macro_env *e, enum spf_macro_kind k,
                   const char *in, const char *want)
{
	char *got = spf_macro_expand(in, strlen(in), k, e);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

#define D(in, want) expect(&e, SPF_MACRO_DOMAIN, in, want)

static void rfc_examples(void **state)
{
	struct spf_macro_env e = env_for("strong-bad@email.example.com", &ip4);
	D("%{s}", "strong-bad@email.example.com");
	D("%{o}", "email.example.com");
	D("%{d}", "email.example.com");
	D("%{d4}", "email.example.com");
	D("%{d3}", "email.example.com");
	D("%{d2}", "example.com");
	D("%{d1}", "com");
	D("%{dr}", "com.example.email");
	D("%{d2r}", "example.email");
	D("%{l}", "strong-bad");
	D("%{l-}", "strong.bad");
	D("%{lr}", "strong-bad");
	D("%{lr-}", "bad.strong");
	D("%{l1r-}", "strong");
	D("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com");
	D("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com");
	D("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
	  "bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
	D("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
	  "3.2.0.192.in-addr.strong.lp._spf.example.com");
	D("%{d2}.trusted-domains.example.net",
	  "example.com.trusted-domains.example.net");
	D("%{i}", "192.0.2.3");
	D("%{h}", "mx.example.org");
	D("%{p}", "mail.example.com");
}

static void ipv6(void **state)
{
	struct spf_macro_env e = env_for("strong-bad@email.example.com", &ip6);
	D("%{ir}.%{v}._spf.%{d2}",
	  "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf.example.com");
	D("%{i}", "2.0.0.1.0.D.B.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.C.B.0.1");
	D("%{v}", "ip6");
	expect(&e, SPF_MACRO_EXP, "%{c}", "2001:db8::cb01");
}

static void escapes_and_delimiters(void **state)
{
	struct spf_macro_env e = env_for("foo-bar+zip+quux@e12.example.com", &ip4);
	D("%%%_%-x", "% %20x");
	D("%{l1r+}", "foo-bar");        /* libspf2 drops a character here */
	D("%{l2r+-}", "bar.foo");       /* several delimiters */
	D("%{l=,/}", "foo-bar+zip+quux");
	D("%{d999}", "e12.example.com");
	expect(&e, SPF_MACRO_EXP, "%{r} at %{t}", "unknown at 1234567890");
	e.receiver = "mx.example.net";
	expect(&e, SPF_MACRO_EXP, "%{r}", "mx.example.net");

	struct spf_macro_env u = env_for("~jack&jill=up-a_b3.c@e8.example.com", &ip4);
	expect(&u, SPF_MACRO_EXP, "l=%{L}", "l=~jack%26jill%3Dup-a_b3.c");
	expect(&u, SPF_MACRO_EXP, "%{S}", "~jack%26jill%3Dup-a_b3.c%40e8.example.com");
	expect(&u, SPF_MACRO_EXP, "trailing dot.", "trailing dot.");
}

static void syntax(void **state)
{
	assert_int_equal(spf_macro_check("%{d}", 4, SPF_MACRO_DOMAIN), 0);
	assert_int_not_equal(spf_macro_check("%(ir)", 5, SPF_MACRO_DOMAIN), 0);
	assert_int_not_equal(spf_macro_check("foo%.", 5, SPF_MACRO_DOMAIN), 0);
	assert_int_not_equal(spf_macro_check("%", 1, SPF_MACRO_DOMAIN), 0);
	assert_int_not_equal(spf_macro_check("%{a}", 4, SPF_MACRO_DOMAIN), 0);
	assert_int_not_equal(spf_macro_check("%{d0}", 5, SPF_MACRO_DOMAIN), 0);
	assert_int_not_equal(spf_macro_check("%{d", 3, SPF_MACRO_DOMAIN), 0);
	assert_int_not_equal(spf_macro_check("%{c}", 4, SPF_MACRO_DOMAIN), 0);
	assert_int_equal(spf_macro_check("%{c}", 4, SPF_MACRO_EXP), 0);
	assert_int_not_equal(spf_macro_check("a b", 3, SPF_MACRO_DOMAIN), 0);
	assert_int_equal(spf_macro_check("a b", 3, SPF_MACRO_EXP), 0);
	assert_int_not_equal(spf_macro_check("The %{x}-files.", 15, SPF_MACRO_EXP), 0);
	assert_int_not_equal(spf_macro_check("a\x01", 2, SPF_MACRO_EXP), 0);
	assert_int_not_equal(spf_macro_check("\xef", 1, SPF_MACRO_EXP), 0);
}

static void bounded(void **state)
{
	struct spf_macro_env e = env_for("someone@example.com", &ip6);
	size_t n = 4 * 5000;
	char *big = malloc(n + 1);
	for (size_t i = 0; i < n; i += 4)
		memcpy(big + i, "%{S}", 4);
	big[n] = '\0';
	assert_null(spf_macro_expand(big, n, SPF_MACRO_DOMAIN, &e));
	free(big);
}

static void qname(void **state)
{
	char a[600];
	snprintf(a, sizeof(a), "foo.example.com.");
	assert_int_equal(spf_macro_to_qname(a), 0);
	assert_string_equal(a, "foo.example.com");
	snprintf(a, sizeof(a), "mail.example...com");
	assert_int_not_equal(spf_macro_to_qname(a), 0);
	snprintf(a, sizeof(a), "%s.example.com",
	         "a123456789012345678901234567890123456789012345678901234567890123");
	assert_int_not_equal(spf_macro_to_qname(a), 0);
	/* RFC 7208 §7.3: drop leading labels until it fits in 253 */
	char *p = a;
	for (int i = 0; i < 40; i++)
		p += sprintf(p, "label%d.", i);
	sprintf(p, "example.com");
	assert_int_equal(spf_macro_to_qname(a), 0);
	assert_true(strlen(a) <= 253);
	assert_true(strlen(a) > 240);
	assert_string_equal(a + strlen(a) - 11, "example.com");
}

int main(void)
{
	ip4.family = AF_INET;
	inet_pton(AF_INET, "192.0.2.3", &ip4.u.v4);
	ip6.family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::cb01", &ip6.u.v6);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rfc_examples),
		cmocka_unit_test(ipv6),
		cmocka_unit_test(escapes_and_delimiters),
		cmocka_unit_test(syntax),
		cmocka_unit_test(bounded),
		cmocka_unit_test(qname),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
