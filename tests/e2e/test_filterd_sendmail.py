"""filterd behind a real Sendmail, configured with contrib/sendmail.mc.

First contrib/sendmail.mc itself: expanded with m4 and Sendmail's own
cf.m4 (sendmail-cf), it must give the X line and the option that make
Sendmail call filterd (name, socket, F=T, timeouts), and keep the macros
filterd reads.

Then end to end: a private Sendmail daemon (sendmail_mta.py: Debian's
sendmail-bin unpacked, not installed) on a loopback port whose
sendmail.cf holds the lines of contrib/sendmail.mc with the test
filterd's socket, unix and inet; a real DNS server (nsd) publishes the
sender's SPF record.  Clients are Python's smtplib from chosen loopback
source addresses: filterd trusts only 127.0.0.1 (relay_networks), while
Sendmail itself relays for all of 127.0.0.0/8, so every refusal seen
here is filterd's.  sender.test allows 127.0.0.2 and nobody else.
"""
import email
import email.policy
import os
import re
import shutil
import smtplib
import subprocess
import tempfile

import pytest

import sendmail_mta
from conftest import free_port
from dnsserver import DnsServer
from filterd import MAIL_NAME, Filterd

ZONE = r'''
@     TXT "v=spf1 ip4:127.0.0.2 exp=why.sender.test -all"
why   TXT "%{i} may not send mail for %{d}"
'''

GOOD, FORGED = "127.0.0.2", "127.0.0.3"


# -- contrib/sendmail.mc through m4 -----------------------------------------

