/*
 * dns.c: the resolver behind common/dns.h: name handling, the conversion
 * of ldns RRs into struct dns_rr, and the network backend.  The zone-file
 * backend lives in dns_zone.c.
 *
 * The network backend writes its queries by hand and parses answers with
 * ldns_wire2pkt(); it keeps no per-resolver mutable state (no ldns_resolver,
 * whose internals are not thread safe), so one resolver can serve every
 * libmilter thread.  Each query opens its own sockets, which also gives it
 * a fresh kernel-chosen source port.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "dns.h"
#include "dns_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ldns/ldns.h>

#define MAX_TRIES 8          /* UDP transmissions per query */
#define EDNS_SIZE 1232       /* the DNS flag day 2020 value: no fragments */
#define DEFAULT_TIMEOUT 5000
#define RESOLV_CONF "/etc/resolv.conf"

void dns__seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- names ---- */

/*
 * The text form is taken literally: '.' separates labels and every other
 * byte, backslash included, belongs to its label.  SPF macro expansion can
 * produce any byte, and callers should not have to escape it.
 */
static int name_to_wire(const char *name, uint8_t wire[256])
{
	size_t len = strlen(name), i = 0, pos = 0;

	if (len == 0)
		return -1;
	if (strcmp(name, ".") == 0) {
		wire[0] = 0;
		return 1;
	}
	if (name[len - 1] == '.')
		len--;
	while (i <= len) {
		const char *dot = memchr(name + i, '.', len - i);
		size_t l = dot ? (size_t)(dot - (name + i)) : len - i;

		if (l == 0 || l > 63 || pos + 1 + l + 1 > 255)
			return -1;
		wire[pos++] = (uint8_t)l;
		memcpy(wire + pos, name + i, l);
		pos += l;
		i += l + 1;
	}
	wire[pos++] = 0;
	return (int)pos;
}

static int wire_eq(const uint8_t *a, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (dns__lc(a[i]) != dns__lc(b[i]))
			return 0;
	return 1;
}

static int rdf_is(const ldns_rdf *rdf, const uint8_t *w, size_t wlen)
{
	return rdf && ldns_rdf_size(rdf) == wlen &&
	       wire_eq(ldns_rdf_data(rdf), w, wlen);
}

/*
 * Labels joined by '.', root as "".  Only a '.' or NUL inside a label is
 * written as \DDD: anything else would change the name's structure.
 */
static char *wire_to_text(const uint8_t *w, size_t size)
{
	char *s = malloc(size * 4 + 1), *p = s;
	size_t pos = 0;

	if (!s)
		return NULL;
	while (pos < size && w[pos] != 0) {
		size_t l = w[pos++];

		if (p != s)
			*p++ = '.';
		for (size_t i = 0; i < l && pos < size; i++, pos++) {
			if (w[pos] == '.' || w[pos] == 0)
				p += sprintf(p, "\\%03u", w[pos]);
			else
				*p++ = (char)w[pos];
		}
	}
	*p = '\0';
	return s;
}

static char *rdf_name(const ldns_rdf *rdf)
{
	if (!rdf || ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_DNAME)
		return NULL;
	return wire_to_text(ldns_rdf_data(rdf), ldns_rdf_size(rdf));
}

int dns_reverse_name(int family, const void *addr, char *buf, size_t len)
{
	const uint8_t *b = addr;
	int n;

	if (!addr || !buf)
		return -1;
	if (family == AF_INET) {
		n = snprintf(buf, len, "%u.%u.%u.%u.in-addr.arpa",
		             b[3], b[2], b[1], b[0]);
		return n > 0 && (size_t)n < len ? 0 : -1;
	}
	if (family != AF_INET6 || len < 32 * 2 + sizeof "ip6.arpa")
		return -1;
	for (int i = 15; i >= 0; i--) {
		*buf++ = "0123456789abcdef"[b[i] & 15];
		*buf++ = '.';
		*buf++ = "0123456789abcdef"[b[i] >> 4];
		*buf++ = '.';
	}
	strcpy(buf, "ip6.arpa");
	return 0;
}

const char *dns_status_str(enum dns_status s)
{
	switch (s) {
	case DNS_OK: return "ok";
	case DNS_NODATA: return "nodata";
	case DNS_NXDOMAIN: return "nxdomain";
	case DNS_TEMPFAIL: return "tempfail";
	case DNS_BADNAME: return "badname";
	}
	return "unknown";
}

/* ---- answers ---- */

