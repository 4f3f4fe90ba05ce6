"""A real authoritative DNS server (Debian's nsd) for end-to-end tests.

DnsServer(tmpdir, {"example.com": "<master file text>"}) writes an nsd
configuration and the zone files under tmpdir and runs nsd in the
foreground on 127.0.0.1 and a free port, as the current user (no chroot,
no privilege drop, every state file under tmpdir, response-rate limiting
off so load tests are not silently dropped).  Zone texts are master files
relative to their origin; a $ORIGIN/$TTL header and, when the text has
none, a SOA record are added, so a test can write just the records it
needs ("www A 192.0.2.1").

Use the `dns_server` fixture for a factory whose servers stop at the end
of the test:

    def test_x(dns_server):
        srv = dns_server({"example.com": "www A 192.0.2.1"})
        ... srv.addr ...     # "127.0.0.1:PORT"
"""
import os
import pathlib
import re
import shutil
import signal
import subprocess

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

from conftest import free_port_both

NSD = shutil.which("nsd") or "/usr/sbin/nsd"

_SOA_RE = re.compile(r"^[^;\n]*\bSOA\b", re.IGNORECASE | re.MULTILINE)


def _zone_text(origin, text):
    head = f"$ORIGIN {origin}.\n$TTL 300\n"
    if not _SOA_RE.search(text):
        head += (f"@ IN SOA ns.{origin}. hostmaster.{origin}. "
                 "1 3600 600 86400 300\n")
    return head + text + "\n"


class DnsServer:
    """One nsd instance serving the given zones on 127.0.0.1."""

    def __init__(self, tmpdir, zones, port=None):
        self.dir = pathlib.Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.zones = dict(zones)
        self.port = port or free_port_both()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = None
        self._log = None

    def _origins(self):
        return [o.rstrip(".").lower() for o in self.zones]

    def _write(self):
        d = self.dir
        conf = [
            "server:",
            f"    ip-address: 127.0.0.1@{self.port}",
            f"    port: {self.port}",
            "    do-ip6: no",
            '    username: ""',
            '    chroot: ""',
            f'    zonesdir: "{d}"',
            f'    pidfile: "{d}/nsd.pid"',
            f'    database: "{d}/nsd.db"',
            f'    xfrdfile: "{d}/xfrd.state"',
            f'    xfrdir: "{d}"',
            f'    zonelistfile: "{d}/zone.list"',
            f'    cookie-secret-file: "{d}/cookiesecrets.txt"',
            "    server-count: 1",
            "    verbosity: 1",
            "    rrl-ratelimit: 0",
            "remote-control:",
            "    control-enable: no",
        ]
        for origin, text in self.zones.items():
            o = origin.rstrip(".")
            fname = f"{o.lower()}.zone"
            (d / fname).write_text(_zone_text(o, text))
            conf += ["zone:", f"    name: {o}", f'    zonefile: "{d}/{fname}"']
        (d / "nsd.conf").write_text("\n".join(conf) + "\n")
        # a fresh database each time: nsd would otherwise prefer what it
        # stored over changed zone files
        for stale in ("nsd.db", "xfrd.state", "zone.list"):
            try:
                (d / stale).unlink()
            except FileNotFoundError:
                pass

    def log(self):
        try:
            return (self.dir / "nsd.log").read_text(errors="replace")
        except OSError:
            return ""

    def _answers(self):
        """True once nsd gives an authoritative answer for the first zone."""
        origin = self._origins()[0] + "."
        q = dns.message.make_query(origin, dns.rdatatype.SOA)
        try:
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        return bool(r.answer)

    def start(self, tries=100):
        if not os.path.exists(NSD):
            pytest.fail("nsd is not installed (apt-get install -y nsd)")
        if not self.zones:
            raise ValueError("DnsServer needs at least one zone")
        self._write()
        self._log = open(self.dir / "nsd.log", "ab")
        self.proc = subprocess.Popen(
            [NSD, "-d", "-c", str(self.dir / "nsd.conf")],
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(tries):
            if self._answers():
                return self
            # waiting on the process paces the polling and notices an
            # nsd that gave up (bad zone, port taken)
            try:
                self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            break
        log = self.log()
        self.stop()
        raise RuntimeError(f"nsd did not start on {self.addr}:\n{log}")

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def reload(self, zones):
        """Serve new zone texts, on the same address, once this returns."""
        self.stop()
        self.zones = dict(zones)
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def dns_server(tmp_path):
    """Factory: dns_server(zones) -> started DnsServer, stopped at teardown."""
    servers = []

    def make(zones):
        srv = DnsServer(tmp_path / f"nsd{len(servers)}", zones)
        servers.append(srv)
        return srv.start()

    yield make
    for srv in servers:
        srv.stop()
