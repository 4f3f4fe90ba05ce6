/*
 * spf_rewrite: the equivalent record libspf2 is handed for a record we
 * have parsed and validated.
 *
 *   - every DNS target becomes a placeholder the layer resolves (our
 *     macro expander, whole-evaluation counting, RFC 7208 §7.3 truncation);
 *   - redirect= goes to the end, or is dropped when "all" is present
 *     (§6.1); exp= and unknown modifiers are dropped (the wrapper does
 *     exp, the others have no effect);
 *   - terms after the first "all" are dropped (never reached);
 *   - ip4/ip6 are written canonically for the client's family only (an
 *     ip6 term never matches an IPv4 client and vice versa, §5.6), and a
 *     /0 prefix, which libspf2 rejects, becomes "all" (it matches every
 *     address of that family); a/mx with /0 become layer-answered
 *     "exists" terms (see spf_eval.h);
 *   - libspf2 silently drops mechanisms past 511 compiled bytes, so a
 *     record that does not compile whole is split: runs of terms with the
 *     same qualifier move into synthetic included records (include
 *     matches exactly when one of them matches), and, if that is not
 *     enough, the tail continues in a synthetic redirect target.
 */
#include <config.h>

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spf_eval.h"

#define PIECE_BUDGET 360        /* estimated compiled bytes per record */

struct terms {
	char **v;
	size_t n, cap;
};

static int terms_add(struct terms *t, char *s)
{
	if (!s)
		return -1;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **nv = realloc(t->v, cap * sizeof(*nv));
		if (!nv) {
			free(s);
			return -1;
		}
		t->v = nv;
		t->cap = cap;
	}
	t->v[t->n++] = s;
	return 0;
}

static void terms_free(struct terms *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i]);
	free(t->v);
	memset(t, 0, sizeof(*t));
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

static int add_slot(struct spf_eval *ev, enum spf_slot_kind kind, int rec,
                    int term, char *chunk)
{
	if (ev->nslots == ev->capslots) {
		size_t cap = ev->capslots ? ev->capslots * 2 : 32;
		struct spf_slot *ns = realloc(ev->slots, cap * sizeof(*ns));
		if (!ns) {
			free(chunk);
			return -1;
		}
		ev->slots = ns;
		ev->capslots = cap;
	}
	struct spf_slot *s = &ev->slots[ev->nslots];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->rec = rec;
	s->term = term;
	s->chunk = chunk;
	return (int)ev->nslots++;
}

int spf_slot_from_name(const struct spf_eval *ev, const char *name)
{
	if (!name || name[0] != '@')
		return -1;
	char *end;
	unsigned long idx = strtoul(name + 1, &end, 10);
	if (end == name + 1 || *end != '@' || strcmp(end + 1, ev->nonce) != 0)
		return -1;
	return idx < ev->nslots ? (int)idx : -1;
}

/* "<q><mech>:@slot@nonce<suffix>" for a fresh slot. */
static char *slot_term(struct spf_eval *ev, enum spf_slot_kind kind, int rec,
                       int term, char q, const char *mech, const char *suffix)
{
	int idx = add_slot(ev, kind, rec, term, NULL);
	if (idx < 0)
		return NULL;
	return xprintf("%c%s:@%d@%s%s", q, mech, idx, ev->nonce, suffix);
}

/* The ptr target is only compared with names, never queried: give
 * libspf2 the expanded name, or one no DNS name can equal. */
static char *ptr_term(struct spf_eval *ev, int rec, const struct spf_term *t)
{
	char *name = spf_eval_target(ev, rec, t->domain);
	int ok = name != NULL;
	for (const char *p = name; ok && *p; p++)
		if (*p < 0x21 || *p > 0x7e || *p == '%' || *p == '/')
			ok = 0;
	char *s = xprintf("%cptr:%s", t->qualifier, ok ? name : "@");
	free(name);
	return s;
}

