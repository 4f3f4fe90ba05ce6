/*
 * milter_wire.h - packet encoding and decoding for the MTA side of the
 * Sendmail milter protocol, version 6.
 *
 * A packet is a 32-bit length in network byte order (counting the command
 * byte and the data), one command byte, then the data.  This module never
 * builds a packet with more than MW_MAX_DATA (65535) bytes of data, and
 * refuses to decode one that announces more (we never offer the
 * SMFIP_MDS_256K/1M sizes).  Nothing here does I/O: the encoder appends
 * to a growable buffer, the decoder works on bytes the caller has read.
 *
 * Protocol constants (SMFIC_*, SMFIR_*, SMFIP_*, SMFIF_*, SMFIM_*) are
 * Sendmail's, from <libmilter/mfdef.h> and <libmilter/mfapi.h>.
 */
#ifndef SPFGATE_MILTER_WIRE_H
#define SPFGATE_MILTER_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <libmilter/mfapi.h>
#include <libmilter/mfdef.h>

#define MW_MAX_DATA   65535u   /* data bytes in one packet, both ways */
#define MW_HDR_LEN    5u       /* length word + command byte */
#define MW_NSTAGES    7        /* SMFIM_CONNECT .. SMFIM_EOH */

/* ---- encoding ---- */

/*
 * One outgoing packet.  mw_begin() starts it, mw_put_*() append data,
 * mw_end() writes the length word.  Any append that would take the data
 * past MW_MAX_DATA sets err and leaves the packet unusable; allocation
 * failure does the same.  mw_free() releases the memory.
 */
struct mw_pkt {
	unsigned char *buf;
	size_t len, cap;
	int err;
};

void mw_begin(struct mw_pkt *p, char cmd);
void mw_put_bytes(struct mw_pkt *p, const void *data, size_t n);
void mw_put_str(struct mw_pkt *p, const char *s);       /* with its NUL */
void mw_put_u16(struct mw_pkt *p, uint16_t v);
void mw_put_u32(struct mw_pkt *p, uint32_t v);
size_t mw_data_len(const struct mw_pkt *p);              /* data so far */
int mw_end(struct mw_pkt *p);                            /* 0, or -1 on err */
void mw_free(struct mw_pkt *p);

/* SMFIC_OPTNEG as the MTA sends it. */
int mw_enc_optneg(struct mw_pkt *p, uint32_t version, uint32_t actions,
                  uint32_t protocol);

/* ---- decoding ---- */

enum mw_frame_rc { MW_ERR = -1, MW_MORE = 0, MW_OK = 1 };

/*
 * Find one packet at the start of in[0..avail).  MW_MORE: not complete
 * yet.  MW_ERR: the length word is 0 or announces more than max_data
 * bytes of data.  MW_OK: *cmd, *data, *dlen describe it and *consumed is
 * its whole size.
 */
int mw_frame(const unsigned char *in, size_t avail, size_t max_data, char *cmd,
             const unsigned char **data, size_t *dlen, size_t *consumed);

/*
 * Split data into exactly between min and max NUL-terminated strings that
 * cover it to the last byte.  Returns the count, or -1.  out[] points into
 * data.
 */
int mw_strings(const unsigned char *data, size_t n, const char **out, int min, int max);

/* The milter's SMFIC_OPTNEG reply, with the macro lists it asked for. */
struct mw_optneg {
	uint32_t version, actions, protocol;
	const char *macros[MW_NSTAGES];   /* NULL: no list for the stage */
};
int mw_dec_optneg(const unsigned char *data, size_t n, struct mw_optneg *o);

/* SMFIR_INSHEADER / SMFIR_CHGHEADER: 32-bit index, name, value. */
int mw_dec_idx_header(const unsigned char *data, size_t n, uint32_t *idx,
                      const char **name, const char **value);

/*
 * Validate an SMFIR_REPLYCODE text as Postfix does and unescape it: one or
 * more lines "DDD-..." / "DDD ..." joined by CRLF, the code 4xx or 5xx and
 * the same on every line, an enhanced status code (when present) of the
 * same class, no other CR or LF, no NUL or other control characters but
 * TAB, and "%%" for a literal percent (a lone '%' is malformed).  The
 * result goes to out (NUL-terminated).  Returns 0, or -1 when malformed.
 */
int mw_replycode(const char *text, char *out, size_t outsz);

#endif
