"""Run relayd from the build tree for end-to-end tests.

    r = Relayd(builddir, tmp_path / "r", lmtp=d.lmtp_spec, tls=True,
               relay_networks="127.0.0.1/32", message_size_limit=100000)
    r.start()                 # returns once the greeting comes (bounded poll)
    c = r.smtp(source="127.0.0.2")  # a connected smtplib.SMTP
    s = r.raw(source="127.0.0.2")   # a RawClient (exact bytes, reads replies)
    r.reload()                # SIGHUP
    r.stop()                  # SIGTERM, SIGKILL after a bound; -> rc

Layout under the directory given:
    relayd.conf   the configuration (written by the constructor)
    relayd.log    relayd -d's stderr
    cert.pem key.pem   a self-signed certificate when tls=True

Keyword arguments other than the named ones are [global]/[relayd] keys
(mail_name, local_domains and relay_networks go to [global]).

The `relayd_factory` fixture makes instances, starts them and stops them
at teardown, failing the test on a sanitizer report in the log.
"""
import os
import pathlib
import signal
import smtplib
import socket
import subprocess

import pytest

from conftest import free_port
from daemonproc import DaemonProcess

MAIL_NAME = "mx.example.test"
LOCAL_DOMAINS = "example.test, mx.example.test"
GLOBAL_KEYS = {"mail_name", "local_domains", "relay_networks", "nameservers",
               "dns_timeout", "log"}


def make_cert(directory, cn="mx.example.test"):
    cert = pathlib.Path(directory) / "cert.pem"
    key = pathlib.Path(directory) / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "2",
                        "-subj", f"/CN={cn}"], check=True, capture_output=True,
                       timeout=60)
    return cert, key


class RawClient:
    """A socket speaking exact bytes; replies read whole (multi-line)."""

    def __init__(self, host, port, source=None, timeout=10):
        self.sock = socket.create_connection(
            (host, port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; buffered {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode(errors="replace")

    def reply(self):
        """(code, [lines]) of one reply."""
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if len(ln) < 4 or ln[3] != "-":
                return int(ln[:3]), lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()

    def closed(self, timeout=10):
        """True if the server closes the connection (reads to EOF)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


class Relayd(DaemonProcess):
    name = "relayd"
    stop_timeout = 40    # a stop drains sessions for up to 30 s

    def __init__(self, builddir, tmpdir, lmtp=None, tls=False, port=None,
                 listen=None, binary=None, **config):
        super().__init__()
        self.builddir = pathlib.Path(builddir)
        self.binary = pathlib.Path(binary) if binary else self.builddir / "relayd" / "relayd"
        self.dir = pathlib.Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.listen = listen or f"127.0.0.1:{self.port}"
        # where clients connect: the first listen address (a wildcard: loopback)
        first = self.listen.split(",")[0].strip().rsplit(":", 1)[0].strip("[]")
        self.host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(first, first)
        self.conf = self.dir / "relayd.conf"
        self.logfile = self.dir / "relayd.log"
        g = {"mail_name": MAIL_NAME, "local_domains": LOCAL_DOMAINS,
             "relay_networks": "127.0.0.1/32", "log": "stderr"}
        r = {"listen": self.listen,
             "lmtp": lmtp or f"inet:{free_port()}@127.0.0.1"}
        if tls:
            self.cert, self.key = make_cert(self.dir)
            r["tls_cert_file"] = str(self.cert)
            r["tls_key_file"] = str(self.key)
        r["user"] = ""   # stay as started unless a test says
        for k, v in config.items():
            (g if k in GLOBAL_KEYS else r)[k] = v
        self.write_config(g, r)

    def write_config(self, g, r):
        lines = ["[global]"] + [f"{k} = {v}" for k, v in g.items()]
        lines += ["[relayd]"] + [f"{k} = {v}" for k, v in r.items()]
        self.conf.write_text("\n".join(lines) + "\n")

    def ready(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                ok = s.recv(512).startswith(b"220")
                s.sendall(b"QUIT\r\n")
                # read to EOF: relayd has dropped the session by then, so
                # this probe never counts against a session limit
                while s.recv(512):
                    pass
                return ok
        except OSError:
            return False

    def reload(self):
        os.kill(self.proc.pid, signal.SIGHUP)

    def smtp(self, source=None, timeout=20):
        return smtplib.SMTP(self.host, self.port, timeout=timeout,
                            source_address=(source, 0) if source else None)

    def raw(self, source=None, greeting=True, timeout=10):
        c = RawClient(self.host, self.port, source=source, timeout=timeout)
        if greeting:
            code, lines = c.reply()
            assert code == 220, lines
        return c


@pytest.fixture
def relayd_factory(builddir, tmp_path):
    """Factory: relayd_factory(start=True, **Relayd kwargs) -> Relayd."""
    made = []

    def make(start=True, **kw):
        r = Relayd(builddir, tmp_path / f"relayd{len(made)}", **kw)
        made.append(r)
        return r.start() if start else r

    yield make
    for r in made:
        r.stop()
    for r in made:
        assert not r.sanitizer_reports(), r.log()
