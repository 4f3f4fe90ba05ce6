# deliverd queue part: spool (durable queue), scheduler and workers, DSNs.
deliverd_libdeliver_a_SOURCES += deliverd/spool.c deliverd/spool.h \
	deliverd/sched.c deliverd/sched_int.h deliverd/sched_attempt.c \
	deliverd/bounce.c deliverd/bounce.h

check_PROGRAMS += tests/unit/test_spool tests/unit/test_bounce
TESTS += tests/unit/test_spool tests/unit/test_bounce
tests_unit_test_spool_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd
tests_unit_test_spool_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_spool_LDADD = $(DELIVERD_LIBS) $(CMOCKA_LIBS)
tests_unit_test_bounce_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd
tests_unit_test_bounce_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_bounce_LDADD = $(DELIVERD_LIBS) $(CMOCKA_LIBS)

# a quarantine's way to the hold queue: relayd's xtext writer, deliverd's
# reader, the spool's held-at-arrival commit
check_PROGRAMS += tests/unit/test_quarantine
TESTS += tests/unit/test_quarantine
tests_unit_test_quarantine_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd \
	-I$(top_srcdir)/relayd
tests_unit_test_quarantine_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_quarantine_LDADD = relayd/librelayd.a $(DELIVERD_LIBS) $(CMOCKA_LIBS)
