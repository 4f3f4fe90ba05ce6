/*
 * spfgate-policy: ask "what would filterd do with this client, HELO,
 * sender and recipients?" without any daemon.  It runs the very policy
 * code filterd runs (common/policy.c), against live DNS or zone files,
 * and prints "key: value" lines for people and for tests.
 */
#include "cidr.h"
#include "config.h"
#include "dns.h"
#include "log.h"
#include "policy.h"
#include "spf.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage(void)
{
	fprintf(stderr,
	    "usage: spfgate-policy [-c FILE] [-t] [--nameserver ADDR[:PORT]]... [--zone FILE]...\n"
	    "                      [--dns-timeout SECONDS] --ip ADDR [--helo NAME]\n"
	    "                      [--from ADDRESS] [--rcpt ADDRESS]... [--auth USER]\n");
	exit(2);
}

static const char *
verdict_str(enum policy_verdict v)
{
	return v == POLICY_REJECT ? "reject" : v == POLICY_TEMPFAIL ? "tempfail" : "accept";
}

/* Replace anything unprintable so one value stays on one output line. */
static void
print_line(const char *key, const char *value)
{
	printf("%s: ", key);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++)
		putchar(*p >= 0x20 && *p != 0x7f ? *p : '?');
	putchar('\n');
}

static void
print_verdict(const char *key, const struct spf_verdict *v)
{
	char line[600];
	snprintf(line, sizeof(line), "%s (%s)", spf_result_str(v->result), v->reason);
	print_line(key, line);
}

int
main(int argc, char **argv)
{
	enum { O_NS = 256, O_ZONE, O_TIMEOUT, O_IP, O_HELO, O_FROM, O_RCPT, O_AUTH };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 't' },
		{ "nameserver", required_argument, NULL, O_NS },
		{ "zone", required_argument, NULL, O_ZONE },
		{ "dns-timeout", required_argument, NULL, O_TIMEOUT },
		{ "ip", required_argument, NULL, O_IP },
		{ "helo", required_argument, NULL, O_HELO },
		{ "from", required_argument, NULL, O_FROM },
		{ "rcpt", required_argument, NULL, O_RCPT },
		{ "auth", required_argument, NULL, O_AUTH },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *conf = NULL, *ip = NULL, *helo = NULL, *from = NULL, *auth = NULL;
	struct strlist ns = { 0 }, zones = { 0 }, rcpts = { 0 };
	int timeout = 0, check_only = 0, c;
	char err[512];
	struct config cfg;

	while ((c = getopt_long(argc, argv, "c:th", opts, NULL)) != -1) {
		switch (c) {
		case 'c': conf = optarg; break;
		case 't': check_only = 1; break;
		case O_NS: strlist_add(&ns, optarg); break;
		case O_ZONE: strlist_add(&zones, optarg); break;
		case O_TIMEOUT:
			if ((timeout = config_dns_timeout(optarg)) < 0) {
				fprintf(stderr, "spfgate-policy: --dns-timeout: expected seconds (1..60)\n");
				return 2;
			}
			break;
		case O_IP: ip = optarg; break;
		case O_HELO: helo = optarg; break;
		case O_FROM: from = optarg; break;
		case O_RCPT: strlist_add(&rcpts, optarg); break;
		case O_AUTH: auth = optarg; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (config_load(&cfg, conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "spfgate-policy: %s\n", err);
		config_free(&cfg);
		return 2;
	}
	if (check_only) {
		printf("%s: configuration OK\n", conf ? conf : "(built-in defaults)");
		config_free(&cfg);
		return 0;
	}
	if (ip == NULL)
		usage();
	log_open("spfgate-policy", LOG_TARGET_STDERR);
	if (timeout)
		cfg.dns_timeout = timeout;
	if (ns.n) {
		strlist_free(&cfg.nameservers);
		cfg.nameservers = ns;
		memset(&ns, 0, sizeof(ns));
	}

	struct policy_client cl = { .helo = helo, .auth = auth };
	if (ipaddr_parse(ip, &cl.ip) < 0) {
		fprintf(stderr, "spfgate-policy: --ip: not an IP address: %s\n", ip);
		config_free(&cfg);
		strlist_free(&zones);
		strlist_free(&rcpts);
		return 2;
	}

	struct dns_resolver *dns;
	if (zones.n)
		dns = dns_new_zone((const char *const *)zones.v, zones.n, err, sizeof(err));
	else
		dns = dns_new_network((const char *const *)cfg.nameservers.v,
		                      cfg.nameservers.n, cfg.dns_timeout * 1000,
		                      err, sizeof(err));
	if (dns == NULL) {
		fprintf(stderr, "spfgate-policy: %s\n", err);
		config_free(&cfg);
		strlist_free(&zones);
		strlist_free(&rcpts);
		return 2;
	}

	struct policy_mail m;
	policy_mail(&cfg, dns, &cl, from ? from : "", &m);
	if (m.bypass) {
		char line[200];
		snprintf(line, sizeof(line), "skipped (%s)", m.bypass_reason);
		print_line("spf-mailfrom", line);
	} else {
		print_verdict("spf-mailfrom", &m.mailfrom);
		if (m.helo_checked)
			print_verdict("spf-helo", &m.helo);
		if (m.mailfrom.explanation)
			print_line("explanation", m.mailfrom.explanation);
		else if (m.helo_checked && m.helo.explanation)
			print_line("explanation", m.helo.explanation);
	}

	enum policy_verdict action = m.verdict;
	char reply[POLICY_REPLY_MAX];
	snprintf(reply, sizeof(reply), "%s", m.verdict != POLICY_ACCEPT ? m.reply : "");
	if (m.would_verdict_differ) {
		char line[POLICY_REPLY_MAX + 40];
		snprintf(line, sizeof(line), "would %s: %s", verdict_str(m.dry_verdict), m.reply);
		print_line("dry-run", line);
	}
	if (m.verdict == POLICY_ACCEPT) {
		for (size_t i = 0; i < rcpts.n; i++) {
			char r[POLICY_REPLY_MAX], line[POLICY_REPLY_MAX + 400];
			enum policy_verdict rv = policy_rcpt(&cfg, &cl, rcpts.v[i], r, sizeof(r));
			snprintf(line, sizeof(line), "%s %s%s%s", rcpts.v[i], verdict_str(rv),
			         rv != POLICY_ACCEPT ? " " : "", rv != POLICY_ACCEPT ? r : "");
			print_line("rcpt", line);
			if (rv != POLICY_ACCEPT && action == POLICY_ACCEPT) {
				action = rv;
				snprintf(reply, sizeof(reply), "%s", r);
			}
		}
	}
	print_line("action", verdict_str(action));
	if (action != POLICY_ACCEPT)
		print_line("reply", reply);
	if (m.verdict == POLICY_ACCEPT)
		for (int i = 0; i < m.nheaders; i++) {
			char line[POLICY_HDR_MAX + 40];
			snprintf(line, sizeof(line), "%s: %s", m.headers[i].name, m.headers[i].value);
			print_line("header", line);
		}

	policy_mail_free(&m);
	dns_free(dns);
	strlist_free(&zones);
	strlist_free(&rcpts);
	strlist_free(&ns);
	config_free(&cfg);
	return 0;
}
