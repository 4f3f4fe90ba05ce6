/* Unit tests: local recipients, users files and aliases (deliverd/localdb.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "localdb.h"

static char dir[64];

static void
put(const char *name, const char *text)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/*
 * A localdb over the users file and aliases given (NULL: none), with
 * "system" added when sys is set.  NULL with err on failure.
 */
static struct localdb *
open_db(int sys, const char *users, const char *aliases, char *err, size_t errlen)
{
	char conf[2048], lu[256] = "", al[256] = "";
	struct config c;

	if (users) {
		put("users", users);
		snprintf(lu, sizeof(lu), "%s/users", dir);
	}
	if (aliases) {
		put("aliases", aliases);
		snprintf(al, sizeof(al), "%s/aliases", dir);
	}
	snprintf(conf, sizeof(conf),
	         "[global]\nmail_name = mx.example.test\n"
	         "local_domains = example.test, mx.example.test\n"
	         "[deliverd]\nlocal_users = %s %s\naliases = %s\n",
	         sys ? "system" : "", lu, al);
	put("conf", conf);
	snprintf(conf, sizeof(conf), "%s/conf", dir);
	assert_int_equal(config_load(&c, conf, err, errlen), 0);
	struct localdb *db = localdb_open(&c, err, errlen);
	config_free(&c);     /* the db must not keep pointers into it */
	return db;
}

static struct localdb *
must_open(int sys, const char *users, const char *aliases)
{
	char err[512] = "";
	struct localdb *db = open_db(sys, users, aliases, err, sizeof(err));
	if (db == NULL)
		fail_msg("localdb_open: %s", err);
	return db;
}

/*
 * Resolve lp and render the targets as "u:alice r:x@remote.test ..." in
 * order; returns the status.
 */
static enum local_status
res(struct localdb *db, const char *lp, char *out, size_t outlen, char *why, size_t whylen)
{
	struct local_target *t = NULL;
	size_t n = 0;
	enum local_status st = localdb_resolve(db, lp, &t, &n, why, whylen);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(out);
		snprintf(out + l, outlen - l, "%s%s:%s", i ? " " : "",
		         t[i].user ? "u" : "r", t[i].user ? t[i].user : t[i].addr);
	}
	if (st != LOCAL_OK)
		assert_int_equal(n, 0);
	local_targets_free(t, n);
	return st;
}

#define RESOLVES(db, lp, want) do { \
	char o_[2048], w_[512]; \
	enum local_status s_ = res(db, lp, o_, sizeof(o_), w_, sizeof(w_)); \
	if (s_ != LOCAL_OK) fail_msg("%s: status %d: %s", lp, s_, w_); \
	assert_string_equal(o_, want); \
} while (0)

static enum local_status
status_of(struct localdb *db, const char *lp, char *why, size_t whylen)
{
	char o[2048];
	return res(db, lp, o, sizeof(o), why, whylen);
}

static void
users_file(void **state)
{
	struct localdb *db = must_open(0, "# quick start users\nalice\n  Bob  # the boss\n\ncarol\n", NULL);
	struct local_user u;

	RESOLVES(db, "alice", "u:alice");
	RESOLVES(db, "ALICE", "u:alice");
	RESOLVES(db, "bob", "u:Bob");        /* canonical name as in the file */
	RESOLVES(db, "carol", "u:carol");
	char why[256];
	assert_int_equal(status_of(db, "dave", why, sizeof(why)), LOCAL_UNKNOWN);
	assert_non_null(strstr(why, "dave"));
	assert_int_equal(status_of(db, "root", why, sizeof(why)), LOCAL_UNKNOWN);

	assert_int_equal(localdb_user(db, "BOB", &u), 0);
	assert_string_equal(u.name, "Bob");
	assert_int_equal(u.system, 0);
	assert_int_equal(localdb_user(db, "dave", &u), -1);
	localdb_free(db);
}

