"""relayd with its milters, the whole path with real peers.

SMTP client -> relayd -> milters (filterd, badmilter.py, opendkim) ->
LMTP -> deliverd -> mbox, with a real DNS server (nsd) publishing the
sender's SPF record: sender.test allows 127.0.0.2 and nobody else.
relayd relays only for 127.0.0.1 (relay_networks), so 127.0.0.2 may send
to local recipients only.
"""
import email
import email.policy
import os
import re
import shutil
import tempfile

import pytest

from badmilter import BadMilter
from opendkim import opendkim_milter
from deliverd import deliverd_factory  # noqa: F401  (fixture)
from dnsserver import DnsServer
from filterd import filterd_factory  # noqa: F401  (fixture)
from relayd import MAIL_NAME, relayd_factory  # noqa: F401  (fixture)

ZONE = r'''
@     TXT "v=spf1 ip4:127.0.0.2 exp=why.sender.test -all"
why   TXT "%{i} may not send mail for %{d}"
'''
GOOD, FORGED = "127.0.0.2", "127.0.0.3"
FAST = {"milter_connect_timeout": "1s", "milter_command_timeout": "1s",
        "milter_content_timeout": "2s"}

MESSAGE = (
    "Authentication-Results: other.example; dkim=pass header.d=sender.test\r\n"
    f"Authentication-Results: {MAIL_NAME}; spf=pass smtp.mailfrom=ceo@example.test\r\n"
    "From: Alice <alice@sender.test>\r\n"
    "To: bob@example.test\r\n"
    "Subject: hello through relayd and filterd\r\n"
    "Date: Mon, 30 Nov 2026 01:00:00 +0000\r\n"
    "Message-ID: <1@sender.test>\r\n"
    "\r\n"
    "Hello Bob.\r\n")


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    srv = DnsServer(tmp_path_factory.mktemp("nsd"), {"sender.test": ZONE})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def deliverd(deliverd_factory):
    return deliverd_factory()


@pytest.fixture
def filterd(filterd_factory, dns):
    return filterd_factory(nameserver=dns.addr)


@pytest.fixture
def bad():
    """bad(mode) -> a started BadMilter on a short unix socket path."""
    dirs, started = [], []

    def make(mode):
        d = tempfile.mkdtemp(prefix="bm", dir="/tmp")
        dirs.append(d)
        m = BadMilter(os.path.join(d, "bad.sock"), mode)
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def with_milters(relayd_factory, deliverd, milters, bad=(), **kw):
    """A started relayd with these milters.  Relayd.start()'s readiness
    probe is an SMTP session of its own, so it uses up each BadMilter's
    first connection: once the probe's milter connections have ended,
    the BadMilters in `bad` are re-armed (next connection in their mode)."""
    r = relayd_factory(lmtp=f"unix:{deliverd.sock}", milters=", ".join(milters), **kw)
    for m in bad:
        m.finished(timeout=20)
        m.threads, m.received, m.nconn = [], [], 0
    return r


def send(relayd, source, sender="alice@sender.test", rcpts=("bob@example.test",),
         msg=MESSAGE):
    with relayd.smtp(source=source) as s:
        s.ehlo("client.example")
        return s.sendmail(sender, list(rcpts), msg)


def mbox_message(deliverd, user="bob"):
    return deliverd.wait_mailbox(user)[0]


# ---- filterd behind relayd ----

def test_permitted_client_delivered_with_spf_headers(relayd_factory, deliverd, filterd):
    r = with_milters(relayd_factory, deliverd, [filterd.listen])
    assert send(r, GOOD) == {}
    m = mbox_message(deliverd)
    assert m["Subject"] == "hello through relayd and filterd"
    ours = [h for h in m.get_all("Received") if "spfgate relayd" in h]
    assert len(ours) == 1, m.get_all("Received")
    rspf = m.get_all("Received-SPF")
    assert len(rspf) == 1, rspf
    rspf = " ".join(rspf[0].split())
    assert rspf.startswith(f"pass ({MAIL_NAME}: domain of sender.test designates "
                           f"{GOOD} as permitted sender)"), rspf
    assert f"client-ip={GOOD}; envelope-from=alice@sender.test; helo=client.example;" in rspf
    ar = [" ".join(h.split()) for h in m.get_all("Authentication-Results")]
    # ours, and the other host's; the forged one claiming our id is gone
    assert ar == [f"{MAIL_NAME}; spf=pass smtp.mailfrom=alice@sender.test",
                  "other.example; dkim=pass header.d=sender.test"], ar
    assert "ceo@example.test" not in str(m)
    # filterd's fields above relayd's Received (deliverd's own is on top)
    names = [k for k in m.keys() if k in ("Received-SPF", "Authentication-Results", "Received")]
    i = names.index("Received-SPF")
    assert names[i:i + 3] == ["Received-SPF", "Authentication-Results", "Received"], names
    assert m.get_payload().strip() == "Hello Bob."
    # the macros relayd sent: the client, the queue id
    line = filterd.wait_log(r"^filterd: eom: ")
    assert f"client={GOOD}" in line and "spf=pass" in line, line
    qid = re.search(r"qid=(\S+)", line)
    assert qid and qid.group(1) in str(m), line


