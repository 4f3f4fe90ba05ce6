/*
 * remote: delivery to other hosts over SMTP, through the smarthost when
 * one is configured, else to the domain's MX hosts (preference order,
 * equal preferences shuffled, AAAA and A of each, a bounded number of
 * addresses; no MX → the domain's own A/AAAA; null MX → permanent
 * failure 5.1.10; an MX list that leads back to this host → refused).
 *
 * The SMTP client: EHLO (HELO fallback), STARTTLS (required or
 * opportunistic), AUTH PLAIN/LOGIN toward the smarthost, SIZE,
 * PIPELINING, a result per recipient, RFC 5321 §4.5.3.2 timeouts,
 * connections reused per destination.  Blocking: it runs in delivery
 * worker threads, never in an event loop.
 */
#ifndef SPFGATE_REMOTE_H
#define SPFGATE_REMOTE_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "dns.h"

enum remote_status { REMOTE_DONE = 0, REMOTE_DEFER, REMOTE_FAIL };

struct remote_result {
	enum remote_status status;
	char dsn[16];            /* enhanced status, e.g. "2.0.0", "4.4.1" */
	char relay[300];         /* "mx.example.org[192.0.2.1]:25" or "none" */
	char text[512];          /* the remote reply or our reason, one line */
};

struct remote_job {
	const char *domain;      /* destination domain (all rcpts share it) */
	const char *sender;      /* "" for the null sender */
	const char *const *rcpts;
	size_t nrcpt;
	int fd;                  /* spool file: message text via pread */
	off_t off, len;          /* LF line ends; sent as CRLF, dot-stuffed */
	const char *id;          /* queue id, for logs */
};

struct remote_ctx;

struct remote_ctx *remote_new(const struct config *cfg, struct dns_resolver *dns,
                              char *err, size_t errlen);
void remote_free(struct remote_ctx *rc);
/* Close idle cached connections older than their keep-alive time. */
void remote_expire(struct remote_ctx *rc);

/* Deliver to every recipient of the job; fills res[0..nrcpt-1]. */
void remote_deliver(struct remote_ctx *rc, const struct remote_job *job,
                    struct remote_result *res);

/* The destination key jobs are grouped by: the smarthost, or the domain. */
void remote_destination(const struct remote_ctx *rc, const char *domain,
                        char *buf, size_t len);

#endif
