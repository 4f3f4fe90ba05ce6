/* Unit tests: the configuration file (common/config.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "spf.h"

static char path[64];

static int
load(const char *text, struct config *c, char *err, size_t len)
{
	FILE *f;
	snprintf(path, sizeof(path), "/tmp/spfgate-test-conf.XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fputs(text, f);
	fclose(f);
	int rc = config_load(c, path, err, len);
	unlink(path);
	return rc;
}

static void
defaults(void **state)
{
	struct config c;
	char err[256];
	assert_int_equal(config_load(&c, NULL, err, sizeof(err)), 0);
	assert_int_equal(c.dns_timeout, 5);
	assert_int_equal(c.filterd.on_result[SPF_RES_FAIL], SPF_ACT_REJECT);
	assert_int_equal(c.filterd.on_result[SPF_RES_TEMPERROR], SPF_ACT_TEMPFAIL);
	assert_int_equal(c.filterd.on_result[SPF_RES_PERMERROR], SPF_ACT_TAG);
	assert_int_equal(c.filterd.on_result[SPF_RES_SOFTFAIL], SPF_ACT_TAG);
	assert_int_equal(c.filterd.helo_check, 0);
	assert_int_equal(c.relay_networks.n, 2);
	assert_true(config_is_local_domain(&c, c.mail_name));
	assert_true(config_is_local_domain(&c, "LOCALHOST."));
	config_free(&c);
}

static void
full(void **state)
{
	struct config c;
	char err[256] = "";
	int rc = load(
	    "# sample\n"
	    "[global]\n"
	    "mail_name = Mail.Example.TEST\n"
	    "local_domains = example.test, mail.example.test\n"
	    "relay_networks = 127.0.0.0/8, ::1   # loopback\n"
	    "nameservers = 127.0.0.1:5353 [::1]:53 ; two\n"
	    "dns_timeout = 2\n"
	    "log = stderr\n"
	    "[filterd]\n"
	    "listen = inet:8891@127.0.0.1\n"
	    "on_fail = tempfail\n"
	    "on_softfail = reject\n"
	    "on_permerror = reject\n"
	    "helo_check = on\n"
	    "dry_run = yes\n"
	    "[relayd]\n"
	    "[deliverd]\n", &c, err, sizeof(err));
	if (rc != 0)
		fail_msg("%s", err);
	assert_string_equal(c.mail_name, "mail.example.test");
	assert_int_equal(c.local_domains.n, 2);
	assert_false(config_is_local_domain(&c, "localhost"));
	assert_true(config_is_local_domain(&c, "EXAMPLE.test."));
	assert_int_equal(c.nameservers.n, 2);
	assert_string_equal(c.nameservers.v[1], "[::1]:53");
	assert_int_equal(c.dns_timeout, 2);
	assert_string_equal(c.log, "stderr");
	assert_string_equal(c.filterd.listen, "inet:8891@127.0.0.1");
	assert_int_equal(c.filterd.on_result[SPF_RES_FAIL], SPF_ACT_TEMPFAIL);
	assert_int_equal(c.filterd.on_result[SPF_RES_SOFTFAIL], SPF_ACT_REJECT);
	assert_int_equal(c.filterd.on_result[SPF_RES_PERMERROR], SPF_ACT_REJECT);
	assert_true(c.filterd.helo_check);
	assert_true(c.filterd.dry_run);
	config_free(&c);
}

static void
expect_error(const char *text, const char *line_and_msg)
{
	struct config c;
	char err[256] = "", want[300];
	assert_int_equal(load(text, &c, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:%s", path, line_and_msg);
	if (strstr(err, want) != err)
		fail_msg("got \"%s\", want prefix \"%s\"", err, want);
	config_free(&c);
}

static void
errors(void **state)
{
	expect_error("[global]\nmail_nmae = x.test\n", "2: unknown key \"mail_nmae\" in [global]");
	expect_error("[global]\n\n[filterd]\non_fail = bounce\n", "4: on_fail: expected reject, tempfail or tag");
	expect_error("[globl]\nmail_name = x.test\n", "2: [globl]: unknown section");
	expect_error("mail_name = x.test\n", "1: mail_name: key outside any section");
	expect_error("[global]\nrelay_networks = 10.0.0.1/8\n", "2: relay_networks: not a network");
	expect_error("[global]\ndns_timeout = 0\n", "2: dns_timeout: expected a number of seconds");
	expect_error("[global]\nnameservers = 127.0.0.1:99999\n", "2: nameservers: not ADDR or ADDR:PORT");
	expect_error("[global]\nmail_name = bad..name\n", "2: mail_name: not a valid domain name");
	expect_error("[filterd]\nlisten = tcp:25\n", "2: listen: expected unix:/PATH or inet:PORT@ADDR");
	expect_error("[filterd]\nhelo_check = maybe\n", "2: helo_check: expected on or off");
	expect_error("[global]\nthis line is not ini\n", "2:");
}

static void
deliverd_keys(void **state)
{
	struct config c;
	char err[256] = "";
	assert_int_equal(config_load(&c, NULL, err, sizeof(err)), 0);
	assert_int_equal(c.deliverd.queue_lifetime, 5 * 86400);
	assert_int_equal(c.deliverd.retry_min, 300);
	assert_int_equal(c.deliverd.retry_max, 3600);
	assert_int_equal(c.deliverd.recipient_delimiter, '+');
	assert_int_equal(c.deliverd.mailbox_mode, 0600);
	assert_int_equal(c.deliverd.smarthost_tls, TLS_REQUIRED);
	assert_string_equal(c.deliverd.smarthost, "");
	config_free(&c);
	int rc = load("[deliverd]\n"
	    "listen = unix:/tmp/d.sock, inet:2424@127.0.0.1\n"
	    "spool = /tmp/spool\nmailbox = /tmp/mail/%u\nmailbox_mode = 0660\n"
	    "local_users = system, /etc/spfgate/users\naliases =\n"
	    "recipient_delimiter =\nsmarthost = [2001:db8::1]:587\n"
	    "smarthost_tls = opportunistic\nretry_min = 30s\nretry_max = 2h\n"
	    "queue_lifetime = 1w\nconcurrency = 4\n", &c, err, sizeof(err));
	if (rc != 0)
		fail_msg("%s", err);
	assert_int_equal(c.deliverd.listen.n, 2);
	assert_int_equal(c.deliverd.local_users.n, 2);
	assert_string_equal(c.deliverd.aliases, "");
	assert_int_equal(c.deliverd.recipient_delimiter, '\0');
	assert_int_equal(c.deliverd.mailbox_mode, 0660);
	assert_string_equal(c.deliverd.smarthost, "[2001:db8::1]:587");
	assert_int_equal(c.deliverd.smarthost_tls, TLS_OPPORTUNISTIC);
	assert_int_equal(c.deliverd.retry_min, 30);
	assert_int_equal(c.deliverd.retry_max, 7200);
	assert_int_equal(c.deliverd.queue_lifetime, 7 * 86400);
	assert_int_equal(c.deliverd.concurrency, 4);
	config_free(&c);
	expect_error("[deliverd]\nqueue_lifetime = 5 days\n", "2: queue_lifetime: expected a duration");
	expect_error("[deliverd]\nspool = var/spool\n", "2: spool: expected an absolute path");
	expect_error("[deliverd]\nsmarthost = a:b:c\n", "2: smarthost: expected host[:port]");
	expect_error("[deliverd]\nsmarthost_tls = maybe\n", "2: smarthost_tls: expected required, opportunistic or none");
	expect_error("[deliverd]\nmailbox_mode = 0999\n", "2: mailbox_mode: expected an octal file mode");
	expect_error("[deliverd]\nlocal_users = ldap\n", "2: local_users: expected");
	expect_error("[deliverd]\nsmtp_bind_address = mail.example\n",
	             "2: smtp_bind_address: expected an IPv4 or IPv6 address");
	expect_error("[deliverd]\nmailbox = ~/mbox\n", "2: mailbox: expected an absolute path, or one that starts with %h/");
	expect_error("[global]\nlog = file:/var/log\n", "2: log: expected syslog, stderr or files:/DIR");
	rc = load("[global]\nlog = files:/var/log/spfgate\n[deliverd]\nuser =\n"
	    "smtp_bind_address = 2001:db8::25\nmailbox = %h/Mail/inbox\n", &c, err, sizeof(err));
	if (rc != 0)
		fail_msg("%s", err);
	assert_string_equal(c.log, "files:/var/log/spfgate");
	assert_string_equal(c.deliverd.user, "");
	assert_string_equal(c.deliverd.smtp_bind_address, "2001:db8::25");
	assert_string_equal(c.deliverd.mailbox, "%h/Mail/inbox");
	assert_string_equal(c.relayd.user, "spfgate-relayd");   /* the default */
	assert_string_equal(c.filterd.user, "spfgate-filterd");
	config_free(&c);
}

