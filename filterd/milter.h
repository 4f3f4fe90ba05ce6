/*
 * milter: what filterd's libmilter callbacks (milter_cb.c) and their
 * helpers (milter_util.c) share with main (filterd.c).  The policy
 * itself lives in common/policy.c; this side only translates between
 * libmilter and that code.
 */
#ifndef FILTERD_MILTER_H
#define FILTERD_MILTER_H

#include <stddef.h>
#include <libmilter/mfapi.h>

#include "config.h"
#include "dns.h"

/* The callbacks, for smfi_register(). */
extern struct smfiDesc filterd_milter;

/*
 * What the callbacks decide with.  An environment is read-only once
 * published; a reload publishes a new one and keeps the old ones (a
 * session may still be using them) until milter_env_free_all() at exit.
 */
struct milter_env {
	struct config cfg;
	struct dns_resolver *dns;
	struct milter_env *older;
};
void milter_publish(struct milter_env *env);
const struct milter_env *milter_env_now(void);
void milter_env_free_all(void);

/* After smfi_main() returned: wait up to max_ms for open mail
 * transactions to end.  Returns how many were still open. */
int milter_drain(int max_ms);

/*
 * Split an SMTP reply line "DDD X.Y.Z text" and hand it to
 * smfi_setreply() with '%' doubled (Sendmail reads the text as a
 * format).  Returns 0, or -1 if the line is malformed or libmilter
 * refused it (the MTA then uses its generic reply).
 */
int milter_setreply(SMFICTX *ctx, const char *line);

/*
 * Fold a header value for the wire: unchanged when "name: value" fits
 * in one line of at most 998 octets (RFC 5322 §2.1.1), else broken
 * before white space as "\n\t..." as libmilter wants it (the MTA adds
 * the CR).  Returns out, or NULL when out is too small.
 */
char *milter_fold(const char *name, const char *value, char *out, size_t len);

/* Growable text with a hard cap, for log lines and recipient lists. */
struct textbuf {
	char *s;
	size_t len, cap, max;
	int truncated;
};
void tb_init(struct textbuf *b, size_t max);
void tb_add(struct textbuf *b, const char *s);
/* Append " key=value" with the value quoted by log_quote(). */
void tb_kv(struct textbuf *b, const char *key, const char *value);
void tb_free(struct textbuf *b);

#endif
