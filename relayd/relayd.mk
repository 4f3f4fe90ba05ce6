# relayd: the SMTP front end.  The session's parts are in
# relayd/librelayd.a so that unit tests can link them.
noinst_LIBRARIES += relayd/librelayd.a
relayd_librelayd_a_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd \
	$(LIBEVENT_CFLAGS) $(OPENSSL_CFLAGS)
relayd_librelayd_a_SOURCES = relayd/smtp_parse.c relayd/smtp_parse.h \
	relayd/msgbuf.c relayd/msgbuf.h relayd/filter.c relayd/filter.h relayd/filter_milter.c \
	relayd/lmtp_client.c relayd/lmtp_client.h relayd/msgedit.c relayd/msgedit.h \
	relayd/smtp_handoff.c relayd/session_int.h relayd/workers.c relayd/workers.h \
	relayd/smtp_session.c relayd/relayd.h

sbin_PROGRAMS += relayd/relayd
relayd_relayd_SOURCES = relayd/main.c
relayd_relayd_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd \
	$(LIBEVENT_CFLAGS) $(OPENSSL_CFLAGS)
relayd_relayd_LDADD = relayd/librelayd.a relayd/libmilterclient.a $(COMMON_LIBS) $(LIBEVENT_LIBS) \
	-levent_openssl -levent_pthreads $(OPENSSL_LIBS) -lpthread

check_PROGRAMS += tests/unit/test_relayd_parse
TESTS += tests/unit/test_relayd_parse
tests_unit_test_relayd_parse_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd
tests_unit_test_relayd_parse_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_relayd_parse_LDADD = relayd/librelayd.a $(COMMON_LIBS) \
	$(LIBEVENT_LIBS) $(CMOCKA_LIBS)

check_PROGRAMS += tests/unit/test_relayd_msgedit
TESTS += tests/unit/test_relayd_msgedit
tests_unit_test_relayd_msgedit_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd
tests_unit_test_relayd_msgedit_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_relayd_msgedit_LDADD = relayd/librelayd.a $(COMMON_LIBS) \
	$(LIBEVENT_LIBS) $(CMOCKA_LIBS)

# the session against a scripted filter (defines filter.h itself) and a
# fake LMTP server
check_PROGRAMS += tests/unit/test_relayd_session
TESTS += tests/unit/test_relayd_session
tests_unit_test_relayd_session_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd \
	$(LIBEVENT_CFLAGS) $(OPENSSL_CFLAGS)
tests_unit_test_relayd_session_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_relayd_session_LDADD = relayd/librelayd.a $(COMMON_LIBS) \
	$(LIBEVENT_LIBS) -levent_openssl $(OPENSSL_LIBS) $(CMOCKA_LIBS)
