/*
 * spfgate-dnscheck: does the DNS say what this site needs it to say?
 * For mail_name and every local domain it checks, against live DNS (or
 * zone files), that mail comes here (MX, A/AAAA) and that our outbound
 * mail passes SPF (the domain's record, evaluated by the same code
 * filterd runs, for this host's addresses or the smarthost's).  One line
 * per check, then the records to publish in zone-file syntax.
 * Exit 0: all pass (warnings allowed); 1: a check failed; 2: usage or
 * configuration error.
 */
#include "cidr.h"
#include "config.h"
#include "dnscheck.h"
#include "log.h"
#include "spf.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_MECHS 64

static void
usage(void)
{
	fprintf(stderr,
	    "usage: spfgate-dnscheck [-c FILE] [-t] [--nameserver ADDR[:PORT]]... [--zone FILE]...\n"
	    "                        [--dns-timeout SECONDS] [--address ADDR]...\n");
	exit(2);
}

/* The host of "host", "host:port", "[host]:port", "[IPv6:addr]". */
static int
smarthost_host(const char *spec, char *host, size_t len)
{
	const char *h = spec, *end;

	if (spec[0] == '[') {
		h = spec + 1;
		end = strchr(h, ']');
	} else {
		end = strchr(spec, ':');
		if (end == NULL)
			end = spec + strlen(spec);
	}
	if (end == NULL || end == h || (size_t)(end - h) >= len)
		return -1;
	if ((size_t)(end - h) > 5 && strncasecmp(h, "IPv6:", 5) == 0)
		h += 5;
	memcpy(host, h, (size_t)(end - h));
	host[end - h] = '\0';
	return 0;
}

static void
add_ip_mech(struct strlist *mechs, const struct ipaddr *a)
{
	char buf[INET6_ADDRSTRLEN + 8], s[INET6_ADDRSTRLEN];
	snprintf(buf, sizeof(buf), "%s:%s", a->family == AF_INET ? "ip4" : "ip6",
	         ipaddr_format(a, s, sizeof(s)));
	strlist_add(mechs, buf);
}

/* The outbound paths: the smarthost's addresses (looked up by
 * dc_check_smarthost) or this host's own. */
static void
plan_paths(struct dnscheck *c)
{
	if (c->sh_host[0]) {
		struct ipaddr a;
		if (c->sh_literal && ipaddr_parse(c->sh_host, &a) == 0)
			add_ip_mech(&c->mechs, &a);
		else {
			char m[300];
			snprintf(m, sizeof(m), "a:%s", c->sh_host);
			strlist_add(&c->mechs, m);
		}
		return;
	}
	size_t n = c->self.n < MAX_MECHS ? c->self.n : MAX_MECHS;
	c->paths = n ? calloc(n, sizeof(*c->paths)) : NULL;
	for (size_t i = 0; c->paths && i < n; i++) {
		add_ip_mech(&c->mechs, &c->self.v[i]);
		c->paths[i].ip = c->self.v[i];
		c->paths[i].what = "this host";
		c->paths[i].mech = i;
	}
	c->npaths = c->paths ? n : 0;
}

static int
is_localhost(const char *d)
{
	size_t l = strlen(d);
	return strcasecmp(d, "localhost") == 0
	       || (l > 10 && strcasecmp(d + l - 10, ".localhost") == 0);
}

static char *
describe_ns(const struct strlist *zones, const struct strlist *ns)
{
	char buf[1024] = "";
	size_t used = 0;

	if (zones->n)
		return strdup("the zone files");
	if (ns->n == 0)
		return strdup("the name servers of /etc/resolv.conf");
	for (size_t i = 0; i < ns->n && used < sizeof(buf); i++) {
		int k = snprintf(buf + used, sizeof(buf) - used, "%s%s", i ? ", " : "", ns->v[i]);
		used += k > 0 ? (size_t)k : 0;
	}
	return strdup(buf);
}