static void
system_users(void **state)
{
	struct localdb *db = must_open(1, NULL, NULL);
	struct local_user u;

	RESOLVES(db, "root", "u:root");
	RESOLVES(db, "Root", "u:root");
	RESOLVES(db, "daemon", "u:daemon");   /* any passwd entry, like local(8) */
	assert_int_equal(localdb_user(db, "root", &u), 0);
	assert_int_equal(u.system, 1);
	assert_int_equal(u.uid, 0);
	assert_int_equal(u.gid, 0);
	assert_string_equal(u.home, "/root");
	char why[256];
	assert_int_equal(status_of(db, "no-such-user-xyz", why, sizeof(why)), LOCAL_UNKNOWN);
	localdb_free(db);

	/* both sources */
	db = must_open(1, "alice\n", NULL);
	RESOLVES(db, "alice", "u:alice");
	RESOLVES(db, "root", "u:root");
	localdb_free(db);
}

static void
postmaster(void **state)
{
	struct local_user u;

	/* no alias, no user: the mailbox "postmaster" */
	struct localdb *db = must_open(0, "alice\n", NULL);
	RESOLVES(db, "postmaster", "u:postmaster");
	RESOLVES(db, "PostMaster", "u:postmaster");
	RESOLVES(db, "postmaster+x", "u:postmaster");
	assert_int_equal(localdb_user(db, "postmaster", &u), 0);
	assert_string_equal(u.name, "postmaster");
	assert_int_equal(u.system, 0);
	localdb_free(db);

	/* an alias wins */
	db = must_open(1, "alice\n", "postmaster: alice, root\n");
	RESOLVES(db, "postmaster", "u:alice u:root");
	localdb_free(db);
}

static void
aliases(void **state)
{
	struct localdb *db = must_open(0, "alice\nbob\ncarol\n",
	    "# comment\n"
	    "info: alice, bob\n"
	    "\n"
	    "   \t\n"                    /* a blank line of white space */
	    "team: info,\n"
	    "  carol,\n"
	    "  # a comment line inside an entry is skipped\n"
	    "# a comment line between continuations\n"
	    "\tbob\n"
	    "sales: <Alice@Example.TEST>, alice@mx.example.test\n"
	    "ext: friend@remote.test, Other@Remote.TEST, friend@remote.test\n"
	    "mix: team, ext, carol\n"
	    "bob: bob, bob@remote.test\n"
	    "\"odd name\": carol\n"
	    "deep1: deep2\ndeep2: deep3\ndeep3: alice\n"
	    "Upper: alice\n"
	    "diamond: d1, d2\nd1: d3\nd2: d3\nd3: carol\n");

	/* bob is an alias too: himself plus a copy elsewhere */
	RESOLVES(db, "info", "u:alice u:bob r:bob@remote.test");
	RESOLVES(db, "INFO", "u:alice u:bob r:bob@remote.test");
	/* nested, duplicates removed */
	RESOLVES(db, "team", "u:alice u:bob r:bob@remote.test u:carol");
	/* a local domain resolves locally again */
	RESOLVES(db, "sales", "u:alice");
	/* remote targets, domain lower-cased, duplicates removed */
	RESOLVES(db, "ext", "r:friend@remote.test r:Other@remote.test");
	RESOLVES(db, "mix", "u:alice u:bob r:bob@remote.test u:carol "
	                    "r:friend@remote.test r:Other@remote.test");
	RESOLVES(db, "odd name", "u:carol");
	RESOLVES(db, "deep1", "u:alice");
	RESOLVES(db, "upper", "u:alice");
	RESOLVES(db, "diamond", "u:carol");
	localdb_free(db);
}

