/*
 * smtp_io: one outgoing SMTP connection's transport for deliverd's
 * remote delivery: a TCP connect with a time limit, line reads and
 * buffered writes with deadlines, over plain TCP or over TLS after
 * STARTTLS (OpenSSL).  Blocking from the caller's point of view (it runs
 * in delivery worker threads); internally the socket is non-blocking and
 * every wait is a poll() bounded by the caller's timeout.
 *
 * Certificates are not verified: like Postfix's "may" and "encrypt"
 * levels, TLS here protects against passive eavesdropping only.
 */
#ifndef SPFGATE_SMTP_IO_H
#define SPFGATE_SMTP_IO_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/ssl.h>

#define SMTP_LINE_MAX 2048      /* longer reply lines are truncated */

struct smtp_io {
	int fd;
	SSL *ssl;                   /* NULL until STARTTLS succeeded */
	char rbuf[4096];
	size_t rpos, rlen;
	char wbuf[16384];
	size_t wlen;
	int broken;                 /* a read/write failed or timed out */
	char err[160];              /* why it broke */
};

/* TLS client context shared by all connections (thread-safe use). */
SSL_CTX *smtp_tls_ctx_new(char *err, size_t errlen);

/*
 * Connect to addr within timeout_s seconds, from src when it is not NULL
 * (and of addr's family).  0, or -1 with the reason in err ("connect to
 * ...: Connection refused").  io is initialised either way;
 * smtp_io_close() is safe on a failed one.
 */
int smtp_io_connect(struct smtp_io *io, const struct sockaddr *addr, socklen_t alen,
                    const struct sockaddr *src, socklen_t srclen,
                    int timeout_s, char *err, size_t errlen);
void smtp_io_close(struct smtp_io *io);

/* TLS handshake on the connected socket; sni may be NULL (IP literal). */
int smtp_io_starttls(struct smtp_io *io, SSL_CTX *ctx, const char *sni,
                     int timeout_s, char *err, size_t errlen);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" for logs, or "" for plain text. */
void smtp_io_tls_info(const struct smtp_io *io, char *buf, size_t len);

/*
 * Read one line (CRLF or LF stripped) into buf, NUL-terminated, within
 * timeout_s.  Over-long lines are truncated (the rest is discarded).
 * Returns the length, or -1 (io->broken set, reason in io->err).
 */
ssize_t smtp_io_readline(struct smtp_io *io, char *buf, size_t len, int timeout_s);

/* Buffer bytes for sending (flushes when the buffer fills). 0 / -1. */
int smtp_io_write(struct smtp_io *io, const void *buf, size_t len, int timeout_s);
int smtp_io_printf(struct smtp_io *io, int timeout_s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Send everything buffered. 0 / -1. */
int smtp_io_flush(struct smtp_io *io, int timeout_s);
/* Bytes already received and not yet read (pipelining misuse checks). */
size_t smtp_io_pending(const struct smtp_io *io);

#endif
