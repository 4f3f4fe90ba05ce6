/*
 * mbox: append one message to a user's mbox file, all or nothing.
 *
 * "From sender date" separator, Return-Path: and Delivered-To: headers,
 * ">From " quoting of body lines that begin with "From ", a blank line
 * after the message.  Locking: fcntl lock plus a dotlock (Debian's
 * convention for /var/mail); a dotlock whose owner process is gone is
 * broken at once.  Written, fsynced, unlocked; on any failure the file is
 * truncated back to its previous size.  A mailbox whose last message was
 * cut short by a crash is repaired on the next delivery.
 */
#ifndef SPFGATE_MBOX_H
#define SPFGATE_MBOX_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

struct mbox_dest {
	const char *path;        /* the mailbox file */
	int switch_identity;     /* write as uid/gid (running as root) */
	uid_t uid;
	gid_t gid;               /* file group: "mail" under /var/mail */
	int mode;                /* mode of a new mailbox */
};

struct mbox_msg {
	int fd;                  /* spool file, read with pread */
	off_t off, len;          /* message text, LF line ends */
	const char *sender;      /* "" for the null sender */
	const char *delivered_to;
	time_t arrival;
};

enum mbox_status { MBOX_OK = 0, MBOX_TEMP, MBOX_PERM };

/* Deliver; on failure err holds a one-line reason (with DSN code). */
enum mbox_status mbox_deliver(const struct mbox_dest *d, const struct mbox_msg *m,
                              char *err, size_t errlen);

/* Expand the path template: %u user, %h home, %% percent. */
int mbox_path(const char *tmpl, const char *user, const char *home,
              char *buf, size_t len);

#endif
