"""relayd with Debian's pyspf-milter as its milter, the whole path with
real peers: SMTP client -> relayd -> pyspf-milter (unix socket) -> DNS
(nsd) -> LMTP -> deliverd -> mbox.

pyspf-milter, as packaged, is started with a configuration file of the
test's own (its one argument) that undoes what would hide a loopback
client from it: skip_addresses and InternalHosts set to addresses no
client uses (an empty skip_addresses makes spf_engine 3.0.4 raise at
MAIL: "untrapped exception", 451).  It resolves through dnspython's system resolver, i.e.
/etc/resolv.conf, which has no port syntax: it runs in a private mount
namespace (`unshare -m`) where a resolv.conf of the test's is bind-mounted
over /etc/resolv.conf, naming an nsd that listens on port 53 of a
loopback address of its own, picked at random in 127.0.0.0/8 and checked
free (the address, not the port, keeps parallel runs apart).  Root is
needed for both, as the suite runs.

sender.test allows 127.0.0.2 and nobody else; the HELO name has no SPF
record (pyspf-milter's HELO check gives none and goes on to MAIL FROM).
"""
import os
import random
import shutil
import socket
import subprocess
import tempfile

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

from conftest import poll
from deliverd import deliverd_factory  # noqa: F401  (fixture)
from dnsserver import DnsServer
from relayd import MAIL_NAME, relayd_factory  # noqa: F401  (fixture)

PYSPF = "/usr/bin/pyspf-milter"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
ZONE = r'''
@     TXT "v=spf1 ip4:127.0.0.2 -all"
'''
GOOD, FORGED = "127.0.0.2", "127.0.0.3"
HELO = "client.sender.test"


def message(subject):
    return ("From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\n"
            f"Subject: {subject}\r\nDate: Mon, 30 Nov 2026 01:00:00 +0000\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@sender.test>\r\n"
            "\r\nHello Bob.\r\n")


def free_loopback_53():
    """A 127.0.0.0/8 address whose port 53 is free for TCP and UDP now."""
    rnd = random.Random()
    for _ in range(50):
        ip = f"127.{rnd.randrange(100, 250)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((ip, 53))
            return ip
        except OSError:
            continue
    raise RuntimeError("no loopback address with a free port 53")


class Dns53(DnsServer):
    """The tests' nsd, on port 53 of the loopback address ip."""

    def __init__(self, tmpdir, zones, ip):
        super().__init__(tmpdir, zones, port=53)
        self.ip = ip
        self.addr = f"{ip}:53"

    def _write(self):
        super()._write()
        conf = self.dir / "nsd.conf"
        text = conf.read_text()
        assert "ip-address: 127.0.0.1@53" in text, text
        conf.write_text(text.replace("ip-address: 127.0.0.1@53", f"ip-address: {self.ip}@53"))

    def _answers(self):
        q = dns.message.make_query(self._origins()[0] + ".", dns.rdatatype.SOA)
        try:
            return bool(dns.query.udp(q, self.ip, port=53, timeout=0.2).answer)
        except (dns.exception.DNSException, OSError):
            return False


@pytest.fixture(scope="module")
def dns53(tmp_path_factory):
    srv = Dns53(tmp_path_factory.mktemp("nsd"), {"sender.test": ZONE}, free_loopback_53())
    srv.start()
    yield srv
    srv.stop()


