"""Run filterd from the build tree for end-to-end tests.

Filterd(builddir, tmpdir, nameserver=..., kind="unix"|"inet") writes a
configuration file, starts filterd in the foreground logging to a file
(-d), and returns once its socket accepts connections: polled, bounded,
never a fixed sleep.  stop() sends SIGTERM and reaps it.

Socket names in the three syntaxes the peers want:
    .listen       libmilter's, as in the config  (inet:PORT@127.0.0.1)
    .miltertest   miltertest's                   (inet:PORT@127.0.0.1)
    .postfix      Postfix's smtpd_milters        (inet:127.0.0.1:PORT)

The `filterd_factory` fixture makes them and stops them at teardown.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import pathlib

import pytest

from conftest import free_port

MAIL_NAME = "mx.example.test"


def write_config(path, listen, nameserver="", mail_name=MAIL_NAME,
                 local_domains="example.test, mx.example.test",
                 relay_networks="127.0.0.1/32, ::1", dns_timeout=2, log="stderr",
                 **filterd):
    lines = ["[global]",
             f"mail_name = {mail_name}",
             f"local_domains = {local_domains}",
             f"relay_networks = {relay_networks}",
             f"nameservers = {nameserver}",
             f"dns_timeout = {dns_timeout}",
             f"log = {log}",
             "[filterd]",
             f"listen = {listen}"]
    filterd.setdefault("user", "")   # stay as started unless a test says
    lines += [f"{k} = {v}" for k, v in filterd.items()]
    pathlib.Path(path).write_text("\n".join(lines) + "\n")
    return path


class Filterd:
    def __init__(self, builddir, tmpdir, nameserver="", kind="unix", address=None,
                 **config):
        """address: a socket path (unix) or port (inet) to reuse; default new."""
        self.binary = pathlib.Path(builddir) / "filterd" / "filterd"
        self.dir = pathlib.Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.sockdir = None
        if kind == "unix":
            if address:
                self.path = address
            else:
                # sun_path holds 108 bytes, pytest's tmp paths can be longer;
                # world-searchable so that Postfix's smtpd (user postfix) gets in
                self.sockdir = tempfile.mkdtemp(prefix="fd", dir="/tmp")
                os.chmod(self.sockdir, 0o755)
                self.path = os.path.join(self.sockdir, "filterd.sock")
            self.listen = f"unix:{self.path}"
            self.miltertest = self.listen
            self.postfix = self.listen
        else:
            self.port = address or free_port()
            self.listen = f"inet:{self.port}@127.0.0.1"
            self.miltertest = self.listen
            self.postfix = f"inet:127.0.0.1:{self.port}"
        # log="files:/DIR" (a [global] key): filterd runs without -d
        self.args = ["-d"] if config.get("log", "stderr") == "stderr" else []
        self.conf = write_config(self.dir / "filterd.conf", self.listen,
                                 nameserver=nameserver, **config)
        self.logfile = self.dir / "filterd.log"
        self.proc = None
        # a command to run the daemon under, e.g. setpriv with a unit's capabilities
        self.prefix = []

    def _accepts(self):
        if self.kind == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr = self.path
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            addr = ("127.0.0.1", self.port)
        s.settimeout(1)
        try:
            s.connect(addr)
            return True
        except OSError:
            return False
        finally:
            s.close()

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
        while not self._accepts():
            try:
                # paces the polling and notices a filterd that gave up
                self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self.stop()
                raise RuntimeError(f"filterd did not listen on {self.listen}:\n{self.log()}")
            raise RuntimeError(f"filterd exited with {self.proc.returncode}:\n{self.log()}")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def sanitizer_reports(self):
        """AddressSanitizer/UBSan findings in the log (sanitizer builds)."""
        return [line for line in self.log().splitlines()
                if "Sanitizer" in line or "runtime error:" in line]

    def stop(self, timeout=20):
        """SIGTERM, wait; returns filterd's exit status."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
            rc = self.proc.returncode
            self.proc = None
        if self.sockdir:
            shutil.rmtree(self.sockdir, ignore_errors=True)
            self.sockdir = None
        return rc

    def log(self):
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=10):
        """The first log line matching pattern (regex), polled, bounded."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() >= deadline:
                raise AssertionError(f"no log line matching {pattern!r} in:\n{self.log()}")
            time.sleep(0.05)


@pytest.fixture
def filterd_factory(builddir, tmp_path):
    """Factory: filterd_factory(nameserver=..., kind=..., **config) -> started."""
    started = []

    def make(**kw):
        f = Filterd(builddir, tmp_path / f"filterd{len(started)}", **kw)
        started.append(f)
        return f.start()

    yield make
    for f in started:
        f.stop()
    for f in started:
        assert not f.sanitizer_reports(), f.log()
