# spfgate-dnscheck: the DNS self-check of a site.
sbin_PROGRAMS += filterd/spfgate-dnscheck
filterd_spfgate_dnscheck_SOURCES = filterd/spfgate-dnscheck.c filterd/dnscheck.h \
	filterd/dnscheck_addrs.c filterd/dnscheck_checks.c filterd/dnscheck_spf.c \
	filterd/dnscheck_spfrec.c filterd/dnscheck_report.c
filterd_spfgate_dnscheck_LDADD = $(COMMON_LIBS)

dist_man_MANS += filterd/spfgate-dnscheck.8
