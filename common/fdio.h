/*
 * fdio: whole writes on file descriptors.  write(2) and pwrite(2) may
 * write less than asked (signals, pipes, full disks); the spool, the
 * mailboxes and the message buffer must never keep half a record.
 */
#ifndef SPFGATE_FDIO_H
#define SPFGATE_FDIO_H

#include <stddef.h>
#include <sys/types.h>

/* 0 once all n bytes are written, or -1 with errno (EIO if write
 * returned 0).  EINTR is retried. */
int fd_write_all(int fd, const void *p, size_t n);
/* The same with pwrite(2) at offset off. */
int fd_pwrite_all(int fd, const void *p, size_t n, off_t off);

#endif