/* The libspf2 terms for record instance rec, in evaluation order. */
static int build_terms(struct spf_eval *ev, int rec, struct terms *out)
{
	const struct spf_record *r = &ev->recs[rec].rec;
	int v4 = ev->ip.family == AF_INET;
	char addr[INET6_ADDRSTRLEN];
	for (size_t i = 0; i < r->nterms; i++) {
		const struct spf_term *t = &r->terms[i];
		char q = t->qualifier, cidr[16];
		int c, rc = 0, stop = 0;
		switch (t->mech) {
		case SPF_MECH_ALL:
			rc = terms_add(out, xprintf("%call", q));
			stop = 1;
			break;
		case SPF_MECH_IP4:
		case SPF_MECH_IP6:
			if (v4 != (t->mech == SPF_MECH_IP4))
				break;
			c = v4 ? t->cidr4 : t->cidr6;
			if (c == 0) {
				rc = terms_add(out, xprintf("%call", q));
				stop = 1;
				break;
			}
			inet_ntop(v4 ? AF_INET : AF_INET6, &t->net, addr, sizeof(addr));
			rc = terms_add(out, c < 0 ? xprintf("%cip%c:%s", q, v4 ? '4' : '6', addr)
			                          : xprintf("%cip%c:%s/%d", q, v4 ? '4' : '6', addr, c));
			break;
		case SPF_MECH_A:
		case SPF_MECH_MX: {
			int a = t->mech == SPF_MECH_A;
			c = v4 ? t->cidr4 : t->cidr6;
			if (c == 0) {
				rc = terms_add(out, slot_term(ev, a ? SLOT_ANY_A : SLOT_ANY_MX,
				                              rec, (int)i, q, "exists", ""));
				break;
			}
			cidr[0] = '\0';
			if (c > 0)
				snprintf(cidr, sizeof(cidr), v4 ? "/%d" : "//%d", c);
			rc = terms_add(out, slot_term(ev, a ? SLOT_A : SLOT_MX, rec,
			                              (int)i, q, a ? "a" : "mx", cidr));
			break;
		}
		case SPF_MECH_PTR:
			rc = terms_add(out, ptr_term(ev, rec, t));
			break;
		case SPF_MECH_EXISTS:
			rc = terms_add(out, slot_term(ev, SLOT_EXISTS, rec, (int)i, q,
			                              "exists", ""));
			break;
		case SPF_MECH_INCLUDE:
			rc = terms_add(out, slot_term(ev, SLOT_INCLUDE, rec, (int)i, q,
			                              "include", ""));
			break;
		}
		if (rc)
			return -1;
		if (stop)
			break;
	}
	if (r->redirect.len && !r->has_all) {
		int idx = add_slot(ev, SLOT_REDIRECT, rec, -1, NULL);
		if (idx < 0 || terms_add(out, xprintf("redirect=@%d@%s", idx, ev->nonce)))
			return -1;
	}
	return 0;
}

static char *join(char **v, size_t n, const char *head)
{
	size_t len = strlen(head) + 1;
	for (size_t i = 0; i < n; i++)
		len += strlen(v[i]) + 1;
	char *s = malloc(len);
	if (!s)
		return NULL;
	strcpy(s, head);
	for (size_t i = 0; i < n; i++) {
		if (*s)
			strcat(s, " ");
		strcat(s, v[i]);
	}
	return s;
}

/* Compile exactly these terms; fails when libspf2 would drop any. */
static SPF_errcode_t try_compile(SPF_server_t *srv, char **v, size_t n,
                                 SPF_record_t **out)
{
	*out = NULL;
	char *text = join(v, n, "v=spf1");
	if (!text)
		return SPF_E_NO_MEMORY;
	SPF_response_t *scratch = SPF_response_new(NULL);
	if (!scratch) {
		free(text);
		return SPF_E_NO_MEMORY;
	}
	SPF_errcode_t err = SPF_record_compile(srv, scratch, out, text);
	if (err == SPF_E_SUCCESS && (*out)->num_mech != n)
		err = SPF_E_BIG_MECH;
	if (err != SPF_E_SUCCESS && *out) {
		SPF_record_free(*out);
		*out = NULL;
	}
	SPF_response_free(scratch);
	free(text);
	return err;
}

static size_t cost(const char *term)
{
	return (strlen(term) + 16 + 3) & ~(size_t)3;
}

static int is_redirect(const char *term)
{
	return strncmp(term, "redirect=", 9) == 0;
}

/* New chunk slot holding v[0..n) with every qualifier made '+'. */
static char *chunk_include(struct spf_eval *ev, int rec, char q, char **v,
                           size_t n)
{
	struct terms plus = { 0 };
	for (size_t i = 0; i < n; i++)
		if (terms_add(&plus, xprintf("+%s", v[i] + 1))) {
			terms_free(&plus);
			return NULL;
		}
	char *text = join(plus.v, plus.n, "");
	terms_free(&plus);
	if (!text)
		return NULL;
	int idx = add_slot(ev, SLOT_CHUNK, rec, -1, text);
	if (idx < 0)
		return NULL;
	return xprintf("%cinclude:@%d@%s", q, idx, ev->nonce);
}

