"""The whole path: SMTP client -> relayd -> LMTP -> deliverd -> mbox.

A message sent to relayd lands in the recipient's mbox with relayd's
Received: header; the client's 250 comes only after deliverd's; big
messages (buffered in a temporary file), dot-stuffed lines and 8-bit
bodies arrive intact; SIGHUP reloads; SIGTERM lets a transaction in
flight finish and sends idle sessions away with 421.
"""
import os
import re
import signal

import pytest

from deliverd import deliverd_factory  # noqa: F401  (fixture)
from relayd import relayd_factory  # noqa: F401  (fixture)


@pytest.fixture
def deliverd(deliverd_factory):
    return deliverd_factory()


@pytest.fixture
def relayd(deliverd, relayd_factory):
    return relayd_factory(lmtp=f"unix:{deliverd.sock}")


def test_message_lands_in_mbox_with_received(relayd, deliverd):
    s = relayd.smtp(source="127.0.0.2")
    s.ehlo("client.example.org")
    refused = s.sendmail("sender@remote.test", ["alice@example.test"],
                         b"From: sender@remote.test\r\nTo: alice@example.test\r\n"
                         b"Subject: whole path\r\n\r\nhello alice\r\n")
    assert refused == {}
    s.quit()
    m = deliverd.wait_mailbox("alice")[0]
    assert m["Subject"] == "whole path"
    recv = [" ".join(h.split()) for h in m.get_all("Received")]
    ours = [h for h in recv if "spfgate relayd" in h]
    assert len(ours) == 1, recv
    assert re.match(r"from client\.example\.org \(\[127\.0\.0\.2\]\) by mx\.example\.test "
                    r"\(spfgate relayd\) with ESMTP id [0-9A-F]+ for <alice@example\.test>; "
                    r"\w{3}, \d+ \w{3} \d{4} ", ours[0]), ours[0]
    # relayd's header comes after deliverd's own (which is on top)
    assert recv.index(ours[0]) == 1
    assert m.get_payload().strip() == "hello alice"
    line = relayd.wait_log(r"id=[0-9A-F]+ from=<sender@remote\.test> nrcpt=1 .*status=sent")
    # deliverd's queue id, which its own lines carry
    qid = re.search(r" queued_as=([0-9A-F]+)$", line).group(1)
    deliverd.wait_log(rf"id={qid} to=alice .*status=sent")


def test_several_recipients_and_unknown_one(relayd, deliverd):
    s = relayd.smtp(source="127.0.0.2")
    refused = s.sendmail("sender@remote.test",
                         ["alice@example.test", "ghost@example.test", "bob@example.test"],
                         b"Subject: two of three\r\n\r\nhi\r\n")
    assert list(refused) == ["ghost@example.test"]
    assert refused["ghost@example.test"][0] == 550
    s.quit()
    for user in ("alice", "bob"):
        m = deliverd.wait_mailbox(user)[0]
        assert m["Subject"] == "two of three"
        ours = [h for h in m.get_all("Received") if "spfgate relayd" in h][0]
        assert " for <" not in ours       # several recipients: none named


def test_dots_8bit_and_big_message(relayd, deliverd):
    body = b"".join(b"line %06d " % i + b"x" * 60 + b"\r\n" for i in range(8000))
    body += b".leading dot\r\n..two dots\r\n.\xc3\xa9t\xc3\xa9\r\n"
    msg = b"Subject: big\r\nContent-Type: text/plain; charset=utf-8\r\n" \
          b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    assert len(msg) > 256 * 1024          # past the in-memory part
    s = relayd.smtp()
    s.ehlo("client.test")
    assert s.sendmail("a@example.test", ["bob@example.test"], msg,
                      mail_options=["BODY=8BITMIME"]) == {}
    s.quit()
    m = deliverd.wait_mailbox("bob")[0]
    got = m.get_payload(decode=True)
    assert got.replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n")


def test_pipelined_transactions(relayd, deliverd):
    c = relayd.raw()
    c.send(b"EHLO client.test\r\n")
    assert c.reply()[0] == 250
    # PIPELINING lets DATA's text follow only after the 354; send per group
    for i in range(3):
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
        c.send(b"Subject: pipelined %d\r\n\r\nbody\r\n.\r\n" % i)
        code, lines = c.reply()
        assert code == 250 and "queued as" in lines[0], lines
    c.cmd("QUIT")
    msgs = deliverd.wait_mailbox("alice", count=3)
    assert sorted(m["Subject"] for m in msgs) == [f"pipelined {i}" for i in range(3)]


