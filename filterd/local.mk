sbin_PROGRAMS += filterd/filterd
filterd_filterd_SOURCES = filterd/filterd.c filterd/milter.h \
	filterd/milter_cb.c filterd/milter_util.c
filterd_filterd_LDADD = $(COMMON_LIBS) $(MILTER_LIBS)
EXTRA_DIST += tests/miltertest contrib/postfix-main.cf contrib/sendmail.mc