/* Group runs of equal qualifiers into included chunks.  Returns the
 * number of terms saved. */
static int group_runs(struct spf_eval *ev, int rec, struct terms *t)
{
	struct terms out = { 0 };
	size_t i = 0, before = t->n;
	while (i < t->n) {
		if (is_redirect(t->v[i])) {
			if (terms_add(&out, strdup(t->v[i])))
				goto fail;
			i++;
			continue;
		}
		size_t j = i, budget = 0;
		char q = t->v[i][0];
		while (j < t->n && !is_redirect(t->v[j]) && t->v[j][0] == q &&
		       budget + cost(t->v[j]) <= PIECE_BUDGET) {
			budget += cost(t->v[j]);
			j++;
		}
		if (j == i)
			j = i + 1;
		char *s = j - i >= 2 ? chunk_include(ev, rec, q, t->v + i, j - i)
		                     : strdup(t->v[i]);
		if (terms_add(&out, s))
			goto fail;
		i = j;
	}
	terms_free(t);
	*t = out;
	return (int)(before - t->n);
fail:
	terms_free(&out);
	return -1;
}

/* Keep what fits and continue the rest in a synthetic redirect target. */
static int continue_tail(struct spf_eval *ev, int rec, struct terms *t)
{
	size_t k = 0, budget = cost("redirect=@0000@00000000");
	while (k < t->n && budget + cost(t->v[k]) <= PIECE_BUDGET) {
		budget += cost(t->v[k]);
		k++;
	}
	if (k == 0)
		k = 1;
	if (k >= t->n)
		return 0;
	char *rest = join(t->v + k, t->n - k, "");
	if (!rest)
		return -1;
	int idx = add_slot(ev, SLOT_CHUNK, rec, -1, rest);
	if (idx < 0)
		return -1;
	char *red = xprintf("redirect=@%d@%s", idx, ev->nonce);
	if (!red)
		return -1;
	for (size_t i = k; i < t->n; i++)
		free(t->v[i]);
	t->n = k;
	return terms_add(t, red);
}

static SPF_errcode_t compile_terms(struct spf_eval *ev, SPF_server_t *srv,
                                   int rec, struct terms *t, SPF_record_t **out)
{
	size_t est = 0;
	for (size_t i = 0; i < t->n; i++)
		est += cost(t->v[i]);
	for (int round = 0; round < 8; round++) {
		/* skip a compile that is bound to come out short */
		SPF_errcode_t err = round == 0 && est > 2 * SPF_MAX_MECH_LEN
			? SPF_E_BIG_MECH : try_compile(srv, t->v, t->n, out);
		if (err == SPF_E_SUCCESS || err == SPF_E_NO_MEMORY || t->n <= 1)
			return err;
		int saved = group_runs(ev, rec, t);
		if (saved < 0)
			return SPF_E_NO_MEMORY;
		if (saved == 0 && continue_tail(ev, rec, t))
			return SPF_E_NO_MEMORY;
	}
	return SPF_E_BIG_MECH;
}

SPF_errcode_t spf_rewrite_compile(struct spf_eval *ev, SPF_server_t *srv,
                                  int rec, SPF_record_t **out)
{
	struct terms t = { 0 };
	*out = NULL;
	SPF_errcode_t err = build_terms(ev, rec, &t) ? SPF_E_NO_MEMORY
	                                            : compile_terms(ev, srv, rec, &t, out);
	terms_free(&t);
	return err;
}

SPF_errcode_t spf_rewrite_compile_chunk(struct spf_eval *ev,
                                        SPF_server_t *srv, int slot,
                                        SPF_record_t **out)
{
	struct terms t = { 0 };
	*out = NULL;
	char *text = strdup(ev->slots[slot].chunk);
	int rec = ev->slots[slot].rec;
	if (!text)
		return SPF_E_NO_MEMORY;
	char *save = NULL;
	for (char *tok = strtok_r(text, " ", &save); tok;
	     tok = strtok_r(NULL, " ", &save))
		if (terms_add(&t, strdup(tok))) {
			free(text);
			terms_free(&t);
			return SPF_E_NO_MEMORY;
		}
	free(text);
	SPF_errcode_t err = compile_terms(ev, srv, rec, &t, out);
	terms_free(&t);
	return err;
}
