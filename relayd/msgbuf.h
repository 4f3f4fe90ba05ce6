/*
 * msgbuf: one message being received, in memory up to a threshold and
 * then in an unlinked temporary file (nothing of it is left on disk
 * when relayd stops or crashes).  Holds the unstuffed text with CRLF
 * line ends, as milters and the Received: logic want it.
 */
#ifndef RELAYD_MSGBUF_H
#define RELAYD_MSGBUF_H

#include <stddef.h>

#define MSGBUF_MEM_MAX (256 * 1024)   /* bytes kept in memory */

struct evbuffer;

struct msgbuf {
	struct evbuffer *mem;
	int fd;                 /* -1 until the memory part is full */
	size_t len;             /* total bytes */
	int err;                /* errno of a failed write, 0 if none */
	size_t mem_max;
};

int msgbuf_init(struct msgbuf *m, size_t mem_max);      /* 0 or -1 */
void msgbuf_add(struct msgbuf *m, const char *p, size_t n);
/* Call fn on the text in order, in chunks; 0, or -1 on a read error. */
int msgbuf_foreach(struct msgbuf *m, void (*fn)(void *arg, const char *p, size_t n),
                   void *arg);
void msgbuf_free(struct msgbuf *m);

#endif
