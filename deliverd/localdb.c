/*
 * localdb: the table of local recipients (see localdb.h).
 *
 * Sources, in the order local_users lists them: "system" is the passwd
 * database, looked up at resolve time with getpwnam_r (every entry is a
 * user, as for Postfix's local(8)); a path is a users file, one name a
 * line, '#' comments.  Users from a file are not system accounts: their
 * mailboxes belong to deliverd's own user (uid/gid -1, empty home).
 *
 * Aliases come from an aliases(5) file: "name: target, target, ...",
 * continuation lines begin with white space, '#' lines are comments,
 * names and targets may be "quoted".  A target is a local name (expanded
 * again), "user@domain" (expanded again when the domain is local, else
 * a remote target), or "|command", "/file", ":include:" (refused: this
 * deliverd never runs programs or writes files for an alias).  A name
 * found in its own expansion chain means that user's own mailbox when it
 * is the alias being expanded ("bob: bob, bob@elsewhere"), a loop
 * otherwise.  When one target of an alias cannot be resolved the whole
 * recipient fails, so the sender learns at RCPT time rather than mail
 * silently going nowhere.
 *
 * "postmaster" is always valid: its alias if there is one, else the user
 * postmaster, else the mailbox named "postmaster" (localdb_user answers
 * for it, as a non-system user).
 *
 * With a recipient delimiter, "alice+tag" is looked up whole first (alias,
 * then user), then as "alice"; the extension is not carried into alias
 * targets.  Everything is read once in localdb_open and read-only
 * afterwards, so concurrent lookups need no locks.
 */
#include "localdb.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "strlist.h"

#define MAX_DEPTH 16
#define MAX_TARGETS 1000
#define MAX_STEPS 10000          /* alias expansions per recipient */

struct fuser {
	char *key;                   /* lower case */
	char *name;                  /* as written in the file */
};

struct alias {
	char *name;                  /* lower case */
	struct strlist targets;      /* unquoted, as written */
};

struct localdb {
	int system;
	struct fuser *users;         /* sorted by key */
	size_t nusers, capusers;
	struct alias *aliases;       /* sorted by name */
	size_t naliases, capaliases;
	struct strlist domains;      /* copy: the config may be swapped */
	char delim;
};

static void
lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* A name usable as a mailbox file name and a user name. */
static int
good_user_name(const char *s)
{
	if (*s == '\0' || *s == '.' || *s == '-' || strlen(s) >= 256)
		return 0;
	for (; *s; s++)
		if (*s == '/' || *s == ':' || *s == '@' || *s == '"' || *s == ',' ||
		    (unsigned char)*s <= ' ' || *s == 0x7f)
			return 0;
	return 1;
}

static int
cmp_fuser(const void *a, const void *b)
{
	return strcmp(((const struct fuser *)a)->key, ((const struct fuser *)b)->key);
}

static int
cmp_alias(const void *a, const void *b)
{
	return strcmp(((const struct alias *)a)->name, ((const struct alias *)b)->name);
}

/* ---- reading the files ---- */

static int
load_users(struct localdb *db, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0, rc = 0;
	while (getline(&line, &cap, f) >= 0) {
		lineno++;
		char *p = line, *h = strchr(line, '#');
		if (h)
			*h = '\0';
		while (isspace((unsigned char)*p))
			p++;
		size_t n = strlen(p);
		while (n && isspace((unsigned char)p[n - 1]))
			p[--n] = '\0';
		if (n == 0)
			continue;
		if (!good_user_name(p)) {
			snprintf(err, errlen, "%s:%d: bad user name \"%.64s\"", path, lineno, p);
			rc = -1;
			break;
		}
		if (db->nusers == db->capusers) {
			size_t c = db->capusers ? db->capusers * 2 : 16;
			struct fuser *v = realloc(db->users, c * sizeof(*v));
			if (v == NULL)
				goto nomem;
			db->users = v;
			db->capusers = c;
		}
		struct fuser *u = &db->users[db->nusers];
		u->name = strdup(p);
		u->key = strdup(p);
		if (u->name == NULL || u->key == NULL) {
			free(u->name);
			free(u->key);
			goto nomem;
		}
		lower(u->key);
		db->nusers++;
	}
	if (rc == 0 && ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		rc = -1;
	}
	free(line);
	fclose(f);
	return rc;
nomem:
	snprintf(err, errlen, "%s:%d: out of memory", path, lineno);
	free(line);
	fclose(f);
	return -1;
}

