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
import shutil
import socket
import tempfile
import pathlib

import pytest

from conftest import free_port
from daemonproc import DaemonProcess

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


class Filterd(DaemonProcess):
    name = "filterd"

    def __init__(self, builddir, tmpdir, nameserver="", kind="unix", address=None,
                 **config):
        """address: a socket path (unix) or port (inet) to reuse; default new."""
        super().__init__()
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

    def describe(self):
        return f" on {self.listen}"

    def stop(self, timeout=None):
        """SIGTERM, wait; returns filterd's exit status (and removes the
        socket directory it made)."""
        rc = super().stop(timeout)
        if self.sockdir:
            shutil.rmtree(self.sockdir, ignore_errors=True)
            self.sockdir = None
        return rc

    def ready(self):
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
