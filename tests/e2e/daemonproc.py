"""What the fixtures of spfgate's three daemons (deliverd.py, filterd.py,
relayd.py) share: a daemon started from the build tree, its output
appended to a log file, ready when ready() says so (polled, bounded),
stopped with SIGTERM (SIGKILL after a bound).

A subclass sets binary, conf, logfile and ready(); `args` are the
options before "-c FILE" ("-d": log to stderr), `prefix` a command to run
the daemon under (e.g. setpriv with a unit's capabilities).
"""
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import poll


class DaemonProcess:
    name = "daemon"
    stop_timeout = 20

    def __init__(self):
        self.proc = None
        self.prefix = []
        self.args = ["-d"]

    def ready(self):
        raise NotImplementedError

    def describe(self):
        """Where it should be listening, for the error when it is not."""
        return ""

    def start(self, timeout=15):
        if not self.binary.exists():
            pytest.fail(f"{self.binary} not built")
        log = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(
                [*self.prefix, str(self.binary), *self.args, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            try:
                # paces the polling and notices a daemon that gave up
                self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self.stop()
                raise RuntimeError(f"{self.name} did not listen{self.describe()}:\n{self.log()}")
            rc = self.proc.returncode
            self.proc = None
            raise RuntimeError(f"{self.name} exited with {rc}:\n{self.log()}")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=None):
        """SIGTERM, wait (bounded), then SIGKILL; returns the exit status."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout or self.stop_timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
            rc = self.proc.returncode
            self.proc = None
        return rc

    def log(self):
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=10):
        """The first log line matching pattern (regex), polled, bounded."""
        rx = re.compile(pattern)

        def find():
            for line in self.log().splitlines():
                if rx.search(line):
                    return line
            return None
        try:
            return poll(find, timeout, f"a log line matching {pattern!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}:\n{self.log()}") from None

    def sanitizer_reports(self):
        """AddressSanitizer/UBSan findings in the log (sanitizer builds)."""
        return [line for line in self.log().splitlines()
                if "Sanitizer" in line or "runtime error:" in line]
