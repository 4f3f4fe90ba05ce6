/*
 * smtp_txn: one SMTP mail transaction of deliverd's client (MAIL, RCPT,
 * DATA, message, final reply), with a result for every recipient.
 *
 * MAIL and the RCPTs are pipelined (RFC 2920) when the server offers it,
 * at most SMTP_PIPELINE_MAX commands before their replies are read; DATA
 * is sent only after the RCPT replies are in, so a server that wrongly
 * answers 354 with no valid recipient never gets a message.  SIZE=
 * carries the size as sent (CRLF line ends); BODY=8BITMIME is declared
 * when offered and the message has 8-bit bytes (when not offered, the
 * message goes as it is, as most MTAs do).  A failure to read the spool
 * in the middle of DATA drops the connection without the final dot, so
 * the server discards the partial message.
 */
#include "smtp_client.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA_CHUNK 32768

static void
set_result(struct remote_result *res, const struct smtp_session *s,
           const struct smtp_reply *r)
{
	int cls = r->code ? r->code / 100 : r->dsn[0] - '0';
	res->status = cls == 2 ? REMOTE_DONE : cls == 5 ? REMOTE_FAIL : REMOTE_DEFER;
	if (r->code != 0 && cls != 2 && cls != 4 && cls != 5) {
		/* 3xx where no 3xx belongs: a confused server, try again later */
		res->status = REMOTE_DEFER;
		snprintf(res->dsn, sizeof res->dsn, "4.5.0");
	} else
		snprintf(res->dsn, sizeof res->dsn, "%s", r->dsn);
	snprintf(res->relay, sizeof res->relay, "%s", s->relay);
	snprintf(res->text, sizeof res->text, "%s", r->text);
}

static void
set_all(struct remote_result *res, size_t n, const unsigned char *only,
        const struct smtp_session *s, const struct smtp_reply *r)
{
	for (size_t i = 0; i < n; i++)
		if (only == NULL || only[i])
			set_result(&res[i], s, r);
}

/* Size as sent and whether any byte is 8-bit.  0, or -1 (errno). */
static int
scan_message(int fd, off_t off, off_t len, long long *size, int *has8)
{
	char buf[DATA_CHUNK];
	long long lf = 0;
	char last = '\n';

	*has8 = 0;
	while (len > 0) {
		size_t want = len < (off_t)sizeof buf ? (size_t)len : sizeof buf;
		ssize_t n = pread(fd, buf, want, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n')
				lf++;
			else if ((unsigned char)buf[i] >= 0x80)
				*has8 = 1;
		}
		last = buf[n - 1];
		off += n;
		len -= n;
	}
	*size = lf + (last != '\n' ? 2 : 0);
	return 0;
}

static int
bad_addr(const char *a)
{
	for (; *a; a++)
		if ((unsigned char)*a < 0x20 || *a == 0x7f || *a == '<' || *a == '>')
			return 1;
	return 0;
}

/* Send the message and the final dot.  0, or -1 with r a local error. */
static int
send_message(struct smtp_session *s, const struct remote_job *job,
             struct smtp_reply *r)
{
	char *in = malloc(DATA_CHUNK), *out = malloc(2 * DATA_CHUNK);
	off_t off = job->off, left = job->len;
	int bol = 1, rc = -1;

	if (in == NULL || out == NULL) {
		s->io.broken = 1;
		smtp_local_error(r, "4.3.0", "out of memory");
		goto out;
	}
	while (left > 0) {
		size_t want = left < DATA_CHUNK ? (size_t)left : DATA_CHUNK;
		ssize_t n = pread(job->fd, in, want, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* never let a partial message end with the dot */
			s->io.broken = 1;
			smtp_local_error(r, "4.3.0", "reading the spool file: %s",
			                 n == 0 ? "unexpected end of file" : strerror(errno));
			goto out;
		}
		size_t o = smtp_data_encode(in, (size_t)n, out, &bol);
		if (smtp_io_write(&s->io, out, o, s->to->data_block) < 0)
			goto lost;
		off += n;
		left -= n;
	}
	if ((!bol && smtp_io_write(&s->io, "\r\n", 2, s->to->data_block) < 0) ||
	    smtp_io_write(&s->io, ".\r\n", 3, s->to->data_block) < 0 ||
	    smtp_io_flush(&s->io, s->to->data_block) < 0)
		goto lost;
	rc = 0;
	goto out;
lost:
	smtp_local_error(r, "4.4.2", "lost connection with %s while sending the message: %s",
	                 s->relay, s->io.err);
out:
	free(in);
	free(out);
	return rc;
}

void
smtp_transaction(struct smtp_session *s, const struct remote_job *job,
                 struct remote_result *res)
{
	struct smtp_reply r, mail;
	size_t n = job->nrcpt;
	int pipe = (s->caps & SMTP_CAP_PIPELINING) != 0;
	size_t batch = pipe ? SMTP_PIPELINE_MAX : 1;
	unsigned char *acc = calloc(n ? n : 1, 1);
	char params[80] = "";
	size_t naccepted = 0;

