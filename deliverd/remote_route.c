/*
 * remote_route: where a remote delivery goes (see remote_int.h), and the
 * smarthost credentials file.
 *
 * Decisions, with their reasons:
 *  - MX hosts are tried in preference order, equal preferences in random
 *    order (RFC 5321 §5.1, spreading load); each host's AAAA before its A;
 *    at most REMOTE_MAX_ADDRS addresses per attempt, so a domain with
 *    dozens of MX hosts cannot hold a worker for hours.
 *  - A null MX (RFC 7505: a single MX whose host is ".") means the domain
 *    accepts no mail: 5.1.10 at once.  Null entries mixed with real MX
 *    hosts are ignored.
 *  - No MX record (NODATA) → the domain itself is the only host (implicit
 *    MX, RFC 5321 §5.1); a domain that does not exist → 5.1.2; a DNS
 *    failure → 4.4.3 (try later).
 *  - Loops: an MX host whose name is our mail_name, and every MX of the
 *    same or a worse preference, are dropped (what Postfix does with its
 *    own name); if nothing is left, 5.4.6.  Then every address that is
 *    one of relayd's own listeners (address and port; a wildcard listener
 *    means any local address) is dropped too, so an MX under another name
 *    that points at this host cannot loop either.
 *  - MX hosts without any address → 5.4.4 (unless a lookup failed
 *    temporarily: then 4.4.3).
 */
#include "remote_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

int
remote_parse_hostport(const char *spec, int defport, char *host, size_t hostlen,
                      int *port, int *bracketed)
{
	const char *h = spec, *portstr = NULL;
	size_t hl;

	*bracketed = 0;
	*port = defport;
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
			return -1;
		h = spec + 1;
		hl = (size_t)(close - h);
		if (close[1] == ':')
			portstr = close + 2;
		*bracketed = 1;
	} else {
		const char *colon = strchr(spec, ':');
		if (colon && strchr(colon + 1, ':'))
			return -1;      /* a bare IPv6 address needs brackets */
		hl = colon ? (size_t)(colon - spec) : strlen(spec);
		if (colon)
			portstr = colon + 1;
	}
	if (hl == 0 || hl >= hostlen)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (strncasecmp(host, "IPv6:", 5) == 0)    /* RFC 5321 literal form */
		memmove(host, host + 5, hl - 4);
	if (portstr) {
		char *end;
		long p = strtol(portstr, &end, 10);
		if (*portstr == '\0' || *end != '\0' || p < 1 || p > 65535)
			return -1;
		*port = (int)p;
	}
	return 0;
}

/* Names equal, case-insensitively, ignoring one trailing dot each. */
static int
same_name(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la && a[la - 1] == '.')
		la--;
	if (lb && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

static void
route_fail(struct remote_route *out, enum remote_status st, const char *dsn,
           const char *text)
{
	out->n = 0;
	out->status = st;
	snprintf(out->dsn, sizeof out->dsn, "%s", dsn);
	snprintf(out->text, sizeof out->text, "%.*s", (int)sizeof out->text - 1, text);
}

/* Add an address literal; 1 if host is one, 0 if not. */
static int
add_literal(struct remote_route *out, const char *host, int port)
{
	struct remote_target *t = &out->t[out->n];
	struct sockaddr_in *s4 = (struct sockaddr_in *)&t->ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&t->ss;

	if (out->n >= REMOTE_MAX_ADDRS)
		return 1;
	memset(t, 0, sizeof *t);
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		t->sslen = sizeof *s4;
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		t->sslen = sizeof *s6;
	} else
		return 0;
	snprintf(t->host, sizeof t->host, "%s", host);
	out->n++;
	return 1;
}

/* Look up host's AAAA and A; returns the worst dns status seen. */
static enum dns_status
add_host(struct dns_resolver *dns, struct remote_route *out, const char *host, int port)
{
	static const uint16_t types[] = { DNS_T_AAAA, DNS_T_A };
	enum dns_status worst = DNS_OK;

	if (add_literal(out, host, port))
		return DNS_OK;
	for (size_t k = 0; k < 2 && out->n < REMOTE_MAX_ADDRS; k++) {
		struct dns_answer a;
		enum dns_status st = dns_query(dns, host, types[k], 0, &a);
		if (st == DNS_TEMPFAIL)
			worst = DNS_TEMPFAIL;
		else if (st != DNS_OK && worst != DNS_TEMPFAIL)
			worst = st;
		for (size_t i = 0; st == DNS_OK && i < a.n && out->n < REMOTE_MAX_ADDRS; i++) {
			struct remote_target *t = &out->t[out->n];
			memset(t, 0, sizeof *t);
			snprintf(t->host, sizeof t->host, "%s", host);
			if (a.rr[i].type == DNS_T_AAAA) {
				struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&t->ss;
				s6->sin6_family = AF_INET6;
				s6->sin6_port = htons((uint16_t)port);
				s6->sin6_addr = a.rr[i].u.aaaa;
				t->sslen = sizeof *s6;
			} else if (a.rr[i].type == DNS_T_A) {
				struct sockaddr_in *s4 = (struct sockaddr_in *)&t->ss;
				s4->sin_family = AF_INET;
				s4->sin_port = htons((uint16_t)port);
				s4->sin_addr = a.rr[i].u.a;
				t->sslen = sizeof *s4;
			} else
				continue;
			out->n++;
		}
		dns_answer_free(&a);
	}
	return worst;
}