/*
 * Copy one item of an alias line (a name ending at ':' or a target ending
 * at ','), undoing "quotes" and backslash escapes inside them.  Returns
 * the position after the item, or NULL with err set.
 */
static const char *
alias_item(const char *p, const char *stops, char *out, size_t outlen,
           const char **why)
{
	size_t n = 0;
	int q = 0;

	while (isspace((unsigned char)*p))
		p++;
	for (; *p && (q || !strchr(stops, *p)); p++) {
		char c = *p;
		if (c == '"') {
			q = !q;
			continue;
		}
		if (c == '\\' && q && p[1])
			c = *++p;
		if (n + 1 >= outlen) {
			*why = "item too long";
			return NULL;
		}
		out[n++] = c;
	}
	if (q) {
		*why = "unterminated quote";
		return NULL;
	}
	while (n && isspace((unsigned char)out[n - 1]))
		n--;
	out[n] = '\0';
	return p;
}

/* One logical line "name: t1, t2". */
static int
alias_entry(struct localdb *db, const char *path, int lineno, const char *l,
            char *err, size_t errlen)
{
	char name[512], item[1024];
	const char *why = NULL, *p;

	if ((p = alias_item(l, ":", name, sizeof(name), &why)) == NULL)
		goto bad;
	if (*p != ':') {
		why = "expected \"name: target, ...\"";
		goto bad;
	}
	if (name[0] == '\0') {
		why = "empty alias name";
		goto bad;
	}
	lower(name);

	struct alias a = { 0 };
	p++;
	for (;;) {
		if ((p = alias_item(p, ",", item, sizeof(item), &why)) == NULL) {
			strlist_free(&a.targets);
			goto bad;
		}
		if (item[0] && strlist_add(&a.targets, item) < 0) {
			strlist_free(&a.targets);
			why = "out of memory";
			goto bad;
		}
		if (*p != ',')
			break;
		p++;
	}
	if (a.targets.n == 0) {
		why = "alias has no targets";
		goto bad;
	}
	for (size_t i = 0; i < db->naliases; i++)
		if (strcmp(db->aliases[i].name, name) == 0) {
			/* as postalias(1): warn, the first entry wins */
			log_warn("%s:%d: duplicate alias \"%s\" ignored", path, lineno, name);
			strlist_free(&a.targets);
			return 0;
		}
	if (db->naliases == db->capaliases) {
		size_t c = db->capaliases ? db->capaliases * 2 : 16;
		struct alias *v = realloc(db->aliases, c * sizeof(*v));
		if (v == NULL) {
			strlist_free(&a.targets);
			why = "out of memory";
			goto bad;
		}
		db->aliases = v;
		db->capaliases = c;
	}
	if ((a.name = strdup(name)) == NULL) {
		strlist_free(&a.targets);
		why = "out of memory";
		goto bad;
	}
	db->aliases[db->naliases++] = a;
	return 0;
bad:
	snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
	return -1;
}

static int
load_aliases(struct localdb *db, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		if (errno == ENOENT) {
			/* the default /etc/aliases need not exist */
			log_warn("aliases=%s: no such file, no aliases", path);
			return 0;
		}
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	char *line = NULL, *logical = NULL;
	size_t cap = 0, llen = 0;
	int lineno = 0, start = 0, rc = 0;
	ssize_t n;
	while (rc == 0) {
		n = getline(&line, &cap, f);
		if (n >= 0) {
			lineno++;
			while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
				line[--n] = '\0';
			const char *p = line;
			while (isspace((unsigned char)*p))
				p++;
			if (*p == '#')
				continue;
			if (*p && p != line && logical) {
				/* continuation of the entry above */
				char *v = realloc(logical, llen + (size_t)n + 2);
				if (v == NULL)
					goto nomem;
				logical = v;
				logical[llen++] = ' ';
				memcpy(logical + llen, line, (size_t)n + 1);
				llen += (size_t)n;
				continue;
			}
			if (*p && p != line) {
				snprintf(err, errlen, "%s:%d: continuation line without an entry", path, lineno);
				rc = -1;
				break;
			}
		}
		if (logical) {
			rc = alias_entry(db, path, start, logical, err, errlen);
			free(logical);
			logical = NULL;
		}
		if (n < 0 || rc)
			break;
		const char *q = line;
		while (isspace((unsigned char)*q))
			q++;
		if (*q) {
			if ((logical = strdup(line)) == NULL)
				goto nomem;
			llen = (size_t)n;
			start = lineno;
		}
	}
	if (rc == 0 && ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		rc = -1;
	}
	free(logical);
	free(line);
	fclose(f);
	return rc;
nomem:
	snprintf(err, errlen, "%s:%d: out of memory", path, lineno);
	free(logical);
	free(line);
	fclose(f);
	return -1;
}

