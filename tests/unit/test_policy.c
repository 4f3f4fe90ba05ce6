/* Unit tests: relay-only-for-self, bypasses, SPF actions and header
 * safety (common/policy.c, common/authres.c), with a zone-file resolver. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authres.h"
#include "config.h"
#include "policy.h"

static struct config cfg;
static struct dns_resolver *dns;
static char zpath[64];

static int
setup(void **state)
{
	char err[256];
	FILE *f;
	int fd;

	config_defaults(&cfg);
	free(cfg.mail_name);
	cfg.mail_name = strdup("mail.example.test");
	strlist_free(&cfg.local_domains);
	strlist_split(&cfg.local_domains, "example.test, mail.example.test");
	cidr_list_free(&cfg.relay_networks);
	cidr_list_parse(&cfg.relay_networks, "192.0.2.0/24", NULL);

	snprintf(zpath, sizeof(zpath), "/tmp/spfgate-test-zone.XXXXXX");
	fd = mkstemp(zpath);
	f = fdopen(fd, "w");
	fputs("$ORIGIN sender.test.\n$TTL 300\n"
	      "@ IN TXT \"v=spf1 ip4:198.51.100.0/24 exp=why.sender.test -all\"\n"
	      "why IN TXT \"%{i} is not one of %{d}'s designated mail servers.\"\n"
	      "soft IN TXT \"v=spf1 ~all\"\n"
	      "broken IN TXT \"v=spf1 ip4:1.2.3.4/99 -all\"\n"
	      "helo IN TXT \"v=spf1 a -all\"\n"
	      "helo IN A 203.0.113.5\n"
	      "nul IN TXT \"v=spf1 \\000all\"\n"
	      "nulmod IN TXT \"v=spf1 a\\000b=x -all\"\n", f);
	fclose(f);
	dns = dns_new_zone((const char *const[]){ zpath }, 1, err, sizeof(err));
	if (dns == NULL)
		fail_msg("%s", err);
	return 0;
}

static int
teardown(void **state)
{
	dns_free(dns);
	unlink(zpath);
	config_free(&cfg);
	return 0;
}

static enum policy_verdict
rcpt(const char *ip, const char *auth, const char *addr, char *reply)
{
	struct policy_client cl = { .auth = auth };
	assert_int_equal(ipaddr_parse(ip, &cl.ip), 0);
	return policy_rcpt(&cfg, &cl, addr, reply, POLICY_REPLY_MAX);
}

static void
relay_only_for_self(void **state)
{
	char r[POLICY_REPLY_MAX];
	assert_int_equal(rcpt("203.0.113.9", NULL, "<bob@example.test>", r), POLICY_ACCEPT);
	assert_int_equal(rcpt("203.0.113.9", NULL, "<bob@EXAMPLE.TEST.>", r), POLICY_ACCEPT);
	assert_int_equal(rcpt("203.0.113.9", NULL, "<Postmaster>", r), POLICY_ACCEPT);
	assert_int_equal(rcpt("203.0.113.9", NULL, "<bob@other.test>", r), POLICY_REJECT);
	assert_string_equal(r, "554 5.7.1 <bob@other.test>: Relay access denied");
	assert_int_equal(rcpt("192.0.2.10", NULL, "<bob@other.test>", r), POLICY_ACCEPT);
	assert_int_equal(rcpt("203.0.113.9", "alice", "<bob@other.test>", r), POLICY_ACCEPT);
	assert_int_equal(rcpt("::ffff:192.0.2.10", NULL, "<bob@other.test>", r), POLICY_ACCEPT);
}

static void
relay_probes(void **state)
{
	char r[POLICY_REPLY_MAX];
	const char *probes[] = {
		"<u%other.test@example.test>", "<other.test!u@example.test>",
		"<\"u@other.test\"@example.test>", "<@example.test:u@other.test>",
		"<u@[192.0.2.1]>", "<u@other.test.>", "<u@OTHER.test>",
		"<u@example.test@other.test>", "<u@other.test\r\n>", "<>",
	};
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		if (rcpt("203.0.113.9", NULL, probes[i], r) != POLICY_REJECT)
			fail_msg("relay probe accepted: %s", probes[i]);
}

static void
mail(const char *ip, const char *helo, const char *from, const char *auth,
     struct policy_mail *m)
{
	struct policy_client cl = { .helo = helo, .auth = auth };
	assert_int_equal(ipaddr_parse(ip, &cl.ip), 0);
	policy_mail(&cfg, dns, &cl, from, m);
}

static void
spf_fail_rejects_with_explanation(void **state)
{
	struct policy_mail m;
	mail("203.0.113.9", "mx.other.test", "<a@sender.test>", NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_FAIL);
	assert_int_equal(m.verdict, POLICY_REJECT);
	assert_string_equal(m.reply,
	    "550 5.7.23 203.0.113.9 is not one of sender.test's designated mail servers.");
	policy_mail_free(&m);
}

static void
spf_pass_tags(void **state)
{
	struct policy_mail m;
	mail("198.51.100.7", "mx.sender.test", "<a@sender.test>", NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_PASS);
	assert_int_equal(m.verdict, POLICY_ACCEPT);
	assert_int_equal(m.nheaders, 2);
	assert_string_equal(m.headers[0].name, "Received-SPF");
	assert_non_null(strstr(m.headers[0].value, "pass (mail.example.test: "));
	assert_non_null(strstr(m.headers[0].value, "client-ip=198.51.100.7; envelope-from=a@sender.test; helo=mx.sender.test; receiver=mail.example.test; identity=mailfrom"));
	assert_string_equal(m.headers[1].value,
	    "mail.example.test; spf=pass smtp.mailfrom=a@sender.test");
	policy_mail_free(&m);
}

static void
actions_and_dry_run(void **state)
{
	struct policy_mail m;
	mail("203.0.113.9", "x", "<a@soft.sender.test>", NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_SOFTFAIL);
	assert_int_equal(m.verdict, POLICY_ACCEPT);
	policy_mail_free(&m);

	mail("203.0.113.9", "x", "<a@broken.sender.test>", NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_PERMERROR);
	assert_int_equal(m.verdict, POLICY_ACCEPT);
	policy_mail_free(&m);
	cfg.filterd.on_result[SPF_RES_PERMERROR] = SPF_ACT_REJECT;
	mail("203.0.113.9", "x", "<a@broken.sender.test>", NULL, &m);
	assert_int_equal(m.verdict, POLICY_REJECT);
	assert_memory_equal(m.reply, "550 5.7.24 ", 11);
	policy_mail_free(&m);
	cfg.filterd.on_result[SPF_RES_PERMERROR] = SPF_ACT_TAG;

	cfg.filterd.dry_run = 1;
	mail("203.0.113.9", "x", "<a@sender.test>", NULL, &m);
	assert_int_equal(m.verdict, POLICY_ACCEPT);
	assert_true(m.would_verdict_differ);
	assert_int_equal(m.dry_verdict, POLICY_REJECT);
	policy_mail_free(&m);
	cfg.filterd.dry_run = 0;
}

static void
null_sender_uses_helo(void **state)
{
	struct policy_mail m;
	mail("203.0.113.5", "helo.sender.test", "<>", NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_PASS);
	assert_string_equal(m.identity, "postmaster@helo.sender.test");
	assert_non_null(strstr(m.headers[0].value, "identity=helo"));
	assert_string_equal(m.headers[1].value,
	    "mail.example.test; spf=pass smtp.helo=helo.sender.test");
	policy_mail_free(&m);
	mail("203.0.113.6", "helo.sender.test", "", NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_FAIL);
	assert_int_equal(m.verdict, POLICY_REJECT);
	policy_mail_free(&m);
}

static void
helo_check(void **state)
{
	struct policy_mail m;
	cfg.filterd.helo_check = 1;
	mail("198.51.100.7", "helo.sender.test", "<a@sender.test>", NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_PASS);
	assert_true(m.helo_checked);
	assert_int_equal(m.helo.result, SPF_RES_FAIL);
	assert_int_equal(m.verdict, POLICY_REJECT);
	assert_int_equal(m.nheaders, 3);
	policy_mail_free(&m);
	cfg.filterd.helo_check = 0;
}

static void
bypass(void **state)
{
	struct policy_mail m;
	mail("192.0.2.10", "x", "<a@sender.test>", NULL, &m);
	assert_int_equal(m.bypass, 1);
	assert_int_equal(m.verdict, POLICY_ACCEPT);
	assert_non_null(strstr(m.headers[0].value, "SPF not checked: client 192.0.2.10 is in relay_networks"));
	policy_mail_free(&m);
	mail("203.0.113.9", "x", "<a@sender.test>", "alice", &m);
	assert_int_equal(m.bypass, 2);
	assert_int_equal(m.verdict, POLICY_ACCEPT);
	assert_non_null(strstr(m.headers[1].value, "auth=pass smtp.auth=alice;"));
	policy_mail_free(&m);
}

static void
hostile_values_stay_in_their_field(void **state)
{
	struct policy_mail m;
	mail("203.0.113.9", "evil\r\nX-Injected: yes; spf=pass \"(", "<\"a;b\\\"c\"@soft.sender.test>", NULL, &m);
	for (int i = 0; i < m.nheaders; i++) {
		assert_null(strchr(m.headers[i].value, '\r'));
		assert_null(strchr(m.headers[i].value, '\n'));
	}
	assert_non_null(strstr(m.headers[0].value, "helo=\"evil??X-Injected: yes; spf=pass \\\"(\""));
	assert_non_null(strstr(m.headers[1].value, "spf=softfail smtp.mailfrom=\"\\\"a;b\\\\\\\"c\\\"@soft.sender.test\""));
	policy_mail_free(&m);
}

static void
long_local_part_keeps_the_domain(void **state)
{
	struct policy_mail m;
	char from[1200];
	for (size_t n = 50; n < 1100; n += 131) {
		snprintf(from, sizeof(from), "<%0*d@sender.test>", (int)n, 0);
		mail("203.0.113.9", "x", from, NULL, &m);
		if (m.mailfrom.result != SPF_RES_FAIL || m.verdict != POLICY_REJECT)
			fail_msg("local part of %zu bytes: %s", n, spf_result_str(m.mailfrom.result));
		assert_string_equal(m.mailfrom.domain, "sender.test");
		policy_mail_free(&m);
	}
	/* An over-long domain is malformed: none, never a prefix of it. */
	snprintf(from, sizeof(from), "<a@%0300d.sender.test>", 0);
	mail("203.0.113.9", "x", from, NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_NONE);
	policy_mail_free(&m);
}

