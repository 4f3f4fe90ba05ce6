/*
 * milter_wire.c - milter protocol packets: build them, split them, check
 * them.  See milter_wire.h.
 */
#include "milter_wire.h"

#include <stdlib.h>
#include <string.h>

static void reserve(struct mw_pkt *p, size_t more)
{
	if (p->err)
		return;
	if (p->len + more > MW_HDR_LEN + MW_MAX_DATA) {
		p->err = 1;
		return;
	}
	if (p->len + more > p->cap) {
		size_t cap = p->cap ? p->cap : 256;
		unsigned char *nb;

		while (cap < p->len + more)
			cap *= 2;
		if (cap > MW_HDR_LEN + MW_MAX_DATA)
			cap = MW_HDR_LEN + MW_MAX_DATA;
		nb = realloc(p->buf, cap);
		if (nb == NULL) {
			p->err = 1;
			return;
		}
		p->buf = nb;
		p->cap = cap;
	}
}

void mw_begin(struct mw_pkt *p, char cmd)
{
	p->len = 0;
	p->err = 0;
	reserve(p, MW_HDR_LEN);
	if (p->err)
		return;
	memset(p->buf, 0, 4);
	p->buf[4] = (unsigned char)cmd;
	p->len = MW_HDR_LEN;
}

void mw_put_bytes(struct mw_pkt *p, const void *data, size_t n)
{
	reserve(p, n);
	if (p->err || n == 0)
		return;
	memcpy(p->buf + p->len, data, n);
	p->len += n;
}

void mw_put_str(struct mw_pkt *p, const char *s)
{
	mw_put_bytes(p, s, strlen(s) + 1);
}

void mw_put_u16(struct mw_pkt *p, uint16_t v)
{
	unsigned char b[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	mw_put_bytes(p, b, 2);
}

void mw_put_u32(struct mw_pkt *p, uint32_t v)
{
	unsigned char b[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
	                       (unsigned char)(v >> 8), (unsigned char)v };

	mw_put_bytes(p, b, 4);
}

size_t mw_data_len(const struct mw_pkt *p)
{
	return p->len >= MW_HDR_LEN ? p->len - MW_HDR_LEN : 0;
}

int mw_end(struct mw_pkt *p)
{
	uint32_t n;

	if (p->err || p->len < MW_HDR_LEN)
		return -1;
	n = (uint32_t)(p->len - 4);
	p->buf[0] = (unsigned char)(n >> 24);
	p->buf[1] = (unsigned char)(n >> 16);
	p->buf[2] = (unsigned char)(n >> 8);
	p->buf[3] = (unsigned char)n;
	return 0;
}

void mw_free(struct mw_pkt *p)
{
	free(p->buf);
	p->buf = NULL;
	p->len = p->cap = 0;
	p->err = 0;
}

int mw_enc_optneg(struct mw_pkt *p, uint32_t version, uint32_t actions,
                  uint32_t protocol)
{
	mw_begin(p, SMFIC_OPTNEG);
	mw_put_u32(p, version);
	mw_put_u32(p, actions);
	mw_put_u32(p, protocol);
	return mw_end(p);
}

static uint32_t get_u32(const unsigned char *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

int mw_frame(const unsigned char *in, size_t avail, size_t max_data, char *cmd,
             const unsigned char **data, size_t *dlen, size_t *consumed)
{
	uint32_t n;

	if (avail < 4)
		return MW_MORE;
	n = get_u32(in);
	if (n == 0 || n - 1 > max_data)
		return MW_ERR;
	if (avail < 4 + (size_t)n)
		return MW_MORE;
	*cmd = (char)in[4];
	*data = in + 5;
	*dlen = n - 1;
	*consumed = 4 + (size_t)n;
	return MW_OK;
}

int mw_strings(const unsigned char *data, size_t n, const char **out, int min, int max)
{
	int count = 0;
	size_t i = 0;

	while (i < n) {
		const unsigned char *nul = memchr(data + i, '\0', n - i);

		if (nul == NULL || count == max)
			return -1;
		out[count++] = (const char *)data + i;
		i = (size_t)(nul - data) + 1;
	}
	return count >= min ? count : -1;
}

int mw_dec_optneg(const unsigned char *data, size_t n, struct mw_optneg *o)
{
	size_t i = 12;

	memset(o, 0, sizeof(*o));
	if (n < 12)
		return -1;
	o->version = get_u32(data);
	o->actions = get_u32(data + 4);
	o->protocol = get_u32(data + 8);
	while (i < n) {
		uint32_t stage;
		const unsigned char *nul;

		if (n - i < 5)
			return -1;
		stage = get_u32(data + i);
		i += 4;
		nul = memchr(data + i, '\0', n - i);
		if (nul == NULL || stage >= MW_NSTAGES)
			return -1;
		o->macros[stage] = (const char *)data + i;
		i = (size_t)(nul - data) + 1;
	}
	return 0;
}

int mw_dec_idx_header(const unsigned char *data, size_t n, uint32_t *idx,
                      const char **name, const char **value)
{
	const char *s[2];

	if (n < 4 || mw_strings(data + 4, n - 4, s, 2, 2) != 2 || s[0][0] == '\0')
		return -1;
	*idx = get_u32(data);
	*name = s[0];
	*value = s[1];
	return 0;
}

static int isdig(char c)
{
	return c >= '0' && c <= '9';
}

/* Check one reply line [l, e); last: no continuation follows. */
static int check_line(const char *l, const char *e, const char *code, int last)
{
	const char *p;

	if (e - l < 3 || !isdig(l[0]) || !isdig(l[1]) || !isdig(l[2]))
		return -1;
	if ((l[0] != '4' && l[0] != '5') || memcmp(l, code, 3) != 0)
		return -1;
	if (e - l > 3) {
		if (l[3] != (last ? ' ' : '-'))
			return -1;
	} else if (!last) {
		return -1;
	}
	/* enhanced status code: class.subject.detail, class must match */
	p = l + 4;
	if (p < e && isdig(*p)) {
		const char *q = p;
		int parts = 0;

		while (q < e && parts < 3) {
			int digits = 0;

			while (q < e && isdig(*q)) {
				q++;
				digits++;
			}
			if (digits == 0 || digits > 3)
				return -1;
			parts++;
			if (parts < 3) {
				if (q >= e || *q != '.')
					return -1;
				q++;
			}
		}
		if (parts != 3 || (q < e && *q != ' ') || *p != l[0] || p[1] != '.')
			return -1;
	}
	for (p = l; p < e; p++) {
		unsigned char c = (unsigned char)*p;

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return -1;
	}
	return 0;
}

int mw_replycode(const char *text, char *out, size_t outsz)
{
	const char *l = text, *p;
	size_t o = 0;

	if (outsz == 0)
		return -1;
	for (;;) {
		const char *e = strstr(l, "\r\n");
		int last = e == NULL;

		if (last)
			e = l + strlen(l);
		if (check_line(l, e, text, last) < 0)
			return -1;
		if (last)
			break;
		l = e + 2;
	}
	for (p = text; *p; p++) {
		char c = *p;

		if (c == '%') {
			if (p[1] != '%')
				return -1;
			p++;
		}
		if (o + 1 >= outsz)
			return -1;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}
