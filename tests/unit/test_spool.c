/* Unit tests: deliverd's spool (deliverd/spool.c): round trip, state
 * updates, corrupt and foreign files, tmp/ clean-up, queue ids. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool.h"

static char dir[256];

static int
setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_spool.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[300];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct spool *
open_spool(void)
{
	char err[256];
	struct spool *s = spool_open(dir, err, sizeof(err));
	if (!s)
		fail_msg("spool_open: %s", err);
	return s;
}

static int
exists(const char *sub, const char *name)
{
	char p[2400];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s/%s", dir, sub, name);
	return stat(p, &st) == 0;
}

static void
put_file(const char *sub, const char *name, const char *text, size_t len)
{
	char p[2400];
	snprintf(p, sizeof(p), "%s/%s/%s", dir, sub, name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
}

static size_t
count(const char *sub)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "ls -A '%s/%s' | wc -l", dir, sub);
	FILE *f = popen(cmd, "r");
	unsigned n = 0;
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%u", &n), 1);
	pclose(f);
	return n;
}

/* Queue a message; its id into id. */
static void
queue_msg(struct spool *s, const char *sender, const char *body, char *id)
{
	struct spool_rcpt r[3] = {
		{ .addr = "bob", .orig = "Bob@example.test" },
		{ .addr = "carol@example.org", .orig = "carol@example.org" },
		{ .addr = "\"odd user\"@example.org", .orig = NULL },
	};
	char err[256];
	struct spool_writer *w = spool_writer_new(s, sender, r, 3, err, sizeof(err));
	if (!w)
		fail_msg("writer: %s", err);
	snprintf(id, SPOOL_ID_MAX, "%s", spool_writer_id(w));
	assert_true(spool_valid_id(id));
	assert_true(exists("tmp", id));
	/* in small pieces, to cross the writer's buffer */
	size_t len = strlen(body);
	for (size_t i = 0; i < len; i += 7)
		assert_int_equal(spool_writer_write(w, body + i, len - i < 7 ? len - i : 7), 0);
	assert_false(exists("queue", id));
	if (spool_commit(w, err, sizeof(err)) != 0)
		fail_msg("commit: %s", err);
	assert_false(exists("tmp", id));
	assert_true(exists("queue", id));
}

static char *
body_of(const struct spool_msg *m)
{
	char *b = malloc((size_t)m->body_len + 1);
	assert_int_equal(pread(m->fd, b, (size_t)m->body_len, m->body_off), m->body_len);
	b[m->body_len] = '\0';
	return b;
}

struct seen {
	char ids[8][SPOOL_ID_MAX];
	size_t n;
};

static void
collect(const char *id, void *arg)
{
	struct seen *v = arg;
	if (v->n < 8)
		snprintf(v->ids[v->n], SPOOL_ID_MAX, "%s", id);
	v->n++;
}

static void
round_trip(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	char id[SPOOL_ID_MAX];
	const char *text = "Subject: hi\nFrom: a@example.org\n\nline one\nend\n";
	time_t before = time(NULL);
	queue_msg(s, "alice@example.org", text, id);

	struct spool_msg m;
	assert_int_equal(spool_load(s, id, &m), 0);
	assert_string_equal(m.id, id);
	assert_string_equal(m.sender, "alice@example.org");
	assert_true(m.arrival >= before && m.arrival <= time(NULL));
	assert_int_equal(m.nrcpt, 3);
	assert_string_equal(m.rcpt[0].addr, "bob");
	assert_string_equal(m.rcpt[0].orig, "Bob@example.test");
	assert_string_equal(m.rcpt[1].addr, "carol@example.org");
	assert_string_equal(m.rcpt[2].addr, "\"odd user\"@example.org");
	assert_string_equal(m.rcpt[2].orig, "\"odd user\"@example.org");
	for (int i = 0; i < 3; i++)
		assert_int_equal(m.rcpt[i].state, RCPT_PENDING);
	assert_false(m.held);
	assert_int_equal(m.body_len, (off_t)strlen(text));
	char *b = body_of(&m);
	assert_string_equal(b, text);
	free(b);
	spool_msg_free(&m);

	/* the null sender and an empty message text */
	queue_msg(s, "", "", id);
	assert_int_equal(spool_load(s, id, &m), 0);
	assert_string_equal(m.sender, "");
	assert_int_equal(m.body_len, 0);
	spool_msg_free(&m);

	assert_int_equal(spool_load(s, "0000000000000000X", &m), -1);
	assert_int_equal(spool_load(s, "../queue/x", &m), -1);
	assert_int_equal(spool_load(s, "", &m), -1);
	spool_close(s);
}