def test_forged_sender_refused_at_mail(relayd_factory, deliverd, filterd):
    r = with_milters(relayd_factory, deliverd, [filterd.listen])
    with r.smtp(source=FORGED) as s:
        s.ehlo("client.example")
        code, msg = s.mail("alice@sender.test")
        assert code == 550, msg
        assert msg.decode() == f"5.7.23 {FORGED} may not send mail for sender.test"
        # the session goes on: a sender with no SPF record is fine
        assert s.mail("someone@nospf.sender.test")[0] == 250
        assert s.rcpt("bob@example.test")[0] == 250
        s.rset()
    assert "action=reject" in filterd.wait_log(rf"^filterd: mail: .*client={FORGED}")


def test_relay_attempt_refused_at_rcpt(relayd_factory, deliverd, filterd):
    r = with_milters(relayd_factory, deliverd, [filterd.listen])
    with r.smtp(source=GOOD) as s:
        s.ehlo("client.example")
        assert s.mail("alice@sender.test")[0] == 250
        code, msg = s.rcpt("carol@elsewhere.example")
        assert code == 554, msg
        assert msg.decode().startswith("5.7.1 "), msg
        assert s.rcpt("bob@example.test")[0] == 250
        s.rset()


def test_relay_check_kept_with_a_permissive_milter(relayd_factory, deliverd, bad):
    """A milter list without filterd never makes relayd an open relay."""
    m = bad("good")
    r = with_milters(relayd_factory, deliverd, [f"unix:{m.path}"], bad=[m])
    with r.smtp(source=GOOD) as s:
        s.ehlo("client.example")
        assert s.mail("alice@sender.test")[0] == 250
        code, msg = s.rcpt("carol@elsewhere.example")
        assert code == 554 and msg.decode().startswith("5.7.1 "), msg
        s.rset()


# ---- broken milters and milter_default_action ----

@pytest.mark.parametrize("mode", ["silent", "garbage", "slow"])
def test_broken_milter_tempfail(relayd_factory, deliverd, bad, mode):
    m = bad(mode)
    r = with_milters(relayd_factory, deliverd, [f"unix:{m.path}"], bad=[m],
                     milter_default_action="tempfail", **FAST)
    c = r.raw(source=GOOD, greeting=False, timeout=20)
    code, lines = c.reply()
    # refused at connect: the greeting may only be 421 (RFC 5321 3.1)
    assert code == 421, lines
    assert lines[-1].startswith("421 4.7.1 "), lines
    c.close()
    assert deliverd.messages("bob") == []
    r.wait_log(r"milter .*bad\.sock")
    # the next connection to badmilter is a good one: mail goes through
    assert send(r, GOOD) == {}
    assert mbox_message(deliverd)["Subject"] == "hello through relayd and filterd"


@pytest.mark.parametrize("mode", ["silent", "garbage", "slow"])
def test_broken_milter_accept(relayd_factory, deliverd, bad, mode):
    m = bad(mode)
    r = with_milters(relayd_factory, deliverd, [f"unix:{m.path}"], bad=[m],
                     milter_default_action="accept", **FAST)
    assert send(r, GOOD) == {}
    msg = mbox_message(deliverd)
    assert msg["Subject"] == "hello through relayd and filterd"
    # skipped for the rest of the session: badmilter saw nothing after it broke
    m.finished()
    assert len(m.received) == 1
    assert not any(cmd in ("M", "R", "E") for cmd, _ in m.received[0]), m.received


def test_broken_milter_reject(relayd_factory, deliverd, bad):
    m = bad("garbage")
    r = with_milters(relayd_factory, deliverd, [f"unix:{m.path}"], bad=[m],
                     milter_default_action="reject", **FAST)
    c = r.raw(source=GOOD, greeting=False, timeout=20)
    code, lines = c.reply()
    assert code == 554 and lines[-1].startswith("554 5.7.1 "), lines
    c.close()


def test_multiline_milter_reply_keeps_last_line(relayd_factory, deliverd, bad):
    m = bad("reply")
    r = with_milters(relayd_factory, deliverd, [f"unix:{m.path}"], bad=[m])
    c = r.raw(source=GOOD)
    assert c.cmd("EHLO client.example")[0] == 250
    code, lines = c.cmd("MAIL FROM:<alice@sender.test>")
    assert (code, lines) == (550, ["550 5.7.1 100% sure"])
    c.cmd("QUIT")
    c.close()