static void
loops_and_limits(void **state)
{
	char why[512];
	struct localdb *db = must_open(0, "alice\n",
	    "a: b\nb: c\nc: a\n"
	    "self: self\n"
	    "ok: alice, a\n"
	    "viadomain: viadomain2@example.test\nviadomain2: viadomain@EXAMPLE.test\n"
	    "l1: l2\nl2: l3\nl3: l4\nl4: l5\nl5: l6\nl6: l7\nl7: l8\nl8: l9\nl9: l10\n"
	    "l10: l11\nl11: l12\nl12: l13\nl13: l14\nl14: l15\nl15: l16\nl16: l17\n"
	    "l17: l18\nl18: alice\n");

	assert_int_equal(status_of(db, "a", why, sizeof(why)), LOCAL_LOOP);
	assert_non_null(strstr(why, "loop"));
	assert_int_equal(status_of(db, "ok", why, sizeof(why)), LOCAL_LOOP);
	assert_int_equal(status_of(db, "viadomain", why, sizeof(why)), LOCAL_LOOP);
	/* "self: self" is the user self, who does not exist */
	assert_int_equal(status_of(db, "self", why, sizeof(why)), LOCAL_UNKNOWN);
	/* deeper than 16 */
	assert_int_equal(status_of(db, "l1", why, sizeof(why)), LOCAL_LOOP);
	assert_non_null(strstr(why, "deep"));
	RESOLVES(db, "l5", "u:alice");
	localdb_free(db);

	/* more than 1000 targets */
	size_t cap = 64 * 1024;
	char *big = malloc(cap);
	size_t n = (size_t)snprintf(big, cap, "many:");
	for (int i = 0; i < 1001; i++)
		n += (size_t)snprintf(big + n, cap - n, "%s u%d@remote.test", i ? "," : "", i);
	snprintf(big + n, cap - n, "\nfew: alice, u1@remote.test\n");
	db = must_open(0, "alice\n", big);
	free(big);
	assert_int_equal(status_of(db, "many", why, sizeof(why)), LOCAL_REFUSED);
	RESOLVES(db, "few", "u:alice r:u1@remote.test");
	localdb_free(db);
}

static void
refused_targets(void **state)
{
	char why[512];
	struct localdb *db = must_open(0, "alice\n",
	    "prog: alice, |/usr/bin/vacation alice\n"
	    "quoted: \"|/bin/cat, with a comma\"\n"
	    "file: /tmp/log\n"
	    "inc: :include:/etc/mail/list\n"
	    "outer: alice, prog\n"
	    "broken: alice, nobody-here\n");

	assert_int_equal(status_of(db, "prog", why, sizeof(why)), LOCAL_REFUSED);
	assert_non_null(strstr(why, "|/usr/bin/vacation"));
	assert_int_equal(status_of(db, "quoted", why, sizeof(why)), LOCAL_REFUSED);
	assert_non_null(strstr(why, "|/bin/cat, with a comma"));
	assert_int_equal(status_of(db, "file", why, sizeof(why)), LOCAL_REFUSED);
	assert_int_equal(status_of(db, "inc", why, sizeof(why)), LOCAL_REFUSED);
	assert_int_equal(status_of(db, "outer", why, sizeof(why)), LOCAL_REFUSED);
	/* one unknown target fails the recipient, naming the culprit */
	assert_int_equal(status_of(db, "broken", why, sizeof(why)), LOCAL_UNKNOWN);
	assert_non_null(strstr(why, "broken"));
	assert_non_null(strstr(why, "nobody-here"));
	RESOLVES(db, "alice", "u:alice");
	localdb_free(db);
}

