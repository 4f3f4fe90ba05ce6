common_libspfgate_a_SOURCES += common/dns.c common/dns.h \
	common/dns_zone.c common/dns_int.h
