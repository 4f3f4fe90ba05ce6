/*
 * Unit tests of common/dns.c: the zone backend (every answer shape the
 * SPF module and deliverd rely on), name checks, reverse names, and the
 * parts of the network backend that need no server.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dns.h"

static char tmpdir[64];
static char paths[16][128];
static int npaths;

static const char *write_zone(const char *text)
{
	char *p;
	FILE *fp;

	assert_true(npaths < (int)(sizeof paths / sizeof paths[0]));
	p = paths[npaths];
	snprintf(p, sizeof paths[0], "%s/zone%d", tmpdir, npaths);
	npaths++;
	fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(text, fp);
	assert_int_equal(fclose(fp), 0);
	return p;
}

static int setup(void **state)
{
	strcpy(tmpdir, "/tmp/test_dns.XXXXXX");
	npaths = 0;
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	for (int i = 0; i < npaths; i++)
		unlink(paths[i]);
	return rmdir(tmpdir);
}

static const char ZONE[] =
	"$ORIGIN example.com.\n"
	"$TTL 300\n"
	"@        IN SOA ns hostmaster 1 3600 600 86400 300\n"
	"www      IN A     192.0.2.1\n"
	"www      IN A     192.0.2.2\n"
	"WWW6     IN AAAA  2001:db8::1\n"
	"@        IN MX    10 mx1\n"
	"@        IN MX    20 mx2.example.net.\n"
	"nullmx   IN MX    0 .\n"
	"multi    IN TXT   \"v=spf1 \" \"-all\"\n"
	"multi    IN SPF   \"v=spf1 ?all\"\n"
	"bytes    IN TXT   \"q\\\"x\\\\y\\000z\\255\" ; a comment\n"
	"empty    IN TXT   \\# 0\n"
	"alias    IN CNAME alias2\n"
	"alias2   IN CNAME www\n"
	"loop1    IN CNAME loop2\n"
	"loop2    IN CNAME loop1\n"
	"a.b.ent  IN A     192.0.2.9\n"
	"slow     IN TYPE65280 \\# 0\n"
	"slow     IN TXT   \"never seen\"\n"
	"toslow   IN CNAME slow\n"
	"*.wild   IN TXT   \"wildcard\"\n"
	"\n"
	"$ORIGIN 2.0.192.in-addr.arpa.\n"
	"1        IN PTR   www.example.com.\n";

static struct dns_resolver *load(const char *text)
{
	const char *f = write_zone(text);
	char err[256] = "";
	struct dns_resolver *r = dns_new_zone(&f, 1, err, sizeof err);

	if (!r)
		fail_msg("zone load: %s", err);
	return r;
}

static void test_a_and_aaaa(void **state)
{
	struct dns_resolver *r = load(ZONE);
	struct dns_answer a;
	char buf[INET6_ADDRSTRLEN];

	assert_int_equal(dns_query(r, "www.example.com", DNS_T_A, 0, &a), DNS_OK);
	assert_int_equal(a.status, DNS_OK);
	assert_int_equal(a.n, 2);
	assert_int_equal(a.rr[0].type, DNS_T_A);
	assert_int_equal(a.rr[0].ttl, 300);
	assert_string_equal(inet_ntop(AF_INET, &a.rr[0].u.a, buf, sizeof buf), "192.0.2.1");
	assert_string_equal(inet_ntop(AF_INET, &a.rr[1].u.a, buf, sizeof buf), "192.0.2.2");
	dns_answer_free(&a);
	assert_null(a.rr);

	/* owner names match case-insensitively, trailing dot or not */
	assert_int_equal(dns_query(r, "www6.EXAMPLE.com.", DNS_T_AAAA, 0, &a), DNS_OK);
	assert_int_equal(a.n, 1);
	assert_string_equal(inet_ntop(AF_INET6, &a.rr[0].u.aaaa, buf, sizeof buf), "2001:db8::1");
	dns_answer_free(&a);
	dns_free(r);
}