struct localdb *
localdb_open(const struct config *cfg, char *err, size_t errlen)
{
	struct localdb *db = calloc(1, sizeof(*db));
	if (db == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	db->delim = cfg->deliverd.recipient_delimiter;
	for (size_t i = 0; i < cfg->local_domains.n; i++)
		if (strlist_add(&db->domains, cfg->local_domains.v[i]) < 0) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	for (size_t i = 0; i < cfg->deliverd.local_users.n; i++) {
		const char *s = cfg->deliverd.local_users.v[i];
		if (strcmp(s, "system") == 0)
			db->system = 1;
		else if (load_users(db, s, err, errlen) < 0)
			goto fail;
	}
	if (db->nusers)
		qsort(db->users, db->nusers, sizeof(*db->users), cmp_fuser);
	if (cfg->deliverd.aliases && cfg->deliverd.aliases[0] &&
	    load_aliases(db, cfg->deliverd.aliases, err, errlen) < 0)
		goto fail;
	if (db->naliases)
		qsort(db->aliases, db->naliases, sizeof(*db->aliases), cmp_alias);
	return db;
fail:
	localdb_free(db);
	return NULL;
}

void
localdb_free(struct localdb *db)
{
	if (db == NULL)
		return;
	for (size_t i = 0; i < db->nusers; i++) {
		free(db->users[i].key);
		free(db->users[i].name);
	}
	free(db->users);
	for (size_t i = 0; i < db->naliases; i++) {
		free(db->aliases[i].name);
		strlist_free(&db->aliases[i].targets);
	}
	free(db->aliases);
	strlist_free(&db->domains);
	free(db);
}

/* ---- lookups ---- */

static const struct alias *
find_alias(const struct localdb *db, const char *key)
{
	struct alias k = { .name = (char *)key };
	if (db->naliases == 0)
		return NULL;
	return bsearch(&k, db->aliases, db->naliases, sizeof(k), cmp_alias);
}

/*
 * The user called key (lower case): 1 found, 0 not, -1 the passwd
 * database failed.  Users files are searched first: the order of
 * local_users is for the administrator's reading, a name is a name.
 */
static int
find_user(const struct localdb *db, const char *key, struct local_user *u)
{
	if (db->nusers) {
		struct fuser k = { .key = (char *)key };
		const struct fuser *f = bsearch(&k, db->users, db->nusers, sizeof(k), cmp_fuser);
		if (f) {
			if (u) {
				memset(u, 0, sizeof(*u));
				snprintf(u->name, sizeof(u->name), "%s", f->name);
				u->uid = (uid_t)-1;
				u->gid = (gid_t)-1;
			}
			return 1;
		}
	}
	if (!db->system)
		return 0;

	long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
	size_t bufsz = sz > 0 ? (size_t)sz : 16384;
	for (int tries = 0; tries < 6; tries++, bufsz *= 4) {
		struct passwd pw, *res = NULL;
		char *buf = malloc(bufsz);
		if (buf == NULL)
			return -1;
		int e = getpwnam_r(key, &pw, buf, bufsz, &res);
		if (e == ERANGE) {
			free(buf);
			continue;
		}
		int rc;
		if (res == NULL)
			rc = (e == 0 || e == ENOENT || e == ESRCH || e == EBADF || e == EPERM) ? 0 : -1;
		else if (strlen(pw.pw_name) >= sizeof(u->name) || !good_user_name(pw.pw_name))
			rc = 0;
		else {
			rc = 1;
			if (u) {
				memset(u, 0, sizeof(*u));
				snprintf(u->name, sizeof(u->name), "%s", pw.pw_name);
				u->system = 1;
				u->uid = pw.pw_uid;
				u->gid = pw.pw_gid;
				snprintf(u->home, sizeof(u->home), "%s",
				         pw.pw_dir ? pw.pw_dir : "");
			}
		}
		free(buf);
		return rc;
	}
	return -1;
}

int
localdb_user(struct localdb *db, const char *name, struct local_user *u)
{
	char key[256];
	if (name == NULL || strlen(name) >= sizeof(key))
		return -1;
	snprintf(key, sizeof(key), "%s", name);
	lower(key);
	int found = find_user(db, key, u);
	if (found == 1)
		return 0;
	if (found < 0)
		return -2;          /* the user database failed: try later */
	if (strcmp(key, "postmaster") == 0) {
		/* the fallback mailbox of localdb_resolve */
		memset(u, 0, sizeof(*u));
		snprintf(u->name, sizeof(u->name), "postmaster");
		u->uid = (uid_t)-1;
		u->gid = (gid_t)-1;
		return 0;
	}
	return -1;
}

/* ---- resolution ---- */

struct expand {
	const struct localdb *db;
	const char *chain[MAX_DEPTH + 2];  /* aliases being expanded */
	int depth;
	struct strlist done;               /* aliases fully expanded already */
	struct local_target *t;
	size_t n, cap;
	int steps;
	char *why;
	size_t whylen;
};

static enum local_status
add_target(struct expand *x, const char *user, const char *addr)
{
	for (size_t i = 0; i < x->n; i++)
		if (user ? (x->t[i].user && strcasecmp(x->t[i].user, user) == 0)
		         : (x->t[i].addr && strcmp(x->t[i].addr, addr) == 0))
			return LOCAL_OK;
	if (x->n >= MAX_TARGETS) {
		snprintf(x->why, x->whylen, "alias expands to more than %d recipients",
		         MAX_TARGETS);
		return LOCAL_REFUSED;
	}
	if (x->n == x->cap) {
		size_t c = x->cap ? x->cap * 2 : 4;
		struct local_target *v = realloc(x->t, c * sizeof(*v));
		if (v == NULL)
			goto nomem;
		x->t = v;
		x->cap = c;
	}
	struct local_target *t = &x->t[x->n];
	t->user = user ? strdup(user) : NULL;
	t->addr = addr ? strdup(addr) : NULL;
	if ((user && !t->user) || (addr && !t->addr)) {
		free(t->user);
		free(t->addr);
		goto nomem;
	}
	x->n++;
	return LOCAL_OK;
nomem:
	snprintf(x->why, x->whylen, "out of memory");
	return LOCAL_TEMP;
}

static enum local_status expand_name(struct expand *x, const char *key,
                                     const char *cur);

/* The user itself (no alias): key or, with an extension, its base. */
static enum local_status
expand_user(struct expand *x, const char *key, const char *base)
{
	struct local_user u;
	int r = find_user(x->db, key, &u);
	if (r == 0 && base)
		r = find_user(x->db, base, &u);
	if (r < 0) {
		snprintf(x->why, x->whylen, "cannot read the user database");
		return LOCAL_TEMP;
	}
	if (r == 1)
		return add_target(x, u.name, NULL);
	if (strcmp(key, "postmaster") == 0 || (base && strcmp(base, "postmaster") == 0))
		return add_target(x, "postmaster", NULL);
	snprintf(x->why, x->whylen, "no such user: %.200s", key);
	return LOCAL_UNKNOWN;
}

static enum local_status
expand_alias(struct expand *x, const struct alias *a)
{
	if (strlist_contains_ci(&x->done, a->name))
		return LOCAL_OK;
	if (x->depth >= MAX_DEPTH) {
		snprintf(x->why, x->whylen, "alias %.100s: nested more than %d deep",
		         a->name, MAX_DEPTH);
		return LOCAL_LOOP;
	}
	if (++x->steps > MAX_STEPS) {
		snprintf(x->why, x->whylen, "alias expansion too large");
		return LOCAL_REFUSED;
	}
	x->chain[x->depth++] = a->name;
	enum local_status st = LOCAL_OK;
	for (size_t i = 0; i < a->targets.n && st == LOCAL_OK; i++) {
		const char *t = a->targets.v[i];
		char key[1024];
		if (t[0] == '|' || t[0] == '/' || strncasecmp(t, ":include:", 9) == 0) {
			snprintf(x->why, x->whylen,
			         "alias %.100s: target \"%.100s\" refused: deliverd does not "
			         "deliver to commands, files or include lists", a->name, t);
			st = LOCAL_REFUSED;
			break;
		}
		snprintf(key, sizeof(key), "%s", t);
		if (key[0] == '<' && key[strlen(key) - 1] == '>') {
			memmove(key, key + 1, strlen(key));
			key[strlen(key) - 1] = '\0';
		}
		char *at = strrchr(key, '@');
		if (at && at[1] && at != key) {
			lower(at + 1);
			if (!strlist_contains_ci(&x->db->domains, at + 1)) {
				st = add_target(x, NULL, key);
				continue;
			}
			*at = '\0';
		}
		if (key[0] == '\0' || (at && at[1] == '\0')) {
			snprintf(x->why, x->whylen, "alias %.100s: bad target \"%.100s\"",
			         a->name, t);
			st = LOCAL_UNKNOWN;
			break;
		}
		lower(key);
		st = expand_name(x, key, a->name);
		if (st != LOCAL_OK && st != LOCAL_TEMP && strncmp(x->why, "alias ", 6) != 0) {
			char inner[400];
			snprintf(inner, sizeof(inner), "%s", x->why);
			snprintf(x->why, x->whylen, "alias %.100s: %s", a->name, inner);
		}
	}
	x->depth--;
	if (st == LOCAL_OK && strlist_add(&x->done, a->name) < 0) {
		snprintf(x->why, x->whylen, "out of memory");
		st = LOCAL_TEMP;
	}
	return st;
}

/*
 * key: a lower-case local name; cur: the alias whose target it is.  A
 * target naming its own alias ("bob: bob" or "bob: bob+archive") is that
 * user's mailbox; any other name already being expanded is a loop.
 */
static enum local_status
expand_name(struct expand *x, const char *key, const char *cur)
{
	char base[1024];
	const char *b = NULL;

	if (x->db->delim) {
		const char *d = strchr(key, x->db->delim);
		if (d && d != key) {
			snprintf(base, sizeof(base), "%.*s", (int)(d - key), key);
			b = base;
		}
	}
	if (cur && (strcmp(key, cur) == 0 || (b && strcmp(b, cur) == 0)))
		return expand_user(x, key, b);
	for (int i = 0; i < x->depth; i++)
		if (strcmp(x->chain[i], key) == 0 || (b && strcmp(x->chain[i], b) == 0)) {
			snprintf(x->why, x->whylen, "alias loop through %.100s", key);
			return LOCAL_LOOP;
		}
	const struct alias *a = find_alias(x->db, key);
	if (a)
		return expand_alias(x, a);
	if (b) {
		/* "alice+tag": the user alice+tag, else the alias or user alice */
		struct local_user u;
		int r = find_user(x->db, key, &u);
		if (r == 1)
			return add_target(x, u.name, NULL);
		if ((a = find_alias(x->db, b)) != NULL)
			return expand_alias(x, a);
	}
	return expand_user(x, key, b);
}

enum local_status
localdb_resolve(struct localdb *db, const char *localpart,
                struct local_target **out, size_t *nout,
                char *why, size_t whylen)
{
	char key[1024];
	char dummy[8];
	struct expand x = { .db = db, .why = why ? why : dummy,
	                    .whylen = why ? whylen : sizeof(dummy) };

	x.why[0] = '\0';
	if (localpart == NULL || localpart[0] == '\0' || strlen(localpart) >= 256) {
		snprintf(x.why, x.whylen, "bad local part");
		return LOCAL_UNKNOWN;
	}
	snprintf(key, sizeof(key), "%s", localpart);
	lower(key);
	enum local_status st = expand_name(&x, key, NULL);
	strlist_free(&x.done);
	if (st == LOCAL_OK && x.n) {
		struct local_target *v = realloc(*out, (*nout + x.n) * sizeof(*v));
		if (v == NULL) {
			snprintf(x.why, x.whylen, "out of memory");
			st = LOCAL_TEMP;
		} else {
			memcpy(v + *nout, x.t, x.n * sizeof(*v));
			*out = v;
			*nout += x.n;
			free(x.t);
			return LOCAL_OK;
		}
	}
	local_targets_free(x.t, x.n);
	return st;
}

void
local_targets_free(struct local_target *t, size_t n)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(t[i].user);
		free(t[i].addr);
	}
	free(t);
}