def expand(tmp_path, mc_text):
    if not os.path.exists(sendmail_mta.CF_M4):
        pytest.fail(f"{sendmail_mta.CF_M4} missing: " + sendmail_mta.install_hint())
    mc = tmp_path / "test.mc"
    mc.write_text(f"include(`{sendmail_mta.CF_M4}')dnl\nOSTYPE(`bsd4.4')dnl\n"
                  + mc_text + "MAILER(`local')dnl\nMAILER(`smtp')dnl\n")
    r = subprocess.run(["m4", str(mc)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "ERROR" not in r.stderr, r.stderr
    return r.stdout


def cf_lines(cf, prefix):
    return [line for line in cf.splitlines() if line.startswith(prefix)]


def test_contrib_sendmail_mc_expands_to_the_filter_line(srcdir, tmp_path):
    contrib = (srcdir / "contrib" / "sendmail.mc").read_text()
    cf = expand(tmp_path, contrib)
    assert cf_lines(cf, "Xspfgate-filterd") == [
        "Xspfgate-filterd, S=unix:/run/spfgate/filterd.sock, F=T, "
        "T=C:10s;S:30s;R:30s;E:2m"]
    assert cf_lines(cf, "O InputMailFilters=") == ["O InputMailFilters=spfgate-filterd"]
    # the macros filterd asks for are in Sendmail's default lists as well
    envfrom = cf_lines(cf, "O Milter.macros.envfrom=")
    assert len(envfrom) == 1 and "{auth_authen}" in envfrom[0], envfrom
    assert re.search(r"[=,] ?i(,|$)", envfrom[0]), envfrom

    # the commented TCP variant, uncommented, is as good
    inet = [line[len("dnl "):] for line in contrib.splitlines()
            if line.startswith("dnl INPUT_MAIL_FILTER(")]
    assert len(inet) == 1, inet
    cf = expand(tmp_path, inet[0] + "\n")
    assert cf_lines(cf, "Xspfgate-filterd") == [
        "Xspfgate-filterd, S=inet:8891@127.0.0.1, F=T, T=C:10s;S:30s;R:30s;E:2m"]


# -- a real Sendmail ----------------------------------------------------------

@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    srv = DnsServer(tmp_path_factory.mktemp("nsd"), {"sender.test": ZONE})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["unix", "inet"])
def sendmail(request, builddir, srcdir, tmp_path_factory):
    """One Sendmail per socket kind; its milter address outlives filterds."""
    tmp = tmp_path_factory.mktemp(f"sendmail-{request.param}")
    sockdir = tempfile.mkdtemp(prefix="fd", dir="/tmp")
    os.chmod(sockdir, 0o755)
    address = (os.path.join(sockdir, "filterd.sock") if request.param == "unix"
               else free_port())
    milter = (f"unix:{address}" if request.param == "unix"
              else f"inet:{address}@127.0.0.1")
    sm = sendmail_mta.Sendmail(tmp, free_port(), milter, builddir, srcdir,
                               hostname=MAIL_NAME)
    try:
        sm.start()
        yield sm, request.param, address
    finally:
        sm.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture
def mta(sendmail, builddir, tmp_path, dns):
    """Sendmail and a fresh filterd for one test."""
    sm, kind, address = sendmail
    fd = Filterd(builddir, tmp_path / "filterd", nameserver=dns.addr, kind=kind,
                 address=address)
    fd.start()
    try:
        yield sm, fd
    finally:
        fd.stop()
    assert not fd.sanitizer_reports(), fd.log()


def client(sm, source):
    s = smtplib.SMTP("127.0.0.1", sm.port, source_address=(source, 0), timeout=60)
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
    sm, fd = mta
    with client(sm, FORGED) as s:
        code, msg = s.mail("alice@sender.test")
    assert code == 550, msg
    # filterd's code, enhanced code and explanation; Sendmail names the
    # address in front of the text, as in all its MAIL and RCPT replies
    assert msg.decode() == (f"5.7.23 <alice@sender.test>... {FORGED} may not send "
                            "mail for sender.test")
    assert "action=reject" in fd.wait_log(rf"^filterd: mail: .*client={FORGED}")
    # Sendmail says whose reply it passed on
    assert "reject=550 5.7.23" in sm.wait_log(r"Milter: from=<alice@sender\.test>")


def test_legitimate_mail_delivered_with_spf_headers(mta):
    sm, fd = mta
    before = len(sm.messages("bob"))
    with client(sm, GOOD) as s:
        refused = s.sendmail("alice@sender.test", ["bob@example.test"], MESSAGE)
    assert refused == {}
    text = sm.wait_for_mail("bob", count=before + 1)[-1]
    msg = email.message_from_string(text, policy=email.policy.compat32)
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
    # filterd's fields are on top of the message as Sendmail received it,
    # above Sendmail's own Received (RFC 7208 §9.1, RFC 8601 §5)
    names = [k for k in msg.keys()
             if k in ("Received-SPF", "Authentication-Results", "Received")]
    assert names[:3] == ["Received-SPF", "Authentication-Results", "Received"], names
    line = fd.wait_log(r"^filterd: eom: ")
    assert f"client={GOOD}" in line and "spf=pass" in line and "rcpts=<bob@example.test>" in line
    # Sendmail's queue id (macro i) reached filterd
    qid = re.search(r"qid=(\S+)", line).group(1)
    assert re.fullmatch(r"[0-9A-Za-z]{14}", qid), line
    sm.wait_log(rf"^.* {qid}: to=<bob@example\.test>, .*mailer=local, .*stat=Sent")


def test_relaying_to_a_foreign_domain_refused(mta):
    sm, fd = mta
    with client(sm, GOOD) as s:
        assert s.mail("alice@sender.test")[0] == 250
        code, msg = s.rcpt("carol@elsewhere.example")
        assert (code, msg.decode()) == (554, "5.7.1 <carol@elsewhere.example>: Relay access denied")
        assert s.rcpt("bob@example.test")[0] == 250
        s.rset()
    assert "action=reject" in fd.wait_log(r"^filterd: rcpt: .*carol@elsewhere\.example")


def test_relay_from_relay_networks_not_refused(mta):
    sm, fd = mta
    with client(sm, "127.0.0.1") as s:
        assert s.mail("alice@sender.test")[0] == 250
        assert s.rcpt("carol@elsewhere.example")[0] == 250
        s.rset()


def test_filterd_down_means_try_again_later(mta):
    sm, fd = mta
    assert fd.stop() == 0
    with client(sm, GOOD) as s:
        code, msg = s.mail("alice@sender.test")
    # F=T: Sendmail's own temporary failure, no mail taken unchecked
    assert code == 451, msg
    assert msg.decode().startswith("4."), msg
