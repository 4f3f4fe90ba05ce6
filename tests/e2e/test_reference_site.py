"""The reference site of DESIGN.md, end to end, on loopback.

Three spfgate installations (relayd + filterd + deliverd each; the
smarthost without filterd), one real DNS server (nsd) publishing every
MX, A and SPF record, each host on its own loopback address and the same
SMTP port (deliverd's smtp_port and smtp_bind_address stand in for port
25 and a host's own address):

  site A  zero.cs.utahtech.edu          127.0.0.11  smarthost: stumail
  site B  mail.thegummibear.com         127.0.0.22  smarthost: stumail
          (local domains thegummibear.com, mail.thegummibear.com)
  stumail.cs.utahtech.edu               127.0.0.33  relays for A and B, by MX
  an intruder                           127.0.0.44
  a foreign host                        127.0.0.45

The SPF records are the seed record adapted to these addresses.  Alice
writes to bob through her site's smarthost, which finds site B by its MX;
bob reads it with mailutils' mail(1), SPF pass in its
Authentication-Results, and answers with mail(1), which hands the reply
to site B's relayd through spfgate-sendmail; alice receives it.  The
intruder sending as alice is refused at MAIL with 550 5.7.23; the foreign
host trying to relay through site B to a third domain is refused at RCPT.
"""
import email
import os
import pathlib
import shutil
import socket
import subprocess

import pytest

from conftest import poll
from deliverd import Deliverd
from dnsserver import DnsServer
from filterd import Filterd
from relayd import Relayd

A, B, SH, INTRUDER, FOREIGN = "127.0.0.11", "127.0.0.22", "127.0.0.33", "127.0.0.44", "127.0.0.45"
MAIL = "/usr/bin/mail"

ZONES = {
    "thegummibear.com": f"""
@       MX  10 mail
@       TXT "v=spf1 mx ip4:{B} a:stumail.cs.utahtech.edu ~all"
mail    A   {B}
""",
    "cs.utahtech.edu": f"""
zero    MX  10 zero
zero    A   {A}
zero    TXT "v=spf1 mx ip4:{A} a:stumail.cs.utahtech.edu -all"
stumail A   {SH}
""",
    # a legitimate sender elsewhere, which may mail site B but not relay
    "foreign.example": f'@ TXT "v=spf1 ip4:{FOREIGN} -all"\n',
}


