/*
 * localdb: who receives mail here.  Local users come from the system user
 * database and/or users files (one name per line); "postmaster" is always
 * valid; aliases(5) entries expand (nested, loops detected) to local users
 * or remote addresses; "user+ext" address extensions when a recipient
 * delimiter is set.  Local parts match case-insensitively.
 */
#ifndef SPFGATE_LOCALDB_H
#define SPFGATE_LOCALDB_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"

struct localdb;

struct local_target {
	char *user;          /* local mailbox owner (canonical name), or NULL */
	char *addr;          /* remote address "l@d" when user == NULL */
};

struct local_user {
	char name[256];      /* canonical name (as in passwd or the file) */
	int system;          /* from the system user database */
	uid_t uid;
	gid_t gid;
	char home[256];
};

enum local_status {
	LOCAL_OK = 0,
	LOCAL_UNKNOWN,       /* 550 5.1.1 */
	LOCAL_REFUSED,       /* alias target "|cmd", "/file", ":include:": 550 5.7.1 */
	LOCAL_LOOP,          /* alias loop: 550 5.4.6 */
	LOCAL_TEMP,          /* cannot read a table now: 451 4.3.0 */
};

/* Load users and aliases (re-read on reload).  NULL with err on failure. */
struct localdb *localdb_open(const struct config *cfg, char *err, size_t errlen);
void localdb_free(struct localdb *db);

/*
 * Resolve the local part of a recipient in a local domain into targets
 * (appended to *out, *nout; free with local_targets_free).  On an error
 * status, why holds the text for the reply.
 */
enum local_status localdb_resolve(struct localdb *db, const char *localpart,
                                  struct local_target **out, size_t *nout,
                                  char *why, size_t whylen);
void local_targets_free(struct local_target *t, size_t n);

/* Look a mailbox owner up (for delivery).  0; -1 if unknown; -2 if the
 * user database could not be read (LDAP down...): try again later. */
int localdb_user(struct localdb *db, const char *name, struct local_user *u);

#endif
