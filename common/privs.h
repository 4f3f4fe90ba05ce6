/*
 * privs: leaving root after start-up.
 *
 * A daemon started as root binds its sockets and opens what only root may
 * open, then calls privs_drop() to become its own user (the [section]
 * user of the configuration), keeping at most a few capabilities that it
 * names.  Started as anyone else, or with an empty user, it stays as it
 * was started (the quick start runs everything unprivileged).
 *
 * Capabilities are per thread on Linux: privs_drop() must run before the
 * daemon starts the threads that need the kept ones, and
 * privs_suspend()/privs_resume() act on the calling thread only, which is
 * what lets a worker write a mailbox as its recipient with no capability
 * at all while other workers carry on.
 */
#ifndef SPFGATE_PRIVS_H
#define SPFGATE_PRIVS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PRIVS_CAP(c) ((uint64_t)1 << (c))

struct privs_user {
	uid_t uid;
	gid_t gid;               /* primary group: the daemons' sockets' group */
};

/*
 * Look up the user to become: 1 and *u filled when started as root with a
 * non-empty user; 0 when there is nothing to do; -1 with err (no such
 * user, or "root").
 */
int privs_target(const char *user, struct privs_user *u, char *err, size_t errlen);

/*
 * Become user (its groups from /etc/group, then its uid), keeping the
 * capabilities in `effective` effective and those in `permitted` (a
 * superset) raisable with privs_raise().  0, or -1 with err.  Checks that
 * root cannot be regained.
 */
int privs_drop(const char *user, uint64_t effective, uint64_t permitted,
               char *err, size_t errlen);

/*
 * Hand a unix socket (or any file) made as root to the daemon's user:
 * owner uid, group gid, the mode given.  0, or -1 with err.
 */
int privs_give(const char *path, const struct privs_user *u, mode_t mode,
               char *err, size_t errlen);

/* Chown dir and everything under it (not following links) to u. */
int privs_give_tree(const char *dir, const struct privs_user *u, char *err, size_t errlen);

/* The calling thread: no effective capability / back to the kept set. */
int privs_suspend(void);
int privs_resume(void);

/* The calling thread: raise one permitted capability / lower it again. */
int privs_raise(int cap);
int privs_lower(int cap);

#endif