struct mx {
	unsigned pref;
	uint32_t rnd;           /* shuffles equal preferences */
	const char *host;
};

static int
mx_cmp(const void *a, const void *b)
{
	const struct mx *x = a, *y = b;
	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return x->rnd < y->rnd ? -1 : x->rnd > y->rnd;
}

int
remote_route_lookup(struct dns_resolver *dns, const char *self, const char *name,
                    int port, int mxlookup, struct remote_route *out)
{
	char text[600];
	struct dns_answer ans = { 0 };
	struct mx *mx = NULL;
	size_t nmx = 0;
	int tempfail = 0, rc = -1;

	out->n = 0;
	if (add_literal(out, name, port))
		return 0;
	if (mxlookup) {
		enum dns_status st = dns_query(dns, name, DNS_T_MX, 0, &ans);
		switch (st) {
		case DNS_OK:
			break;
		case DNS_NODATA:
			break;          /* implicit MX below */
		case DNS_NXDOMAIN:
			snprintf(text, sizeof text, "domain %s does not exist (no MX, A or AAAA)", name);
			route_fail(out, REMOTE_FAIL, "5.1.2", text);
			return -1;
		case DNS_BADNAME:
			snprintf(text, sizeof text, "invalid domain name %s", name);
			route_fail(out, REMOTE_FAIL, "5.1.2", text);
			return -1;
		case DNS_TEMPFAIL:
		default:
			snprintf(text, sizeof text, "MX lookup for %s failed temporarily", name);
			route_fail(out, REMOTE_DEFER, "4.4.3", text);
			return -1;
		}
		if (st == DNS_OK) {
			mx = calloc(ans.n, sizeof *mx);
			if (mx == NULL) {
				route_fail(out, REMOTE_DEFER, "4.3.0", "out of memory");
				goto out;
			}
			size_t nnull = 0;
			for (size_t i = 0; i < ans.n; i++) {
				if (ans.rr[i].type != DNS_T_MX)
					continue;
				if (ans.rr[i].u.mx.host[0] == '\0') {
					nnull++;
					continue;
				}
				mx[nmx].pref = ans.rr[i].u.mx.pref;
				mx[nmx].rnd = arc4random();
				mx[nmx].host = ans.rr[i].u.mx.host;
				nmx++;
			}
			if (nmx == 0 && nnull > 0) {
				snprintf(text, sizeof text, "domain %s accepts no mail (null MX)", name);
				route_fail(out, REMOTE_FAIL, "5.1.10", text);
				goto out;
			}
			long selfpref = -1;
			for (size_t i = 0; i < nmx; i++)
				if (self && same_name(mx[i].host, self) &&
				    (selfpref < 0 || mx[i].pref < (unsigned)selfpref))
					selfpref = mx[i].pref;
			if (selfpref >= 0) {
				size_t k = 0;
				for (size_t i = 0; i < nmx; i++)
					if (mx[i].pref < (unsigned)selfpref)
						mx[k++] = mx[i];
				nmx = k;
			}
			qsort(mx, nmx, sizeof *mx, mx_cmp);
			if (nmx == 0) {
				snprintf(text, sizeof text,
				         "mail for %s loops back to myself (%s is its best MX)",
				         name, self ? self : "?");
				route_fail(out, REMOTE_FAIL, "5.4.6", text);
				goto out;
			}
		}
	}
	if (nmx == 0) {
		/* implicit MX, or a bracketed smarthost: the name itself */
		if (mxlookup && self && same_name(name, self)) {
			snprintf(text, sizeof text, "mail for %s loops back to myself", name);
			route_fail(out, REMOTE_FAIL, "5.4.6", text);
			goto out;
		}
		if (add_host(dns, out, name, port) == DNS_TEMPFAIL)
			tempfail = 1;
	}
	for (size_t i = 0; i < nmx && out->n < REMOTE_MAX_ADDRS; i++)
		if (add_host(dns, out, mx[i].host, port) == DNS_TEMPFAIL)
			tempfail = 1;
	if (out->n > 0)
		rc = 0;
	else if (tempfail) {
		snprintf(text, sizeof text, "address lookup for %s failed temporarily", name);
		route_fail(out, REMOTE_DEFER, "4.4.3", text);
	} else {
		snprintf(text, sizeof text, "no address found for %s%s", nmx ? "the MX hosts of " : "",
		         name);
		route_fail(out, REMOTE_FAIL, "5.4.4", text);
	}
out:
	free(mx);
	dns_answer_free(&ans);
	return rc;
}

