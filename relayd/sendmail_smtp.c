/*
 * sendmail_smtp: the SMTP client that hands a local submission to
 * relayd over loopback, in lock-step (one command, one reply; a local
 * submission gains nothing from pipelining).
 *
 * Where relayd is: [relayd] listen in the configuration.  A wildcard
 * listener (0.0.0.0, [::]) is reached on loopback, and loopback
 * listeners are tried before any other: relayd trusts the client by
 * its address (relay_networks), and a connection to the host's public
 * address comes from that address, not from 127.0.0.1.
 */
#include "sendmail.h"
#include "fdio.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sysexits.h>
#include <unistd.h>

#define REPLY_LINES_MAX 100

/* "ADDR:PORT" / "[V6]:PORT" -> host and port; wildcards as loopback. */
static int
split_target(const char *t, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon;

	if (t[0] == '[') {
		const char *close = strchr(t, ']');
		if (close == NULL || close[1] != ':' || (size_t)(close - t) > hlen)
			return -1;
		snprintf(host, hlen, "%.*s", (int)(close - t - 1), t + 1);
		colon = close + 1;
	} else {
		if ((colon = strrchr(t, ':')) == NULL || (size_t)(colon - t) >= hlen)
			return -1;
		snprintf(host, hlen, "%.*s", (int)(colon - t), t);
	}
	snprintf(port, plen, "%s", colon + 1);
	if (strcmp(host, "0.0.0.0") == 0)
		snprintf(host, hlen, "127.0.0.1");
	else if (strcmp(host, "::") == 0)
		snprintf(host, hlen, "::1");
	return 0;
}

static int
is_loopback(const char *t)
{
	return strncmp(t, "127.", 4) == 0 || strncmp(t, "0.0.0.0:", 8) == 0
	       || strncmp(t, "[::1]:", 6) == 0 || strncmp(t, "[::]:", 5) == 0;
}

int
smtp_targets(const struct strlist *listen, const char *override, struct strlist *out)
{
	if (override && *override)
		return strlist_add(out, override);
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < listen->n; i++)
			if (is_loopback(listen->v[i]) == (pass == 0)
			    && strlist_add(out, listen->v[i]) < 0)
				return -1;
	return 0;
}

static void
set_timeout(int fd, int seconds)
{
	struct timeval tv = { .tv_sec = seconds };

	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int
connect_one(struct smtp *s, const char *target, int timeout)
{
	char host[64], port[16];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	                          .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai;
	int e, fd;

	snprintf(s->peer, sizeof(s->peer), "%s", target);
	if (split_target(target, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(s->err, sizeof(s->err), "relayd at %s: not ADDR:PORT", target);
		return -1;
	}
	if ((e = getaddrinfo(host, port, &hints, &ai)) != 0) {
		snprintf(s->err, sizeof(s->err), "relayd at %s: %s", target, gai_strerror(e));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		/* on Linux SO_SNDTIMEO bounds connect(2) too */
		set_timeout(fd, timeout);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			e = errno;
			close(fd);
			fd = -1;
			errno = e;
		}
	}
	if (fd < 0)
		snprintf(s->err, sizeof(s->err), "cannot connect to relayd at %s: %s", target,
		         errno == EINPROGRESS ? "timed out" : strerror(errno));
	freeaddrinfo(ai);
	if (fd < 0)
		return -1;
	s->fd = fd;
	s->have = s->pos = 0;
	return 0;
}

int
smtp_connect(struct smtp *s, const struct strlist *targets, int timeout)
{
	char first[sizeof(s->err)] = "";

	s->fd = -1;
	for (size_t i = 0; i < targets->n; i++) {
		if (connect_one(s, targets->v[i], timeout) == 0)
			return 0;
		if (i == 0)
			snprintf(first, sizeof(first), "%s", s->err);
	}
	if (targets->n == 0)
		snprintf(s->err, sizeof(s->err), "no [relayd] listen address configured");
	else if (targets->n > 1)
		/* the first one is the one that should have worked */
		snprintf(s->err, sizeof(s->err), "%s", first);
	return -1;
}

/* One line of a reply, without its line end; -1 with s->err. */
static int
read_line(struct smtp *s, char *line, size_t len)
{
	size_t o = 0;

	for (;;) {
		while (s->pos < s->have) {
			char c = s->in[s->pos++];
			if (c == '\n') {
				if (o > 0 && line[o - 1] == '\r')
					o--;
				line[o] = '\0';
				return 0;
			}
			if (o + 1 < len)
				line[o++] = c;
		}
		ssize_t n = read(s->fd, s->in, sizeof(s->in));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(s->err, sizeof(s->err), "relayd at %s: %s", s->peer,
			         n == 0 ? "connection closed"
			         : errno == EAGAIN || errno == EWOULDBLOCK ? "timed out waiting for a reply"
			         : strerror(errno));
			return -1;
		}
		s->have = (size_t)n;
		s->pos = 0;
	}
}