static void rr_clear(struct dns_rr *rr)
{
	switch (rr->type) {
	case DNS_T_MX: free(rr->u.mx.host); break;
	case DNS_T_PTR: case DNS_T_CNAME: case DNS_T_NS: free(rr->u.name); break;
	case DNS_T_TXT: case DNS_T_SPF: free(rr->u.txt.data); break;
	}
}

void dns_answer_free(struct dns_answer *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n; i++)
		rr_clear(&a->rr[i]);
	free(a->rr);
	a->rr = NULL;
	a->n = 0;
}

/*
 * Returns 1 when converted, 0 when the RR's rdata does not have the shape
 * of its type (generic "\#" data in a zone file, say): such RRs are
 * skipped; -1 when out of memory.
 */
static int rr_convert(const ldns_rr *in, struct dns_rr *out)
{
	size_t nrd = ldns_rr_rd_count(in);
	const ldns_rdf *f0 = nrd ? ldns_rr_rdf(in, 0) : NULL;
	size_t total = 0;

	memset(out, 0, sizeof *out);
	out->type = (uint16_t)ldns_rr_get_type(in);
	out->ttl = ldns_rr_ttl(in);
	switch (out->type) {
	case DNS_T_A:
	case DNS_T_AAAA: {
		size_t sz = out->type == DNS_T_A ? 4 : 16;

		if (!f0 || ldns_rdf_size(f0) != sz)
			return 0;
		memcpy(out->type == DNS_T_A ? (void *)&out->u.a : (void *)&out->u.aaaa,
		       ldns_rdf_data(f0), sz);
		return 1;
	}
	case DNS_T_MX:
		if (nrd != 2 || ldns_rdf_size(f0) != 2 ||
		    ldns_rdf_get_type(ldns_rr_rdf(in, 1)) != LDNS_RDF_TYPE_DNAME)
			return 0;
		out->u.mx.pref = ldns_rdf2native_int16(f0);
		out->u.mx.host = rdf_name(ldns_rr_rdf(in, 1));
		return out->u.mx.host ? 1 : -1;
	case DNS_T_PTR:
	case DNS_T_CNAME:
	case DNS_T_NS:
		if (nrd != 1 || ldns_rdf_get_type(f0) != LDNS_RDF_TYPE_DNAME)
			return 0;
		out->u.name = rdf_name(f0);
		return out->u.name ? 1 : -1;
	case DNS_T_TXT:
	case DNS_T_SPF:
		for (size_t i = 0; i < nrd; i++) {
			const ldns_rdf *f = ldns_rr_rdf(in, i);

			if (ldns_rdf_get_type(f) != LDNS_RDF_TYPE_STR ||
			    ldns_rdf_size(f) < 1 ||
			    ldns_rdf_data(f)[0] != ldns_rdf_size(f) - 1)
				return 0;
			total += ldns_rdf_size(f) - 1;
		}
		/* one spare byte so that callers may treat data as a C string */
		out->u.txt.data = malloc(total + 1);
		if (!out->u.txt.data)
			return -1;
		for (size_t i = 0; i < nrd; i++) {
			const ldns_rdf *f = ldns_rr_rdf(in, i);

			memcpy(out->u.txt.data + out->u.txt.len,
			       ldns_rdf_data(f) + 1, ldns_rdf_size(f) - 1);
			out->u.txt.len += ldns_rdf_size(f) - 1;
		}
		out->u.txt.data[total] = '\0';
		out->u.txt.nstrings = (int)nrd;
		return 1;
	}
	return 1;   /* other types: type and ttl only */
}

/* 0 ok (appended or skipped), -1 out of memory. */
int dns__answer_add(struct dns_answer *a, const ldns_rr *rr)
{
	struct dns_rr conv, *grown;
	int rc = rr_convert(rr, &conv);

	if (rc <= 0)
		return rc;
	grown = realloc(a->rr, (a->n + 1) * sizeof *grown);
	if (!grown) {
		rr_clear(&conv);
		return -1;
	}
	a->rr = grown;
	a->rr[a->n++] = conv;
	return 0;
}

int dns__type_matches(const ldns_rr *rr, uint16_t type)
{
	return (uint16_t)ldns_rr_get_type(rr) == type &&
	       ldns_rr_get_class(rr) == LDNS_RR_CLASS_IN;
}

/* ---- network backend ---- */