# ---- two milters ----

def test_two_milters_in_order(relayd_factory, deliverd, filterd, bad):
    m = bad("good")
    r = with_milters(relayd_factory, deliverd, [filterd.listen, f"unix:{m.path}"], bad=[m])
    assert send(r, GOOD) == {}
    msg = mbox_message(deliverd)
    assert msg.get_all("Received-SPF"), str(msg)
    filterd.wait_log(r"^filterd: eom: ")
    m.finished(timeout=20)
    assert len(m.received) == 1
    cmds = [cmd for cmd, _ in m.received[0]]
    for cmd in ("O", "C", "H", "M", "R", "T", "L", "N", "B", "E", "Q"):
        assert cmd in cmds, cmds
    # the second milter sees the message as the first one changed it
    headers = [d for cmd, d in m.received[0] if cmd == "L"]
    names = [h.split(b"\0", 1)[0] for h in headers]
    assert names[:3] == [b"Received-SPF", b"Authentication-Results", b"Received"], names
    assert b"ceo@example.test" not in b"".join(headers)
    # the macros as Postfix sends them
    macros = {}
    for cmd, d in m.received[0]:
        if cmd == "D":
            f = d[1:].split(b"\0")
            macros.update({(d[:1] + f[i]).decode(): f[i + 1].decode()
                           for i in range(0, len(f) - 1, 2)})
    assert macros["Cj"] == MAIL_NAME
    assert macros["C{daemon_name}"] == "relayd"
    assert macros["C{client_addr}"] == GOOD
    assert macros["C{client_name}"] == f"[{GOOD}]"
    assert macros["C{if_addr}"] == "127.0.0.1"
    assert int(macros["C{client_port}"]) > 0
    assert macros["M{mail_addr}"] == "alice@sender.test"
    assert macros["R{rcpt_addr}"] == "bob@example.test"
    assert macros["Ei"] and macros["Ei"] in str(msg), macros


def test_filterd_refusal_stops_the_chain(relayd_factory, deliverd, filterd, bad):
    m = bad("good")
    r = with_milters(relayd_factory, deliverd, [filterd.listen, f"unix:{m.path}"], bad=[m])
    with r.smtp(source=FORGED) as s:
        s.ehlo("client.example")
        assert s.mail("alice@sender.test")[0] == 550
    m.finished(timeout=20)
    cmds = [cmd for cmd, _ in m.received[0]]
    assert "M" not in cmds, cmds


def test_big_message_in_chunks(relayd_factory, deliverd, filterd, bad):
    m = bad("good")
    r = with_milters(relayd_factory, deliverd, [filterd.listen, f"unix:{m.path}"], bad=[m])
    body = "".join(f"line {i:06d} " + "x" * 60 + "\r\n" for i in range(5000))
    msg = MESSAGE.split("\r\n\r\n")[0] + "\r\n\r\n" + body
    assert send(r, GOOD, msg=msg) == {}
    got = mbox_message(deliverd)
    assert got.get_payload().replace("\r\n", "\n") == body.replace("\r\n", "\n")
    m.finished(timeout=20)
    chunks = [d for cmd, d in m.received[0] if cmd == "B"]
    assert len(chunks) >= 6 and all(len(c) <= 65535 for c in chunks)
    assert b"".join(chunks) == body.encode()


# ---- opendkim ----

def test_opendkim_signs_through_relayd(relayd_factory, deliverd, tmp_path):
    with opendkim_milter(tmp_path) as dk:
        r = with_milters(relayd_factory, deliverd, [f"unix:{dk.sock}"])
        msg = ("From: alice@example.test\r\nTo: bob@example.test\r\n"
               "Subject: signed by opendkim\r\nDate: Mon, 30 Nov 2026 01:00:00 +0000\r\n"
               "Message-ID: <2@example.test>\r\n\r\nhello\r\n")
        assert send(r, "127.0.0.1", sender="alice@example.test", msg=msg) == {}
        mbox_message(deliverd)
        box = deliverd.mailbox("bob").read_bytes()
        import mailbox as mboxlib
        mb = mboxlib.mbox(str(deliverd.mailbox("bob")), create=False)
        try:
            raw = mb.get_bytes(mb.keys()[0])
        finally:
            mb.close()
        assert b"DKIM-Signature:" in box
        assert b"d=example.test" in raw and b"s=sel" in raw
        # verify over the message as it landed (mbox uses LF line ends)
        import dkim
        txt = dk.dns_txt()
        data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if data.startswith(b"From "):
            data = data.split(b"\r\n", 1)[1]
        assert dkim.verify(data, dnsfunc=lambda name, timeout=5: txt.encode()), data
