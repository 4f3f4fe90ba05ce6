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

/* --- additions (engineer C) --- */

/*
 * How long mbox_deliver waits for the dotlock and the fcntl lock before
 * giving up with MBOX_TEMP "4.2.0 mailbox locked" (default 20000 ms, as
 * Postfix's 20 attempts a second apart).  For tests; not thread-safe
 * against deliveries in progress.
 */
void mbox_set_lock_timeout(int ms);

/*
 * Make the dotlock through a named temporary file
 * "<mailbox>.lock.spfgate.<pid>" linked to "<mailbox>.lock" (the way
 * used where O_TMPFILE is not available, NFS for one) even where
 * O_TMPFILE works.  For tests.
 */
void mbox_set_named_lock_temp(int on);

#endif
