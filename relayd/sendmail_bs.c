/*
 * sendmail_bs: "sendmail -bs", an SMTP session on standard input and
 * output.  The session is relayd's own: every byte goes through to it
 * and back, so the client gets relayd's replies, checks and limits
 * exactly.  The one change is on the way in: a program on a pipe often
 * ends its lines with LF alone, which relayd refuses (SMTP smuggling
 * defence); such an LF becomes CRLF here, where it comes from the
 * local user and not from the network.
 */
#include "sendmail.h"
#include "fdio.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

/* p[0..n) with every LF not after a CR made CRLF, to fd. */
static int
forward_crlf(int fd, const char *p, size_t n, int *prev_cr)
{
	char out[2 * 4096];
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && !*prev_cr)
			out[o++] = '\r';
		out[o++] = p[i];
		*prev_cr = p[i] == '\r';
	}
	return fd_write_all(fd, out, o);
}

int
bs_relay(struct smtp *s, int in, int out)
{
	struct pollfd pf[2] = { { .fd = in, .events = POLLIN },
	                        { .fd = s->fd, .events = POLLIN } };
	char buf[4096];
	int prev_cr = 0;

	for (;;) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return EX_OSERR;
		}
		if (pf[1].revents) {
			ssize_t n = read(s->fd, buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return 0;           /* relayd ended the session */
			if (fd_write_all(out, buf, (size_t)n) < 0)
				return EX_IOERR;
		}
		if (pf[0].revents) {
			ssize_t n = read(in, buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				/* no more commands: let relayd answer what it has */
				(void)shutdown(s->fd, SHUT_WR);
				pf[0].fd = -1;
			} else if (forward_crlf(s->fd, buf, (size_t)n, &prev_cr) < 0) {
				/* relayd went away: pass on what it said last */
				pf[0].fd = -1;
			}
		}
	}
}
