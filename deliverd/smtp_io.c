/*
 * smtp_io: the transport under deliverd's SMTP client (see smtp_io.h).
 * A non-blocking socket, optionally wrapped in an OpenSSL session; every
 * read, write, connect and handshake waits in poll() against a deadline
 * on the monotonic clock, so a silent peer costs at most the RFC 5321
 * timeout the caller passes, never a hung worker thread.
 */
#include "smtp_io.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
deadline_of(int timeout_s)
{
	return now_ms() + (int64_t)timeout_s * 1000;
}

/* Wait for ev on fd until deadline: 1 ready, 0 timed out, -1 error. */
static int
wait_fd(int fd, short ev, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = { .fd = fd, .events = ev };
		int r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (r > 0)
			return 1;
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

static void
io_fail(struct smtp_io *io, const char *prefix, const char *what)
{
	io->broken = 1;
	snprintf(io->err, sizeof io->err, "%s%s", prefix, what);
}

/* Error text of the OpenSSL queue (or errno) after a failed TLS call. */
static void
ssl_reason(char *buf, size_t len, int ssl_err)
{
	unsigned long e = ERR_peek_last_error();
	if (e != 0)
		ERR_error_string_n(e, buf, len);
	else if (ssl_err == SSL_ERROR_SYSCALL && errno != 0)
		snprintf(buf, len, "%s", strerror(errno));
	else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN)
		snprintf(buf, len, "connection closed by peer");
	else
		snprintf(buf, len, "TLS error %d", ssl_err);
	ERR_clear_error();
}

