# deliverd local part: recipients (localdb) and mbox delivery, their unit
# tests, and tests/mboxw (appends messages with mbox_deliver for the
# end-to-end test that reads the result back with real mail readers).
deliverd_libdeliver_a_SOURCES += deliverd/localdb.c deliverd/localdb.h \
	deliverd/mbox.c deliverd/mbox.h deliverd/dotlock.c deliverd/dotlock.h

check_PROGRAMS += tests/unit/test_localdb tests/unit/test_mbox tests/mboxw
TESTS += tests/unit/test_localdb tests/unit/test_mbox
tests_unit_test_localdb_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd
tests_unit_test_localdb_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_localdb_LDADD = $(DELIVERD_LIBS) $(CMOCKA_LIBS)
tests_unit_test_mbox_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd
tests_unit_test_mbox_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_mbox_LDADD = $(DELIVERD_LIBS) $(CMOCKA_LIBS)
tests_mboxw_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd
tests_mboxw_LDADD = $(DELIVERD_LIBS)
