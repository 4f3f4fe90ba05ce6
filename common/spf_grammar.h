/*
 * spf_grammar: the RFC 7208 §4.5/§12 record grammar, checked strictly by
 * us before libspf2 sees anything.  A record that does not parse is a
 * permerror wherever it stands (top level, include, redirect target).
 */
#ifndef SPFGATE_SPF_GRAMMAR_H
#define SPFGATE_SPF_GRAMMAR_H

#include <stddef.h>
#include <netinet/in.h>

enum spf_mech {
	SPF_MECH_ALL,
	SPF_MECH_INCLUDE,
	SPF_MECH_A,
	SPF_MECH_MX,
	SPF_MECH_PTR,
	SPF_MECH_IP4,
	SPF_MECH_IP6,
	SPF_MECH_EXISTS,
};

/* A span of the record text (domain-specs are kept unexpanded). */
struct spf_span {
	size_t off, len;        /* len == 0: absent */
};

struct spf_term {
	enum spf_mech mech;
	char qualifier;         /* '+', '-', '~' or '?' */
	struct spf_span domain; /* a, mx, ptr (optional); include, exists */
	int cidr4, cidr6;       /* -1 when not given */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} net;                  /* ip4 / ip6 */
	struct spf_span text;   /* the whole term, for messages */
};

struct spf_record {
	char *text;             /* NUL-terminated copy of the record */
	size_t len;
	struct spf_term *terms;
	size_t nterms;
	struct spf_span redirect, exp;
	int has_all;            /* an "all" mechanism anywhere */
};

/* 1 when txt[0..len) starts with "v=spf1" followed by SP or its end. */
int spf_is_spf1(const char *txt, size_t len);

/* Parse a record selected by spf_is_spf1().  0 on success; -1 on a
 * syntax error with a short description in err. */
int spf_record_parse(const char *txt, size_t len, struct spf_record *out,
                     char *err, size_t errlen);
void spf_record_clear(struct spf_record *r);

/* 0 when s[0..len) is a valid domain-spec (RFC 7208 §7.1). */
int spf_domain_spec_check(const char *s, size_t len);

/* Pointer to a span's text inside the record (not NUL-terminated). */
static inline const char *spf_span_ptr(const struct spf_record *r,
                                       struct spf_span s)
{
	return r->text + s.off;
}

#endif