static void
refuses_bad_envelopes(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	char err[256];
	struct spool_rcpt tab = { .addr = "a\tb@example.org", .orig = "x" };
	struct spool_rcpt lf = { .addr = "ok@example.org", .orig = "a\nrcpt D x\tx" };
	struct spool_rcpt good = { .addr = "ok@example.org", .orig = "ok@example.org" };
	assert_null(spool_writer_new(s, "", &tab, 1, err, sizeof(err)));
	assert_null(spool_writer_new(s, "", &lf, 1, err, sizeof(err)));
	assert_null(spool_writer_new(s, "a\r\nb", &good, 1, err, sizeof(err)));
	assert_null(spool_writer_new(s, "", &good, 0, err, sizeof(err)));
	assert_int_equal(count("tmp"), 0);

	/* abort leaves nothing behind */
	struct spool_writer *w = spool_writer_new(s, "", &good, 1, err, sizeof(err));
	assert_non_null(w);
	assert_int_equal(spool_writer_write(w, "x\n", 2), 0);
	spool_abort(w);
	assert_int_equal(count("tmp"), 0);
	assert_int_equal(count("queue"), 0);
	spool_close(s);
}

static void
state_survives_reopen(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	char id[SPOOL_ID_MAX];
	struct spool_msg m;
	queue_msg(s, "alice@example.org", "Subject: x\n\nbody\n", id);
	assert_int_equal(spool_load(s, id, &m), 0);
	assert_int_equal(spool_set_state(&m, 1, RCPT_DONE), 0);
	assert_int_equal(spool_set_state(&m, 2, RCPT_BOUNCED), 0);
	assert_int_equal(spool_set_state(&m, 3, RCPT_DONE), -1);
	spool_msg_free(&m);
	spool_close(s);

	s = open_spool();
	assert_int_equal(spool_load(s, id, &m), 0);
	assert_int_equal(m.rcpt[0].state, RCPT_PENDING);
	assert_int_equal(m.rcpt[1].state, RCPT_DONE);
	assert_int_equal(m.rcpt[2].state, RCPT_BOUNCED);
	char *b = body_of(&m);
	assert_string_equal(b, "Subject: x\n\nbody\n");
	free(b);
	spool_msg_free(&m);

	/* without the sync: visible to the next reader all the same */
	assert_int_equal(spool_load(s, id, &m), 0);
	assert_int_equal(spool_set_state_nosync(&m, 0, RCPT_DONE), 0);
	assert_int_equal(spool_set_state_nosync(&m, 9, RCPT_DONE), -1);
	spool_msg_free(&m);
	assert_int_equal(spool_load(s, id, &m), 0);
	assert_int_equal(m.rcpt[0].state, RCPT_DONE);
	spool_msg_free(&m);

	assert_int_equal(spool_note_defer(s, id, 3, "451 4.3.0 try\r\nlater"), 0);
	int att;
	char last[128];
	assert_int_equal(spool_read_defer(s, id, &att, last, sizeof(last)), 0);
	assert_int_equal(att, 3);
	assert_string_equal(last, "451 4.3.0 try  later");

	assert_int_equal(spool_remove(s, id), 0);
	assert_false(exists("queue", id));
	assert_false(exists("defer", id));
	assert_int_equal(spool_load(s, id, &m), -1);
	assert_int_equal(spool_read_defer(s, id, &att, last, sizeof(last)), -1);
	spool_close(s);
}

struct bad {
	const char *name;
	char text[4096];
	size_t len;
};