static int
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr
		       == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
	              &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

static int
port_of(const struct sockaddr_storage *a)
{
	return a->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)a)->sin_port)
	                               : ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
}

static int
is_wildcard(const struct sockaddr_storage *a)
{
	static const struct in6_addr any6 = IN6ADDR_ANY_INIT;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &any6, 16) == 0;
}

static int
is_local(const struct remote_self *self, const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET
	    && (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127)
		return 1;
	if (a->ss_family == AF_INET6
	    && IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)a)->sin6_addr))
		return 1;
	for (size_t i = 0; i < self->nifs; i++)
		if (same_addr(&self->ifs[i], a))
			return 1;
	return 0;
}

int
remote_self_init(struct remote_self *self, const struct strlist *listen)
{
	struct ifaddrs *ifa = NULL;

	memset(self, 0, sizeof *self);
	if (listen->n) {
		self->lst = calloc(listen->n, sizeof *self->lst);
		if (self->lst == NULL)
			return -1;
	}
	for (size_t i = 0; i < listen->n; i++) {
		char host[256];
		int port, br;
		struct sockaddr_storage *ss = &self->lst[self->nlst];
		if (remote_parse_hostport(listen->v[i], 25, host, sizeof host, &port, &br) < 0)
			continue;
		memset(ss, 0, sizeof *ss);
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			s4->sin_port = htons((uint16_t)port);
		} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons((uint16_t)port);
		} else
			continue;
		self->nlst++;
	}
	if (getifaddrs(&ifa) == 0) {
		size_t n = 0;
		for (struct ifaddrs *p = ifa; p; p = p->ifa_next)
			n += p->ifa_addr && (p->ifa_addr->sa_family == AF_INET
			                     || p->ifa_addr->sa_family == AF_INET6);
		self->ifs = n ? calloc(n, sizeof *self->ifs) : NULL;
		for (struct ifaddrs *p = ifa; p && self->ifs; p = p->ifa_next) {
			if (p->ifa_addr == NULL)
				continue;
			if (p->ifa_addr->sa_family == AF_INET)
				memcpy(&self->ifs[self->nifs++], p->ifa_addr, sizeof(struct sockaddr_in));
			else if (p->ifa_addr->sa_family == AF_INET6)
				memcpy(&self->ifs[self->nifs++], p->ifa_addr, sizeof(struct sockaddr_in6));
		}
		freeifaddrs(ifa);
	}
	return 0;
}

void
remote_self_free(struct remote_self *self)
{
	free(self->lst);
	free(self->ifs);
	memset(self, 0, sizeof *self);
}

size_t
remote_route_drop_self(struct remote_route *r, const struct remote_self *self)
{
	size_t k = 0, dropped = 0;

	for (size_t i = 0; i < r->n; i++) {
		const struct sockaddr_storage *t = &r->t[i].ss;
		int ours = 0;
		for (size_t j = 0; j < self->nlst && !ours; j++) {
			const struct sockaddr_storage *l = &self->lst[j];
			if (l->ss_family != t->ss_family || port_of(l) != port_of(t))
				continue;
			ours = same_addr(l, t) || (is_wildcard(l) && is_local(self, t));
		}
		if (ours)
			dropped++;
		else
			r->t[k++] = r->t[i];
	}
	r->n = k;
	return dropped;
}

int
remote_read_auth(const char *path, char *user, size_t userlen,
                 char *pass, size_t passlen, char *err, size_t errlen)
{
	char line[1024];
	struct stat st;
	int rc = -1, found = 0;

	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", path);
		close(fd);
		return -1;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen, "%s is accessible by group or others (mode %04o): "
		         "refusing to use it; chmod 600 it", path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	FILE *fp = fdopen(fd, "r");
	if (fp == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	while (!found && fgets(line, sizeof line, fp)) {
		line[strcspn(line, "\r\n")] = '\0';
		char *p = line + strspn(line, " \t");
		if (*p == '\0' || *p == '#')
			continue;
		found = 1;
		/* "user:password" when the first word has a colon */
		size_t tok = strcspn(p, " \t");
		char *sep = memchr(p, ':', tok);
		int blank = sep == NULL;
		if (blank)
			sep = p[tok] ? p + tok : NULL;
		if (sep == NULL || sep == p) {
			snprintf(err, errlen, "%s: expected \"user password\" or \"user:password\"", path);
			break;
		}
		*sep++ = '\0';
		if (blank)      /* "user password": the password is the rest */
			sep += strspn(sep, " \t");
		if (*sep == '\0' || strlen(p) >= userlen || strlen(sep) >= passlen) {
			snprintf(err, errlen, "%s: missing or over-long user or password", path);
			break;
		}
		snprintf(user, userlen, "%s", p);
		snprintf(pass, passlen, "%s", sep);
		rc = 0;
	}
	if (!found)
		snprintf(err, errlen, "%s holds no credentials", path);
	explicit_bzero(line, sizeof line);
	fclose(fp);
	return rc;
}
