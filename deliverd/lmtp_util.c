/*
 * lmtp_util: the parts of the LMTP server that need no session: address
 * text for the spool and replies, splitting MAIL/RCPT arguments, xtext
 * parameter values, and opening the listening sockets.
 */
#include "lmtp_int.h"
#include "deliverd.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int
is_atext(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
	       || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* "local@domain" as it goes on the wire again: quoted when not a dot-atom. */
char *
lmtp_addr_text(const struct mailbox *m)
{
	const char *l = m->local;
	int atom = l[0] != '\0' && l[0] != '.' && l[strlen(l) - 1] != '.';
	char buf[2 * ADDR_MAX + 8], *o = buf;

	for (const char *p = l; atom && *p; p++)
		if (!(is_atext((unsigned char)*p) || (*p == '.' && p[1] != '.')))
			atom = 0;
	if (atom) {
		o += snprintf(buf, sizeof(buf), "%s", l);
	} else {
		*o++ = '"';
		for (const char *p = l; *p; p++) {
			if (*p == '"' || *p == '\\')
				*o++ = '\\';
			*o++ = *p;
		}
		*o++ = '"';
		*o = '\0';
	}
	if (m->domain[0])
		snprintf(o, sizeof(buf) - (size_t)(o - buf), "@%s", m->domain);
	return strdup(buf);
}

/* Split "<path> params" after "FROM:"/"TO:"; path copied into buf. */
int
lmtp_split_path(const char *arg, char *buf, size_t len, const char **params)
{
	const char *p = arg, *end;
	int q = 0;

	while (*p == ' ')
		p++;
	if (*p == '<') {
		for (end = p + 1; *end && (q || *end != '>'); end++) {
			if (*end == '\\' && q && end[1])
				end++;
			else if (*end == '"')
				q = !q;
		}
		if (*end != '>')
			return -1;
		end++;
	} else {
		end = p + strcspn(p, " ");
	}
	if ((size_t)(end - p) >= len)
		return -1;
	memcpy(buf, p, (size_t)(end - p));
	buf[end - p] = '\0';
	while (*end == ' ')
		end++;
	*params = end;
	return 0;
}

static int
hexval(char c)
{
	/* RFC 3461 hexchar: upper case only */
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

ssize_t
lmtp_xtext_decode(const char *in, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		int hi, lo;

		if (c == '+') {
			if (i + 2 >= n
			    || (hi = hexval(in[i + 1])) < 0 || (lo = hexval(in[i + 2])) < 0)
				return -1;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
		} else if (c < 33 || c > 126 || c == '=') {
			return -1;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = (char)c;
	}
	if (outlen == 0)
		return -1;
	out[o] = '\0';
	return (ssize_t)o;
}

int
deliverd_listen_unix(const char *path, int mode, int backlog, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	struct stat st;
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "%s: socket path too long", path);
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return -1;
		}
		if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0) {
			int in_use = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
			close(fd);
			if (in_use) {
				snprintf(err, errlen, "%s is in use by a running server", path);
				return -1;
			}
		}
		unlink(path);   /* stale: left by a deliverd that died */
	}
	old = umask(0177);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int bound = fd >= 0 && bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
	umask(old);
	if (!bound || chmod(path, (mode_t)mode) < 0 || listen(fd, backlog) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

int
lmtp_listen_inet(const char *spec, char *err, size_t errlen)
{
	const char *p = strchr(spec, ':') + 1, *at = strchr(p, '@');
	char port[8], host[256];
	struct addrinfo hints, *res = NULL;
	int fd = -1, one = 1, rc;

	snprintf(port, sizeof(port), "%.*s", (int)(at ? (size_t)(at - p) : strlen(p)), p);
	/* no address given: loopback, never every interface by accident */
	snprintf(host, sizeof(host), "%s", at ? at + 1 : strncmp(spec, "inet6:", 6) == 0 ? "::1" : "127.0.0.1");
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "%s: %s", spec, gai_strerror(rc));
		return -1;
	}
	if ((fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0
	    || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0
	    || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
		snprintf(err, errlen, "%s: %s", spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