static void
corrupt_files_moved_aside(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	struct spool_msg m;
	char id[SPOOL_ID_MAX], p[1024];

	/* a good file, then damaged copies of it under other ids */
	queue_msg(s, "alice@example.org", "Subject: x\n\nbody\n", id);
	snprintf(p, sizeof(p), "%s/queue/%s", dir, id);
	FILE *f = fopen(p, "r");
	char good[4096];
	size_t n = fread(good, 1, sizeof(good), f);
	fclose(f);
	assert_true(n > 50);

	struct bad bad[10];
	int nb = 0;
	/* truncated in the message text */
	bad[nb] = (struct bad){ .name = "AAAA0000000000001" };
	memcpy(bad[nb].text, good, n - 1); bad[nb++].len = n - 1;
	/* trailing garbage */
	bad[nb] = (struct bad){ .name = "AAAA0000000000002" };
	memcpy(bad[nb].text, good, n); memcpy(bad[nb].text + n, "xx", 2); bad[nb++].len = n + 2;
	/* truncated inside the header */
	bad[nb] = (struct bad){ .name = "AAAA0000000000003" };
	memcpy(bad[nb].text, good, 40); bad[nb++].len = 40;
	/* foreign content */
	bad[nb] = (struct bad){ .name = "AAAA0000000000004" };
	strcpy(bad[nb].text, "From: someone\n\nnot a spool file\n"); bad[nb].len = strlen(bad[nb].text); nb++;
	/* empty */
	bad[nb] = (struct bad){ .name = "AAAA0000000000005" };
	bad[nb++].len = 0;
	/* the id inside differs from the name: the good file copied */
	bad[nb] = (struct bad){ .name = "AAAA0000000000006" };
	memcpy(bad[nb].text, good, n); bad[nb++].len = n;
	/* a bad state byte */
	bad[nb] = (struct bad){ .name = "AAAA0000000000007" };
	memcpy(bad[nb].text, good, n); bad[nb].len = n;
	strstr(bad[nb].text, "rcpt -")[5] = 'X';
	nb++;
	/* never committed: size still '?' */
	bad[nb] = (struct bad){ .name = "AAAA0000000000008" };
	memcpy(bad[nb].text, good, n); bad[nb].len = n;
	memset(strstr(bad[nb].text, "size ") + 5, '?', 20);
	nb++;
	/* binary junk */
	bad[nb] = (struct bad){ .name = "AAAA0000000000009" };
	for (int i = 0; i < 3000; i++)
		bad[nb].text[i] = (char)(i * 7);
	bad[nb++].len = 3000;

	/* each copy names itself, so that only the intended damage shows */
	assert_int_equal(strlen(id), strlen(bad[0].name));
	for (int i = 0; i < nb; i++) {
		char *at = bad[i].len > 40 ? memmem(bad[i].text, bad[i].len, id, strlen(id)) : NULL;
		if (at && i != 5)
			memcpy(at, bad[i].name, strlen(bad[i].name));
		put_file("queue", bad[i].name, bad[i].text, bad[i].len);
	}
	put_file("queue", "foreign.txt", "hello\n", 6);
	put_file("queue", "lower0000000001", "hello\n", 6);

	for (int i = 0; i < nb; i++) {
		assert_int_equal(spool_load(s, bad[i].name, &m), -2);
		assert_false(exists("queue", bad[i].name));
		assert_true(exists("corrupt", bad[i].name));
	}
	/* the scan moves foreign names and reports the rest */
	struct seen v = { .n = 0 };
	assert_int_equal(spool_scan(s, 0, collect, &v), 0);
	assert_int_equal(v.n, 1);
	assert_string_equal(v.ids[0], id);
	assert_true(exists("corrupt", "foreign.txt"));
	assert_true(exists("corrupt", "lower0000000001"));

	/* the same name again does not overwrite the first one in corrupt/ */
	put_file("queue", bad[0].name, "junk", 4);
	assert_int_equal(spool_load(s, bad[0].name, &m), -2);
	snprintf(p, sizeof(p), "%s.1", bad[0].name);
	assert_true(exists("corrupt", p));

	/* the good one still loads */
	assert_int_equal(spool_load(s, id, &m), 0);
	spool_msg_free(&m);
	spool_close(s);
}

static void
tmp_leftovers_cleaned(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	put_file("tmp", "0000000000000000A", "half a message", 14);
	/* a second opener (a queue tool) leaves deliverd's tmp/ alone */
	struct spool *s2 = open_spool();
	assert_true(exists("tmp", "0000000000000000A"));
	spool_close(s2);
	spool_close(s);
	s = open_spool();
	assert_false(exists("tmp", "0000000000000000A"));
	spool_close(s);
}