static int parse_ns(const char *spec, struct dns_nameserver *ns,
                    char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	const char *port = "53", *hs = spec, *colon = strchr(spec, ':');
	size_t hl = strlen(spec);
	struct addrinfo hints = { 0 }, *ai = NULL;
	int rc;

	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');

		if (!close || (close[1] && close[1] != ':') ||
		    (close[1] == ':' && !close[2]))
			goto bad;
		hs = spec + 1;
		hl = (size_t)(close - hs);
		if (close[1] == ':')
			port = close + 2;
	} else if (colon && !strchr(colon + 1, ':')) {
		hl = (size_t)(colon - spec);
		port = colon + 1;
	}
	if (hl == 0 || hl >= sizeof host || !*port || strlen(port) > 5 ||
	    strspn(port, "0123456789") != strlen(port) ||
	    atoi(port) < 1 || atoi(port) > 65535)
		goto bad;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	hints.ai_socktype = SOCK_DGRAM;
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc != 0 || !ai || ai->ai_addrlen > sizeof ns->sa) {
		if (ai)
			freeaddrinfo(ai);
		goto bad;
	}
	memcpy(&ns->sa, ai->ai_addr, ai->ai_addrlen);
	ns->len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
bad:
	dns__seterr(err, errlen, "bad name server address: %s", spec);
	return -1;
}

static int add_ns(struct dns_resolver *r, const char *spec, char *err, size_t errlen)
{
	struct dns_nameserver *g = realloc(r->ns, (r->nns + 1) * sizeof *g);

	if (!g) {
		dns__seterr(err, errlen, "out of memory");
		return -1;
	}
	r->ns = g;
	return parse_ns(spec, &r->ns[r->nns], err, errlen) == 0 ? (r->nns++, 0) : -1;
}

static int read_resolv_conf(struct dns_resolver *r, char *err, size_t errlen)
{
	FILE *fp = fopen(RESOLV_CONF, "r");
	char line[512];

	if (fp) {
		while (fgets(line, sizeof line, fp)) {
			char *save, *tok = strtok_r(line, " \t\r\n", &save), *addr;

			if (!tok || strcmp(tok, "nameserver") != 0)
				continue;
			addr = strtok_r(NULL, " \t\r\n", &save);
			/* an address we cannot use is skipped, as the C
			 * library would skip it */
			if (addr)
				add_ns(r, addr, NULL, 0);
		}
		fclose(fp);
	}
	/* like the C library: no name server line means the local host */
	if (r->nns == 0)
		return add_ns(r, "127.0.0.1", err, errlen);
	return 0;
}

struct dns_resolver *dns_new_network(const char *const *nameservers, size_t n,
                                     int timeout_ms, char *err, size_t errlen)
{
	struct dns_resolver *r = calloc(1, sizeof *r);

	if (!r) {
		dns__seterr(err, errlen, "out of memory");
		return NULL;
	}
	r->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT;
	for (size_t i = 0; i < n; i++)
		if (add_ns(r, nameservers[i], err, errlen) < 0)
			goto fail;
	if (n == 0 && read_resolv_conf(r, err, errlen) < 0)
		goto fail;
	return r;
fail:
	dns_free(r);
	return NULL;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t build_query(uint8_t *q, uint16_t id, const uint8_t *name,
                          size_t len, uint16_t type)
{
	static const uint8_t opt[11] = {
		0, 0, 41, EDNS_SIZE >> 8, EDNS_SIZE & 0xff, 0, 0, 0, 0, 0, 0
	};
	uint8_t *p = q;

	*p++ = id >> 8; *p++ = id & 0xff;
	*p++ = 0x01; *p++ = 0x00;           /* RD */
	*p++ = 0; *p++ = 1;                 /* QDCOUNT */
	*p++ = 0; *p++ = 0; *p++ = 0; *p++ = 0;
	*p++ = 0; *p++ = 1;                 /* ARCOUNT: the OPT RR */
	memcpy(p, name, len);
	p += len;
	*p++ = type >> 8; *p++ = type & 0xff;
	*p++ = 0; *p++ = LDNS_RR_CLASS_IN;
	memcpy(p, opt, sizeof opt);
	return (size_t)(p - q) + sizeof opt;
}

/* An answer counts only if it echoes our ID and question. */
static int reply_matches(const uint8_t *p, size_t n, const uint8_t *q, size_t qn)
{
	size_t qsec = qn - 11 - 12;     /* name + type + class */

	return n >= 12 + qsec && p[0] == q[0] && p[1] == q[1] && (p[2] & 0x80) &&
	       p[4] == 0 && p[5] == 1 && wire_eq(p + 12, q + 12, qsec - 4) &&
	       memcmp(p + 12 + qsec - 4, q + 12 + qsec - 4, 4) == 0;
}

static int wait_fd(int fd, short ev, int64_t deadline)
{
	struct pollfd pfd = { fd, ev, 0 };
	int64_t left;
	int rc;

	do {
		left = deadline - now_ms();
		if (left <= 0)
			return -1;
		rc = poll(&pfd, 1, (int)left);
	} while (rc < 0 && errno == EINTR);
	return rc > 0 ? 0 : -1;
}

static int open_to(const struct dns_nameserver *ns, int type)
{
	int fd = socket(ns->sa.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&ns->sa, ns->len) < 0 &&
	    errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Whole-message exchange over TCP (RFC 7766 framing); length or -1.
 * buf must hold 2 + 65535 bytes. */
static ssize_t tcp_exchange(const struct dns_nameserver *ns, const uint8_t *q,
                            size_t qn, uint8_t *buf, int64_t deadline)
{
	uint8_t msg[2 + 512];
	size_t done = 0, want = 2;
	int fd = open_to(ns, SOCK_STREAM), soerr = 0;
	socklen_t sl = sizeof soerr;

	if (fd < 0)
		return -1;
	if (wait_fd(fd, POLLOUT, deadline) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr)
		goto fail;
	msg[0] = (uint8_t)(qn >> 8);
	msg[1] = qn & 0xff;
	memcpy(msg + 2, q, qn);
	while (done < qn + 2) {
		ssize_t w = send(fd, msg + done, qn + 2 - done, MSG_NOSIGNAL);

		if (w < 0 && errno != EAGAIN && errno != EINTR)
			goto fail;
		if (w > 0)
			done += (size_t)w;
		else if (wait_fd(fd, POLLOUT, deadline) < 0)
			goto fail;
	}
	for (done = 0; done < want;) {
		ssize_t got;

		if (wait_fd(fd, POLLIN, deadline) < 0)
			goto fail;
		got = recv(fd, buf + done, want - done, 0);
		if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR))
			goto fail;
		if (got > 0)
			done += (size_t)got;
		if (done == 2 && want == 2) {
			want = 2 + ((size_t)buf[0] << 8 | buf[1]);
			if (want == 2)
				goto fail;
		}
	}
	close(fd);
	memmove(buf, buf + 2, want - 2);
	return (ssize_t)(want - 2);
fail:
	close(fd);
	return -1;
}