def common_port(addrs):
    """A TCP port free on every one of addrs."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((addrs[0], 0))
            port = s.getsockname()[1]
        try:
            for a in addrs[1:]:
                with socket.socket() as s:
                    s.bind((a, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


class Site:
    """relayd + (filterd) + deliverd of one host."""

    def __init__(self, top, name, addr, port, dns, mail_name, local_domains,
                 relay_networks, users=(), smarthost=None, milter=True):
        b = os.environ["SPFGATE_BUILDDIR"]
        d = top / name
        common = {"mail_name": mail_name, "local_domains": local_domains}
        extra = {"smarthost": smarthost, "smarthost_tls": "opportunistic"} if smarthost else {}
        self.deliverd = Deliverd(b, d / "deliverd", users=users, nameserver=dns.addr,
                                 smtp_port=port, smtp_bind_address=addr, retry_min="1s",
                                 **common, **extra)
        self.filterd = (Filterd(b, d / "filterd", nameserver=dns.addr,
                                relay_networks=relay_networks, **common)
                        if milter else None)
        self.relayd = Relayd(b, d / "relayd", lmtp=f"unix:{self.deliverd.sock}",
                             listen=f"{addr}:{port}", port=port, tls=True,
                             relay_networks=relay_networks, nameservers=dns.addr,
                             milters=self.filterd.listen if milter else "", **common)

    def start(self):
        self.deliverd.start()
        if self.filterd:
            self.filterd.start()
        self.relayd.start()
        return self

    def stop(self):
        for p in (self.relayd, self.filterd, self.deliverd):
            if p is not None:
                try:
                    p.stop()
                finally:
                    if hasattr(p, "cleanup"):
                        p.cleanup()

    def logs(self):
        return "\n".join(p.log() for p in (self.relayd, self.filterd, self.deliverd) if p)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    for tool in (MAIL,):
        if not os.path.exists(tool):
            pytest.fail(f"{tool} is missing: apt-get install -y mailutils")
    top = tmp_path_factory.mktemp("site")
    dns = DnsServer(top / "nsd", ZONES)
    dns.start()
    port = common_port([A, B, SH, INTRUDER, FOREIGN])
    sites = {}
    try:
        sites["a"] = Site(top, "a", A, port, dns, "zero.cs.utahtech.edu", "zero.cs.utahtech.edu",
                          f"{A}/32", users=("alice",),
                          smarthost=f"stumail.cs.utahtech.edu:{port}").start()
        # local programs (sendmail) reach relayd from 127.0.0.1
        sites["b"] = Site(top, "b", B, port, dns, "mail.thegummibear.com",
                          "thegummibear.com, mail.thegummibear.com",
                          f"{B}/32, 127.0.0.1/32", users=("bob",),
                          smarthost=f"stumail.cs.utahtech.edu:{port}").start()
        sites["sh"] = Site(top, "sh", SH, port, dns, "stumail.cs.utahtech.edu",
                           "stumail.cs.utahtech.edu", f"{A}/32, {B}/32",
                           milter=False).start()
        yield sites
    finally:
        for s in sites.values():
            s.stop()
        dns.stop()


def wait_message(site, user, subject):
    def find():
        for m in site.deliverd.messages(user):
            if m["Subject"] == subject:
                return m
        return None
    try:
        return poll(find, 30, f"{subject!r} in {user}'s mailbox")
    except AssertionError as e:
        raise AssertionError(f"{e}\n" + "\n".join(s for s in (site.logs(),))) from None


def mail_read(box, home):
    """mailutils mail(1) prints message 1 of the mbox."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C", "MAILRC": "/dev/null"}
    r = subprocess.run([MAIL, "-n", "-N", "-f", str(box)], input="set showall\nprint 1\n",
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_alice_to_bob_through_smarthost_and_mx(world, tmp_path):
    a, b, sh = world["a"], world["b"], world["sh"]
    with a.relayd.smtp(source=A) as s:          # alice's MUA on site A
        s.ehlo("zero.cs.utahtech.edu")
        assert s.sendmail("alice@zero.cs.utahtech.edu", ["bob@thegummibear.com"],
                          "From: Alice <alice@zero.cs.utahtech.edu>\r\n"
                          "To: bob@thegummibear.com\r\nSubject: hello bob\r\n\r\n"
                          "Hi Bob, greetings from zero.\r\n") == {}
    m = wait_message(b, "bob", "hello bob")
    # it went A -> stumail (smarthost) -> B (MX)
    a.deliverd.wait_log(rf"to=bob@thegummibear\.com .*relay=stumail\.cs\.utahtech\.edu\[{SH}\]"
                        r".*status=sent", timeout=30)
    sh.deliverd.wait_log(rf"to=bob@thegummibear\.com .*relay=mail\.thegummibear\.com\[{B}\]"
                         r".*status=sent", timeout=30)
    ar = " ".join(" ".join(m.get_all("Authentication-Results")).split())
    assert ar.startswith("mail.thegummibear.com;"), ar
    assert "spf=pass smtp.mailfrom=alice@zero.cs.utahtech.edu" in ar, ar
    rspf = " ".join(m["Received-SPF"].split())
    assert rspf.startswith("pass ") and f"client-ip={SH};" in rspf, rspf
    # bob reads it with mail(1)
    shown = mail_read(b.deliverd.mailbox("bob"), tmp_path)
    assert "Subject: hello bob" in shown and "Hi Bob, greetings from zero." in shown, shown
    assert "spf=pass" in shown, shown


def test_bob_replies_with_mail_and_alice_receives(world, tmp_path):
    a, b = world["a"], world["b"]
    sendmail = pathlib.Path(os.environ["SPFGATE_BUILDDIR"]) / "relayd" / "spfgate-sendmail"
    if not sendmail.exists():
        pytest.fail(f"{sendmail} not built")
    # mail(1) on site B, its sendmail being spfgate-sendmail with site B's configuration
    wrapper = tmp_path / "sendmail"
    wrapper.write_text(f"#!/bin/sh\nexec {sendmail} -C {b.relayd.conf} \"$@\"\n")
    wrapper.chmod(0o755)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LC_ALL": "C", "MAILRC": "/dev/null"}
    r = subprocess.run([MAIL, "-n", "-E", f"set sendmail=sendmail:{wrapper}",
                        "-r", "bob@thegummibear.com", "-s", "Re: hello bob",
                        "alice@zero.cs.utahtech.edu"],
                       input="Hello Alice, got it.\n", capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    m = wait_message(a, "alice", "Re: hello bob")
    assert m.get_payload().strip() == "Hello Alice, got it."
    ar = " ".join(" ".join(m.get_all("Authentication-Results")).split())
    assert ar.startswith("zero.cs.utahtech.edu;"), ar
    assert "spf=pass smtp.mailfrom=bob@thegummibear.com" in ar, ar


def test_intruder_as_alice_refused(world):
    b = world["b"]
    with b.relayd.smtp(source=INTRUDER) as s:
        s.ehlo("intruder.example")
        code, text = s.mail("alice@zero.cs.utahtech.edu")
    assert code == 550 and text.startswith(b"5.7.23"), (code, text)
    b.filterd.wait_log(rf"client={INTRUDER} .*spf=fail .*action=reject")


def test_foreign_host_cannot_relay_through_b(world):
    b = world["b"]
    with b.relayd.smtp(source=FOREIGN) as s:
        s.ehlo("foreign.example")
        code, _ = s.mail("someone@foreign.example")
        assert code == 250
        code, text = s.rcpt("victim@third.example")
        assert code == 554 and text.startswith(b"5.7.1"), (code, text)
        # its own domains are still open to it
        assert s.rcpt("bob@thegummibear.com")[0] == 250
