# SPF: libspf2 as evaluator, the wrapper as referee (see common/spf.h).
common_libspfgate_a_SOURCES += common/spf.c common/spf.h \
	common/spf_eval.h \
	common/spf_grammar.c common/spf_grammar.h \
	common/spf_macro.c common/spf_macro.h \
	common/spf_rewrite.c \
	common/spf_dnslayer.c
