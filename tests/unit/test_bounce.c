/* Unit tests: RFC 3464 DSNs (deliverd/bounce.c): structure, fields,
 * original headers only, no injection, queued from the null sender,
 * never for a bounce. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bounce.h"
#include "spool.h"

static char dir[256];
static struct spool *sp;

static int
setup(void **state)
{
	char err[256];
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_bounce.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	sp = spool_open(dir, err, sizeof(err));
	return sp ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[300];
	(void)state;
	spool_close(sp);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *original =
	"Received: from x by y\n"
	"From: Alice <alice@example.org>\n"
	"To: bob@example.net\n"
	"Subject: the report\n"
	"\n"
	"SECRET BODY LINE\n"
	"--=_spfgate-dsn fake boundary\n";

static void
load_msg(const char *sender, struct spool_msg *m)
{
	struct spool_rcpt r[2] = {
		{ .addr = "bob@example.net", .orig = "bob@example.net" },
		{ .addr = "carl", .orig = "Carl@example.test" },
	};
	char err[256], id[SPOOL_ID_MAX];
	struct spool_writer *w = spool_writer_new(sp, sender, r, 2, err, sizeof(err));
	assert_non_null(w);
	snprintf(id, sizeof(id), "%s", spool_writer_id(w));
	assert_int_equal(spool_writer_write(w, original, strlen(original)), 0);
	assert_int_equal(spool_commit(w, err, sizeof(err)), 0);
	assert_int_equal(spool_load(sp, id, m), 0);
}

static const struct bounce_rcpt failed[2] = {
	{ .final = "bob@example.net", .orig = "bob@example.net", .status = "5.1.1",
	  .remote_mta = "mx.example.net[192.0.2.1]:25",
	  .diag = "550 5.1.1 <bob@example.net>: no such user\r\nAction: delivered" },
	{ .final = "carl@mx.example.test", .orig = "Carl@example.test", .status = "4.4.1",
	  .remote_mta = NULL, .diag = "connection refused", .expired = 1 },
};

/* The body of the MIME part after the n-th boundary line (0-based). */
static char *
part(const char *dsn, const char *boundary, int n)
{
	char delim[200];
	snprintf(delim, sizeof(delim), "\n--%s\n", boundary);
	const char *p = dsn;
	for (int i = 0; i <= n; i++) {
		p = strstr(p, delim);
		if (!p)
			return NULL;
		p += strlen(delim);
	}
	const char *end = strstr(p, "\n--");
	assert_non_null(end);
	return strndup(p, (size_t)(end - p + 1));
}

static void
structure(void **state)
{
	(void)state;
	struct spool_msg m;
	load_msg("alice@example.org", &m);
	char *dsn;
	size_t len;
	assert_int_equal(bounce_build("mx.example.test", &m, failed, 2, time(NULL),
	                              "00000000000000DSN", &dsn, &len), 0);
	assert_int_equal(strlen(dsn), len);

	/* top-level header */
	char *hdr_end = strstr(dsn, "\n\n");
	assert_non_null(hdr_end);
	assert_non_null(strstr(dsn, "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\n"));
	assert_non_null(strstr(dsn, "To: <alice@example.org>\n"));
	assert_non_null(strstr(dsn, "Auto-Submitted: auto-replied\n"));
	assert_non_null(strstr(dsn, "MIME-Version: 1.0\n"));
	char *ct = strstr(dsn, "Content-Type: multipart/report; report-type=delivery-status;");
	assert_non_null(ct);
	assert_true(ct < hdr_end);
	char *b = strstr(ct, "boundary=\"");
	assert_non_null(b);
	b += 10;
	char boundary[128];
	snprintf(boundary, sizeof(boundary), "%.*s", (int)(strchr(b, '"') - b), b);
	assert_non_null(strstr(boundary, m.id));
	/* the boundary never occurs inside a part; closing delimiter at the end */
	char close[200];
	snprintf(close, sizeof(close), "\n--%s--\n", boundary);
	assert_non_null(strstr(dsn, close));
	assert_int_equal(strlen(strstr(dsn, close)), strlen(close));

	char *p1 = part(dsn, boundary, 0), *p2 = part(dsn, boundary, 1), *p3 = part(dsn, boundary, 2);
	assert_non_null(p1);
	assert_non_null(p2);
	assert_non_null(p3);
	assert_null(part(dsn, boundary, 3));
	assert_non_null(strstr(p1, "Content-Type: text/plain"));
	assert_non_null(strstr(p1, "<bob@example.net>: 550 5.1.1"));
	assert_non_null(strstr(p1, "delivery time expired"));

	assert_non_null(strstr(p2, "Content-Type: message/delivery-status\n\n"));
	assert_non_null(strstr(p2, "\nReporting-MTA: dns; mx.example.test\n"));
	assert_non_null(strstr(p2, "\nArrival-Date: "));
	assert_non_null(strstr(p2, "\n\nFinal-Recipient: rfc822; bob@example.net\n"
	                           "Original-Recipient: rfc822; bob@example.net\n"
	                           "Action: failed\nStatus: 5.1.1\n"
	                           "Remote-MTA: dns; mx.example.net\n"
	                           "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: no such user  Action: delivered\n"));
	assert_non_null(strstr(p2, "\n\nFinal-Recipient: rfc822; carl@mx.example.test\n"
	                           "Original-Recipient: rfc822; Carl@example.test\n"
	                           "Action: failed\nStatus: 4.4.1\n"
	                           "Diagnostic-Code: X-Spfgate; delivery time expired: connection refused\n"));
	/* the CRLF in the reply did not start a field of its own */
	assert_null(strstr(p2, "\nAction: delivered"));
	/* a failed report promises no retry (RFC 3464 2.3.9: "delayed" only) */
	assert_null(strstr(p2, "Will-Retry-Until"));

	assert_non_null(strstr(p3, "Content-Type: text/rfc822-headers\n\n"
	                           "Received: from x by y\nFrom: Alice <alice@example.org>\n"
	                           "To: bob@example.net\nSubject: the report\n"));
	assert_null(strstr(dsn, "SECRET BODY LINE"));
	free(p1);
	free(p2);
	free(p3);
	free(dsn);
	spool_msg_free(&m);
}