static void test_mx(void **state)
{
	struct dns_resolver *r = load(ZONE);
	struct dns_answer a;

	assert_int_equal(dns_query(r, "example.com", DNS_T_MX, 0, &a), DNS_OK);
	assert_int_equal(a.n, 2);
	assert_int_equal(a.rr[0].u.mx.pref, 10);
	assert_string_equal(a.rr[0].u.mx.host, "mx1.example.com");
	assert_int_equal(a.rr[1].u.mx.pref, 20);
	assert_string_equal(a.rr[1].u.mx.host, "mx2.example.net");
	dns_answer_free(&a);

	/* RFC 7505 null MX: the root is the empty string */
	assert_int_equal(dns_query(r, "nullmx.example.com", DNS_T_MX, 0, &a), DNS_OK);
	assert_int_equal(a.rr[0].u.mx.pref, 0);
	assert_string_equal(a.rr[0].u.mx.host, "");
	dns_answer_free(&a);
	dns_free(r);
}

static void test_txt(void **state)
{
	struct dns_resolver *r = load(ZONE);
	struct dns_answer a;
	static const char bytes[] = { 'q', '"', 'x', '\\', 'y', 0, 'z', (char)0xff };

	assert_int_equal(dns_query(r, "multi.example.com", DNS_T_TXT, 0, &a), DNS_OK);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.rr[0].u.txt.nstrings, 2);
	assert_int_equal(a.rr[0].u.txt.len, 11);
	assert_string_equal(a.rr[0].u.txt.data, "v=spf1 -all");
	dns_answer_free(&a);

	assert_int_equal(dns_query(r, "multi.example.com", DNS_T_SPF, 0, &a), DNS_OK);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.rr[0].type, DNS_T_SPF);
	assert_string_equal(a.rr[0].u.txt.data, "v=spf1 ?all");
	dns_answer_free(&a);

	assert_int_equal(dns_query(r, "bytes.example.com", DNS_T_TXT, 0, &a), DNS_OK);
	assert_int_equal(a.rr[0].u.txt.nstrings, 1);
	assert_int_equal(a.rr[0].u.txt.len, sizeof bytes);
	assert_memory_equal(a.rr[0].u.txt.data, bytes, sizeof bytes);
	dns_answer_free(&a);

	/* a TXT RR with no character-string at all */
	assert_int_equal(dns_query(r, "empty.example.com", DNS_T_TXT, 0, &a), DNS_OK);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.rr[0].u.txt.nstrings, 0);
	assert_int_equal(a.rr[0].u.txt.len, 0);
	dns_answer_free(&a);
	dns_free(r);
}

static void test_ptr(void **state)
{
	struct dns_resolver *r = load(ZONE);
	struct dns_answer a;
	struct in_addr ip;
	char name[80];

	inet_pton(AF_INET, "192.0.2.1", &ip);
	assert_int_equal(dns_reverse_name(AF_INET, &ip, name, sizeof name), 0);
	assert_int_equal(dns_query(r, name, DNS_T_PTR, 0, &a), DNS_OK);
	assert_int_equal(a.n, 1);
	assert_string_equal(a.rr[0].u.name, "www.example.com");
	dns_answer_free(&a);
	dns_free(r);
}

static void test_cname(void **state)
{
	struct dns_resolver *r = load(ZONE);
	struct dns_answer a;

	/* the answer holds only the asked type, not the chain */
	assert_int_equal(dns_query(r, "alias.example.com", DNS_T_A, 0, &a), DNS_OK);
	assert_int_equal(a.n, 2);
	assert_int_equal(a.rr[0].type, DNS_T_A);
	dns_answer_free(&a);

	assert_int_equal(dns_query(r, "alias.example.com", DNS_T_CNAME, 0, &a), DNS_OK);
	assert_int_equal(a.n, 1);
	assert_string_equal(a.rr[0].u.name, "alias2.example.com");
	dns_answer_free(&a);

	assert_int_equal(dns_query(r, "alias.example.com", DNS_T_MX, 0, &a), DNS_NODATA);
	assert_int_equal(a.n, 0);
	dns_free(r);
}

