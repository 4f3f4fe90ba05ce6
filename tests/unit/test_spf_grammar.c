/* Unit tests: the RFC 7208 record grammar (common/spf_grammar.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "spf_grammar.h"

static int parses(const char *rec)
{
	struct spf_record r;
	char err[128];
	int rc = spf_record_parse(rec, strlen(rec), &r, err, sizeof(err));
	if (rc == 0)
		spf_record_clear(&r);
	return rc == 0;
}

static void valid(void **state)
{
	static const char *const ok[] = {
		"v=spf1", "v=spf1 ", "v=spf1  a  -all ", "V=SpF1 ~ALL",
		"v=spf1 a mx ptr -all",
		"v=spf1 a:foo.example.com/24//64 mx//0 a/0",
		"v=spf1 ip4:192.0.2.0/24 ip4:1.1.1.1/0 ip6:2001:db8::/32 ip6:::1.1.1.1/0",
		"v=spf1 include:_spf.example.com exists:%{ir}.%{l1r-}.%{d2}.bl.example",
		"v=spf1 a:foo:bar/baz.example.com mx:foo.example.xn--zckzah",
		"v=spf1 a:mail.example...com",          /* valid spec, bad name */
		"v=spf1 redirect=%{d}.d.spf.example.com. exp=msg.example.com.",
		"v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all",
		"v=spf1 default=pass", "v=spf1 default=+",
		"v=spf1 a:%{H}.bar -all", "v=spf1 a:macro%%percent%_%_space%-url-space.example.com",
		"v=spf1 ptr:example.Com exists:%{p}.should.example.com",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (!parses(ok[i]))
			fail_msg("should parse: %s", ok[i]);
	}
}

static void invalid(void **state)
{
	static const char *const bad[] = {
		"v=spf1 ip4:1.2.3.4 -all moo", "v=spf1 moo.cow/far_out=man:dog/cat",
		"v=spf1 moo.cow:far_out=man:dog/cat", "v=spf1 redirect:t2.example.com",
		"v=spf1 a:foo-bar -all", "v=spf1 -all.", "v=spf1 -all:foobar",
		"v=spf1 -all/8", "v=spf1 ptr/0 -all", "v=spf1 ptr:", "v=spf1 a//33x",
		"v=spf1 a/33 -all", "v=spf1 a//129", "v=spf1 a/24/64",
		"v=spf1 a:111.222.33.44", "v=spf1 a:abc.123", "v=spf1 a:museum",
		"v=spf1 a:museum.", "v=spf1 a:example.com:8080", "v=spf1 a:example.-com",
		"v=spf1 a:", "v=spf1 include +all", "v=spf1 include:ip5.example.com/24",
		"v=spf1 include:", "v=spf1 exists", "v=spf1 exists:",
		"v=spf1 exists:mail.example.com/24", "v=spf1 ip4:1.2.3.4/33",
		"v=spf1 ip4:1.2.3.4/032", "v=spf1 ip4", "v=spf1 ip4:1.2.3.4:8080",
		"v=spf1 ip4:1.2.3", "v=spf1 ip4:1.2.3.4//32", "v=spf1 ip4:01.2.3.4",
		"v=spf1 -all ip6", "v=spf1 ip6:::1.1.1.1/129",
		"v=spf1 ip6:::1.1.1.1//33", "v=spf1 ip6::CAFE::BABE",
		"v=spf1 1up=foo", "v=spf1 =all", "v=spf1 -all foo=%abc", "v=spf1 exp= -all",
		"v=spf1 exp=e13msg.example.com -all exp=e11msg.example.com",
		"v=spf1 redirect=a.example.com -all redirect=a.example.com",
		"v=spf1 exp=-all", "v=spf1 redirect=-all ?all", "v=spf1 ?all redirect=",
		"v=spf1 -exists:%(ir).sbl.example.com ?all", "v=spf1 exists:foo%.sbl.example.com",
		"v=spf1 a:%{a}.example.com", "v=spf1 -all exp=%{r}.example.com",
		"v=spf1 a:ctrl.example.com\rptr -all", "v=spf1 \x80" "a:example.net -all",
		"v=spf1 a:example.net \x96" "all", "v=spf1 ip4:192.0.2.5\n include:x.example.com",
		"v=spf1\ta", "v=spf1 +redirect=x.example.com",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parses(bad[i]))
			fail_msg("should not parse: %s", bad[i]);
	}
	/* a NUL inside the record is data, and invalid */
	struct spf_record r;
	char err[128];
	assert_int_not_equal(spf_record_parse("v=spf1 a:foo.example.com\0", 25, &r,
	                                      err, sizeof(err)), 0);
}

static void version(void **state)
{
	assert_true(spf_is_spf1("v=spf1", 6));
	assert_true(spf_is_spf1("v=spf1 -all", 11));
	assert_true(spf_is_spf1("V=SPF1 -all", 11));
	assert_false(spf_is_spf1("v=spf10", 7));
	assert_false(spf_is_spf1("v=spf1mx", 8));
	assert_false(spf_is_spf1("v=spfl am not", 13));
	assert_false(spf_is_spf1("", 0));
}

static void structure(void **state)
{
	struct spf_record r;
	char err[128];
	const char *s = "v=spf1 -a:foo.example.com/24//64 ~ip4:192.0.2.0/24 "
	                "redirect=x.example.com ?all exp=e.example.com";
	assert_int_equal(spf_record_parse(s, strlen(s), &r, err, sizeof(err)), 0);
	assert_int_equal(r.nterms, 3);
	assert_int_equal(r.terms[0].mech, SPF_MECH_A);
	assert_int_equal(r.terms[0].qualifier, '-');
	assert_int_equal(r.terms[0].cidr4, 24);
	assert_int_equal(r.terms[0].cidr6, 64);
	assert_int_equal(r.terms[0].domain.len, strlen("foo.example.com"));
	assert_memory_equal(spf_span_ptr(&r, r.terms[0].domain), "foo.example.com", 15);
	assert_int_equal(r.terms[1].mech, SPF_MECH_IP4);
	assert_int_equal(r.terms[1].cidr4, 24);
	assert_int_equal(r.terms[2].mech, SPF_MECH_ALL);
	assert_true(r.has_all);
	assert_memory_equal(spf_span_ptr(&r, r.redirect), "x.example.com", 13);
	assert_memory_equal(spf_span_ptr(&r, r.exp), "e.example.com", 13);
	spf_record_clear(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid),
		cmocka_unit_test(invalid),
		cmocka_unit_test(version),
		cmocka_unit_test(structure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
