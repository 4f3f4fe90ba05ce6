/*
 * remotew: a test driver for deliverd's remote delivery without the rest
 * of deliverd.  It runs remote_deliver() on a spool-like file (the
 * message with LF line ends) and prints one line per recipient:
 *
 *   RCPT STATUS DSN RELAY TEXT       (STATUS: done, defer, fail)
 *
 *   remotew -c CONF [-z ZONEFILE]... [-i ID] [-n REPEAT] [-w SECONDS]
 *           -f SENDER -d DOMAIN FILE RCPT...
 *
 * DNS is the configuration's name servers, or zone files with -z.  -n
 * delivers the same job REPEAT times through one context (connection
 * reuse), with "--" between rounds; -w waits that long between rounds
 * and calls remote_expire() first (idle sessions closed).
 */
#include "config.h"
#include "dns.h"
#include "log.h"
#include "remote.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void
usage(void)
{
	fprintf(stderr, "usage: remotew -c CONF [-z ZONE]... [-i ID] [-n REPEAT] "
	        "[-w SECONDS] -f SENDER -d DOMAIN FILE RCPT...\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *conf = NULL, *sender = NULL, *domain = NULL, *id = "TEST";
	const char *zones[16];
	size_t nzones = 0;
	int repeat = 1, wait_s = 0, c;
	char err[512];
	struct config cfg;

	while ((c = getopt(argc, argv, "c:z:i:n:w:f:d:")) != -1) {
		switch (c) {
		case 'c': conf = optarg; break;
		case 'z':
			if (nzones == sizeof zones / sizeof zones[0])
				usage();
			zones[nzones++] = optarg;
			break;
		case 'i': id = optarg; break;
		case 'n': repeat = atoi(optarg); break;
		case 'w': wait_s = atoi(optarg); break;
		case 'f': sender = optarg; break;
		case 'd': domain = optarg; break;
		default: usage();
		}
	}
	if (conf == NULL || sender == NULL || domain == NULL || argc - optind < 2 || repeat < 1)
		usage();
	log_open("remotew", LOG_TARGET_STDERR);
	log_set_verbose(1);
	if (config_load(&cfg, conf, err, sizeof err) < 0) {
		fprintf(stderr, "remotew: %s\n", err);
		config_free(&cfg);
		return 2;
	}
	struct dns_resolver *dns = nzones
		? dns_new_zone(zones, nzones, err, sizeof err)
		: dns_new_network((const char *const *)cfg.nameservers.v, cfg.nameservers.n,
		                  cfg.dns_timeout * 1000, err, sizeof err);
	if (dns == NULL) {
		fprintf(stderr, "remotew: dns: %s\n", err);
		config_free(&cfg);
		return 2;
	}
	struct remote_ctx *rc = remote_new(&cfg, dns, err, sizeof err);
	if (rc == NULL) {
		fprintf(stderr, "remotew: %s\n", err);
		dns_free(dns);
		config_free(&cfg);
		return 2;
	}
	int fd = open(argv[optind], O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[optind]);
		return 2;
	}
	size_t n = (size_t)(argc - optind - 1);
	struct remote_job job = {
		.domain = domain, .sender = sender,
		.rcpts = (const char *const *)argv + optind + 1, .nrcpt = n,
		.fd = fd, .off = 0, .len = st.st_size, .id = id,
	};
	struct remote_result *res = calloc(n, sizeof *res);
	static const char *const names[] = { "done", "defer", "fail" };
	for (int r = 0; r < repeat; r++) {
		if (r > 0) {
			printf("--\n");
			if (wait_s > 0) {
				sleep((unsigned)wait_s);
				remote_expire(rc);
			}
		}
		remote_deliver(rc, &job, res);
		for (size_t i = 0; i < n; i++)
			printf("%s %s %s %s %s\n", job.rcpts[i], names[res[i].status],
			       res[i].dsn, res[i].relay, res[i].text);
		fflush(stdout);
	}
	free(res);
	close(fd);
	remote_free(rc);
	dns_free(dns);
	config_free(&cfg);
	return 0;
}