int
main(int argc, char **argv)
{
	enum { O_NS = 256, O_ZONE, O_TIMEOUT, O_ADDRESS };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 't' },
		{ "nameserver", required_argument, NULL, O_NS },
		{ "zone", required_argument, NULL, O_ZONE },
		{ "dns-timeout", required_argument, NULL, O_TIMEOUT },
		{ "address", required_argument, NULL, O_ADDRESS },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *conf = CONFIG_DEFAULT_PATH, *how = "--address";
	struct strlist ns = { 0 }, zones = { 0 };
	struct dnscheck c = { 0 };
	struct config cfg;
	int timeout = 0, check_only = 0, opt, rc = 2;
	char err[512], *ns_desc = NULL;

	while ((opt = getopt_long(argc, argv, "c:th", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': conf = optarg; break;
		case 't': check_only = 1; break;
		case O_NS: strlist_add(&ns, optarg); break;
		case O_ZONE: strlist_add(&zones, optarg); break;
		case O_TIMEOUT:
			if ((timeout = config_dns_timeout(optarg)) < 0) {
				fprintf(stderr, "spfgate-dnscheck: --dns-timeout: expected seconds (1..60)\n");
				return 2;
			}
			break;
		case O_ADDRESS: {
			struct ipaddr a;
			if (ipaddr_parse(optarg, &a) < 0) {
				fprintf(stderr, "spfgate-dnscheck: --address: not an IP address: %s\n", optarg);
				return 2;
			}
			dc_addrs_add(&c.self, &a);
			break;
		}
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (config_load(&cfg, conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "spfgate-dnscheck: %s\n", err);
		goto done;
	}
	if (check_only) {
		printf("%s: configuration OK\n", conf);
		rc = 0;
		goto done;
	}
	if (cfg.mail_name == NULL || cfg.mail_name[0] == '\0') {
		fprintf(stderr, "spfgate-dnscheck: %s: no mail_name, and no host name to use\n", conf);
		goto done;
	}
	log_open("spfgate-dnscheck", LOG_TARGET_STDERR);
	if (timeout)
		cfg.dns_timeout = timeout;
	if (ns.n) {
		strlist_free(&cfg.nameservers);
		cfg.nameservers = ns;
		memset(&ns, 0, sizeof(ns));
	}

	c.cfg = &cfg;
	c.mail_name = cfg.mail_name;
	c.timeout_ms = cfg.dns_timeout * 1000;
	if (c.self.n == 0 && dc_self_addrs(&cfg.relayd.listen, &c.self, &how) < 0) {
		fprintf(stderr, "spfgate-dnscheck: out of memory\n");
		goto done;
	}
	if (cfg.deliverd.smarthost && cfg.deliverd.smarthost[0]) {
		struct ipaddr a;
		if (smarthost_host(cfg.deliverd.smarthost, c.sh_host, sizeof(c.sh_host)) < 0) {
			fprintf(stderr, "spfgate-dnscheck: smarthost: expected host[:port] or [host]:port\n");
			goto done;
		}
		c.sh_literal = ipaddr_parse(c.sh_host, &a) == 0;
	}
	if (zones.n)
		c.dns = dns_new_zone((const char *const *)zones.v, zones.n, err, sizeof(err));
	else
		c.dns = dns_new_network((const char *const *)cfg.nameservers.v, cfg.nameservers.n,
		                        c.timeout_ms, err, sizeof(err));
	if (c.dns == NULL) {
		fprintf(stderr, "spfgate-dnscheck: %s\n", err);
		goto done;
	}
	ns_desc = describe_ns(&zones, &cfg.nameservers);
	c.ns_desc = ns_desc ? ns_desc : "the name servers";

	char list[1024];
	if (c.self.n)
		dc_line(&c, DC_INFO, c.mail_name, "this host", "%s (from %s)",
		        dc_addrs_format(&c.self, list, sizeof(list)), how);
	else
		dc_line(&c, DC_FAIL, c.mail_name, "this host", "no public address (from %s)", how);
	if (c.sh_host[0])
		dc_line(&c, DC_INFO, c.mail_name, "outbound", "through the smarthost %s", c.sh_host);
	else
		dc_line(&c, DC_INFO, c.mail_name, "outbound", "directly from this host");

	plan_paths(&c);
	dc_check_mail_name(&c);
	if (c.sh_host[0] && !c.dead)
		dc_check_smarthost(&c);
	for (size_t i = 0; i < cfg.local_domains.n && !c.dead; i++) {
		const char *d = cfg.local_domains.v[i];
		if (is_localhost(d))
			continue;
		dc_check_mx(&c, d);
		if (!c.dead)
			dc_check_spf(&c, d);
	}
	if (c.dead) {
		dc_line(&c, DC_FAIL, "DNS", "name servers", "%s did not answer within %ds;"
		        " checks stopped", c.ns_desc, cfg.dns_timeout);
		fprintf(stderr, "spfgate-dnscheck: %s did not answer within %ds\n", c.ns_desc,
		        cfg.dns_timeout);
	} else if (c.answered == 0 && c.failed) {
		dc_line(&c, DC_FAIL, "DNS", "name servers", "%s answered no query"
		        " (refused or unreachable)", c.ns_desc);
		fprintf(stderr, "spfgate-dnscheck: %s answered no query\n", c.ns_desc);
	}
	rc = dc_finish(&c);
	spf_thread_release();
done:
	if (c.dns)
		dns_free(c.dns);
	free(ns_desc);
	free(c.paths);
	dc_addrs_free(&c.self);
	strlist_free(&c.mechs);
	strlist_free(&c.publish);
	strlist_free(&zones);
	strlist_free(&ns);
	config_free(&cfg);
	return rc;
}