SSL_CTX *
smtp_tls_ctx_new(char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		ssl_reason(err, errlen, 0);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

int
smtp_io_connect(struct smtp_io *io, const struct sockaddr *addr, socklen_t alen,
                const struct sockaddr *src, socklen_t srclen,
                int timeout_s, char *err, size_t errlen)
{
	memset(io, 0, sizeof *io);
	io->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (io->fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		io->broken = 1;
		return -1;
	}
	if (src && src->sa_family == addr->sa_family && bind(io->fd, src, srclen) < 0) {
		snprintf(err, errlen, "bind to smtp_bind_address: %s", strerror(errno));
		goto fail;
	}
	if (connect(io->fd, addr, alen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR) {
		snprintf(err, errlen, "connect: %s", strerror(errno));
		goto fail;
	}
	int r = wait_fd(io->fd, POLLOUT, deadline_of(timeout_s));
	if (r == 0) {
		snprintf(err, errlen, "connect: timed out after %ds", timeout_s);
		goto fail;
	}
	int soerr = 0;
	socklen_t sl = sizeof soerr;
	if (r < 0 || getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr != 0) {
		snprintf(err, errlen, "connect: %s", strerror(soerr));
		goto fail;
	}
	return 0;
fail:
	close(io->fd);
	io->fd = -1;
	io->broken = 1;
	return -1;
}

void
smtp_io_close(struct smtp_io *io)
{
	if (io->ssl) {
		/* one close_notify attempt, never a wait for the peer's */
		if (!io->broken)
			SSL_shutdown(io->ssl);
		SSL_free(io->ssl);
		io->ssl = NULL;
	}
	if (io->fd >= 0)
		close(io->fd);
	io->fd = -1;
}

int
smtp_io_starttls(struct smtp_io *io, SSL_CTX *ctx, const char *sni,
                 int timeout_s, char *err, size_t errlen)
{
	int64_t deadline = deadline_of(timeout_s);
	char why[160];

	/* The server must not have sent anything after its 220 (RFC 3207:
	 * plaintext injected before the handshake would be trusted later). */
	if (io->rlen > io->rpos) {
		snprintf(err, errlen, "server sent data before the TLS handshake");
		io->broken = 1;
		return -1;
	}
	ERR_clear_error();
	io->ssl = SSL_new(ctx);
	if (io->ssl == NULL || !SSL_set_fd(io->ssl, io->fd)) {
		ssl_reason(why, sizeof why, 0);
		snprintf(err, errlen, "TLS setup: %s", why);
		io->broken = 1;
		return -1;
	}
	if (sni && *sni)
		SSL_set_tlsext_host_name(io->ssl, sni);
	for (;;) {
		ERR_clear_error();
		errno = 0;
		int r = SSL_connect(io->ssl);
		if (r == 1)
			return 0;
		int e = SSL_get_error(io->ssl, r);
		short ev;
		if (e == SSL_ERROR_WANT_READ)
			ev = POLLIN;
		else if (e == SSL_ERROR_WANT_WRITE)
			ev = POLLOUT;
		else {
			ssl_reason(why, sizeof why, e);
			snprintf(err, errlen, "TLS handshake failed: %s", why);
			io->broken = 1;
			return -1;
		}
		int w = wait_fd(io->fd, ev, deadline);
		if (w <= 0) {
			snprintf(err, errlen, "TLS handshake %s",
			         w == 0 ? "timed out" : "failed: poll error");
			io->broken = 1;
			return -1;
		}
	}
}

void
smtp_io_tls_info(const struct smtp_io *io, char *buf, size_t len)
{
	if (io->ssl == NULL) {
		snprintf(buf, len, "%s", "");
		return;
	}
	snprintf(buf, len, "%s %s", SSL_get_version(io->ssl),
	         SSL_get_cipher_name(io->ssl));
}

/* Fill rbuf: >0 bytes, 0 EOF, -1 error/timeout (io->err set). */
static ssize_t
fill(struct smtp_io *io, int64_t deadline)
{
	io->rpos = io->rlen = 0;
	for (;;) {
		short ev = POLLIN;
		if (io->ssl) {
			ERR_clear_error();
			errno = 0;
			int n = SSL_read(io->ssl, io->rbuf, sizeof io->rbuf);
			if (n > 0) {
				io->rlen = (size_t)n;
				return n;
			}
			int e = SSL_get_error(io->ssl, n);
			if (e == SSL_ERROR_ZERO_RETURN)
				return 0;
			if (e == SSL_ERROR_WANT_WRITE)
				ev = POLLOUT;
			else if (e != SSL_ERROR_WANT_READ) {
				char why[120];
				ssl_reason(why, sizeof why, e);
				io_fail(io, "read: ", why);
				return -1;
			}
		} else {
			ssize_t n = read(io->fd, io->rbuf, sizeof io->rbuf);
			if (n >= 0) {
				io->rlen = (size_t)n;
				return n;
			}
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				io_fail(io, "read: ", strerror(errno));
				return -1;
			}
		}
		int w = wait_fd(io->fd, ev, deadline);
		if (w <= 0) {
			io_fail(io, "", w == 0 ? "timed out reading the reply" : "poll error");
			return -1;
		}
	}
}

ssize_t
smtp_io_readline(struct smtp_io *io, char *buf, size_t len, int timeout_s)
{
	int64_t deadline = deadline_of(timeout_s);
	size_t n = 0;

	if (io->broken)
		return -1;
	for (;;) {
		if (io->rpos == io->rlen) {
			ssize_t r = fill(io, deadline);
			if (r == 0)
				io_fail(io, "", "connection closed by the server");
			if (r <= 0)
				return -1;
		}
		char c = io->rbuf[io->rpos++];
		if (c == '\n')
			break;
		if (n + 1 < len)
			buf[n++] = c;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return (ssize_t)n;
}

/* Write all of buf now: 0, or -1 (io->err set). */
static int
write_all(struct smtp_io *io, const char *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		short ev = POLLOUT;
		if (io->ssl) {
			ERR_clear_error();
			errno = 0;
			int n = SSL_write(io->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
			if (n > 0) {
				buf += n;
				len -= (size_t)n;
				continue;
			}
			int e = SSL_get_error(io->ssl, n);
			if (e == SSL_ERROR_WANT_READ)
				ev = POLLIN;
			else if (e != SSL_ERROR_WANT_WRITE) {
				char why[120];
				ssl_reason(why, sizeof why, e);
				io_fail(io, "write: ", why);
				return -1;
			}
		} else {
			ssize_t n = send(io->fd, buf, len, MSG_NOSIGNAL);
			if (n >= 0) {
				buf += n;
				len -= (size_t)n;
				continue;
			}
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				io_fail(io, "write: ", strerror(errno));
				return -1;
			}
		}
		int w = wait_fd(io->fd, ev, deadline);
		if (w <= 0) {
			io_fail(io, "", w == 0 ? "timed out writing" : "poll error");
			return -1;
		}
	}
	return 0;
}

int
smtp_io_flush(struct smtp_io *io, int timeout_s)
{
	if (io->broken)
		return -1;
	if (io->wlen == 0)
		return 0;
	int r = write_all(io, io->wbuf, io->wlen, deadline_of(timeout_s));
	io->wlen = 0;
	return r;
}

int
smtp_io_write(struct smtp_io *io, const void *buf, size_t len, int timeout_s)
{
	const char *p = buf;

	if (io->broken)
		return -1;
	while (len > 0) {
		size_t room = sizeof io->wbuf - io->wlen;
		if (room == 0) {
			if (smtp_io_flush(io, timeout_s) < 0)
				return -1;
			continue;
		}
		size_t n = len < room ? len : room;
		memcpy(io->wbuf + io->wlen, p, n);
		io->wlen += n;
		p += n;
		len -= n;
	}
	return 0;
}

int
smtp_io_printf(struct smtp_io *io, int timeout_s, const char *fmt, ...)
{
	char line[1200];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line) {
		io_fail(io, "", "command too long");
		return -1;
	}
	return smtp_io_write(io, line, (size_t)n, timeout_s);
}

size_t
smtp_io_pending(const struct smtp_io *io)
{
	return io->rlen - io->rpos;
}