static void
extensions(void **state)
{
	char why[256];
	struct localdb *db = must_open(0, "alice\nbob\nbob+special\n",
	    "alice+lists: bob\n"
	    "info: alice\n"
	    "carol: carol+box\n");

	RESOLVES(db, "alice+tag", "u:alice");
	RESOLVES(db, "Alice+Tag", "u:alice");
	RESOLVES(db, "alice+lists", "u:bob");      /* the whole name first */
	RESOLVES(db, "info+x", "u:alice");         /* alias of the base */
	RESOLVES(db, "bob+special", "u:bob+special");
	RESOLVES(db, "bob+other", "u:bob");
	assert_int_equal(status_of(db, "nobody+x", why, sizeof(why)), LOCAL_UNKNOWN);
	assert_int_equal(status_of(db, "+x", why, sizeof(why)), LOCAL_UNKNOWN);
	/* "carol: carol+box" is carol's own mailbox: no such user here */
	assert_int_equal(status_of(db, "carol", why, sizeof(why)), LOCAL_UNKNOWN);
	localdb_free(db);
}

static void
file_errors(void **state)
{
	char err[512];

	assert_null(open_db(0, "alice\nbad/name\n", NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "/users:2:"));
	assert_null(open_db(0, "alice\n.hidden\n", NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "/users:2:"));

	assert_null(open_db(0, "alice\n", "a: alice\n\nno colon here\n", err, sizeof(err)));
	assert_non_null(strstr(err, "/aliases:3:"));
	assert_null(open_db(0, "alice\n", "# x\nempty:\n", err, sizeof(err)));
	assert_non_null(strstr(err, "/aliases:2:"));
	assert_null(open_db(0, "alice\n", "q: \"unterminated\n", err, sizeof(err)));
	assert_non_null(strstr(err, "/aliases:1:"));
	assert_null(open_db(0, "alice\n", "  leading: alice\n", err, sizeof(err)));
	assert_non_null(strstr(err, "/aliases:1:"));
	/* an error in a continued entry names the line the entry starts on */
	assert_null(open_db(0, "alice\n", "a: alice\nb: alice,\n  \"bad\n", err, sizeof(err)));
	assert_non_null(strstr(err, "/aliases:2:"));
	assert_null(open_db(0, "alice\n", ": alice\n", err, sizeof(err)));
	assert_non_null(strstr(err, "/aliases:1:"));

	/* a users file that cannot be read */
	struct config c;
	char conf[256];
	snprintf(conf, sizeof(conf), "[deliverd]\nlocal_users = %s/missing\naliases =\n", dir);
	put("conf2", conf);
	snprintf(conf, sizeof(conf), "%s/conf2", dir);
	assert_int_equal(config_load(&c, conf, err, sizeof(err)), 0);
	assert_null(localdb_open(&c, err, sizeof(err)));
	assert_non_null(strstr(err, "missing"));
	config_free(&c);

	/* a duplicate alias: the first wins */
	struct localdb *db = must_open(0, "alice\nbob\n", "x: alice\nx: bob\n");
	RESOLVES(db, "x", "u:alice");
	localdb_free(db);
}

static struct localdb *shared_db;

static void *
resolver_thread(void *arg)
{
	for (int i = 0; i < 2000; i++) {
		struct local_target *t = NULL;
		size_t n = 0;
		char why[128];
		if (localdb_resolve(shared_db, (i & 1) ? "team" : "root+x", &t, &n,
		                    why, sizeof(why)) != LOCAL_OK || n == 0)
			return (void *)1;
		local_targets_free(t, n);
	}
	return NULL;
}

static void
threads(void **state)
{
	shared_db = must_open(1, "alice\nbob\n", "team: alice, bob, root, x@remote.test\n");
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, resolver_thread, NULL), 0);
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(th[i], &r);
		assert_null(r);
	}
	localdb_free(shared_db);
}

static int
setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/spfgate-localdb.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
	const char *f[] = { "users", "aliases", "conf", "conf2" };
	char p[128];
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, f[i]);
		unlink(p);
	}
	return rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(users_file),
		cmocka_unit_test(system_users),
		cmocka_unit_test(postmaster),
		cmocka_unit_test(aliases),
		cmocka_unit_test(loops_and_limits),
		cmocka_unit_test(refused_targets),
		cmocka_unit_test(extensions),
		cmocka_unit_test(file_errors),
		cmocka_unit_test(threads),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
