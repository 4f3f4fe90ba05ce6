# deliverd: its parts are in deliverd/libdeliver.a so unit tests can link
# them; each part's fragment adds its sources.
noinst_LIBRARIES += deliverd/libdeliver.a
deliverd_libdeliver_a_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/deliverd \
	$(LIBEVENT_CFLAGS) $(OPENSSL_CFLAGS) $(LDNS_CFLAGS)
deliverd_libdeliver_a_SOURCES =
DELIVERD_LIBS = deliverd/libdeliver.a $(COMMON_LIBS) $(LIBEVENT_LIBS) \
	-levent_pthreads $(OPENSSL_LIBS) -lpthread
