noinst_LIBRARIES += common/libspfgate.a
common_libspfgate_a_CPPFLAGS = $(AM_CPPFLAGS) $(LDNS_CFLAGS) $(INIH_CFLAGS)
common_libspfgate_a_SOURCES = \
	common/addr.c common/addr.h \
	common/cidr.c common/cidr.h \
	common/authres.c common/authres.h \
	common/config.c common/config.h \
	common/daemon.c common/daemon.h \
	common/fdio.c common/fdio.h \
	common/log.c common/log.h \
	common/policy.c common/policy.h \
	common/privs.c common/privs.h \
	common/strlist.c common/strlist.h
