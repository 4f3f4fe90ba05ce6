"""filterd behind a real Postfix, over both socket kinds.

A private Postfix instance (postfix.py) listens on a loopback port with
smtpd_milters pointing at filterd; a real DNS server (nsd) publishes the
sender's SPF record.  Clients are Python's smtplib from chosen loopback
source addresses: filterd trusts only 127.0.0.1 (relay_networks), while
Postfix itself would relay for all of 127.0.0.0/8, so every refusal seen
here is filterd's.  sender.test allows 127.0.0.2 and nobody else.
"""
import email
import email.policy
import os
import shutil
import smtplib
import tempfile

import pytest

import postfix
from conftest import free_port, poll
from dnsserver import DnsServer
from filterd import MAIL_NAME, Filterd

ZONE = r'''
@     TXT "v=spf1 ip4:127.0.0.2 exp=why.sender.test -all"
why   TXT "%{i} may not send mail for %{d}"
'''

@pytest.fixture(autouse=True)
def _need_postfix():
    # A missing peer is a failure, never a silent skip.
    if not postfix.available():
        pytest.fail(postfix.install_hint())

GOOD, FORGED = "127.0.0.2", "127.0.0.3"
# one mailbox per delivering test: the Postfix instance is shared
MAILBOXES = ["bob@example.test", "dave@example.test"]


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    srv = DnsServer(tmp_path_factory.mktemp("nsd"), {"sender.test": ZONE})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["unix", "inet"])
def postfix_mta(request, builddir, tmp_path_factory):
    """One Postfix per socket kind; its milter address outlives filterds."""
    tmp = tmp_path_factory.mktemp(f"postfix-{request.param}")
    sockdir = tempfile.mkdtemp(prefix="fd", dir="/tmp")
    os.chmod(sockdir, 0o755)
    address = (os.path.join(sockdir, "filterd.sock") if request.param == "unix"
               else free_port())
    milter = (f"unix:{address}" if request.param == "unix"
              else f"inet:127.0.0.1:{address}")
    pf = postfix.Postfix(tmp, free_port(), milters=milter, mailboxes=MAILBOXES,
                         hostname=MAIL_NAME)
    try:
        pf.start()
        yield pf, request.param, address
    finally:
        pf.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture
def mta(postfix_mta, builddir, tmp_path, dns):
    """Postfix and a fresh filterd for one test."""
    pf, kind, address = postfix_mta
    fd = Filterd(builddir, tmp_path / "filterd", nameserver=dns.addr, kind=kind,
                 address=address)
    fd.start()
    try:
        yield pf, fd
    finally:
        fd.stop()
    assert not fd.sanitizer_reports(), fd.log()


def client(pf, source):
    s = smtplib.SMTP("127.0.0.1", pf.port, source_address=(source, 0), timeout=30)
    s.ehlo("client.example")
    return s


MESSAGE = (
    "Authentication-Results: other.example; dkim=pass header.d=sender.test\r\n"
    f"Authentication-Results: {MAIL_NAME}; spf=pass smtp.mailfrom=ceo@example.test\r\n"
    "From: Alice <alice@sender.test>\r\n"
    "To: bob@example.test\r\n"
    "Subject: hello through filterd\r\n"
    "\r\n"
    "Hello Bob.\r\n")


def test_forged_sender_gets_550_5_7_23(mta):
    pf, fd = mta
    with client(pf, FORGED) as s:
        code, msg = s.mail("alice@sender.test")
    assert code == 550, msg
    assert msg.decode() == f"5.7.23 {FORGED} may not send mail for sender.test"
    assert "action=reject" in fd.wait_log(rf"^filterd: mail: .*client={FORGED}")
    # Postfix's log is written by postlogd, a moment after the reply
    poll(lambda: "milter-reject: MAIL from" in pf.log(), 10, "Postfix's milter-reject line")


def test_legitimate_mail_delivered_with_spf_headers(mta):
    pf, fd = mta
    with client(pf, GOOD) as s:
        refused = s.sendmail("alice@sender.test", ["bob@example.test"], MESSAGE)
    assert refused == {}
    mbox = pf.wait_for_mail("bob@example.test")
    msg = email.message_from_string(mbox.split("\n", 1)[1], policy=email.policy.compat32)
    assert msg["Subject"] == "hello through filterd"

    rspf = msg.get_all("Received-SPF")
    assert len(rspf) == 1, rspf
    assert rspf[0].startswith(f"pass ({MAIL_NAME}: domain of sender.test designates "
                              f"{GOOD} as permitted sender)")
    assert f"client-ip={GOOD}; envelope-from=alice@sender.test; helo=client.example;" in rspf[0]
    ar = msg.get_all("Authentication-Results")
    # ours, and the other host's; the forged one claiming our id is gone
    assert ar == [f"{MAIL_NAME}; spf=pass smtp.mailfrom=alice@sender.test",
                  "other.example; dkim=pass header.d=sender.test"], ar
    # filterd's fields are on top of the message as Postfix received it,
    # above Postfix's own Received (RFC 7208 §9.1, RFC 8601 §5)
    names = [k for k in msg.keys()
             if k in ("Received-SPF", "Authentication-Results", "Received")]
    assert names[:3] == ["Received-SPF", "Authentication-Results", "Received"], names
    line = fd.wait_log(r"^filterd: eom: ")
    assert f"client={GOOD}" in line and "spf=pass" in line and "rcpts=<bob@example.test>" in line
    assert "qid=" in line


def test_relaying_to_a_foreign_domain_refused(mta):
    pf, fd = mta
    with client(pf, GOOD) as s:
        assert s.mail("alice@sender.test")[0] == 250
        code, msg = s.rcpt("carol@elsewhere.example")
        assert (code, msg.decode()) == (554, "5.7.1 <carol@elsewhere.example>: Relay access denied")
        assert s.rcpt("bob@example.test")[0] == 250
    assert "action=reject" in fd.wait_log(r"^filterd: rcpt: .*carol@elsewhere\.example")


def test_relay_from_relay_networks_not_refused(mta):
    pf, fd = mta
    with client(pf, "127.0.0.1") as s:
        assert s.mail("alice@sender.test")[0] == 250
        assert s.rcpt("carol@elsewhere.example")[0] == 250
        s.rset()


def test_no_helo_and_a_huge_header(mta):
    pf, fd = mta
    big = "X-Big: " + "\r\n ".join(["y" * 70] * 700) + "\r\n"   # about 50 KB
    with smtplib.SMTP("127.0.0.1", pf.port, source_address=(GOOD, 0), timeout=30) as s:
        # straight to MAIL: filterd never hears a HELO
        assert s.docmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert s.docmd("RCPT TO:<dave@example.test>")[0] == 250
        assert s.docmd("DATA")[0] == 354
        s.send((big + "Subject: no helo\r\n\r\nbody\r\n.\r\n").encode())
        code, msg = s.getreply()
        assert code == 250, msg
    mbox = pf.wait_for_mail("dave@example.test")
    assert "Received-SPF: pass " in mbox
    assert f"Authentication-Results: {MAIL_NAME}; spf=pass smtp.mailfrom=alice@sender.test" in mbox
    assert fd.alive()


def test_filterd_down_means_try_again_later(mta):
    pf, fd = mta
    assert fd.stop() == 0
    with client(pf, GOOD) as s:
        code, msg = s.mail("alice@sender.test")
    assert code == 451, msg
