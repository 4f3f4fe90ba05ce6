/*
 * addr: RFC 5321 mailbox parsing for envelope addresses.
 *
 * Accepts "<local@domain>", "local@domain" and "<>" (the null sender).
 * Quoted local parts are understood; source routes ("<@a,@b:u@d>") are
 * stripped to the final mailbox as RFC 5321 §4.1.1.3 allows, but the
 * route is never honoured.  The domain is the text after the LAST
 * unquoted '@'.  A percent hack ("u%other@local") or a bang path
 * ("other!u@local") is just a local part here: the flags tell a caller
 * that it looked like a routing attempt.
 */
#ifndef SPFGATE_ADDR_H
#define SPFGATE_ADDR_H

#include <stddef.h>

#define ADDR_MAX 320            /* RFC 5321: 64 local + @ + 255 domain */

enum addr_flags {
	ADDR_QUOTED      = 1 << 0,  /* local part was a quoted string */
	ADDR_ROUTED      = 1 << 1,  /* a source route was present (ignored) */
	ADDR_PERCENT     = 1 << 2,  /* local part contains '%' */
	ADDR_BANG        = 1 << 3,  /* local part contains '!' */
	ADDR_LOCAL_AT    = 1 << 4,  /* quoted local part contains '@' */
	ADDR_LITERAL     = 1 << 5,  /* domain is an address literal [..] */
};

struct mailbox {
	char local[ADDR_MAX + 1];   /* unquoted form */
	char domain[ADDR_MAX + 1];  /* lower-cased, trailing dot removed */
	int null;                   /* "<>" */
	int flags;
};

/* 0 on success, -1 on syntax error (with a short reason in *why). */
int addr_parse(const char *s, struct mailbox *out, const char **why);
/* Check a domain name's syntax (LDH labels, or an address literal). */
int addr_domain_valid(const char *d);
/* Lower-case a domain in place and drop one trailing dot. */
void addr_domain_normalize(char *d);

#endif
