/*
 * lmtp_client: relayd's asynchronous LMTP client to deliverd, one
 * connection per SMTP session, opened at the first MAIL.
 *
 * Commands are written at once (deliverd speaks PIPELINING) and their
 * replies handed back in order, one callback per expected reply.  A
 * callback gets code 0 when there will be no reply (connection refused,
 * lost, timed out, or a broken greeting/LHLO): the session answers
 * 451 4.3.0 then.  After lmtp_client_free() no callback runs.
 */
#ifndef RELAYD_LMTP_CLIENT_H
#define RELAYD_LMTP_CLIENT_H

#include <stddef.h>

struct event_base;
struct lmtp_client;

/* text: the last line of the reply after "CODE " (enhanced code and
 * all), "" for code 0. */
typedef void (*lmtp_reply_cb)(void *arg, int code, const char *text);

/* spec: unix:/PATH or inet:PORT@ADDR ([relayd] lmtp).  NULL only when
 * out of memory or spec is unusable (err says which). */
struct lmtp_client *lmtp_client_new(struct event_base *base, const char *spec,
                                    const char *lhlo, long timeout_s,
                                    char *err, size_t errlen);
/* Send one command line (no CRLF) and expect one reply; cb may be NULL
 * (reply read and ignored). */
void lmtp_client_cmd(struct lmtp_client *c, const char *line, lmtp_reply_cb cb, void *arg);
/* Raw bytes (the message after a 354). */
void lmtp_client_write(struct lmtp_client *c, const char *p, size_t n);
/* Expect one more reply without sending anything (LMTP's per-recipient
 * replies after the final dot). */
void lmtp_client_expect(struct lmtp_client *c, lmtp_reply_cb cb, void *arg);
/* Did deliverd's LHLO reply advertise this extension keyword (case does
 * not matter)?  Known once the reply to any later command has come. */
int lmtp_client_has(const struct lmtp_client *c, const char *keyword);
/* in as RFC 3461 xtext into out (NUL-terminated; cut at a character
 * boundary when out is too small); the length written. */
size_t lmtp_client_xtext(const char *in, char *out, size_t outlen);
/* Dead: a new client is needed for the next transaction. */
int lmtp_client_broken(const struct lmtp_client *c);
void lmtp_client_free(struct lmtp_client *c);

#endif
