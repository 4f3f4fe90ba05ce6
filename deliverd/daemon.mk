# deliverd daemon part: the deliverd program (main.c), its LMTP server and
# control socket (in libdeliver.a so tests can link them), the queue tool.
deliverd_libdeliver_a_SOURCES += deliverd/lmtp.c deliverd/lmtp_server.c \
	deliverd/lmtp_commit.c deliverd/lmtp_util.c deliverd/lmtp_int.h \
	deliverd/control.c

sbin_PROGRAMS += deliverd/deliverd
deliverd_deliverd_SOURCES = deliverd/main.c
deliverd_deliverd_LDADD = $(DELIVERD_LIBS)
deliverd_deliverd_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd $(LIBEVENT_CFLAGS)

bin_PROGRAMS += deliverd/spfgate-queue
deliverd_spfgate_queue_SOURCES = deliverd/spfgate-queue.c
deliverd_spfgate_queue_LDADD = $(DELIVERD_LIBS)
deliverd_spfgate_queue_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd $(LIBEVENT_CFLAGS)

check_PROGRAMS += tests/unit/test_lmtp
TESTS += tests/unit/test_lmtp
tests_unit_test_lmtp_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd
tests_unit_test_lmtp_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_lmtp_LDADD = $(DELIVERD_LIBS) $(CMOCKA_LIBS)
