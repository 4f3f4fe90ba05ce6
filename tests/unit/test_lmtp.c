/* Unit tests: the session-free helpers of deliverd's LMTP server
 * (deliverd/lmtp_util.c): address text, MAIL/RCPT argument splitting,
 * listening sockets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "deliverd.h"
#include "lmtp_int.h"

static char *
text_of(const char *in)
{
	struct mailbox m;

	assert_int_equal(addr_parse(in, &m, NULL), 0);
	return lmtp_addr_text(&m);
}

static void
addr_text(void **state)
{
	static const char *const cases[][2] = {
		{ "<Alice@Example.TEST>", "Alice@example.test" },
		{ "<a.b+c@x.test>", "a.b+c@x.test" },
		{ "<\"john doe\"@x.test>", "\"john doe\"@x.test" },
		{ "<\"a\\\"b\"@x.test>", "\"a\\\"b\"@x.test" },
		{ "<\"a..b\"@x.test>", "\"a..b\"@x.test" },
		{ "<\".a\"@x.test>", "\".a\"@x.test" },
		{ "<\"plain\"@x.test>", "plain@x.test" },
		{ "<@relay.test:u@x.test>", "u@x.test" },
		{ "<Postmaster>", "Postmaster" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *t = text_of(cases[i][0]);
		assert_non_null(t);
		assert_string_equal(t, cases[i][1]);
		free(t);
	}
}

static void
split_path(void **state)
{
	char buf[600];
	const char *params;

	(void)state;
	assert_int_equal(lmtp_split_path("<a@b.test>", buf, sizeof(buf), &params), 0);
	assert_string_equal(buf, "<a@b.test>");
	assert_string_equal(params, "");
	assert_int_equal(lmtp_split_path(" <a@b.test>  SIZE=10 BODY=8BITMIME", buf, sizeof(buf),
	                                 &params), 0);
	assert_string_equal(buf, "<a@b.test>");
	assert_string_equal(params, "SIZE=10 BODY=8BITMIME");
	/* a '>' inside a quoted local part does not end the path */
	assert_int_equal(lmtp_split_path("<\"x>y\"@b.test> SIZE=1", buf, sizeof(buf), &params), 0);
	assert_string_equal(buf, "<\"x>y\"@b.test>");
	assert_string_equal(params, "SIZE=1");
	assert_int_equal(lmtp_split_path("<>", buf, sizeof(buf), &params), 0);
	assert_string_equal(buf, "<>");
	assert_int_equal(lmtp_split_path("a@b.test SIZE=2", buf, sizeof(buf), &params), 0);
	assert_string_equal(buf, "a@b.test");
	assert_string_equal(params, "SIZE=2");
	assert_int_equal(lmtp_split_path("<a@b.test", buf, sizeof(buf), &params), -1);
	assert_int_equal(lmtp_split_path("<a@b.test>", buf, 5, &params), -1);
}

static int
connect_unix(const char *path)
{
	struct sockaddr_un sun;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), rc;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	return rc;
}

static void
listen_unix(void **state)
{
	char dir[] = "/tmp/lmtpunitXXXXXX", path[64], err[256];
	struct stat st;
	int fd, fd2;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/s", dir);
	fd = deliverd_listen_unix(path, 0666, 1024, err, sizeof(err));
	assert_true(fd >= 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0666);
	assert_int_equal(connect_unix(path), 0);
	/* in use: refused, and the live socket left alone */
	assert_int_equal(deliverd_listen_unix(path, 0666, 1024, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "in use"));
	close(fd);
	/* stale (nobody listening): replaced */
	fd2 = deliverd_listen_unix(path, 0666, 1024, err, sizeof(err));
	assert_true(fd2 >= 0);
	assert_int_equal(connect_unix(path), 0);
	close(fd2);
	unlink(path);
	/* a file that is not a socket is never removed */
	fclose(fopen(path, "w"));
	assert_int_equal(deliverd_listen_unix(path, 0666, 1024, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a socket"));
	assert_int_equal(stat(path, &st), 0);
	unlink(path);
	rmdir(dir);
}

static void
listen_inet(void **state)
{
	char err[256];
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd;

	(void)state;
	/* no address: loopback, never INADDR_ANY */
	fd = lmtp_listen_inet("inet:65000", err, sizeof(err));
	if (fd >= 0) {
		assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
		assert_int_equal(sin.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
		close(fd);
	}
	assert_int_equal(lmtp_listen_inet("inet:25@not-an-address", err, sizeof(err)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(addr_text),
		cmocka_unit_test(split_path),
		cmocka_unit_test(listen_unix),
		cmocka_unit_test(listen_inet),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