int
smtp_reply(struct smtp *s, int timeout)
{
	char line[1024];
	size_t o = 0;

	set_timeout(s->fd, timeout);
	s->text[0] = '\0';
	for (int i = 0; i < REPLY_LINES_MAX; i++) {
		if (read_line(s, line, sizeof(line)) < 0)
			return s->code = -1;
		if (s->verbose)
			fprintf(stderr, "<<< %s\n", line);
		if (strlen(line) < 3 || line[0] < '2' || line[0] > '5'
		    || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9'
		    || (line[3] != '\0' && line[3] != ' ' && line[3] != '-')) {
			snprintf(s->err, sizeof(s->err), "relayd at %s: not an SMTP reply: %.100s",
			         s->peer, line);
			return s->code = -1;
		}
		o += (size_t)snprintf(s->text + o, sizeof(s->text) - o, "%s%s", o ? "\n" : "", line);
		if (o >= sizeof(s->text))
			o = sizeof(s->text) - 1;
		if (line[3] != '-') {
			s->code = atoi(line);
			return s->code;
		}
	}
	snprintf(s->err, sizeof(s->err), "relayd at %s: reply too long", s->peer);
	return s->code = -1;
}

int
smtp_sink(void *arg, const char *p, size_t n)
{
	struct smtp *s = arg;

	if (fd_write_all(s->fd, p, n) < 0) {
		snprintf(s->err, sizeof(s->err), "relayd at %s: %s", s->peer,
		         errno == EAGAIN ? "timed out sending" : strerror(errno));
		return -1;
	}
	return 0;
}

int
smtp_cmd(struct smtp *s, int timeout, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2) {
		snprintf(s->err, sizeof(s->err), "command too long");
		return s->code = -1;
	}
	if (s->verbose)
		fprintf(stderr, ">>> %s\n", line);
	memcpy(line + n, "\r\n", 2);
	set_timeout(s->fd, timeout);
	if (smtp_sink(s, line, (size_t)n + 2) < 0)
		return s->code = -1;
	return smtp_reply(s, timeout);
}

int
smtp_hello(struct smtp *s, const char *name)
{
	int code = smtp_cmd(s, 300, "EHLO %s", name);

	if (code >= 500)
		return smtp_cmd(s, 300, "HELO %s", name);
	if (code != 250)
		return code;
	/* the first line is the greeting; each further one a keyword */
	for (const char *l = strchr(s->text, '\n'); l; l = strchr(l + 1, '\n')) {
		const char *k = l + 5;
		if (strncasecmp(k, "8BITMIME", 8) == 0 && (k[8] == '\0' || k[8] == '\n'))
			s->ext_8bit = 1;
		else if (strncasecmp(k, "ENHANCEDSTATUSCODES", 19) == 0)
			s->ext_enh = 1;
		else if (strncasecmp(k, "SIZE", 4) == 0 && (k[4] == ' ' || k[4] == '\n' || !k[4])) {
			s->ext_size = 1;
			s->size_max = k[4] == ' ' ? atoll(k + 5) : 0;
		}
	}
	return code;
}

void
smtp_close(struct smtp *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

/*
 * The exit status for a refusal, as sendmail(8) maps delivery status
 * codes: 4xx is temporary (EX_TEMPFAIL, the caller may try again);
 * X.1.x addressing (EX_NOUSER; X.1.2 bad host: EX_NOHOST), X.6.x
 * content and X.3.4 size (EX_DATAERR), X.7.x policy (EX_NOPERM),
 * anything else permanent is EX_UNAVAILABLE.  Without an enhanced code,
 * a refused recipient is EX_NOUSER.
 */
int
smtp_exit_code(int code, const char *text, int rcpt)
{
	int cls = 0, subj = -1, det = -1;

	if (code < 500)
		return EX_TEMPFAIL;
	if (text && strlen(text) > 4)
		(void)sscanf(text + 4, "%d.%d.%d", &cls, &subj, &det);
	if (cls == 5) {
		if (subj == 1)
			return det == 2 ? EX_NOHOST : EX_NOUSER;
		if (subj == 6 || (subj == 3 && det == 4))
			return EX_DATAERR;
		if (subj == 7)
			return EX_NOPERM;
		return rcpt && subj == 0 ? EX_NOUSER : EX_UNAVAILABLE;
	}
	return rcpt ? EX_NOUSER : EX_UNAVAILABLE;
}