/*
 * Sends to the servers in turn, spreading the time limit over the tries,
 * and keeps every socket open until the end so a late answer to an
 * earlier try still counts.  A server whose port is closed (ICMP error on
 * the connected socket) costs no waiting.
 */
static ssize_t exchange(const struct dns_resolver *r, const uint8_t *q,
                        size_t qn, uint8_t *buf, int64_t deadline)
{
	struct pollfd pfd[MAX_TRIES];
	int srv[MAX_TRIES];
	size_t nfd = 0, active = 0, tries = r->nns * 2, sent = 0;
	int64_t now = now_ms(), slice, next = now;
	ssize_t res = -1;

	if (tries < 2)
		tries = 2;
	if (tries > MAX_TRIES)
		tries = MAX_TRIES;
	slice = (deadline - now) / (int64_t)tries;
	while ((now = now_ms()) < deadline && res < 0) {
		int64_t until = deadline;

		if (sent < tries && now >= next) {
			const struct dns_nameserver *ns = &r->ns[sent % r->nns];
			int fd = open_to(ns, SOCK_DGRAM);

			if (fd >= 0 && send(fd, q, qn, 0) == (ssize_t)qn) {
				pfd[nfd].fd = fd;
				pfd[nfd].events = POLLIN;
				srv[nfd++] = (int)(sent % r->nns);
				active++;
				next = now + slice;
			} else if (fd >= 0) {
				close(fd);
			}
			sent++;
			continue;
		}
		if (active == 0 && sent >= tries)
			break;
		if (sent < tries && next < until)
			until = next;
		if (poll(pfd, nfd, (int)(until - now)) <= 0)
			continue;
		for (size_t i = 0; i < nfd && res < 0; i++) {
			ssize_t got;

			if (!pfd[i].revents)
				continue;
			got = recv(pfd[i].fd, buf, 65535, 0);
			if (got < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (got >= 0 && !reply_matches(buf, (size_t)got, q, qn))
				continue;
			/* port closed, or a server failure while others may
			 * do better (as the C library does): drop this socket
			 * and try the next server now; poll() skips fd -1 */
			if (got < 0 || (r->nns > 1 && (buf[3] & 0x0f) != 0 &&
			                (buf[3] & 0x0f) != LDNS_RCODE_NXDOMAIN)) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				active--;
				next = now;
				continue;
			}
			res = got;
			if (buf[2] & 0x02) {    /* TC: ask the same server over TCP */
				res = tcp_exchange(&r->ns[srv[i]], q, qn, buf, deadline);
				if (res >= 0 && !reply_matches(buf, (size_t)res, q, qn))
					res = -1;
			}
		}
	}
	for (size_t i = 0; i < nfd; i++)
		if (pfd[i].fd >= 0)
			close(pfd[i].fd);
	return res;
}