class PyspfMilter:
    def __init__(self, nameserver_ip):
        self.dir = tempfile.mkdtemp(prefix="ps", dir="/tmp")   # short: sun_path
        self.sock = os.path.join(self.dir, "spf.sock")
        self.pidfile = os.path.join(self.dir, "pyspf-milter.pid")
        self.conf = os.path.join(self.dir, "pyspf-milter.conf")
        self.resolv = os.path.join(self.dir, "resolv.conf")
        self.logfile = os.path.join(self.dir, "pyspf-milter.log")
        with open(self.resolv, "w") as f:
            f.write(f"nameserver {nameserver_ip}\noptions timeout:2 attempts:1\n")
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "debugLevel = 1",
                "TestOnly = 1",                 # 1: act on the results
                "HELO_reject = Fail",
                "Mail_From_reject = Fail",
                "PermError_reject = False",
                "TempError_Defer = False",
                # check loopback clients too; not empty: spf_engine 3.0.4
                # crashes on an empty list (_spfbypass returns None)
                "skip_addresses = 192.0.2.255/32",
                "InternalHosts = 192.0.2.254",  # nobody here is "internal"
                f"Authserv_Id = {MAIL_NAME}",
                f"Socket = unix:{self.sock}",
                f"PidFile = {self.pidfile}",
                "UserID = root",                # relayd runs as root here
                "Lookup_Time = 5",
            ]) + "\n")
        self.proc = None

    def start(self):
        for tool in (PYSPF, UNSHARE):
            if not os.path.exists(tool):
                pytest.fail(f"{tool} is missing (apt-get install -y pyspf-milter util-linux)")
        log = open(self.logfile, "wb")
        try:
            self.proc = subprocess.Popen(
                [UNSHARE, "-m", "sh", "-c",
                 'mount --bind "$1" /etc/resolv.conf && exec "$2" "$3"', "sh",
                 self.resolv, PYSPF, self.conf],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        poll(self._listening, 20, f"pyspf-milter on {self.sock}: {self.log()}")
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"pyspf-milter exited {self.proc.returncode}: {self.log()}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)   # with its stale pid file


@pytest.fixture(scope="module")
def pyspf(dns53):
    # one for the module: libmilter takes seconds to stop after SIGTERM
    m = PyspfMilter(dns53.ip)
    try:
        yield m.start()
    finally:
        m.stop()


@pytest.fixture
def chain(deliverd_factory, relayd_factory, pyspf):
    d = deliverd_factory(user="")
    r = relayd_factory(lmtp=f"unix:{d.sock}", milters=f"unix:{pyspf.sock}", user="",
                       milter_default_action="tempfail")
    return r, d


def test_spf_fail_refused_at_mail_with_pyspf_reply(chain):
    r, d = chain
    c = r.raw(source=FORGED)
    try:
        code, lines = c.cmd(f"EHLO {HELO}")
        assert code == 250, lines
        code, lines = c.cmd("MAIL FROM:<alice@sender.test>")
        text = " ".join(lines)
        assert code == 550, lines
        assert lines[-1].startswith("550 5.7.23 "), lines
        # pyspf's own reason text (Reason_Message), not relayd's default
        assert "Message rejected due to: SPF fail - not authorized." in text, lines
        assert f"ip={FORGED}" in text, lines
        code, lines = c.cmd("RCPT TO:<bob@example.test>")
        assert code == 503, lines
        c.cmd("QUIT")
    finally:
        c.close()
    r.wait_log(rf'reject from=<alice@sender.test> reply="550 5.7.23" client=\[{FORGED}\]')
    assert d.messages("bob") == []


def test_spf_pass_delivered_with_pyspf_header(chain):
    r, d = chain
    with r.smtp(source=GOOD) as s:
        s.ehlo(HELO)
        assert s.sendmail("alice@sender.test", ["bob@example.test"], message("spf pass")) == {}
    m = d.wait_mailbox("bob")[0]
    assert m["Subject"] == "spf pass"
    ar = [" ".join(h.split()) for h in m.get_all("Authentication-Results", [])]
    assert len(ar) == 1, ar
    assert ar[0].startswith(f"{MAIL_NAME}; spf=pass"), ar
    assert "smtp.mailfrom=sender.test" in ar[0], ar
    assert f"client-ip={GOOD}; " in ar[0], ar
    assert "envelope-from=alice@sender.test" in ar[0], ar
    # (pyspf-milter's helo= is the connect-time host name, "[127.0.0.2]"
    # from relayd as from Sendmail without a PTR name: it never reads HELO)
    # pyspf-milter inserts it at the top, right above relayd's Received:
    # (deliverd's own Received: and its envelope headers come above both)
    fields = [(k.lower(), " ".join(v.split())) for k, v in m.items()]
    ours = next(i for i, (k, v) in enumerate(fields)
                if k == "received" and "(spfgate relayd)" in v)
    assert fields[ours - 1][0] == "authentication-results", fields
