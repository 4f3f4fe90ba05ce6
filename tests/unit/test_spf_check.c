/* Unit tests: spf_check() end to end over the zone backend, with the
 * records libspf2 alone gets wrong and hostile ones (common/spf*.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dns.h"
#include "spf.h"

static struct dns_resolver *dns;
static char zonepath[] = "/tmp/test_spf_check.XXXXXX";

static void zadd(FILE *f, const char *name, const char *rec)
{
	/* one TXT RR, split into 255-byte character-strings */
	fprintf(f, "%s. IN TXT", name);
	size_t n = strlen(rec);
	for (size_t i = 0; i < n; i += 255) {
		fputs(" \"", f);
		for (size_t j = i; j < n && j < i + 255; j++) {
			unsigned char c = (unsigned char)rec[j];
			if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
				fprintf(f, "\\%03u", c);
			else
				fputc(c, f);
		}
		fputc('"', f);
	}
	fputc('\n', f);
}

/* A record of n generated terms between head and tail. */
enum gen { GEN_IP4, GEN_ALT, GEN_IP4B, GEN_VOID, GEN_MACRO };

static char *gen(enum gen g, int n, const char *head, const char *tail)
{
	size_t cap = strlen(head) + strlen(tail) + (size_t)n * 32 + 1;
	char *s = malloc(cap), *p = s;
	p += sprintf(p, "%s", head);
	for (int i = 0; i < n; i++) {
		switch (g) {
		case GEN_IP4:
			p += sprintf(p, " ip4:10.%d.%d.0/24", i / 200, i % 200);
			break;
		case GEN_ALT:       /* qualifiers alternate: no run to group */
			p += sprintf(p, " %cip4:10.9.%d.%d", i % 2 ? '-' : '+',
			             i / 200, i % 200);
			break;
		case GEN_IP4B:
			p += sprintf(p, " ip4:10.1.%d.%d", i / 200, i % 200);
			break;
		case GEN_VOID:
			p += sprintf(p, " a:x%d.test", i);
			break;
		case GEN_MACRO:
			p += sprintf(p, "%%{S}");
			break;
		}
	}
	sprintf(p, "%s", tail);
	return s;
}

static int setup(void **state)
{
	int fd = mkstemp(zonepath);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	fputs("$TTL 300\n", f);
	zadd(f, "deny.test", "v=spf1 -all");
	zadd(f, "types.test", "v=spf1 -all");
	fputs("spf99.test. IN SPF \"v=spf1 +all\"\n", f);
	char *s = gen(GEN_IP4, 300, "v=spf1", " ip4:192.0.2.1 -all");
	zadd(f, "long.test", s);
	free(s);
	s = gen(GEN_ALT, 200, "v=spf1", " ~ip4:192.0.2.1 -all");
	zadd(f, "alt.test", s);
	free(s);
	s = gen(GEN_IP4B, 120, "v=spf1 a:h1.test",
	           " mx:mx.test/31 ?include:inc.test a:h1.test -all");
	zadd(f, "chunkdns.test", s);
	free(s);
	fputs("h1.test. IN A 192.0.2.77\nmx.test. IN MX 10 h1.test.\n", f);
	zadd(f, "inc.test", "v=spf1 -ip4:192.0.2.1 ?ip4:192.0.2.77");
	zadd(f, "loop1.test", "v=spf1 include:loop2.test -all");
	zadd(f, "loop2.test", "v=spf1 include:loop1.test");
	zadd(f, "redir.test", "v=spf1 redirect=redir.test");
	s = gen(GEN_VOID, 300, "v=spf1", "");
	zadd(f, "manyvoid.test", s);
	free(s);
	zadd(f, "many.test", "v=spf1 a:h1.test a:h1.test a:h1.test a:h1.test "
	     "a:h1.test a:h1.test a:h1.test a:h1.test a:h1.test a:h1.test "
	     "ip4:192.0.2.9 a:h1.test -all");
	s = gen(GEN_MACRO, 3000, "v=spf1 exists:", ".x.test -all");
	zadd(f, "macro.test", s);
	free(s);
	zadd(f, "ir.test", "v=spf1 exists:%{ir}.%{ir}.%{ir}.%{ir}.%{ir}.%{ir}.%{ir}"
	     ".%{ir}.%{ir}.x.test a:%{d1000r-+.,/_=}.x.test -all");
	zadd(f, "exp.test", "v=spf1 -all exp=msg.exp.test");
	zadd(f, "msg.exp.test", "%{l} from %{c} to %{r}");
	zadd(f, "mapped.test", "v=spf1 ip6:::ffff:0:0/96 -ip4:192.0.2.0/24 +all");
	fputs("slow.test. IN TYPE65280 \\# 0\n", f);
	zadd(f, "slowinc.test", "v=spf1 ip4:192.0.2.200 include:slow.test -all");
	zadd(f, "cidr0.test", "v=spf1 a:h1.test/0 -all");
	fclose(f);
	char err[256];
	const char *files[] = { zonepath };
	dns = dns_new_zone(files, 1, err, sizeof(err));
	if (!dns)
		fail_msg("zone: %s", err);
	return 0;
}