static void
nul_in_record_is_a_permerror(void **state)
{
	struct policy_mail m;
	mail("203.0.113.9", "x", "<a@nul.sender.test>", NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_PERMERROR);
	policy_mail_free(&m);
	mail("203.0.113.9", "x", "<a@nulmod.sender.test>", NULL, &m);
	assert_int_equal(m.mailfrom.result, SPF_RES_PERMERROR);
	policy_mail_free(&m);
}

static void
authres_ids(void **state)
{
	assert_true(authres_is_ours("mail.example.test; spf=pass", "mail.example.test"));
	assert_true(authres_is_ours(" MAIL.example.test 1; none", "mail.example.test"));
	assert_false(authres_is_ours("mail.example.test.evil; spf=pass", "mail.example.test"));
	assert_false(authres_is_ours("other.test; spf=pass", "mail.example.test"));
	assert_true(authres_is_ours("(forged) mail.example.test; spf=pass", "mail.example.test"));
	assert_true(authres_is_ours("\"mail.example.test\"; spf=pass", "mail.example.test"));
	assert_true(authres_is_ours("\r\n\t(a (nested) c)mail.example.test.(x) 1 (y); spf=pass", "mail.example.test"));
	assert_false(authres_is_ours("\"mail.example.test.evil\"; spf=pass", "mail.example.test"));
	assert_false(authres_is_ours("mail.example.test2; spf=pass", "mail.example.test"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(relay_only_for_self),
		cmocka_unit_test(relay_probes),
		cmocka_unit_test(spf_fail_rejects_with_explanation),
		cmocka_unit_test(spf_pass_tags),
		cmocka_unit_test(actions_and_dry_run),
		cmocka_unit_test(null_sender_uses_helo),
		cmocka_unit_test(helo_check),
		cmocka_unit_test(bypass),
		cmocka_unit_test(hostile_values_stay_in_their_field),
		cmocka_unit_test(long_local_part_keeps_the_domain),
		cmocka_unit_test(nul_in_record_is_a_permerror),
		cmocka_unit_test(authres_ids),
	};
	return cmocka_run_group_tests_name("policy", tests, setup, teardown);
}