static void
queued_from_null_sender(void **state)
{
	(void)state;
	struct spool_msg m, d;
	char nid[SPOOL_ID_MAX], err[256];
	load_msg("alice@example.org", &m);
	struct spool_rcpt to = { .addr = "alice@example.org", .orig = "alice@example.org" };
	assert_int_equal(bounce_queue(sp, "mx.example.test", &m, failed, 2, &to, 1,
	                              nid, err, sizeof(err)), 0);
	assert_int_equal(spool_load(sp, nid, &d), 0);
	assert_string_equal(d.sender, "");
	assert_int_equal(d.nrcpt, 1);
	assert_string_equal(d.rcpt[0].addr, "alice@example.org");
	char *text = malloc((size_t)d.body_len + 1);
	assert_int_equal(pread(d.fd, text, (size_t)d.body_len, d.body_off), d.body_len);
	text[d.body_len] = '\0';
	assert_non_null(strstr(text, "multipart/report"));
	assert_non_null(strstr(text, m.id));

	/* a bounce of the bounce: never */
	struct spool_rcpt to2 = { .addr = "x@example.org", .orig = "x@example.org" };
	char nid2[SPOOL_ID_MAX] = "";
	assert_int_equal(bounce_queue(sp, "mx.example.test", &d, failed, 1, &to2, 1,
	                              nid2, err, sizeof(err)), 1);
	assert_string_equal(nid2, "");
	free(text);
	spool_msg_free(&d);
	spool_msg_free(&m);
}

static void
headers_only_message(void **state)
{
	(void)state;
	/* a message without a body, and one that is all body */
	struct spool_rcpt r = { .addr = "bob@example.net", .orig = "bob@example.net" };
	const char *texts[] = { "Subject: only headers\n", "\nno headers at all\n", "" };
	for (size_t i = 0; i < 3; i++) {
		char err[256], id[SPOOL_ID_MAX];
		struct spool_msg m;
		struct spool_writer *w = spool_writer_new(sp, "a@example.org", &r, 1, err, sizeof(err));
		snprintf(id, sizeof(id), "%s", spool_writer_id(w));
		spool_writer_write(w, texts[i], strlen(texts[i]));
		assert_int_equal(spool_commit(w, err, sizeof(err)), 0);
		assert_int_equal(spool_load(sp, id, &m), 0);
		char *dsn;
		size_t len;
		assert_int_equal(bounce_build("mx.example.test", &m, failed, 1, time(NULL), "X", &dsn, &len), 0);
		if (i == 0)
			assert_non_null(strstr(dsn, "text/rfc822-headers\n\nSubject: only headers\n"));
		else
			assert_null(strstr(dsn, "no headers at all"));
		free(dsn);
		spool_msg_free(&m);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(structure, setup, teardown),
		cmocka_unit_test_setup_teardown(queued_from_null_sender, setup, teardown),
		cmocka_unit_test_setup_teardown(headers_only_message, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