	if (n == 0) {
		free(acc);
		return;
	}
	if (acc == NULL) {
		smtp_local_error(&r, "4.3.0", "out of memory");
		set_all(res, n, NULL, s, &r);
		return;
	}
	if (bad_addr(job->sender)) {
		smtp_local_error(&r, "5.1.7", "invalid sender address");
		set_all(res, n, NULL, s, &r);
		goto out;
	}
	if (s->caps & (SMTP_CAP_SIZE | SMTP_CAP_8BITMIME)) {
		long long size;
		int has8;
		if (scan_message(job->fd, job->off, job->len, &size, &has8) < 0) {
			smtp_local_error(&r, "4.3.0", "reading the spool file: %s", strerror(errno));
			set_all(res, n, NULL, s, &r);
			goto out;
		}
		size += (long long)job->len;
		if (s->caps & SMTP_CAP_SIZE) {
			if (s->size_max > 0 && size > s->size_max) {
				smtp_local_error(&r, "5.3.4", "message too big for %s "
				                 "(%lld bytes, limit %ld)", s->relay, size, s->size_max);
				set_all(res, n, NULL, s, &r);
				goto out;
			}
			snprintf(params, sizeof params, " SIZE=%lld", size);
		}
		if ((s->caps & SMTP_CAP_8BITMIME) && has8)
			strcat(params, " BODY=8BITMIME");
	}

	if (smtp_io_printf(&s->io, s->to->mail, "MAIL FROM:<%s>%s\r\n", job->sender, params) < 0)
		goto lost;
	if (!pipe) {
		if (smtp_io_flush(&s->io, s->to->mail) < 0)
			goto lost;
		if (smtp_read_reply(s, s->to->mail, &mail) < 0 || mail.code / 100 != 2) {
			set_all(res, n, NULL, s, &mail);
			goto out;
		}
	}
	for (size_t i = 0; i < n; i += batch) {
		size_t end = i + batch < n ? i + batch : n;
		for (size_t j = i; j < end; j++) {
			if (bad_addr(job->rcpts[j]))
				continue;
			if (smtp_io_printf(&s->io, s->to->rcpt, "RCPT TO:<%s>\r\n", job->rcpts[j]) < 0)
				goto lost;
		}
		if (smtp_io_flush(&s->io, s->to->rcpt) < 0)
			goto lost;
		if (pipe && i == 0 && smtp_read_reply(s, s->to->mail, &mail) < 0) {
			set_all(res, n, NULL, s, &mail);
			goto out;
		}
		for (size_t j = i; j < end; j++) {
			if (bad_addr(job->rcpts[j])) {
				smtp_local_error(&r, "5.1.3", "invalid recipient address");
				set_result(&res[j], s, &r);
				continue;
			}
			if (smtp_read_reply(s, s->to->rcpt, &r) < 0) {
				set_all(res, n, NULL, s, &r);
				goto out;
			}
			if (r.code == 552) {
				/* RFC 5321 §4.5.3.1.10: 552 to RCPT means
				 * "too many recipients", temporary */
				r.code = 452;
				snprintf(r.dsn, sizeof r.dsn, "4.5.3");
			}
			set_result(&res[j], s, &r);
			if (r.code / 100 == 2) {
				acc[j] = 1;
				naccepted++;
			}
		}
		if (mail.code / 100 != 2) {
			/* the RCPT replies were only the consequence */
			set_all(res, n, NULL, s, &mail);
			goto out;
		}
	}
	if (naccepted == 0)
		goto out;

	if (smtp_io_printf(&s->io, s->to->data_init, "DATA\r\n") < 0 ||
	    smtp_io_flush(&s->io, s->to->data_init) < 0)
		goto lost;
	if (smtp_read_reply(s, s->to->data_init, &r) < 0 || r.code != 354) {
		/* Anything but 354 means the text was never sent: a 2xx or 3xx
		 * here must not count as delivered. */
		if (r.code / 100 == 2 || r.code / 100 == 3) {
			int code = r.code;
			smtp_local_error(&r, "4.5.0", "%s answered DATA with %d instead of 354",
			                 s->relay, code);
		}
		set_all(res, n, acc, s, &r);
		goto out;
	}
	if (send_message(s, job, &r) < 0) {
		set_all(res, n, acc, s, &r);
		goto out;
	}
	if (smtp_read_reply(s, s->to->data_end, &r) < 0) {
		/* the server may have the message: at-least-once allows a
		 * duplicate, never a loss */
		smtp_local_error(&r, "4.4.2", "lost connection with %s after end of data: %s",
		                 s->relay, s->io.err);
	}
	set_all(res, n, acc, s, &r);
	goto out;

lost:
	smtp_local_error(&r, "4.4.2", "lost connection with %s: %s", s->relay, s->io.err);
	set_all(res, n, NULL, s, &r);
out:
	free(acc);
}
