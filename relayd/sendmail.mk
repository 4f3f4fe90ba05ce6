# spfgate-sendmail: the sendmail(1) interface for local programs.  Its
# parts are in relayd/libsendmail.a so that the unit test can link them.
noinst_LIBRARIES += relayd/libsendmail.a
relayd_libsendmail_a_SOURCES = relayd/sendmail.h relayd/sendmail_input.c \
	relayd/sendmail_addr.c relayd/sendmail_hdr.c relayd/sendmail_wire.c \
	relayd/sendmail_smtp.c relayd/sendmail_bs.c
relayd_libsendmail_a_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd

# -bp and -q run the queue tool where it is installed (bin_PROGRAMS in
# deliverd/daemon.mk); SPFGATE_QUEUE overrides it (tests, build tree).
sbin_PROGRAMS += relayd/spfgate-sendmail
relayd_spfgate_sendmail_SOURCES = relayd/sendmail.c
relayd_spfgate_sendmail_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd \
	-DQUEUE_TOOL='"$(bindir)/spfgate-queue"'
relayd_spfgate_sendmail_LDADD = relayd/libsendmail.a $(COMMON_LIBS)

dist_man_MANS += relayd/spfgate-sendmail.8

check_PROGRAMS += tests/unit/test_sendmail
TESTS += tests/unit/test_sendmail
tests_unit_test_sendmail_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd
tests_unit_test_sendmail_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_sendmail_LDADD = relayd/libsendmail.a $(UNIT_LIBS)
