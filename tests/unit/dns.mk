check_PROGRAMS += tests/unit/test_dns
TESTS += tests/unit/test_dns
tests_unit_test_dns_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_dns_LDADD = $(UNIT_LIBS)

# dnsq: a small dig over common/dns.c, used by tests/e2e/test_dns.py
check_PROGRAMS += tests/dnsq
tests_dnsq_LDADD = $(COMMON_LIBS)