static int teardown(void **state)
{
	dns_free(dns);
	unlink(zonepath);
	spf_thread_release();
	return 0;
}

static enum spf_result check(const char *ip, const char *sender,
                             struct spf_verdict *v)
{
	struct spf_request req = { 0 };
	struct spf_verdict tmp;
	assert_int_equal(ipaddr_parse(ip, &req.client), 0);
	req.sender = sender;
	req.helo = "helo.test";
	req.receiver = "mx.receiver.test";
	req.timeout_ms = 5000;
	spf_check(dns, &req, v ? v : &tmp);
	if (!v)
		spf_verdict_free(&tmp);
	return v ? v->result : tmp.result;
}

static void basics(void **state)
{
	struct spf_verdict v;
	/* loopback gets no free pass (libspf2 would say pass) */
	assert_int_equal(check("127.0.0.1", "a@deny.test", NULL), SPF_RES_FAIL);
	assert_int_equal(check("::1", "a@deny.test", NULL), SPF_RES_FAIL);
	/* type 99 is never asked */
	assert_int_equal(check("192.0.2.1", "a@spf99.test", NULL), SPF_RES_NONE);
	assert_int_equal(check("192.0.2.1", "a@[192.0.2.1]", NULL), SPF_RES_NONE);
	assert_int_equal(check("192.0.2.1", "nodot", NULL), SPF_RES_NONE);
	/* a mapped client is an IPv4 client */
	assert_int_equal(check("::ffff:192.0.2.3", "a@mapped.test", NULL), SPF_RES_FAIL);
	assert_int_equal(check("2001:db8::1", "a@mapped.test", NULL), SPF_RES_PASS);
	/* a/0 means "has any A record" */
	assert_int_equal(check("198.51.100.1", "a@cidr0.test", NULL), SPF_RES_PASS);
	assert_int_equal(check("2001:db8::1", "a@cidr0.test", NULL), SPF_RES_FAIL);
	/* explanation only when exp= gave one */
	check("192.0.2.1", "a@deny.test", &v);
	assert_null(v.explanation);
	assert_string_equal(v.mechanism, "-all");
	spf_verdict_free(&v);
	check("192.0.2.1", "joe@exp.test", &v);
	assert_int_equal(v.result, SPF_RES_FAIL);
	assert_non_null(v.explanation);
	assert_string_equal(v.explanation, "joe from 192.0.2.1 to mx.receiver.test");
	spf_verdict_free(&v);
	/* a timeout anywhere is a temperror */
	assert_int_equal(check("192.0.2.1", "a@slow.test", NULL), SPF_RES_TEMPERROR);
	assert_int_equal(check("192.0.2.1", "a@slowinc.test", NULL), SPF_RES_TEMPERROR);
	assert_int_equal(check("192.0.2.200", "a@slowinc.test", NULL), SPF_RES_PASS);
}

