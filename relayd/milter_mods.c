/*
 * milter_mods.c - the modification replies a milter sends at end of
 * message: checked against what it negotiated, decoded, collected.
 */
#include "milter_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct milter_mod *add_mod(struct milter_conn *m, enum milter_mod_type t)
{
	if (m->nmods == MAX_MODS)
		return NULL;
	if (m->nmods == m->capmods) {
		size_t cap = m->capmods ? 2 * m->capmods : 8;
		struct milter_mod *n = realloc(m->mods, cap * sizeof(*n));
		if (n == NULL)
			return NULL;
		m->mods = n;
		m->capmods = cap;
	}
	memset(&m->mods[m->nmods], 0, sizeof(m->mods[0]));
	m->mods[m->nmods].type = t;
	return &m->mods[m->nmods++];
}

/* A header value from a milter: LF -> CRLF, leading space as negotiated. */
static char *hdr_value_in(const struct milter_conn *m, const char *v)
{
	size_t n = strlen(v), o = 0;
	char *out = malloc(2 * n + 2);

	if (out == NULL)
		return NULL;
	if (!(m->protocol & SMFIP_HDR_LEADSPC))
		out[o++] = ' ';
	for (size_t i = 0; i < n; i++) {
		if (v[i] == '\n' && (i == 0 || v[i - 1] != '\r'))
			out[o++] = '\r';
		out[o++] = v[i];
	}
	out[o] = '\0';
	return out;
}

static int good_hdr_name(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == ':' || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
}

/* A modification reply at EOM; 0, or -1 (protocol error, m->error set). */
int milter_modification(struct milter_conn *m, char cmd, const unsigned char *d, size_t n)
{
	static const struct { char cmd; unsigned long act; } need[] = {
		{ SMFIR_ADDHEADER, SMFIF_ADDHDRS }, { SMFIR_INSHEADER, SMFIF_ADDHDRS },
		{ SMFIR_CHGHEADER, SMFIF_CHGHDRS }, { SMFIR_CHGFROM, SMFIF_CHGFROM },
		{ SMFIR_ADDRCPT, SMFIF_ADDRCPT }, { SMFIR_ADDRCPT_PAR, SMFIF_ADDRCPT_PAR },
		{ SMFIR_DELRCPT, SMFIF_DELRCPT }, { SMFIR_REPLBODY, SMFIF_CHGBODY },
		{ SMFIR_QUARANTINE, SMFIF_QUARANTINE },
	};
	const char *s[2], *name = NULL, *value = NULL;
	uint32_t idx = 0;
	struct milter_mod *mod;
	int k = -1;

	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
		if (need[i].cmd == cmd && !(m->actions & need[i].act))
			return snprintf(m->error, sizeof(m->error),
			                "milter %s: modification '%c' not negotiated", m->name, cmd), -1;
	if (m->res.event != MILTER_EV_EOM)
		return snprintf(m->error, sizeof(m->error),
		                "milter %s: modification '%c' outside end of message", m->name, cmd), -1;
	if (cmd == SMFIR_REPLBODY) {
		struct milter_mod *b;

		if (m->replbody == NONE) {
			if ((b = add_mod(m, MILTER_MOD_REPLBODY)) == NULL)
				goto nomem;
			m->replbody = (long)(b - m->mods);
		}
		b = &m->mods[m->replbody];
		if (b->body_len + n > MAX_REPLBODY)
			return snprintf(m->error, sizeof(m->error),
			                "milter %s: replacement body too large", m->name), -1;
		unsigned char *nb = realloc(b->body, b->body_len + n + 1);
		if (nb == NULL)
			goto nomem;
		memcpy(nb + b->body_len, d, n);
		b->body = nb;
		b->body_len += n;
		return 0;
	}
	switch (cmd) {
	case SMFIR_ADDHEADER:
		if (mw_strings(d, n, s, 2, 2) == 2)
			k = MILTER_MOD_ADDHDR, name = s[0], value = s[1];
		break;
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
		if (mw_dec_idx_header(d, n, &idx, &name, &value) == 0)
			k = cmd == SMFIR_INSHEADER ? MILTER_MOD_INSHDR : MILTER_MOD_CHGHDR;
		break;
	case SMFIR_CHGFROM:
	case SMFIR_ADDRCPT_PAR: {
		int c = mw_strings(d, n, s, 1, 2);
		if (c > 0 && s[0][0]) {
			k = cmd == SMFIR_CHGFROM ? MILTER_MOD_CHGFROM : MILTER_MOD_ADDRCPT;
			value = s[0];
			name = c == 2 && s[1][0] ? s[1] : NULL;   /* args */
		}
		break;
	}
	case SMFIR_ADDRCPT:
	case SMFIR_DELRCPT:
	case SMFIR_QUARANTINE:
		if (mw_strings(d, n, s, 1, 1) == 1 && s[0][0])
			k = cmd == SMFIR_ADDRCPT ? MILTER_MOD_ADDRCPT
			  : cmd == SMFIR_DELRCPT ? MILTER_MOD_DELRCPT : MILTER_MOD_QUARANTINE,
			value = s[0];
		break;
	}
	if (k < 0 || ((k == MILTER_MOD_ADDHDR || k == MILTER_MOD_INSHDR || k == MILTER_MOD_CHGHDR)
	              && !good_hdr_name(name)))
		return snprintf(m->error, sizeof(m->error),
		                "milter %s: malformed modification '%c'", m->name, cmd), -1;
	if ((mod = add_mod(m, (enum milter_mod_type)k)) == NULL)
		goto nomem;
	mod->index = idx;
	if (k == MILTER_MOD_CHGFROM || k == MILTER_MOD_ADDRCPT) {
		mod->value = strdup(value);
		mod->args = name ? strdup(name) : NULL;
		if (!mod->value || (name && !mod->args))
			goto nomem;
	} else if (k == MILTER_MOD_DELRCPT || k == MILTER_MOD_QUARANTINE) {
		if ((mod->value = strdup(value)) == NULL)
			goto nomem;
	} else {
		mod->name = strdup(name);
		if (!mod->name)
			goto nomem;
		if (!(k == MILTER_MOD_CHGHDR && value[0] == '\0')
		    && (mod->value = hdr_value_in(m, value)) == NULL)
			goto nomem;
	}
	return 0;
nomem:
	snprintf(m->error, sizeof(m->error), "milter %s: out of memory", m->name);
	return -1;
}