static void test_cname_loop_and_depth(void **state)
{
	char zone[2048] = "$ORIGIN example.com.\n";
	struct dns_resolver *r;
	struct dns_answer a;

	/* c0 -> c1 -> ... -> c9 -> end: from c2 it takes 8 CNAMEs, from c1 9 */
	for (int i = 0; i < 9; i++)
		sprintf(zone + strlen(zone), "c%d CNAME c%d\n", i, i + 1);
	strcat(zone, "c9 CNAME end\nend A 192.0.2.7\n");
	r = load(zone);
	assert_int_equal(dns_query(r, "c2.example.com", DNS_T_A, 0, &a), DNS_OK);
	dns_answer_free(&a);
	assert_int_equal(dns_query(r, "c1.example.com", DNS_T_A, 0, &a), DNS_TEMPFAIL);
	dns_free(r);

	/* a loop is a DNS error (RFC 1034 3.6.2), like a too long chain */
	r = load(ZONE);
	assert_int_equal(dns_query(r, "loop1.example.com", DNS_T_A, 0, &a), DNS_TEMPFAIL);
	assert_int_equal(a.n, 0);
	assert_null(a.rr);
	assert_int_equal(dns_query(r, "loop1.example.com", DNS_T_CNAME, 0, &a), DNS_OK);
	dns_answer_free(&a);
	dns_free(r);
}

static void test_nxdomain_nodata_ent(void **state)
{
	struct dns_resolver *r = load(ZONE);
	struct dns_answer a;

	assert_int_equal(dns_query(r, "nope.example.com", DNS_T_A, 0, &a), DNS_NXDOMAIN);
	assert_int_equal(a.status, DNS_NXDOMAIN);
	assert_int_equal(dns_query(r, "www.example.com", DNS_T_MX, 0, &a), DNS_NODATA);
	/* empty non-terminals: they have children, so they exist */
	assert_int_equal(dns_query(r, "ent.example.com", DNS_T_A, 0, &a), DNS_NODATA);
	assert_int_equal(dns_query(r, "b.ent.example.com", DNS_T_TXT, 0, &a), DNS_NODATA);
	assert_int_equal(dns_query(r, "x.a.b.ent.example.com", DNS_T_A, 0, &a), DNS_NXDOMAIN);
	assert_int_equal(dns_query(r, "a.b.ent.example.com", DNS_T_A, 0, &a), DNS_OK);
	dns_answer_free(&a);
	assert_int_equal(dns_query(r, "other.test", DNS_T_A, 0, &a), DNS_NXDOMAIN);
	assert_int_equal(a.n, 0);
	dns_free(r);
}

static void test_wildcard(void **state)
{
	struct dns_resolver *r = load(ZONE);
	struct dns_answer a;

	assert_int_equal(dns_query(r, "x.y.wild.example.com", DNS_T_TXT, 0, &a), DNS_OK);
	assert_string_equal(a.rr[0].u.txt.data, "wildcard");
	dns_answer_free(&a);
	assert_int_equal(dns_query(r, "x.wild.example.com", DNS_T_A, 0, &a), DNS_NODATA);
	assert_int_equal(dns_query(r, "wild.example.com", DNS_T_TXT, 0, &a), DNS_NODATA);
	dns_free(r);
}

static void test_timeout_mark(void **state)
{
	struct dns_resolver *r = load(ZONE);
	struct dns_answer a;

	assert_int_equal(dns_query(r, "slow.example.com", DNS_T_TXT, 0, &a), DNS_TEMPFAIL);
	assert_int_equal(a.n, 0);
	assert_int_equal(dns_query(r, "slow.example.com", DNS_T_A, 0, &a), DNS_TEMPFAIL);
	assert_int_equal(dns_query(r, "toslow.example.com", DNS_T_A, 0, &a), DNS_TEMPFAIL);
	/* only the marked name times out, not its zone */
	assert_int_equal(dns_query(r, "www.example.com", DNS_T_TXT, 0, &a), DNS_NODATA);
	dns_free(r);
}

