/*
 * spf_macro: the RFC 7208 §7 macro language, checked and expanded by us
 * (libspf2's expander drops characters on %{d2} and %{l1r+} and splits
 * on '.' only).  Used for every domain-spec and for explanation text.
 */
#ifndef SPFGATE_SPF_MACRO_H
#define SPFGATE_SPF_MACRO_H

#include <stddef.h>

#include "cidr.h"

/* What a macro-string is used for decides what it may contain. */
enum spf_macro_kind {
	SPF_MACRO_DOMAIN,   /* domain-spec body: no c/r/t, no spaces */
	SPF_MACRO_EXP,      /* explanation text: c/r/t allowed, spaces too */
	SPF_MACRO_MODIFIER, /* unknown-modifier value: syntax only */
};

/* Longest expansion we build; a longer one is treated as an error. */
#define SPF_MACRO_MAX 8192

struct spf_macro_env {
	const char *sender;         /* s */
	const char *local;          /* l */
	const char *sender_domain;  /* o */
	const char *domain;         /* d: the current domain */
	const struct ipaddr *ip;    /* i, c, v */
	const char *helo;           /* h */
	const char *receiver;       /* r */
	long long now;              /* t */
	/* p: resolved only when used (it costs DNS queries) */
	const char *(*validated_name)(void *arg, const char *domain);
	void *arg;
};

/* 0 when s[0..len) is a syntactically valid macro-string of that kind. */
int spf_macro_check(const char *s, size_t len, enum spf_macro_kind kind);

/* Expand s[0..len); returns a malloc'd NUL-terminated string, or NULL on
 * a syntax error, an over-long result or no memory. */
char *spf_macro_expand(const char *s, size_t len, enum spf_macro_kind kind,
                       const struct spf_macro_env *env);

/* Turn an expanded domain-spec into a query name: drop one trailing dot,
 * then drop leading labels until it fits in 253 characters (RFC 7208
 * §7.3).  Returns 0 when the result is a usable DNS name (no empty label,
 * labels of at most 63 characters), -1 otherwise.  Works in place. */
int spf_macro_to_qname(char *name);

/* The "i" value of an address: dotted quad, or 32 dot-separated nibbles. */
void spf_macro_ip_dotted(const struct ipaddr *ip, char *buf, size_t len);

#endif
