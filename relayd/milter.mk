# relayd: the milter client (MTA side of the milter protocol, v6)
noinst_LIBRARIES += relayd/libmilterclient.a
relayd_libmilterclient_a_SOURCES = relayd/milter_client.c relayd/milter_client.h \
	relayd/milter_macros.c relayd/milter_mods.c relayd/milter_int.h \
	relayd/milter_wire.c relayd/milter_wire.h
relayd_libmilterclient_a_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd $(LIBEVENT_CFLAGS)

# miltc: drives the milter client from a script (tests/e2e/test_milter_client.py)
check_PROGRAMS += tests/miltc
tests_miltc_SOURCES = tests/miltc.c
tests_miltc_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd $(LIBEVENT_CFLAGS)
tests_miltc_LDADD = relayd/libmilterclient.a $(COMMON_LIBS) $(LIBEVENT_LIBS) -lpthread

check_PROGRAMS += tests/unit/test_milter_wire
TESTS += tests/unit/test_milter_wire
tests_unit_test_milter_wire_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/relayd
tests_unit_test_milter_wire_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_milter_wire_LDADD = relayd/libmilterclient.a $(CMOCKA_LIBS)