static void test_bad_names(void **state)
{
	struct dns_resolver *r = load(ZONE);
	struct dns_answer a;
	char name[300];

	assert_int_equal(dns_query(r, "", DNS_T_A, 0, &a), DNS_BADNAME);
	assert_int_equal(a.status, DNS_BADNAME);
	assert_int_equal(dns_query(r, "a..example.com", DNS_T_A, 0, &a), DNS_BADNAME);
	assert_int_equal(dns_query(r, ".example.com", DNS_T_A, 0, &a), DNS_BADNAME);
	assert_int_equal(dns_query(r, "example.com..", DNS_T_A, 0, &a), DNS_BADNAME);
	assert_int_equal(dns_query(r, NULL, DNS_T_A, 0, &a), DNS_BADNAME);

	memset(name, 'x', 63);
	strcpy(name + 63, ".example.com");
	assert_int_equal(dns_query(r, name, DNS_T_A, 0, &a), DNS_NXDOMAIN);
	memset(name, 'x', 64);
	strcpy(name + 64, ".example.com");
	assert_int_equal(dns_query(r, name, DNS_T_A, 0, &a), DNS_BADNAME);

	/* 3 labels of 63 and one of 61: 253 characters, the most there can be */
	memset(name, 'x', 253);
	name[63] = name[127] = name[191] = '.';
	name[253] = '\0';
	assert_int_equal(strlen(name), 253);
	assert_int_equal(dns_query(r, name, DNS_T_A, 0, &a), DNS_NXDOMAIN);
	strcat(name, ".");
	assert_int_equal(dns_query(r, name, DNS_T_A, 0, &a), DNS_NXDOMAIN);
	name[253] = 'b';
	name[254] = '\0';
	assert_int_equal(dns_query(r, name, DNS_T_A, 0, &a), DNS_BADNAME);
	dns_free(r);
}

static void test_zone_errors(void **state)
{
	const char *f[2];
	char err[256] = "", want[160];
	struct dns_resolver *r;

	f[0] = write_zone("$ORIGIN example.com.\nwww A 192.0.2.1\n");
	f[1] = write_zone("$ORIGIN example.com.\n; comment\nbad A 192.0.2\nok A 192.0.2.3\n");
	r = dns_new_zone(f, 2, err, sizeof err);
	assert_null(r);
	snprintf(want, sizeof want, "%s:3: ", f[1]);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("error '%s' does not start with '%s'", err, want);

	f[1] = write_zone("$ORIGIN example.com.\nwww A 192.0.2.1\nmx MX ten mx\n");
	assert_null(dns_new_zone(f + 1, 1, err, sizeof err));
	snprintf(want, sizeof want, "%s:3: ", f[1]);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("error '%s' does not start with '%s'", err, want);

	/* the last line, without its newline */
	f[1] = write_zone("www.example.com. A 192.0.2.1\nbad.example.com. A 192.0.2");
	assert_null(dns_new_zone(f + 1, 1, err, sizeof err));
	snprintf(want, sizeof want, "%s:2: ", f[1]);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("error '%s' does not start with '%s'", err, want);

	f[1] = write_zone("$INCLUDE other.zone\n");
	assert_null(dns_new_zone(f + 1, 1, err, sizeof err));
	snprintf(want, sizeof want, "%s:1: ", f[1]);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("error '%s' does not start with '%s'", err, want);

	f[1] = "/nonexistent/zone";
	assert_null(dns_new_zone(f + 1, 1, err, sizeof err));
	assert_non_null(strstr(err, "/nonexistent/zone"));
}

static void test_several_files(void **state)
{
	const char *f[2];
	char err[256];
	struct dns_resolver *r;
	struct dns_answer a;

	f[0] = write_zone("www.example.com. A 192.0.2.1\n");
	f[1] = write_zone("$ORIGIN EXAMPLE.COM.\nwww TXT \"x\"\nwww A 192.0.2.2\n");
	r = dns_new_zone(f, 2, err, sizeof err);
	assert_non_null(r);
	assert_int_equal(dns_query(r, "www.example.com", DNS_T_A, 0, &a), DNS_OK);
	assert_int_equal(a.n, 2);
	dns_answer_free(&a);
	assert_int_equal(dns_query(r, "www.example.com", DNS_T_TXT, 0, &a), DNS_OK);
	dns_answer_free(&a);
	dns_free(r);

	/* no files at all: nothing exists */
	r = dns_new_zone(NULL, 0, err, sizeof err);
	assert_non_null(r);
	assert_int_equal(dns_query(r, "www.example.com", DNS_T_A, 0, &a), DNS_NXDOMAIN);
	dns_free(r);
}