static void
hold_release_scan(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	char a[SPOOL_ID_MAX], b[SPOOL_ID_MAX];
	struct spool_msg m;
	queue_msg(s, "x@example.org", "A\n", a);
	queue_msg(s, "x@example.org", "B\n", b);
	assert_true(strcmp(a, b) < 0);
	assert_int_equal(spool_hold(s, a), 0);
	assert_true(exists("hold", a));
	assert_int_equal(spool_hold(s, a), -1);
	assert_int_equal(spool_load(s, a, &m), 0);
	assert_true(m.held);
	spool_msg_free(&m);

	struct seen v = { .n = 0 };
	spool_scan(s, 0, collect, &v);
	assert_int_equal(v.n, 1);
	assert_string_equal(v.ids[0], b);
	v.n = 0;
	spool_scan(s, 1, collect, &v);
	assert_int_equal(v.n, 2);

	assert_int_equal(spool_release(s, a), 0);
	assert_true(exists("queue", a));
	assert_int_equal(spool_release(s, a), -1);
	v.n = 0;
	spool_scan(s, 0, collect, &v);
	assert_int_equal(v.n, 2);
	assert_string_equal(v.ids[0], a);   /* oldest first */
	assert_int_equal(spool_hold(s, "../x"), -1);
	spool_close(s);
}

#define NTHREADS 4
#define PER_THREAD 1500

struct idgen {
	struct spool *s;
	char (*ids)[SPOOL_ID_MAX];
};

static void *
make_ids(void *arg)
{
	struct idgen *g = arg;
	struct spool_rcpt r = { .addr = "bob", .orig = "bob" };
	char err[128];
	for (int i = 0; i < PER_THREAD; i++) {
		struct spool_writer *w = spool_writer_new(g->s, "", &r, 1, err, sizeof(err));
		if (!w)
			return (void *)1;
		snprintf(g->ids[i], SPOOL_ID_MAX, "%s", spool_writer_id(w));
		spool_abort(w);
	}
	return NULL;
}