static void long_records(void **state)
{
	struct spf_verdict v;
	/* libspf2 silently drops mechanisms past 511 compiled bytes */
	assert_int_equal(check("192.0.2.1", "a@long.test", &v), SPF_RES_PASS);
	assert_string_equal(v.mechanism, "ip4:192.0.2.1");
	spf_verdict_free(&v);
	assert_int_equal(check("10.1.0.50", "a@long.test", NULL), SPF_RES_PASS);
	assert_int_equal(check("192.0.2.2", "a@long.test", NULL), SPF_RES_FAIL);
	assert_int_equal(check("192.0.2.1", "a@alt.test", NULL), SPF_RES_SOFTFAIL);
	assert_int_equal(check("10.9.0.1", "a@alt.test", NULL), SPF_RES_FAIL);
	assert_int_equal(check("10.9.0.0", "a@alt.test", NULL), SPF_RES_PASS);
	assert_int_equal(check("192.0.2.76", "a@chunkdns.test", NULL), SPF_RES_PASS);
	assert_int_equal(check("192.0.2.1", "a@chunkdns.test", &v), SPF_RES_FAIL);
	assert_true(v.dns_lookups >= 3);
	spf_verdict_free(&v);
}

static void limits(void **state)
{
	struct spf_verdict v;
	assert_int_equal(check("192.0.2.1", "a@loop1.test", &v), SPF_RES_PERMERROR);
	assert_non_null(strstr(v.reason, "lookup limit"));
	spf_verdict_free(&v);
	assert_int_equal(check("192.0.2.1", "a@redir.test", NULL), SPF_RES_PERMERROR);
	assert_int_equal(check("192.0.2.1", "a@manyvoid.test", &v), SPF_RES_PERMERROR);
	assert_non_null(strstr(v.reason, "void"));
	assert_int_equal(v.void_lookups, 3);
	spf_verdict_free(&v);
	/* ten lookups are fine, the eleventh is not */
	assert_int_equal(check("192.0.2.9", "a@many.test", NULL), SPF_RES_PASS);
	assert_int_equal(check("192.0.2.10", "a@many.test", NULL), SPF_RES_PERMERROR);
}

static void hostile(void **state)
{
	assert_int_equal(check("192.0.2.1", "a@macro.test", NULL), SPF_RES_FAIL);
	assert_int_equal(check("2001:db8::1", "a@ir.test", NULL), SPF_RES_FAIL);
	char big[1200];
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	memcpy(big + 1000, "@deny.test", 11);
	assert_int_equal(check("192.0.2.1", big, NULL), SPF_RES_FAIL);
}

static void *worker(void *arg)
{
	long bad = 0;
	for (int i = 0; i < 150; i++) {
		struct spf_request req = { 0 };
		struct spf_verdict v;
		ipaddr_parse(i % 2 ? "192.0.2.1" : "10.1.0.50", &req.client);
		req.sender = i % 3 ? "x@long.test" : "x@chunkdns.test";
		req.timeout_ms = 5000;
		spf_check(dns, &req, &v);
		enum spf_result want = i % 3 ? SPF_RES_PASS :
		                       i % 2 ? SPF_RES_FAIL : SPF_RES_PASS;
		if (v.result != want)
			bad++;
		spf_verdict_free(&v);
	}
	return (void *)bad;
}

static void threads(void **state)
{
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker, NULL), 0);
	for (int i = 0; i < 4; i++) {
		void *bad;
		pthread_join(t[i], &bad);
		assert_int_equal((long)bad, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(basics),
		cmocka_unit_test(long_records),
		cmocka_unit_test(limits),
		cmocka_unit_test(hostile),
		cmocka_unit_test(threads),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