static void test_reverse_name(void **state)
{
	unsigned char v4[4], v6[16];
	char buf[80];

	inet_pton(AF_INET, "192.0.2.33", v4);
	assert_int_equal(dns_reverse_name(AF_INET, v4, buf, sizeof buf), 0);
	assert_string_equal(buf, "33.2.0.192.in-addr.arpa");
	assert_int_equal(dns_reverse_name(AF_INET, v4, buf, 10), -1);

	inet_pton(AF_INET6, "2001:db8::abcd:1", v6);
	assert_int_equal(dns_reverse_name(AF_INET6, v6, buf, sizeof buf), 0);
	assert_string_equal(buf, "1.0.0.0.d.c.b.a.0.0.0.0.0.0.0.0."
	                         "0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
	assert_int_equal(dns_reverse_name(AF_INET6, v6, buf, 72), -1);
	assert_int_equal(dns_reverse_name(AF_INET6, v6, buf, 73), 0);
	assert_int_equal(dns_reverse_name(AF_UNIX, v6, buf, sizeof buf), -1);
}

static void test_status_str(void **state)
{
	assert_string_equal(dns_status_str(DNS_OK), "ok");
	assert_string_equal(dns_status_str(DNS_NODATA), "nodata");
	assert_string_equal(dns_status_str(DNS_NXDOMAIN), "nxdomain");
	assert_string_equal(dns_status_str(DNS_TEMPFAIL), "tempfail");
	assert_string_equal(dns_status_str(DNS_BADNAME), "badname");
}

static void test_network_setup(void **state)
{
	const char *good[] = { "127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:53", "[2001:db8::1]" };
	const char *bad[] = { "", "example.com", "127.0.0.1:0", "127.0.0.1:70000",
	                      "[::1", "[::1]x", "[::1]:", "1.2.3.4:5x" };
	char err[256];
	struct dns_resolver *r;
	struct dns_answer a;

	r = dns_new_network(good, sizeof good / sizeof good[0], 1000, err, sizeof err);
	if (!r)
		fail_msg("%s", err);
	/* a bad name is refused before anything is sent */
	assert_int_equal(dns_query(r, "a..b", DNS_T_A, 0, &a), DNS_BADNAME);
	dns_free(r);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		r = dns_new_network(bad + i, 1, 1000, err, sizeof err);
		if (r)
			fail_msg("accepted '%s'", bad[i]);
		assert_non_null(strstr(err, bad[i]));
	}
}

static void test_network_closed_port(void **state)
{
	/* nothing listens on port 1: the ICMP error makes this quick, and
	 * whatever the host does, it has to be a tempfail */
	const char *ns[] = { "127.0.0.1:1" };
	char err[256];
	struct dns_resolver *r = dns_new_network(ns, 1, 2000, err, sizeof err);
	struct dns_answer a;

	assert_non_null(r);
	assert_int_equal(dns_query(r, "www.example.com", DNS_T_A, 500, &a), DNS_TEMPFAIL);
	assert_int_equal(a.n, 0);
	dns_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_a_and_aaaa, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_txt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ptr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cname, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cname_loop_and_depth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nxdomain_nodata_ent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wildcard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_mark, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zone_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_several_files, setup, teardown),
		cmocka_unit_test(test_reverse_name),
		cmocka_unit_test(test_status_str),
		cmocka_unit_test(test_network_setup),
		cmocka_unit_test(test_network_closed_port),
	};

	return cmocka_run_group_tests_name("dns", tests, NULL, NULL);
}
