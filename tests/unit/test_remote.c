/*
 * Unit tests of deliverd's remote delivery parts that need no peer:
 * routing decisions over the zone-file resolver (MX order and shuffling,
 * AAAA before A, implicit MX, null MX, loops to ourselves, DNS failures,
 * the address bound), smarthost specs, the credentials file and its
 * permission check, DATA encoding (CRLF, dot-stuffing across chunks) and
 * the timeout table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "remote_int.h"
#include "smtp_client.h"

static char tmpdir[64];
static char zonepath[128];
static struct dns_resolver *dns;

static const char ZONE[] =
	"$ORIGIN test.\n"
	"$TTL 300\n"
	"test. SOA ns.test. h.test. 1 3600 600 86400 300\n"
	/* preference order, two equal preferences */
	"pref MX 20 b.hosts\n"
	"pref MX 10 a.hosts\n"
	"pref MX 20 c.hosts\n"
	"a.hosts A 192.0.2.1\n"
	"b.hosts A 192.0.2.2\n"
	"c.hosts A 192.0.2.3\n"
	"dual.hosts AAAA 2001:db8::1\n"
	"dual.hosts A 192.0.2.4\n"
	"dual MX 5 dual.hosts\n"
	/* implicit MX */
	"implicit A 192.0.2.9\n"
	"implicit TXT \"no mx here\"\n"
	/* null MX */
	"nullmx MX 0 .\n"
	/* loops */
	"loop1 MX 10 me.test.\n"
	"loop1 MX 20 a.hosts\n"
	"loop2 MX 10 b.hosts\n"
	"loop2 MX 20 ME.test.\n"
	"loop2 MX 30 c.hosts\n"
	"loop3 MX 10 a.hosts\n"
	"loop3 MX 10 me.test.\n"
	"loop3 MX 5 b.hosts\n"
	"me A 192.0.2.99\n"
	/* trouble */
	"broken TYPE65280 \\# 0\n"
	"brokenmx MX 10 broken.test.\n"
	"noaddr MX 10 nowhere.test.\n"
	"many MX 10 many.hosts\n"
	"many.hosts A 198.51.100.1\n"
	"many.hosts A 198.51.100.2\n"
	"many.hosts A 198.51.100.3\n"
	"many.hosts A 198.51.100.4\n"
	"many.hosts A 198.51.100.5\n"
	"many.hosts A 198.51.100.6\n"
	"many.hosts AAAA 2001:db8::1:1\n"
	"many.hosts AAAA 2001:db8::1:2\n"
	"many.hosts AAAA 2001:db8::1:3\n"
	"many.hosts AAAA 2001:db8::1:4\n"
	"many.hosts AAAA 2001:db8::1:5\n"
	"many.hosts AAAA 2001:db8::1:6\n";

static int setup(void **state)
{
	char err[256];
	const char *files[1] = { zonepath };

	strcpy(tmpdir, "/tmp/test_remote.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(zonepath, sizeof zonepath, "%s/zone", tmpdir);
	FILE *fp = fopen(zonepath, "w");
	if (fp == NULL)
		return -1;
	fputs(ZONE, fp);
	fclose(fp);
	dns = dns_new_zone(files, 1, err, sizeof err);
	if (dns == NULL) {
		fprintf(stderr, "zone: %s\n", err);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	dns_free(dns);
	unlink(zonepath);
	return rmdir(tmpdir);
}

/* The target's address as text, and its port. */
static const char *addr_of(const struct remote_target *t, int *port)
{
	static char buf[INET6_ADDRSTRLEN];
	if (t->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)&t->ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof buf);
		*port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const void *)&t->ss;
		inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof buf);
		*port = ntohs(s4->sin_port);
	}
	return buf;
}

static void test_mx_order_and_shuffle(void **state)
{
	struct remote_route r;
	int port, b_first = 0, c_first = 0;

	for (int i = 0; i < 64; i++) {
		assert_int_equal(remote_route_lookup(dns, "me.test", "pref.test", 2525, 1, &r), 0);
		assert_int_equal(r.n, 3);
		assert_string_equal(r.t[0].host, "a.hosts.test");
		assert_string_equal(addr_of(&r.t[0], &port), "192.0.2.1");
		assert_int_equal(port, 2525);
		if (strcmp(r.t[1].host, "b.hosts.test") == 0) {
			assert_string_equal(r.t[2].host, "c.hosts.test");
			b_first++;
		} else {
			assert_string_equal(r.t[1].host, "c.hosts.test");
			assert_string_equal(r.t[2].host, "b.hosts.test");
			c_first++;
		}
	}
	/* 64 fair coin flips all landing one way: p = 2^-63 */
	assert_true(b_first > 0);
	assert_true(c_first > 0);
}

