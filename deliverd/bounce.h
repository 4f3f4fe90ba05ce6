/*
 * bounce: RFC 3464 delivery status notifications.  A DSN is a
 * multipart/report (report-type=delivery-status) with a human-readable
 * part, a message/delivery-status part (one block per failed recipient)
 * and the original headers as text/rfc822-headers.  It is queued like
 * any other message, from the null sender, so a DSN is never bounced:
 * bounces cannot loop.
 */
#ifndef SPFGATE_BOUNCE_H
#define SPFGATE_BOUNCE_H

#include <stddef.h>
#include <time.h>

#include "spool.h"

struct bounce_rcpt {
	const char *final;       /* Final-Recipient address (full l@d) */
	const char *orig;        /* Original-Recipient, NULL or "" for none */
	const char *status;      /* enhanced status, e.g. "5.1.1" */
	const char *remote_mta;  /* host name, NULL/"" when none */
	const char *diag;        /* the remote reply or our reason */
	int expired;             /* failed because the queue lifetime ended */
};

/*
 * Build the DSN text (LF line ends) for message m (its headers are read
 * from the spool file) into a malloc'd buffer.  boundary may be NULL
 * (derived from the ids).  0, or -1 (errno).
 */
int bounce_build(const char *mail_name, const struct spool_msg *m,
                 const struct bounce_rcpt *r, size_t n, time_t now,
                 const char *dsn_id, char **out, size_t *outlen);

/*
 * Build the DSN and commit it to the spool addressed to the recipients
 * `to` (the original sender, already resolved: "user" for a local
 * mailbox, "l@d" for SMTP).  On success the new queue id is in new_id
 * (SPOOL_ID_MAX bytes).  0; 1 when m's sender is null (nothing queued:
 * the caller logs and drops); -1 with err on failure (e.g. disk full).
 */
int bounce_queue(struct spool *s, const char *mail_name, const struct spool_msg *m,
                 const struct bounce_rcpt *r, size_t n,
                 const struct spool_rcpt *to, size_t nto,
                 char *new_id, char *err, size_t errlen);

#endif