static int has_soa(const ldns_pkt *pkt)
{
	const ldns_rr_list *au = ldns_pkt_authority(pkt);

	for (size_t i = 0; i < ldns_rr_list_rr_count(au); i++)
		if (ldns_rr_get_type(ldns_rr_list_rr(au, i)) == LDNS_RR_TYPE_SOA)
			return 1;
	return 0;
}

static enum dns_status net_query(const struct dns_resolver *r,
                                 const uint8_t *name, size_t len, uint16_t type,
                                 int64_t deadline, struct dns_answer *out)
{
	uint8_t cur[256], q[12 + 255 + 4 + 11], *buf = malloc(2 + 65535);
	int chain = 0;
	enum dns_status st = DNS_TEMPFAIL;

	if (!buf)
		return DNS_TEMPFAIL;
	memcpy(cur, name, len);
	for (;;) {
		uint16_t id;
		ssize_t n;
		ldns_pkt *pkt = NULL;
		const ldns_rr_list *an;
		int moved = 0, again, rcode;

		if (getrandom(&id, sizeof id, 0) != sizeof id)
			break;
		n = exchange(r, q, build_query(q, id, cur, len, type), buf, deadline);
		if (n < 0)
			break;
		rcode = buf[3] & 0x0f;
		if ((rcode != LDNS_RCODE_NOERROR && rcode != LDNS_RCODE_NXDOMAIN) ||
		    ldns_wire2pkt(&pkt, buf, (size_t)n) != LDNS_STATUS_OK)
			break;
		an = ldns_pkt_answer(pkt);
		for (;;) {
			const ldns_rdf *target = NULL;

			for (size_t i = 0; i < ldns_rr_list_rr_count(an); i++) {
				const ldns_rr *rr = ldns_rr_list_rr(an, i);

				if (!rdf_is(ldns_rr_owner(rr), cur, len))
					continue;
				if (dns__type_matches(rr, type)) {
					if (dns__answer_add(out, rr) < 0) {
						ldns_pkt_free(pkt);
						goto done;
					}
				} else if (dns__type_matches(rr, DNS_T_CNAME) &&
				           ldns_rr_rd_count(rr) == 1) {
					target = ldns_rr_rdf(rr, 0);
				}
			}
			if (out->n || !target || type == DNS_T_CNAME ||
			    ldns_rdf_get_type(target) != LDNS_RDF_TYPE_DNAME)
				break;
			if (++chain > DNS_MAX_CHAIN) {
				ldns_pkt_free(pkt);
				goto done;
			}
			len = ldns_rdf_size(target);
			memcpy(cur, ldns_rdf_data(target), len);
			moved = 1;
		}
		/* an authoritative server stops a chain at its zone's edge:
		 * without a SOA saying "no data" the target must be asked */
		again = !out->n && rcode == LDNS_RCODE_NOERROR && moved &&
		        !has_soa(pkt);
		st = out->n ? DNS_OK : rcode == LDNS_RCODE_NXDOMAIN ?
		     DNS_NXDOMAIN : DNS_NODATA;
		ldns_pkt_free(pkt);
		if (!again)
			break;
		st = DNS_TEMPFAIL;
	}
done:
	free(buf);
	return st;
}

/* ---- common entry points ---- */

enum dns_status dns_query(struct dns_resolver *r, const char *name,
                          uint16_t type, int timeout_ms,
                          struct dns_answer *out)
{
	uint8_t wire[256];
	int len;
	enum dns_status st;

	memset(out, 0, sizeof *out);
	if (!name || (len = name_to_wire(name, wire)) < 0) {
		st = DNS_BADNAME;
	} else if (!r) {
		st = DNS_TEMPFAIL;
	} else if (r->is_zone) {
		st = dns__zone_query(r, wire, (size_t)len, type, out);
	} else {
		int t = timeout_ms > 0 && timeout_ms < r->timeout_ms ?
		        timeout_ms : r->timeout_ms;

		st = net_query(r, wire, (size_t)len, type, now_ms() + t, out);
	}
	if (st != DNS_OK)
		dns_answer_free(out);
	out->status = st;
	return st;
}

void dns_free(struct dns_resolver *r)
{
	if (!r)
		return;
	dns__zone_free(r);
	free(r->ns);
	free(r);
}