static void test_aaaa_before_a(void **state)
{
	struct remote_route r;
	int port;

	assert_int_equal(remote_route_lookup(dns, "me.test", "dual.test", 25, 1, &r), 0);
	assert_int_equal(r.n, 2);
	assert_string_equal(addr_of(&r.t[0], &port), "2001:db8::1");
	assert_string_equal(addr_of(&r.t[1], &port), "192.0.2.4");
	assert_int_equal(port, 25);
}

static void test_implicit_mx(void **state)
{
	struct remote_route r;
	int port;

	assert_int_equal(remote_route_lookup(dns, "me.test", "implicit.test", 25, 1, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.t[0].host, "implicit.test");
	assert_string_equal(addr_of(&r.t[0], &port), "192.0.2.9");
}

static void test_null_mx(void **state)
{
	struct remote_route r;

	assert_int_equal(remote_route_lookup(dns, "me.test", "nullmx.test", 25, 1, &r), -1);
	assert_int_equal(r.status, REMOTE_FAIL);
	assert_string_equal(r.dsn, "5.1.10");
	assert_non_null(strstr(r.text, "null MX"));
}

static void test_nxdomain_and_tempfail(void **state)
{
	struct remote_route r;

	assert_int_equal(remote_route_lookup(dns, "me.test", "nosuch.test", 25, 1, &r), -1);
	assert_int_equal(r.status, REMOTE_FAIL);
	assert_string_equal(r.dsn, "5.1.2");

	assert_int_equal(remote_route_lookup(dns, "me.test", "broken.test", 25, 1, &r), -1);
	assert_int_equal(r.status, REMOTE_DEFER);
	assert_string_equal(r.dsn, "4.4.3");

	/* the MX host's address lookup fails temporarily */
	assert_int_equal(remote_route_lookup(dns, "me.test", "brokenmx.test", 25, 1, &r), -1);
	assert_int_equal(r.status, REMOTE_DEFER);
	assert_string_equal(r.dsn, "4.4.3");

	/* MX host without any address */
	assert_int_equal(remote_route_lookup(dns, "me.test", "noaddr.test", 25, 1, &r), -1);
	assert_int_equal(r.status, REMOTE_FAIL);
	assert_string_equal(r.dsn, "5.4.4");
}

static void test_loops(void **state)
{
	struct remote_route r;

	/* we are the best MX: nowhere else to go */
	assert_int_equal(remote_route_lookup(dns, "me.test", "loop1.test", 25, 1, &r), -1);
	assert_int_equal(r.status, REMOTE_FAIL);
	assert_string_equal(r.dsn, "5.4.6");

	/* we are a backup MX (name matched case-insensitively, trailing
	 * dot ignored): only the better MX remains */
	assert_int_equal(remote_route_lookup(dns, "me.test", "loop2.test", 25, 1, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.t[0].host, "b.hosts.test");

	/* an MX of the same preference as ours goes too */
	assert_int_equal(remote_route_lookup(dns, "Me.Test.", "loop3.test", 25, 1, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.t[0].host, "b.hosts.test");

	/* implicit MX that is ourselves */
	assert_int_equal(remote_route_lookup(dns, "me.test", "me.test", 25, 1, &r), -1);
	assert_string_equal(r.dsn, "5.4.6");

	/* not a loop for anyone else */
	assert_int_equal(remote_route_lookup(dns, "other.test", "loop1.test", 25, 1, &r), 0);
	assert_int_equal(r.n, 2);
}

static void test_address_bound_and_literals(void **state)
{
	struct remote_route r;
	int port;

	assert_int_equal(remote_route_lookup(dns, "me.test", "many.test", 25, 1, &r), 0);
	assert_int_equal(r.n, REMOTE_MAX_ADDRS);

	assert_int_equal(remote_route_lookup(dns, "me.test", "127.0.0.7", 2525, 1, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(addr_of(&r.t[0], &port), "127.0.0.7");
	assert_int_equal(port, 2525);

	assert_int_equal(remote_route_lookup(dns, "me.test", "::1", 25, 0, &r), 0);
	assert_int_equal(r.t[0].ss.ss_family, AF_INET6);

	/* no MX lookup (a bracketed smarthost): the name's own address */
	assert_int_equal(remote_route_lookup(dns, "x.test", "me.test", 587, 0, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(addr_of(&r.t[0], &port), "192.0.2.99");
	assert_int_equal(port, 587);
}

static void test_parse_hostport(void **state)
{
	char host[256];
	int port, br;

	assert_int_equal(remote_parse_hostport("smtp.example.org", 25, host, sizeof host, &port, &br), 0);
	assert_string_equal(host, "smtp.example.org");
	assert_int_equal(port, 25);
	assert_int_equal(br, 0);

	assert_int_equal(remote_parse_hostport("smtp.example.org:587", 25, host, sizeof host, &port, &br), 0);
	assert_string_equal(host, "smtp.example.org");
	assert_int_equal(port, 587);

	assert_int_equal(remote_parse_hostport("[smtp.example.org]", 25, host, sizeof host, &port, &br), 0);
	assert_int_equal(br, 1);
	assert_int_equal(port, 25);

	assert_int_equal(remote_parse_hostport("[2001:db8::5]:2525", 25, host, sizeof host, &port, &br), 0);
	assert_string_equal(host, "2001:db8::5");
	assert_int_equal(port, 2525);

	assert_int_equal(remote_parse_hostport("[IPv6:2001:db8::5]", 25, host, sizeof host, &port, &br), 0);
	assert_string_equal(host, "2001:db8::5");

	assert_int_equal(remote_parse_hostport("[127.0.0.1]:0", 25, host, sizeof host, &port, &br), -1);
	assert_int_equal(remote_parse_hostport("2001:db8::5", 25, host, sizeof host, &port, &br), -1);
	assert_int_equal(remote_parse_hostport("[x", 25, host, sizeof host, &port, &br), -1);
	assert_int_equal(remote_parse_hostport("host:", 25, host, sizeof host, &port, &br), -1);
	assert_int_equal(remote_parse_hostport(":25", 25, host, sizeof host, &port, &br), -1);
}

static const char *write_auth(const char *text, mode_t mode)
{
	static char p[160];
	snprintf(p, sizeof p, "%s/auth", tmpdir);
	unlink(p);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(text, fp);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(chmod(p, mode), 0);
	return p;
}

static void add_target(struct remote_route *r, const char *addr, int port)
{
	struct remote_target *t = &r->t[r->n++];
	memset(t, 0, sizeof *t);
	snprintf(t->host, sizeof t->host, "%s", addr);
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&t->ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&t->ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
	}
}

/* An MX under any name whose address is one of relayd's own listeners. */
static void test_loops_by_address(void **state)
{
	(void)state;
	struct strlist listen = { 0 };
	struct remote_self self;
	struct remote_route r;

	assert_int_equal(strlist_split(&listen, "0.0.0.0:25, [::1]:25, 192.0.2.80:2525"), 0);
	assert_int_equal(remote_self_init(&self, &listen), 0);
	memset(&r, 0, sizeof r);
	add_target(&r, "127.0.0.1", 25);      /* loopback on a wildcard listener */
	add_target(&r, "127.0.0.9", 25);      /* the whole loopback range */
	add_target(&r, "198.51.100.7", 25);   /* somebody else */
	add_target(&r, "127.0.0.1", 2526);    /* another port */
	add_target(&r, "::1", 25);            /* an explicit listener */
	add_target(&r, "192.0.2.80", 2525);   /* an explicit listener */
	add_target(&r, "192.0.2.80", 25);     /* not a local address: kept */
	assert_int_equal(remote_route_drop_self(&r, &self), 4);
	assert_int_equal(r.n, 3);
	assert_string_equal(r.t[0].host, "198.51.100.7");
	assert_string_equal(r.t[1].host, "127.0.0.1");
	assert_string_equal(r.t[2].host, "192.0.2.80");
	remote_self_free(&self);
	strlist_free(&listen);
}

static void test_auth_file(void **state)
{
	char user[64], pass[64], err[256];
	const char *p;

	p = write_auth("# smarthost\n\nalice s3cret pass\n", 0600);
	assert_int_equal(remote_read_auth(p, user, sizeof user, pass, sizeof pass, err, sizeof err), 0);
	assert_string_equal(user, "alice");
	assert_string_equal(pass, "s3cret pass");

	p = write_auth("bob:pa:ss\n", 0400);
	assert_int_equal(remote_read_auth(p, user, sizeof user, pass, sizeof pass, err, sizeof err), 0);
	assert_string_equal(user, "bob");
	assert_string_equal(pass, "pa:ss");

	p = write_auth("bob:pa ss\n", 0600);
	assert_int_equal(remote_read_auth(p, user, sizeof user, pass, sizeof pass, err, sizeof err), 0);
	assert_string_equal(user, "bob");
	assert_string_equal(pass, "pa ss");

	p = write_auth("alice secret\n", 0640);
	assert_int_equal(remote_read_auth(p, user, sizeof user, pass, sizeof pass, err, sizeof err), -1);
	assert_non_null(strstr(err, "group or others"));

	p = write_auth("alice secret\n", 0604);
	assert_int_equal(remote_read_auth(p, user, sizeof user, pass, sizeof pass, err, sizeof err), -1);

	p = write_auth("alice\n", 0600);
	assert_int_equal(remote_read_auth(p, user, sizeof user, pass, sizeof pass, err, sizeof err), -1);
	p = write_auth("# nothing\n", 0600);
	assert_int_equal(remote_read_auth(p, user, sizeof user, pass, sizeof pass, err, sizeof err), -1);
	assert_non_null(strstr(err, "no credentials"));

	assert_int_equal(remote_read_auth("/nonexistent/auth", user, sizeof user, pass, sizeof pass,
	                                  err, sizeof err), -1);
	unlink(p);
}

static void encode_in_chunks(const char *in, size_t chunk, char *out)
{
	int bol = 1;
	size_t o = 0, len = strlen(in);

	for (size_t i = 0; i < len; i += chunk) {
		size_t n = len - i < chunk ? len - i : chunk;
		o += smtp_data_encode(in + i, n, out + o, &bol);
	}
	out[o] = '\0';
}

static void test_data_encode(void **state)
{
	static const char in[] = ".start\nmid.dle\n.\n..two\n\nend.\n.";
	static const char want[] = "..start\r\nmid.dle\r\n..\r\n...two\r\n\r\nend.\r\n..";
	char out[512];
	int bol = 1;

	size_t n = smtp_data_encode(in, strlen(in), out, &bol);
	out[n] = '\0';
	assert_string_equal(out, want);
	assert_int_equal(bol, 0);

	/* the same, fed one to seven bytes at a time */
	for (size_t chunk = 1; chunk <= 7; chunk++) {
		encode_in_chunks(in, chunk, out);
		assert_string_equal(out, want);
	}

	/* the worst case fits in 2 * len */
	static const char worst[] = "\n.\n.\n.";
	bol = 1;
	n = smtp_data_encode(worst, strlen(worst), out, &bol);
	assert_true(n <= 2 * strlen(worst));
}

static void test_timeouts(void **state)
{
	struct smtp_timeouts t;

	smtp_timeouts_init(&t, 0);
	assert_int_equal(t.greeting, 300);
	assert_int_equal(t.mail, 300);
	assert_int_equal(t.rcpt, 300);
	assert_int_equal(t.data_init, 120);
	assert_int_equal(t.data_block, 180);
	assert_int_equal(t.data_end, 600);
	smtp_timeouts_init(&t, 3);
	assert_int_equal(t.greeting, 3);
	assert_int_equal(t.data_end, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mx_order_and_shuffle),
		cmocka_unit_test(test_aaaa_before_a),
		cmocka_unit_test(test_implicit_mx),
		cmocka_unit_test(test_null_mx),
		cmocka_unit_test(test_nxdomain_and_tempfail),
		cmocka_unit_test(test_loops),
		cmocka_unit_test(test_loops_by_address),
		cmocka_unit_test(test_address_bound_and_literals),
		cmocka_unit_test(test_parse_hostport),
		cmocka_unit_test(test_auth_file),
		cmocka_unit_test(test_data_encode),
		cmocka_unit_test(test_timeouts),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
