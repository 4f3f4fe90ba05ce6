common_libspfgate_a_SOURCES += common/spf.c common/spf.h
