# deliverd remote part: routing, the SMTP client, its TLS transport
deliverd_libdeliver_a_SOURCES += deliverd/remote.c deliverd/remote.h \
	deliverd/remote_int.h deliverd/remote_route.c \
	deliverd/smtp_client.c deliverd/smtp_client.h deliverd/smtp_txn.c \
	deliverd/smtp_io.c deliverd/smtp_io.h

check_PROGRAMS += tests/unit/test_remote tests/unit/test_remote_smtp
TESTS += tests/unit/test_remote tests/unit/test_remote_smtp
tests_unit_test_remote_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd
tests_unit_test_remote_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_remote_LDADD = $(DELIVERD_LIBS) $(CMOCKA_LIBS)
tests_unit_test_remote_smtp_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd
tests_unit_test_remote_smtp_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_remote_smtp_LDADD = $(DELIVERD_LIBS) $(CMOCKA_LIBS)

# remotew: runs remote_deliver() on a file, for tests/e2e/test_deliverd_remote.py
check_PROGRAMS += tests/remotew
tests_remotew_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd
tests_remotew_LDADD = $(DELIVERD_LIBS)
