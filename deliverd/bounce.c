/*
 * bounce: build RFC 3464 delivery status notifications and queue them
 * from the null sender.  Every value that came from outside (addresses,
 * remote replies, the original headers) is kept on one line and free of
 * control characters, so a reply cannot forge DSN fields or MIME parts.
 */
#include "bounce.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEADERS_MAX (256 * 1024)   /* original headers carried back */

static void
rfc5322_date(time_t t, char *buf, size_t len)
{
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(buf, len, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* One line, control characters replaced, at most max bytes. */
static void
put_clean(FILE *f, const char *s, size_t max)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p && n < max; p++, n++)
		fputc(*p < 0x20 || *p == 0x7f ? ' ' : *p, f);
}

static int
valid_status(const char *s)
{
	/* class "." subject "." detail, RFC 3463 */
	if (!s || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	const char *p = s + 2;
	int digits = 0;
	for (; isdigit((unsigned char)*p); p++)
		digits++;
	if (!digits || digits > 3 || *p != '.')
		return 0;
	digits = 0;
	for (p++; isdigit((unsigned char)*p); p++)
		digits++;
	return digits && digits <= 3 && !*p;
}

static int
smtp_reply(const char *d)
{
	return d && (d[0] == '4' || d[0] == '5') && isdigit((unsigned char)d[1]) &&
	       isdigit((unsigned char)d[2]) && (d[3] == ' ' || d[3] == '-' || !d[3]);
}

/* The original header section (up to the first empty line), malloc'd. */
static char *
read_headers(const struct spool_msg *m, size_t *len)
{
	size_t want = m->body_len < HEADERS_MAX ? (size_t)m->body_len : HEADERS_MAX;
	char *b = malloc(want + 1);
	size_t got = 0;
	if (!b)
		return NULL;
	while (got < want) {
		ssize_t r = pread(m->fd, b + got, want - got, m->body_off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	b[got] = '\0';
	size_t end = got;
	if (got && b[0] == '\n') {
		end = 0;
	} else {
		char *blank = memmem(b, got, "\n\n", 2);
		if (blank)
			end = (size_t)(blank - b) + 1;
		else if (got && b[got - 1] != '\n') {
			/* cut off at the size limit: keep whole lines only */
			char *nl = memrchr(b, '\n', got);
			end = nl ? (size_t)(nl - b) + 1 : 0;
		}
	}
	b[end] = '\0';
	*len = end;
	return b;
}

int
bounce_build(const char *mail_name, const struct spool_msg *m,
             const struct bounce_rcpt *r, size_t n, time_t now,
             const char *dsn_id, char **out, size_t *outlen)
{
	char date[64], arrival[64], boundary[96];
	size_t hlen = 0;
	char *hdrs = read_headers(m, &hlen);
	if (!hdrs)
		return -1;
	int eight = 0;
	for (size_t i = 0; i < hlen; i++)
		if ((unsigned char)hdrs[i] >= 0x80)
			eight = 1;
	int expired = 0;
	for (size_t i = 0; i < n; i++)
		expired |= r[i].expired;

	*out = NULL;
	*outlen = 0;
	FILE *f = open_memstream(out, outlen);
	if (!f) {
		free(hdrs);
		return -1;
	}
	rfc5322_date(now, date, sizeof(date));
	rfc5322_date(m->arrival, arrival, sizeof(arrival));
	snprintf(boundary, sizeof(boundary), "=_spfgate-dsn/%s/%s", m->id, dsn_id);

	fprintf(f, "Date: %s\n", date);
	fprintf(f, "From: Mail Delivery System <MAILER-DAEMON@%s>\n", mail_name);
	fputs("To: <", f);
	put_clean(f, m->sender, 512);
	fputs(">\n", f);
	fprintf(f, "Subject: Undelivered Mail Returned to Sender\n");
	fprintf(f, "Message-ID: <%s.dsn@%s>\n", dsn_id, mail_name);
	fprintf(f, "Auto-Submitted: auto-replied\n");
	fprintf(f, "MIME-Version: 1.0\n");
	fprintf(f, "Content-Type: multipart/report; report-type=delivery-status;\n"
	           "\tboundary=\"%s\"\n", boundary);
	fprintf(f, "\nThis is a MIME-encapsulated message.\n\n");

	/* 1: for people */
	fprintf(f, "--%s\n", boundary);
	fprintf(f, "Content-Description: Notification\n"
	           "Content-Type: text/plain; charset=us-ascii\n\n");
	fprintf(f, "This is the mail system at host %s.\n\n", mail_name);
	if (expired)
		fprintf(f, "Your message could not be delivered before its time in\n"
		           "the queue expired, to one or more recipients.\n\n");
	else
		fprintf(f, "Your message could not be delivered to one or more\n"
		           "recipients.  It is attached below.\n\n");
	fprintf(f, "For further assistance, please send mail to postmaster.\n\n");
	for (size_t i = 0; i < n; i++) {
		fputs("<", f);
		put_clean(f, r[i].final, 512);
		fputs(">: ", f);
		if (r[i].expired)
			fputs("delivery time expired: ", f);
		put_clean(f, r[i].diag, 900);
		fputs("\n\n", f);
	}

	/* 2: for programs */
	fprintf(f, "--%s\n", boundary);
	fprintf(f, "Content-Description: Delivery report\n"
	           "Content-Type: message/delivery-status\n\n");
	fprintf(f, "Reporting-MTA: dns; %s\n", mail_name);
	fprintf(f, "X-Spfgate-Queue-ID: %s\n", m->id);
	fputs("X-Spfgate-Sender: rfc822; ", f);
	put_clean(f, m->sender, 512);
	fprintf(f, "\nArrival-Date: %s\n", arrival);
	for (size_t i = 0; i < n; i++) {
		fputs("\nFinal-Recipient: rfc822; ", f);
		put_clean(f, r[i].final, 512);
		fputs("\n", f);
		if (r[i].orig && *r[i].orig) {
			fputs("Original-Recipient: rfc822; ", f);
			put_clean(f, r[i].orig, 512);
			fputs("\n", f);
		}
		fprintf(f, "Action: failed\n");
		fprintf(f, "Status: %s\n", valid_status(r[i].status) ? r[i].status : "5.0.0");
		if (r[i].remote_mta && *r[i].remote_mta && strcmp(r[i].remote_mta, "none")) {
			/* "host[addr]:port" -> the host name (RFC 3464 mta-name);
			 * an address literal "[addr]:port" -> the address */
			const char *h = r[i].remote_mta, *b = strchr(h, '[');
			size_t hl = b ? (size_t)(b - h) : strcspn(h, ":");
			if (hl == 0 && b) {
				h = b + 1;
				hl = strcspn(h, "]");
			}
			if (hl > 0 && hl < 300) {
				char host[300];
				snprintf(host, sizeof(host), "%.*s", (int)hl, h);
				fputs("Remote-MTA: dns; ", f);
				put_clean(f, host, sizeof(host));
				fputs("\n", f);
			}
		}
		fputs(smtp_reply(r[i].diag) ? "Diagnostic-Code: smtp; "
		                            : "Diagnostic-Code: X-Spfgate; ", f);
		if (r[i].expired && !smtp_reply(r[i].diag))
			fputs("delivery time expired: ", f);
		put_clean(f, r[i].diag, 900);
		/* no Will-Retry-Until: RFC 3464 keeps it for "delayed" reports */
		fprintf(f, "\nLast-Attempt-Date: %s\n", date);
	}

	/* 3: what was sent */
	fprintf(f, "\n--%s\n", boundary);
	fprintf(f, "Content-Description: Undelivered Message Headers\n"
	           "Content-Type: text/rfc822-headers\n");
	if (eight)
		fprintf(f, "Content-Transfer-Encoding: 8bit\n");
	fputs("\n", f);
	fwrite(hdrs, 1, hlen, f);
	fprintf(f, "\n--%s--\n", boundary);
	free(hdrs);
	if (ferror(f)) {
		fclose(f);
		free(*out);
		*out = NULL;
		errno = ENOMEM;
		return -1;
	}
	if (fclose(f) != 0) {
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

int
bounce_queue(struct spool *s, const char *mail_name, const struct spool_msg *m,
             const struct bounce_rcpt *r, size_t n,
             const struct spool_rcpt *to, size_t nto,
             char *new_id, char *err, size_t errlen)
{
	if (!m->sender || !*m->sender)
		return 1;   /* never answer a bounce: no loops */
	struct spool_writer *w = spool_writer_new(s, "", to, nto, err, errlen);
	if (!w)
		return -1;
	char *text = NULL;
	size_t len = 0;
	if (bounce_build(mail_name, m, r, n, time(NULL), spool_writer_id(w), &text, &len) == -1) {
		snprintf(err, errlen, "building the DSN: %s", strerror(errno));
		spool_abort(w);
		return -1;
	}
	snprintf(new_id, SPOOL_ID_MAX, "%s", spool_writer_id(w));
	if (spool_writer_write(w, text, len) == -1) {
		snprintf(err, errlen, "spool write: %s", strerror(errno));
		free(text);
		spool_abort(w);
		return -1;
	}
	free(text);
	return spool_commit(w, err, errlen) == 0 ? 0 : -1;
}