static void
relayd_keys(void **state)
{
	struct config c;
	char err[256] = "";
	int rc = load("[relayd]\nlisten = 127.0.0.1:2525, [::1]:2525\n"
	    "milters = inet:8891@127.0.0.1, unix:/run/x.sock\n"
	    "milter_default_action = accept\nlmtp = unix:/run/d.sock\n"
	    "recipient_limit = 100\ncommand_timeout = 2m\n", &c, err, sizeof(err));
	if (rc != 0)
		fail_msg("%s", err);
	assert_int_equal(c.relayd.listen.n, 2);
	assert_int_equal(c.relayd.milters.n, 2);
	assert_int_equal(c.relayd.milter_default_action, MILTER_DEFAULT_ACCEPT);
	assert_int_equal(c.relayd.recipient_limit, 100);
	assert_int_equal(c.relayd.command_timeout, 120);
	assert_int_equal(c.relayd.max_received_headers, 50);
	config_free(&c);
	expect_error("[relayd]\nlisten = 127.0.0.1\n", "2: listen: expected ADDR:PORT");
	expect_error("[relayd]\nlisten = ::1:25\n", "2: listen: expected ADDR:PORT");
	expect_error("[relayd]\nmilter_default_action = discard\n", "2: milter_default_action: expected accept, reject or tempfail");
	expect_error("[relayd]\nprocesses = 65\n", "2: processes: expected auto (one per CPU) or 1 to 64");
	expect_error("[relayd]\nprocesses = 0\n", "2: processes: expected auto");
	rc = load("[relayd]\nprocesses = auto\n", &c, err, sizeof(err));
	if (rc != 0)
		fail_msg("%s", err);
	assert_int_equal(c.relayd.processes, 0);
	config_free(&c);
	assert_int_equal(config_load(&c, NULL, err, sizeof(err)), 0);
	assert_int_equal(c.relayd.processes, 1);
	config_free(&c);
}

static void
missing_file(void **state)
{
	struct config c;
	char err[256];
	assert_int_equal(config_load(&c, "/nonexistent/spfgate.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/spfgate.conf: cannot open");
	config_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults),
		cmocka_unit_test(full),
		cmocka_unit_test(errors),
		cmocka_unit_test(deliverd_keys),
		cmocka_unit_test(relayd_keys),
		cmocka_unit_test(missing_file),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