static int
cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void
ids_unique(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	static char ids[NTHREADS * PER_THREAD][SPOOL_ID_MAX];
	pthread_t t[NTHREADS];
	struct idgen g[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		g[i] = (struct idgen){ s, &ids[i * PER_THREAD] };
		assert_int_equal(pthread_create(&t[i], NULL, make_ids, &g[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		void *rv;
		pthread_join(t[i], &rv);
		assert_null(rv);
	}
	/* each thread's ids are increasing (sortable by time) */
	for (int i = 0; i < NTHREADS; i++)
		for (int k = 1; k < PER_THREAD; k++)
			assert_true(strcmp(ids[i * PER_THREAD + k - 1], ids[i * PER_THREAD + k]) < 0);
	qsort(ids, NTHREADS * PER_THREAD, SPOOL_ID_MAX, cmp);
	for (int k = 1; k < NTHREADS * PER_THREAD; k++)
		assert_string_not_equal(ids[k - 1], ids[k]);
	for (int k = 0; k < NTHREADS * PER_THREAD; k++)
		assert_true(spool_valid_id(ids[k]));
	spool_close(s);
}

static void
many_recipients(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	enum { N = 3000 };
	struct spool_rcpt *r = calloc(N, sizeof(*r));
	char (*names)[64] = calloc(N, 64);
	for (int i = 0; i < N; i++) {
		snprintf(names[i], 64, "user%d@example%d.org", i, i % 17);
		r[i].addr = r[i].orig = names[i];
	}
	char err[128], id[SPOOL_ID_MAX];
	struct spool_writer *w = spool_writer_new(s, "a@b.example", r, N, err, sizeof(err));
	assert_non_null(w);
	snprintf(id, sizeof(id), "%s", spool_writer_id(w));
	assert_int_equal(spool_writer_write(w, "x\n", 2), 0);
	assert_int_equal(spool_commit(w, err, sizeof(err)), 0);
	struct spool_msg m;
	assert_int_equal(spool_load(s, id, &m), 0);
	assert_int_equal(m.nrcpt, N);
	assert_string_equal(m.rcpt[N - 1].addr, names[N - 1]);
	assert_int_equal(spool_set_state(&m, N - 1, RCPT_DONE), 0);
	spool_msg_free(&m);
	assert_int_equal(spool_load(s, id, &m), 0);
	assert_int_equal(m.rcpt[N - 1].state, RCPT_DONE);
	assert_int_equal(m.rcpt[N - 2].state, RCPT_PENDING);
	spool_msg_free(&m);
	free(r);
	free(names);
	spool_close(s);
}

/* Group commit: several writers synced, then renamed with one fsync of
 * queue/; a writer whose rename fails does not stop the others. */
static void
batch_commit(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	struct spool_rcpt r = { .addr = "bob", .orig = "bob@example.test" };
	struct spool_writer *w[4];
	char ids[4][SPOOL_ID_MAX], err[256];
	int errs[4];
	for (int i = 0; i < 4; i++) {
		assert_non_null(w[i] = spool_writer_new(s, "a@example.org", &r, 1, err, sizeof(err)));
		snprintf(ids[i], sizeof(ids[i]), "%s", spool_writer_id(w[i]));
		assert_int_equal(spool_writer_write(w[i], "Subject: x\n\nhi\n", 15), 0);
		assert_int_equal(spool_commit_sync(w[i], err, sizeof(err)), 0);
		assert_true(exists("tmp", ids[i]));
		assert_false(exists("queue", ids[i]));
	}
	/* writer 2's tmp file vanishes: its rename fails, alone */
	char p[2400];
	snprintf(p, sizeof(p), "%s/tmp/%s", dir, ids[2]);
	assert_int_equal(unlink(p), 0);
	assert_int_equal(spool_commit_batch(w, 4, errs), 3);
	for (int i = 0; i < 4; i++) {
		struct spool_msg m;
		assert_false(exists("tmp", ids[i]));
		if (i == 2) {
			assert_int_equal(errs[i], ENOENT);
			assert_false(exists("queue", ids[i]));
			continue;
		}
		assert_int_equal(errs[i], 0);
		assert_int_equal(spool_load(s, ids[i], &m), 0);
		assert_int_equal(m.body_len, 15);
		spool_msg_free(&m);
	}
	assert_int_equal(spool_commit_batch(w, 0, errs), 0);
	spool_close(s);
}

/* Removal: no defer note looked for by spool_remove_undeferred; notes
 * without a message are swept when the spool is opened; release drops
 * the note (the scheduler starts afresh). */
static void
remove_and_defer_notes(void **state)
{
	(void)state;
	struct spool *s = open_spool();
	char a[SPOOL_ID_MAX], b[SPOOL_ID_MAX];
	queue_msg(s, "x@example.org", "hi\n", a);
	queue_msg(s, "x@example.org", "hi\n", b);
	assert_int_equal(spool_remove_undeferred(s, a), 0);
	assert_false(exists("queue", a));
	assert_int_equal(spool_remove_undeferred(s, a), -1);
	assert_int_equal(spool_note_defer(s, b, 1, "4.0.0 later"), 0);
	assert_int_equal(spool_hold(s, b), 0);
	assert_true(exists("defer", b));
	assert_int_equal(spool_release(s, b), 0);
	assert_false(exists("defer", b));
	assert_true(exists("queue", b));
	put_file("defer", "00000000000000ABC", "attempts 1\n", 11);
	assert_int_equal(spool_note_defer(s, b, 2, "4.0.0 later"), 0);
	spool_close(s);
	s = open_spool();
	assert_false(exists("defer", "00000000000000ABC"));
	assert_true(exists("defer", b));
	assert_int_equal(spool_remove(s, b), 0);
	assert_false(exists("defer", b));
	spool_close(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(refuses_bad_envelopes, setup, teardown),
		cmocka_unit_test_setup_teardown(state_survives_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(corrupt_files_moved_aside, setup, teardown),
		cmocka_unit_test_setup_teardown(tmp_leftovers_cleaned, setup, teardown),
		cmocka_unit_test_setup_teardown(hold_release_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(ids_unique, setup, teardown),
		cmocka_unit_test_setup_teardown(many_recipients, setup, teardown),
		cmocka_unit_test_setup_teardown(batch_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(remove_and_defer_notes, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
