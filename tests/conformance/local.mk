# RFC 7208 conformance: the openspf.org suite (kept outside the repository,
# in ../shared/conformance) through filterd/spfgate-policy, as TAP.
TESTS += tests/conformance/rfc7208.py
EXTRA_DIST += tests/conformance/rfc7208.py
