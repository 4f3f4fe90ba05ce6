/*
 * dns_zone.c: the zone-file backend of dns.h.  Master files are read once
 * with ldns into a sorted array of owner names (lower-cased wire form);
 * each owner's ancestors are entered too, without RRs, so that a name with
 * children answers NODATA rather than NXDOMAIN.  Nothing is written after
 * dns_new_zone() returns, so queries need no locking.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "dns.h"
#include "dns_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	return c ? c : (alen > blen) - (alen < blen);
}

struct zent {
	uint8_t *key;
	size_t keylen;
	ldns_rr *rr;         /* NULL: an ancestor, recorded so it exists */
};

static int zent_cmp(const void *a, const void *b)
{
	const struct zent *x = a, *y = b;

	return key_cmp(x->key, x->keylen, y->key, y->keylen);
}

static const struct dns_znode *zone_find(const struct dns_resolver *r,
                                         const uint8_t *key, size_t keylen)
{
	size_t lo = 0, hi = r->nnodes;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(key, keylen, r->nodes[mid].key, r->nodes[mid].keylen);

		if (c == 0)
			return &r->nodes[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static int zent_push(struct zent **v, size_t *n, size_t *cap,
                     const uint8_t *w, size_t wlen, ldns_rr *rr)
{
	struct zent e = { malloc(wlen), wlen, rr };

	if (!e.key)
		return -1;
	for (size_t i = 0; i < wlen; i++)
		e.key[i] = dns__lc(w[i]);
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct zent *g = realloc(*v, nc * sizeof *g);

		if (!g) {
			free(e.key);
			return -1;
		}
		*v = g;
		*cap = nc;
	}
	(*v)[(*n)++] = e;
	return 0;
}

/* Appends the RRs of one file; "file:line: message" on error. */
static int zone_read(const char *file, struct zent **v, size_t *n, size_t *cap,
                     char *err, size_t errlen)
{
	FILE *fp = fopen(file, "r");
	ldns_rdf *origin, *prev = NULL;
	uint32_t ttl = 3600;
	int line = 0, rc = -1;

	if (!fp) {
		dns__seterr(err, errlen, "%s: %s", file, strerror(errno));
		return -1;
	}
	/* with no $ORIGIN, ldns takes unterminated names as absolute anyway */
	origin = ldns_dname_new_frm_str(".");
	for (;;) {
		ldns_rr *rr = NULL;
		ldns_status s;
		const uint8_t *w;
		size_t wl;

		if (feof(fp)) {
			rc = 0;
			break;
		}
		s = ldns_rr_new_frm_fp_l(&rr, fp, &ttl, &origin, &prev, &line);
		if (s == LDNS_STATUS_SYNTAX_EMPTY || s == LDNS_STATUS_SYNTAX_TTL ||
		    s == LDNS_STATUS_SYNTAX_ORIGIN)
			continue;
		if (s == LDNS_STATUS_SYNTAX_INCLUDE) {
			/* ldns stops at the directive and leaves the rest */
			dns__seterr(err, errlen, "%s:%d: $INCLUDE is not supported",
			            file, line);
			break;
		}
		if (s != LDNS_STATUS_OK) {
			/* ldns counts the newlines it has consumed, so a last
			 * line without one would be blamed on its predecessor */
			if (feof(fp) && fseek(fp, -1, SEEK_END) == 0 &&
			    fgetc(fp) != '\n')
				line++;
			dns__seterr(err, errlen, "%s:%d: %s", file, line > 0 ? line : 1,
			            ldns_get_errorstr_by_id(s));
			break;
		}
		w = ldns_rdf_data(ldns_rr_owner(rr));
		wl = ldns_rdf_size(ldns_rr_owner(rr));
		if (zent_push(v, n, cap, w, wl, rr) < 0) {
			ldns_rr_free(rr);
			dns__seterr(err, errlen, "%s: out of memory", file);
			break;
		}
		/* every ancestor exists: a name with children is not NXDOMAIN */
		for (size_t off = 1 + w[0]; off < wl; off += 1 + w[off])
			if (zent_push(v, n, cap, w + off, wl - off, NULL) < 0) {
				dns__seterr(err, errlen, "%s: out of memory", file);
				goto out;
			}
	}
out:
	ldns_rdf_deep_free(origin);
	ldns_rdf_deep_free(prev);
	fclose(fp);
	return rc;
}

/* Groups the sorted entries into nodes; takes the keys and RRs over. */
static int zone_index(struct dns_resolver *r, struct zent *v, size_t n)
{
	if (n)
		qsort(v, n, sizeof *v, zent_cmp);
	r->nodes = calloc(n ? n : 1, sizeof *r->nodes);
	if (!r->nodes)
		return -1;
	for (size_t i = 0; i < n;) {
		struct dns_znode *z = &r->nodes[r->nnodes++];
		size_t j = i, k = 0;

		while (j < n && zent_cmp(&v[i], &v[j]) == 0)
			j++;
		z->key = v[i].key;
		z->keylen = v[i].keylen;
		v[i].key = NULL;
		z->rr = calloc(j - i, sizeof *z->rr);
		if (!z->rr)
			return -1;
		for (; i < j; i++) {
			free(v[i].key);
			v[i].key = NULL;
			if (!v[i].rr)
				continue;
			z->rr[k++] = v[i].rr;
			if (ldns_rr_get_type(v[i].rr) == DNS_T_TIMEOUT_MARK)
				z->timeout_mark = 1;
			if (dns__type_matches(v[i].rr, DNS_T_CNAME) &&
			    ldns_rr_rd_count(v[i].rr) == 1 &&
			    ldns_rdf_get_type(ldns_rr_rdf(v[i].rr, 0)) == LDNS_RDF_TYPE_DNAME)
				z->cname = v[i].rr;
			v[i].rr = NULL;
		}
		z->n = k;
	}
	return 0;
}

struct dns_resolver *dns_new_zone(const char *const *files, size_t n,
                                  char *err, size_t errlen)
{
	struct dns_resolver *r = calloc(1, sizeof *r);
	struct zent *v = NULL;
	size_t nv = 0, cap = 0;
	int ok = r != NULL;

	if (!r)
		dns__seterr(err, errlen, "out of memory");
	for (size_t i = 0; ok && i < n; i++)
		ok = zone_read(files[i], &v, &nv, &cap, err, errlen) == 0;
	if (ok) {
		r->is_zone = 1;
		if (zone_index(r, v, nv) < 0) {
			dns__seterr(err, errlen, "out of memory");
			ok = 0;
		}
	}
	for (size_t i = 0; i < nv; i++) {
		free(v[i].key);
		ldns_rr_free(v[i].rr);
	}
	free(v);
	if (!ok) {
		dns_free(r);
		return NULL;
	}
	return r;
}

/*
 * RFC 4592, simplified: a name that does not exist is answered from
 * "*.<closest encloser>" when that exists.
 */
static const struct dns_znode *zone_wildcard(const struct dns_resolver *r,
                                             const uint8_t *key, size_t keylen)
{
	uint8_t wc[256];

	for (size_t off = 1 + key[0]; off < keylen; off += 1 + key[off]) {
		if (!zone_find(r, key + off, keylen - off))
			continue;
		if (keylen - off + 2 > sizeof wc)
			return NULL;
		wc[0] = 1;
		wc[1] = '*';
		memcpy(wc + 2, key + off, keylen - off);
		return zone_find(r, wc, keylen - off + 2);
	}
	return NULL;
}

enum dns_status dns__zone_query(const struct dns_resolver *r,
                                  const uint8_t *name, size_t len,
                                  uint16_t type, struct dns_answer *out)
{
	uint8_t key[256];

	for (int chain = 0;; chain++) {
		const struct dns_znode *z;
		const ldns_rdf *target;

		for (size_t i = 0; i < len; i++)
			key[i] = dns__lc(name[i]);
		z = zone_find(r, key, len);
		if (!z)
			z = zone_wildcard(r, key, len);
		if (!z)
			return DNS_NXDOMAIN;
		if (z->timeout_mark)
			return DNS_TEMPFAIL;
		for (size_t i = 0; i < z->n; i++)
			if (dns__type_matches(z->rr[i], type) &&
			    dns__answer_add(out, z->rr[i]) < 0)
				return DNS_TEMPFAIL;
		if (out->n)
			return DNS_OK;
		if (!z->cname || type == DNS_T_CNAME)
			return DNS_NODATA;
		if (chain == DNS_MAX_CHAIN)
			return DNS_TEMPFAIL;
		target = ldns_rr_rdf(z->cname, 0);
		len = ldns_rdf_size(target);
		memcpy(key, ldns_rdf_data(target), len);
		name = key;
	}
}

void dns__zone_free(struct dns_resolver *r)
{
	for (size_t i = 0; i < r->nnodes; i++) {
		for (size_t j = 0; j < r->nodes[i].n; j++)
			ldns_rr_free(r->nodes[i].rr[j]);
		free(r->nodes[i].rr);
		free(r->nodes[i].key);
	}
	free(r->nodes);
	r->nodes = NULL;
	r->nnodes = 0;
}
