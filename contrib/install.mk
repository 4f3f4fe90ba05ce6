# Installed files besides the programs: sample configuration, systemd units,
# system users, manual pages.
#
# The units, the tmpfiles.d file and the installed sample are made at build
# time from their sources with the configured directories, so that they
# name the paths the programs were built with (identical for a system
# install: --prefix=/usr --sysconfdir=/etc --localstatedir=/var
# --runstatedir=/run).  A reinstall never overwrites spfgate.conf: the
# sample always goes to spfgate.conf.sample, and to spfgate.conf only when
# there is none yet.

dist_man_MANS += relayd/relayd.8 filterd/filterd.8 deliverd/deliverd.8 \
	common/spfgate.conf.5 filterd/spfgate-policy.1 deliverd/spfgate-queue.8

SPFGATE_UNITS = contrib/systemd/spfgate-deliverd.service \
	contrib/systemd/spfgate-filterd.service \
	contrib/systemd/spfgate-relayd.service contrib/systemd/spfgate.target
SPFGATE_UNIT_TEMPLATES = contrib/systemd/spfgate-deliverd.service.in \
	contrib/systemd/spfgate-filterd.service.in \
	contrib/systemd/spfgate-relayd.service.in contrib/systemd/spfgate.target.in
SPFGATE_GENERATED = $(SPFGATE_UNITS) contrib/spfgate.tmpfiles contrib/spfgate.conf.sample

if HAVE_SYSTEMDSYSTEMUNITDIR
nodist_systemdsystemunit_DATA = $(SPFGATE_UNITS)
endif
noinst_DATA = contrib/spfgate.tmpfiles contrib/spfgate.conf.sample
CLEANFILES += $(SPFGATE_GENERATED)

# A tarball carries what the build, make check and the end-to-end tests
# read besides the SOURCES; tests/e2e and tests/bench whole, so that new
# test files need no entry here.
EXTRA_DIST += deliverd/deliverd.h $(SPFGATE_UNIT_TEMPLATES) \
	contrib/spfgate.conf contrib/quickstart.conf contrib/spfgate.sysusers \
	contrib/spfgate.tmpfiles.in tests/e2e tests/bench

dist-hook:
	rm -rf `find $(distdir)/tests -name __pycache__ -o -name .pytest_cache`

spfgate_edit = sed -e 's|@sbindir[@]|$(sbindir)|g' \
	-e 's|@sysconfdir[@]|$(sysconfdir)|g' \
	-e 's|@localstatedir[@]|$(localstatedir)|g'

$(SPFGATE_UNITS) contrib/spfgate.tmpfiles: Makefile $(SPFGATE_UNIT_TEMPLATES) \
		contrib/spfgate.tmpfiles.in
	$(AM_V_GEN)$(MKDIR_P) $(@D) && rm -f $@ $@.tmp && \
	$(spfgate_edit) $(srcdir)/$@.in > $@.tmp && mv $@.tmp $@

# The sample is written with Debian's paths; the installed copy names the
# configured ones.
contrib/spfgate.conf.sample: Makefile contrib/spfgate.conf
	$(AM_V_GEN)$(MKDIR_P) $(@D) && rm -f $@ $@.tmp && \
	sed -e 's|/etc/spfgate/|$(sysconfdir)/spfgate/|g' \
	    -e 's|/run/spfgate/|$(runstatedir)/spfgate/|g' \
	    -e 's|/var/spool/spfgate|$(localstatedir)/spool/spfgate|g' \
	    -e 's|/var/mail/|$(localstatedir)/mail/|g' \
	    $(srcdir)/contrib/spfgate.conf > $@.tmp && mv $@.tmp $@

spfgate_confdir = $(sysconfdir)/spfgate
spfgate_spooldir = $(localstatedir)/spool/spfgate

install-data-local: install-spfgate-data
uninstall-local: uninstall-spfgate-data

install-spfgate-data: contrib/spfgate.conf.sample contrib/spfgate.tmpfiles
	$(MKDIR_P) '$(DESTDIR)$(spfgate_confdir)' '$(DESTDIR)$(spfgate_spooldir)'
	chmod 0700 '$(DESTDIR)$(spfgate_spooldir)'
	$(INSTALL_DATA) contrib/spfgate.conf.sample '$(DESTDIR)$(spfgate_confdir)/spfgate.conf.sample'
	@if test -f '$(DESTDIR)$(spfgate_confdir)/spfgate.conf'; then \
	  echo "keeping $(DESTDIR)$(spfgate_confdir)/spfgate.conf"; \
	else \
	  echo " $(INSTALL_DATA) contrib/spfgate.conf.sample '$(DESTDIR)$(spfgate_confdir)/spfgate.conf'"; \
	  $(INSTALL_DATA) contrib/spfgate.conf.sample '$(DESTDIR)$(spfgate_confdir)/spfgate.conf'; \
	fi
if HAVE_SYSUSERSDIR
	$(MKDIR_P) '$(DESTDIR)$(sysusersdir)'
	$(INSTALL_DATA) $(srcdir)/contrib/spfgate.sysusers '$(DESTDIR)$(sysusersdir)/spfgate.conf'
endif
if HAVE_TMPFILESDIR
	$(MKDIR_P) '$(DESTDIR)$(tmpfilesdir)'
	$(INSTALL_DATA) contrib/spfgate.tmpfiles '$(DESTDIR)$(tmpfilesdir)/spfgate.conf'
endif

# An unchanged spfgate.conf goes with the sample; an edited one stays.
uninstall-spfgate-data:
	-cmp -s '$(DESTDIR)$(spfgate_confdir)/spfgate.conf' \
	     '$(DESTDIR)$(spfgate_confdir)/spfgate.conf.sample' && \
	  rm -f '$(DESTDIR)$(spfgate_confdir)/spfgate.conf'
	rm -f '$(DESTDIR)$(spfgate_confdir)/spfgate.conf.sample'
if HAVE_SYSUSERSDIR
	rm -f '$(DESTDIR)$(sysusersdir)/spfgate.conf'
endif
if HAVE_TMPFILESDIR
	rm -f '$(DESTDIR)$(tmpfilesdir)/spfgate.conf'
endif

.PHONY: install-spfgate-data uninstall-spfgate-data

# distcheck installs under its own prefix: the systemd files too.
if HAVE_SYSTEMDSYSTEMUNITDIR
AM_DISTCHECK_CONFIGURE_FLAGS += \
	--with-systemdsystemunitdir='$$dc_install_base/$(systemdsystemunitdir)'
else
AM_DISTCHECK_CONFIGURE_FLAGS += --without-systemdsystemunitdir
endif
if HAVE_SYSUSERSDIR
AM_DISTCHECK_CONFIGURE_FLAGS += --with-sysusersdir='$$dc_install_base/$(sysusersdir)'
else
AM_DISTCHECK_CONFIGURE_FLAGS += --without-sysusersdir
endif
if HAVE_TMPFILESDIR
AM_DISTCHECK_CONFIGURE_FLAGS += --with-tmpfilesdir='$$dc_install_base/$(tmpfilesdir)'
else
AM_DISTCHECK_CONFIGURE_FLAGS += --without-tmpfilesdir
endif
