/*
 * msgbuf: memory first, then an unlinked temporary file ($TMPDIR or /tmp).
 */
#include "msgbuf.h"
#include "fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/buffer.h>

int
msgbuf_init(struct msgbuf *m, size_t mem_max)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	m->mem_max = mem_max;
	m->mem = evbuffer_new();
	return m->mem ? 0 : -1;
}

static int
tmpfile_open(void)
{
	const char *dir = getenv("TMPDIR");
	char path[4096];
	int fd;

	if (dir == NULL || *dir == '\0')
		dir = "/tmp";
#ifdef O_TMPFILE
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
#endif
	if ((size_t)snprintf(path, sizeof(path), "%s/relayd.XXXXXX", dir) >= sizeof(path))
		return -1;
	if ((fd = mkstemp(path)) < 0)
		return -1;
	unlink(path);
	return fd;
}

void
msgbuf_add(struct msgbuf *m, const char *p, size_t n)
{
	if (m->err || n == 0)
		return;
	m->len += n;
	if (m->fd < 0) {
		if (evbuffer_get_length(m->mem) + n <= m->mem_max) {
			if (evbuffer_add(m->mem, p, n) < 0)
				m->err = ENOMEM;
			return;
		}
		/* spill what memory holds into the file, then carry on there */
		if ((m->fd = tmpfile_open()) < 0) {
			m->err = errno ? errno : EIO;
			return;
		}
		while (evbuffer_get_length(m->mem)) {
			struct evbuffer_iovec v;
			if (evbuffer_peek(m->mem, -1, NULL, &v, 1) < 1)
				break;
			if (fd_write_all(m->fd, v.iov_base, v.iov_len) < 0) {
				m->err = errno;
				return;
			}
			evbuffer_drain(m->mem, v.iov_len);
		}
	}
	if (fd_write_all(m->fd, p, n) < 0)
		m->err = errno;
}

int
msgbuf_foreach(struct msgbuf *m, void (*fn)(void *arg, const char *p, size_t n), void *arg)
{
	if (m->fd < 0) {
		struct evbuffer_ptr pos;
		struct evbuffer_iovec v[16];
		int n;

		evbuffer_ptr_set(m->mem, &pos, 0, EVBUFFER_PTR_SET);
		for (;;) {
			n = evbuffer_peek(m->mem, -1, &pos, v, 16);
			if (n <= 0)
				return 0;
			size_t got = 0;
			for (int i = 0; i < n && i < 16; i++) {
				fn(arg, v[i].iov_base, v[i].iov_len);
				got += v[i].iov_len;
			}
			if (n <= 16)
				return 0;
			if (evbuffer_ptr_set(m->mem, &pos, got, EVBUFFER_PTR_ADD) < 0)
				return 0;
		}
	}
	char buf[65536];
	off_t off = 0;
	for (;;) {
		ssize_t r = pread(m->fd, buf, sizeof(buf), off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			return 0;
		fn(arg, buf, (size_t)r);
		off += r;
	}
}

void
msgbuf_free(struct msgbuf *m)
{
	if (m->mem)
		evbuffer_free(m->mem);
	if (m->fd >= 0)
		close(m->fd);
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}
