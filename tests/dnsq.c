/*
 * dnsq: a small dig for tests and debugging, through common/dns.c.
 *
 *   dnsq [--nameserver ADDR[:PORT]]... [--zone FILE]... [--timeout MS] NAME TYPE
 *
 * Prints "status: ok|nodata|nxdomain|tempfail|badname", then one line per
 * RR ("A 1.2.3.4", "MX 10 mx.example.com", "TXT \"...\"").  TXT data is
 * printed as one quoted string (the character-strings concatenated) with
 * '"' and '\' escaped and other non-printable bytes as \DDD, followed by
 * " ; strings=N" when there was not exactly one character-string.
 * Exit status: 0 when an answer (of any status) was printed, 2 on usage or
 * set-up errors.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "dns.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	uint16_t type;
} types[] = {
	{ "A", DNS_T_A }, { "NS", DNS_T_NS }, { "CNAME", DNS_T_CNAME },
	{ "PTR", DNS_T_PTR }, { "MX", DNS_T_MX }, { "TXT", DNS_T_TXT },
	{ "AAAA", DNS_T_AAAA }, { "SPF", DNS_T_SPF },
};

static const char *type_name(uint16_t t, char *buf, size_t len)
{
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (types[i].type == t)
			return types[i].name;
	snprintf(buf, len, "TYPE%u", t);
	return buf;
}

static int parse_type(const char *s, uint16_t *t)
{
	char *end;
	unsigned long v;

	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (strcasecmp(types[i].name, s) == 0) {
			*t = types[i].type;
			return 0;
		}
	if (strncasecmp(s, "TYPE", 4) != 0)
		return -1;
	v = strtoul(s + 4, &end, 10);
	if (*end || end == s + 4 || v == 0 || v > 65535)
		return -1;
	*t = (uint16_t)v;
	return 0;
}

static void print_txt(const struct dns_rr *rr)
{
	putchar('"');
	for (size_t i = 0; i < rr->u.txt.len; i++) {
		unsigned char c = (unsigned char)rr->u.txt.data[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\%03u", c);
		else
			putchar(c);
	}
	putchar('"');
	if (rr->u.txt.nstrings != 1)
		printf(" ; strings=%d", rr->u.txt.nstrings);
}

static void print_rr(const struct dns_rr *rr)
{
	char buf[INET6_ADDRSTRLEN], tbuf[16];

	printf("%s ", type_name(rr->type, tbuf, sizeof tbuf));
	switch (rr->type) {
	case DNS_T_A:
		printf("%s", inet_ntop(AF_INET, &rr->u.a, buf, sizeof buf));
		break;
	case DNS_T_AAAA:
		printf("%s", inet_ntop(AF_INET6, &rr->u.aaaa, buf, sizeof buf));
		break;
	case DNS_T_MX:
		printf("%u %s", rr->u.mx.pref, rr->u.mx.host);
		break;
	case DNS_T_PTR:
	case DNS_T_CNAME:
	case DNS_T_NS:
		printf("%s", rr->u.name);
		break;
	case DNS_T_TXT:
	case DNS_T_SPF:
		print_txt(rr);
		break;
	default:
		printf("(ttl %u)", rr->ttl);
	}
	putchar('\n');
}

static int usage(void)
{
	fprintf(stderr, "usage: dnsq [--nameserver ADDR[:PORT]]... [--zone FILE]... "
	        "[--timeout MS] NAME TYPE\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char **ns = calloc((size_t)argc, sizeof *ns);
	const char **zones = calloc((size_t)argc, sizeof *zones);
	size_t nns = 0, nzones = 0;
	int timeout = 5000, i, rc = 2;
	char err[512];
	struct dns_resolver *r = NULL;
	struct dns_answer ans;
	uint16_t type;

	if (!ns || !zones)
		goto out;
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--nameserver") == 0 && i + 1 < argc)
			ns[nns++] = argv[++i];
		else if (strcmp(argv[i], "--zone") == 0 && i + 1 < argc)
			zones[nzones++] = argv[++i];
		else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			timeout = atoi(argv[++i]);
		else if (strcmp(argv[i], "--") == 0 || argv[i][0] != '-') {
			i += strcmp(argv[i], "--") == 0;
			break;
		} else {
			rc = usage();
			goto out;
		}
	}
	if (argc - i != 2 || parse_type(argv[i + 1], &type) < 0 ||
	    (nns && nzones)) {
		rc = usage();
		goto out;
	}
	r = nzones ? dns_new_zone(zones, nzones, err, sizeof err)
	           : dns_new_network(ns, nns, timeout, err, sizeof err);
	if (!r) {
		fprintf(stderr, "dnsq: %s\n", err);
		goto out;
	}
	dns_query(r, argv[i], type, 0, &ans);
	printf("status: %s\n", dns_status_str(ans.status));
	for (size_t k = 0; k < ans.n; k++)
		print_rr(&ans.rr[k]);
	dns_answer_free(&ans);
	rc = 0;
out:
	dns_free(r);
	free(ns);
	free(zones);
	return rc;
}