def test_sighup_reload(relayd, deliverd):
    text = relayd.conf.read_text().replace("[relayd]\n", "[relayd]\nmessage_size_limit = 4321\n")
    relayd.conf.write_text(text)
    relayd.reload()
    relayd.wait_log(r"reload: config=")
    c = relayd.raw()
    lines = c.cmd("EHLO client.test")[1]
    assert "250-SIZE 4321" in lines, lines
    c.close()
    # a broken file is refused, the running configuration kept
    relayd.conf.write_text(text + "no_such_key = 1\n")
    relayd.reload()
    relayd.wait_log(r"reload: .*keeping the running configuration")
    c = relayd.raw()
    assert "250-SIZE 4321" in c.cmd("EHLO client.test")[1]
    c.close()


def test_sigterm_drains(relayd, deliverd):
    idle = relayd.raw()
    busy = relayd.raw()
    assert busy.cmd("EHLO client.test")[0] == 250
    assert busy.cmd("MAIL FROM:<a@example.test>")[0] == 250
    assert busy.cmd("RCPT TO:<bob@example.test>")[0] == 250
    os.kill(relayd.proc.pid, signal.SIGTERM)
    code, lines = idle.reply()              # idle: told at once
    assert code == 421 and "4.3.2" in lines[0], lines
    assert idle.closed()
    assert busy.cmd("DATA")[0] == 354       # the transaction may finish
    busy.send(b"Subject: during stop\r\n\r\nstill delivered\r\n.\r\n")
    assert busy.reply()[0] == 250
    code, lines = busy.reply()              # and then it is let go
    assert code == 421, lines
    assert relayd.proc.wait(timeout=30) == 0
    relayd.proc = None
    assert deliverd.wait_mailbox("bob")[0]["Subject"] == "during stop"


def test_deliverd_gone_mid_session(relayd, deliverd):
    c = relayd.raw()
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
    deliverd.kill()
    code, lines = c.cmd("DATA")
    if code == 354:
        c.send(b"Subject: lost\r\n\r\nx\r\n.\r\n")
        code, lines = c.reply()
    assert code == 451 and "4.3.0" in lines[0], lines
    c.close()


def test_smtp_source_load(relayd, deliverd):
    """Postfix's smtp-source: 5 sessions at once, 60 messages of 2 KiB."""
    import subprocess
    p = subprocess.run(["smtp-source", "-s", "5", "-m", "60", "-l", "2048",
                        "-f", "load@example.test", "-t", "alice@example.test",
                        f"127.0.0.1:{relayd.port}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    msgs = deliverd.wait_mailbox("alice", count=60, timeout=60)
    assert len(msgs) == 60
    assert all(any("spfgate relayd" in h for h in m.get_all("Received")) for m in msgs)


def test_handoff_over_inet(deliverd_factory, relayd_factory):
    d = deliverd_factory(unix=False, inet=True)
    r = relayd_factory(lmtp=f"inet:{d.port}@127.0.0.1")
    s = r.smtp()
    assert s.sendmail("a@example.test", ["alice@example.test"],
                      b"Subject: over tcp\r\n\r\nx\r\n") == {}
    s.quit()
    assert d.wait_mailbox("alice")[0]["Subject"] == "over tcp"


def test_check_only(builddir, tmp_path):
    import subprocess
    from relayd import Relayd
    binary = str(builddir / "relayd" / "relayd")
    good = Relayd(builddir, tmp_path / "good", tls=True)
    p = subprocess.run([binary, "-t", "-c", str(good.conf)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("[relayd]\nlisten = 127.0.0.1:25\nrecipient_limit = lots\n")
    p = subprocess.run([binary, "-t", "-c", str(bad)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and f"{bad}:3:" in p.stderr, p.stderr
    nocert = Relayd(builddir, tmp_path / "nocert", tls_cert_file=str(tmp_path / "missing.pem"),
                    tls_key_file=str(tmp_path / "missing.key"))
    p = subprocess.run([binary, "-t", "-c", str(nocert.conf)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and "missing.pem" in p.stderr, p.stderr


def test_hostile_helo_in_received(relayd, deliverd):
    s = relayd.smtp(source="127.0.0.2")
    s.ehlo('evil)(by;"x\\')
    assert s.sendmail("a@remote.test", ["alice@example.test"], b"Subject: helo\r\n\r\nx\r\n") == {}
    s.quit()
    m = deliverd.wait_mailbox("alice")[0]
    ours = [" ".join(h.split()) for h in m.get_all("Received") if "spfgate relayd" in h][0]
    assert ours.startswith("from evil??by??x? ([127.0.0.2]) by mx.example.test"), ours
