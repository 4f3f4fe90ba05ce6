"""A milter that quarantines, built on Debian's pymilter (python3-milter,
i.e. the real libmilter on the wire), for tests/e2e/test_quarantine.py.

    /usr/bin/python3 quarantine_milter.py unix:/path/to/sock

A message carrying an "X-Test-Quarantine: <reason>" header is quarantined
at end of message with that reason (smfi_quarantine); every other message
is accepted untouched.  SIGTERM stops it (libmilter's own handling).
"""
import sys

import Milter

HEADER = "x-test-quarantine"


class QuarantineMilter(Milter.Base):
    def __init__(self):
        self.reason = None

    def envfrom(self, sender, *params):
        self.reason = None
        return Milter.CONTINUE

    def header(self, name, value):
        if name.lower() == HEADER:
            self.reason = " ".join(value.split())
        return Milter.CONTINUE

    def eom(self):
        if self.reason:
            self.quarantine(self.reason)
        return Milter.ACCEPT


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: quarantine_milter.py unix:/PATH")
    Milter.factory = QuarantineMilter
    Milter.set_flags(Milter.QUARANTINE)
    Milter.runmilter("quarantine-test", sys.argv[1], 30)


if __name__ == "__main__":
    main()
