bin_PROGRAMS += filterd/spfgate-policy
filterd_spfgate_policy_SOURCES = filterd/spfgate-policy.c
filterd_spfgate_policy_LDADD = $(COMMON_LIBS)
