# SPF module: macro expander, record grammar, spf_check() end to end.
check_PROGRAMS += tests/unit/test_spf_macro tests/unit/test_spf_grammar \
	tests/unit/test_spf_check
TESTS += tests/unit/test_spf_macro tests/unit/test_spf_grammar \
	tests/unit/test_spf_check
tests_unit_test_spf_macro_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_spf_macro_LDADD = $(UNIT_LIBS)
tests_unit_test_spf_grammar_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_spf_grammar_LDADD = $(UNIT_LIBS)
tests_unit_test_spf_check_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_spf_check_LDADD = $(UNIT_LIBS) -lpthread
