/*
 * dnscheck_spfrec: SPF record text for spfgate-dnscheck's advice.  An
 * existing record is adapted, never replaced: the administrator's other
 * mechanisms and the qualifier of the "all" term are theirs.  A missing
 * mechanism goes just before "all" because nothing after it is ever
 * evaluated (RFC 7208 §5.1); a record without "all" gets it before its
 * redirect= (where a reader looks for the end), or at the end.
 */
#include "dnscheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
dc_spf_is_record(const char *txt, size_t len)
{
	/* RFC 7208 §4.5: "v=spf1" then a space or the end; case-insensitive */
	return len >= 6 && strncasecmp(txt, "v=spf1", 6) == 0 && (len == 6 || txt[6] == ' ');
}

/* Does the record name this mechanism already ("+" is the default)? */
static int
has_term(const char *record, const char *mech)
{
	size_t ml = strlen(mech);

	for (const char *p = record; *p; ) {
		while (*p == ' ')
			p++;
		const char *t = p;
		while (*p && *p != ' ')
			p++;
		size_t tl = (size_t)(p - t);
		if (tl && *t == '+') {
			t++;
			tl--;
		}
		if (tl == ml && strncasecmp(t, mech, ml) == 0)
			return 1;
	}
	return 0;
}

static int
is_all(const char *t, size_t tl)
{
	if (tl == 4 && strchr("+-~?", *t)) {
		t++;
		tl--;
	}
	return tl == 3 && strncasecmp(t, "all", 3) == 0;
}

char *
dc_spf_adapt(const char *record, const char *const *mechs, size_t n)
{
	size_t add = 0, rl = strlen(record);

	for (size_t i = 0; i < n; i++)
		if (!has_term(record, mechs[i]))
			add += strlen(mechs[i]) + 1;
	if (add == 0)
		return NULL;

	/* where the new terms go: before "all", or redirect=, or the end */
	size_t at = rl;
	while (at > 0 && record[at - 1] == ' ')
		at--;
	int before_term = 0;
	for (const char *p = record; *p; ) {
		while (*p == ' ')
			p++;
		const char *t = p;
		while (*p && *p != ' ')
			p++;
		if (p > t && is_all(t, (size_t)(p - t))) {
			at = (size_t)(t - record);
			before_term = 1;
			break;
		}
		if (!before_term && strncasecmp(t, "redirect=", 9) == 0) {
			at = (size_t)(t - record);
			before_term = 1;     /* keep looking: an "all" wins */
		}
	}

	char *out = malloc(rl + add + 2), *o = out;
	if (out == NULL)
		return NULL;
	memcpy(o, record, at);
	o += at;
	for (size_t i = 0; i < n; i++) {
		if (has_term(record, mechs[i]))
			continue;
		/* a term already added for an earlier path is not repeated */
		int dup = 0;
		for (size_t j = 0; j < i; j++)
			dup |= strcasecmp(mechs[j], mechs[i]) == 0;
		if (dup)
			continue;
		if (!before_term)
			*o++ = ' ';
		memcpy(o, mechs[i], strlen(mechs[i]));
		o += strlen(mechs[i]);
		if (before_term)
			*o++ = ' ';
	}
	strcpy(o, before_term ? record + at : "");
	return out;
}

int
dc_spf_mechanisms(const char *record, struct strlist *out)
{
	const char *p = record;

	while (*p && *p != ' ')     /* the version term */
		p++;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *t = p;
		while (*p && *p != ' ')
			p++;
		size_t tl = (size_t)(p - t);
		if (tl && *t == '+') {
			t++;
			tl--;
		}
		/* a modifier is name=value, the name made of these */
		size_t nl = strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.");
		if (tl == 0 || is_all(t, tl) || (nl < tl && t[nl] == '='))
			continue;
		char term[512];
		snprintf(term, sizeof(term), "%.*s", (int)tl, t);
		if (!strlist_contains_ci(out, term) && strlist_add(out, term) < 0)
			return -1;
	}
	return 0;
}

char *
dc_spf_new(const char *first, const char *const *mechs, size_t n)
{
	char base[300];
	snprintf(base, sizeof(base), "v=spf1 %s ~all", first);
	char *out = dc_spf_adapt(base, mechs, n);
	return out ? out : strdup(base);
}
