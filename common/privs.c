/*
 * privs: become the daemon's own user after start-up, keeping only the
 * capabilities named (see privs.h).  Capability sets are set with the
 * raw capget/capset system calls, which act on the calling thread: no
 * libcap is needed for three bit masks.
 */
#include "privs.h"

#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static uint64_t base_effective;     /* what privs_resume() restores */
static int dropped;

static int
caps_get(uint64_t *eff, uint64_t *perm)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d) < 0)
		return -1;
	*eff = (uint64_t)d[1].effective << 32 | d[0].effective;
	*perm = (uint64_t)d[1].permitted << 32 | d[0].permitted;
	return 0;
}

static int
caps_set(uint64_t eff, uint64_t perm)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2] = {
		{ (uint32_t)eff, (uint32_t)perm, 0 },
		{ (uint32_t)(eff >> 32), (uint32_t)(perm >> 32), 0 },
	};

	return (int)syscall(SYS_capset, &h, d);
}

int
privs_target(const char *user, struct privs_user *u, char *err, size_t errlen)
{
	struct passwd *pw;

	if (geteuid() != 0 || user == NULL || user[0] == '\0')
		return 0;
	errno = 0;
	if ((pw = getpwnam(user)) == NULL) {
		snprintf(err, errlen, "user %s does not exist (create it: see "
		         "spfgate.sysusers; or set user = to stay root)", user);
		return -1;
	}
	if (pw->pw_uid == 0) {
		snprintf(err, errlen, "user %s is root; name an unprivileged user", user);
		return -1;
	}
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
	return 1;
}

int
privs_drop(const char *user, uint64_t effective, uint64_t permitted,
           char *err, size_t errlen)
{
	struct privs_user u;
	int t = privs_target(user, &u, err, errlen);

	if (t <= 0)
		return t;
	permitted |= effective;
	/* a program run as uid 0 later gets no capabilities from it */
	(void)prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED, 0, 0, 0);
	if (initgroups(user, u.gid) < 0 || setgid(u.gid) < 0) {
		snprintf(err, errlen, "cannot take the groups of %s: %s", user, strerror(errno));
		return -1;
	}
	if (permitted && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) {
		snprintf(err, errlen, "cannot keep capabilities: %s", strerror(errno));
		return -1;
	}
	if (setuid(u.uid) < 0) {
		snprintf(err, errlen, "cannot become %s: %s", user, strerror(errno));
		return -1;
	}
	if (permitted) {
		prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
		if (caps_set(effective, permitted) < 0) {
			snprintf(err, errlen, "cannot set capabilities: %s", strerror(errno));
			return -1;
		}
	}
	(void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	/* without CAP_SETUID kept there must be no way back */
	if (!(permitted & PRIVS_CAP(CAP_SETUID)) && (setuid(0) == 0 || seteuid(0) == 0)) {
		snprintf(err, errlen, "could regain root after becoming %s", user);
		return -1;
	}
	base_effective = effective;
	dropped = 1;
	return 0;
}

int
privs_give(const char *path, const struct privs_user *u, mode_t mode,
           char *err, size_t errlen)
{
	/* the mode first: once the file is not root's, changing it takes
	 * CAP_FOWNER, which the units do not grant */
	if (chmod(path, mode) < 0 || lchown(path, u->uid, u->gid) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* nftw has no user data: start-up is single-threaded */
static const struct privs_user *tree_user;
static int tree_errno;
static char tree_bad[512];

static int
give_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)flag;
	(void)f;
	if ((st->st_uid != tree_user->uid || st->st_gid != tree_user->gid) &&
	    lchown(path, tree_user->uid, tree_user->gid) < 0) {
		tree_errno = errno;
		snprintf(tree_bad, sizeof(tree_bad), "%s", path);
		return 1;
	}
	return 0;
}

int
privs_give_tree(const char *dir, const struct privs_user *u, char *err, size_t errlen)
{
	tree_user = u;
	tree_errno = 0;
	if (nftw(dir, give_one, 16, FTW_PHYS | FTW_MOUNT) != 0) {
		snprintf(err, errlen, "%s: %s", tree_errno ? tree_bad : dir,
		         strerror(tree_errno ? tree_errno : errno));
		return -1;
	}
	return 0;
}

int
privs_suspend(void)
{
	uint64_t eff, perm;

	if (caps_get(&eff, &perm) < 0)
		return -1;
	return eff ? caps_set(0, perm) : 0;
}

int
privs_resume(void)
{
	uint64_t eff, perm;

	if (caps_get(&eff, &perm) < 0)
		return -1;
	uint64_t want = dropped ? base_effective & perm : perm;
	return eff == want ? 0 : caps_set(want, perm);
}

int
privs_raise(int cap)
{
	uint64_t eff, perm;

	if (!dropped)
		return 0;   /* root has it already; anyone else never will */
	if (caps_get(&eff, &perm) < 0)
		return -1;
	if (!(perm & PRIVS_CAP(cap))) {
		errno = EPERM;
		return -1;
	}
	return caps_set(eff | PRIVS_CAP(cap), perm);
}

int
privs_lower(int cap)
{
	uint64_t eff, perm;

	if (!dropped || (base_effective & PRIVS_CAP(cap)))
		return 0;
	if (caps_get(&eff, &perm) < 0)
		return -1;
	return caps_set(eff & ~PRIVS_CAP(cap), perm);
}
