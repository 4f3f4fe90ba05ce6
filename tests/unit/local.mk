UNIT_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
UNIT_LIBS = $(COMMON_LIBS) $(CMOCKA_LIBS)

check_PROGRAMS += tests/unit/test_addr tests/unit/test_cidr tests/unit/test_config \
	tests/unit/test_policy
TESTS += tests/unit/test_addr tests/unit/test_cidr tests/unit/test_config \
	tests/unit/test_policy
tests_unit_test_addr_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_addr_LDADD = $(UNIT_LIBS)
tests_unit_test_cidr_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cidr_LDADD = $(UNIT_LIBS)
tests_unit_test_config_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_config_LDADD = $(UNIT_LIBS)
tests_unit_test_policy_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_policy_LDADD = $(UNIT_LIBS)
