"""A milter's quarantine (SMFIR_QUARANTINE) ends in deliverd's hold queue.

SMTP client -> relayd -> quarantine_milter.py (pymilter, the real
libmilter) -> LMTP MAIL ... XQUARANTINE=<reason> -> deliverd, which
commits the message into hold/ with the reason: not delivered, listed by
spfgate-queue as held with the reason, still held after a kill -9 and a
restart, delivered once released.  A deliverd that does not offer
XQUARANTINE never gets the message (the client hears 451), and deliverd
checks the parameter it offers.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import threading

import pytest

from conftest import SRCDIR, poll
from deliverd import deliverd_factory  # noqa: F401  (fixture)
from relayd import relayd_factory  # noqa: F401  (fixture)

PYTHON = "/usr/bin/python3"
MILTER = SRCDIR / "tests" / "e2e" / "quarantine_milter.py"
REASON = 'Spam score=7.5 +"odd" (100% sure)'


def message(subject, reason=None):
    head = f"X-Test-Quarantine: {reason}\r\n" if reason else ""
    return (f"{head}From: alice@sender.test\r\nTo: bob@example.test\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@sender.test>\r\n"
            f"\r\nHello Bob: {subject}.\r\n")


@pytest.fixture
def qmilter():
    """quarantine_milter.py on a unix socket; yields its milter spec."""
    try:
        subprocess.run([PYTHON, "-c", "import Milter"], check=True, timeout=30,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.fail(f"Debian's python3-milter (pymilter) is needed: {e}")
    d = tempfile.mkdtemp(prefix="qm", dir="/tmp")
    path = os.path.join(d, "q.sock")
    log = open(os.path.join(d, "milter.log"), "wb")
    proc = subprocess.Popen([PYTHON, str(MILTER), f"unix:{path}"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    log.close()

    def ready():
        if proc.poll() is not None:
            raise AssertionError("quarantine milter exited: "
                                 + open(os.path.join(d, "milter.log")).read())
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
        finally:
            s.close()
    try:
        poll(ready, 20, "the quarantine milter's socket")
        yield f"unix:{path}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


def send(relayd, subject, reason=None):
    with relayd.smtp(source="127.0.0.1") as s:
        s.ehlo("client.example")
        s.mail("alice@sender.test")
        code, text = s.rcpt("bob@example.test")
        assert code == 250, (code, text)
        code, text = s.data(message(subject, reason))
        return code, text.decode()


def subjects(deliverd):
    return [m["Subject"] for m in deliverd.messages("bob")]


def test_quarantined_held_listed_survives_restart_released(deliverd_factory, relayd_factory,
                                                         qmilter):
    d = deliverd_factory(user="")
    r = relayd_factory(lmtp=f"unix:{d.sock}", milters=qmilter, user="")

    code, text = send(r, "quarantined one", REASON)
    assert code == 250, text
    line = d.wait_log(r"id=\S+ held reason=")
    qid = line.split("id=")[1].split()[0]
    assert f'reason="{REASON.replace(chr(34), chr(92) + chr(34))}"' in line, line
    r.wait_log(r"quarantined by filter reason=")
    # committed straight into hold/: never in queue/, not even for a moment
    assert d.queue_ids(held=True) == [qid]
    assert d.queue_ids() == []

    # an ordinary message after it is delivered; the held one is not
    code, text = send(r, "plain one")
    assert code == 250, text
    d.wait_mailbox("bob", count=1)
    assert subjects(d) == ["plain one"]

    out = d.queue("list", check=True).stdout
    block = out[out.index(qid):]
    first = block.splitlines()[0]
    assert first.startswith(f"{qid}!") and "(held)" in first, out
    assert f"(quarantined: {REASON})" in block.splitlines()[1], out
    assert "pending   bob@example.test" in block, out

    # kill -9 and restart: still held, still not delivered
    d.kill()
    d.start()
    code, text = send(r, "after restart")
    assert code == 250, text
    d.wait_mailbox("bob", count=2)
    assert subjects(d) == ["plain one", "after restart"]
    assert d.queue_ids(held=True) == [qid]
    out = d.queue("list", check=True).stdout
    assert f"{qid}!" in out and f"(quarantined: {REASON})" in out, out

    # released: delivered, with the filter's reason still not in the message
    res = d.queue("release", qid)
    assert res.returncode == 0, (res.stdout, res.stderr)
    d.wait_log(rf"id={qid} released by the administrator")
    msgs = d.wait_mailbox("bob", count=3)
    assert [m["Subject"] for m in msgs] == ["plain one", "after restart", "quarantined one"]
    assert msgs[2]["X-Test-Quarantine"] == REASON
    d.wait_queue_empty()
    assert d.queue_ids(held=True) == []
    assert "Mail queue is empty" in d.queue("list", check=True).stdout


class PlainLmtp:
    """An LMTP server that offers no XQUARANTINE and accepts everything;
    .commands records what it was sent (the message text excluded)."""

    def __init__(self, path):
        self.path = path
        self.commands = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=10)
        self.sock.close()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        c.settimeout(15)
        f = c.makefile("rwb")
        rcpts = 0
        try:
            f.write(b"220 plain LMTP\r\n")
            f.flush()
            for raw in f:
                cmd = raw.decode().rstrip("\r\n")
                self.commands.append(cmd)
                verb = cmd[:4].upper()
                if verb == "LHLO":
                    f.write(b"250-plain\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
                elif verb == "QUIT":
                    f.write(b"221 bye\r\n")
                    f.flush()
                    return
                elif verb == "RCPT":
                    rcpts += 1
                    f.write(b"250 2.1.5 ok\r\n")
                elif verb == "DATA":
                    f.write(b"354 go\r\n")
                    f.flush()
                    for body in f:
                        if body == b".\r\n":
                            break
                    f.write(b"250 2.0.0 ok\r\n" * rcpts)
                    rcpts = 0
                elif verb in ("MAIL", "RSET"):
                    rcpts = 0
                    f.write(b"250 2.0.0 ok\r\n")
                else:
                    f.write(b"250 2.0.0 ok\r\n")
                f.flush()
        except OSError:
            pass
        finally:
            c.close()


def test_no_xquarantine_no_delivery(relayd_factory, qmilter):
    d = tempfile.mkdtemp(prefix="pl", dir="/tmp")
    lmtp = PlainLmtp(os.path.join(d, "lmtp.sock"))
    try:
        r = relayd_factory(lmtp=f"unix:{lmtp.path}", milters=qmilter, user="")
        code, text = send(r, "must stay", REASON)
        assert code == 451 and text.startswith("4.3.0"), (code, text)
        r.wait_log(r"does not offer XQUARANTINE")
        assert not any(c.upper() == "DATA" for c in lmtp.commands), lmtp.commands
        # without a quarantine the same path delivers
        code, text = send(r, "may go")
        assert code == 250, text
        poll(lambda: "DATA" in lmtp.commands, 10, "DATA at the plain LMTP server")
    finally:
        lmtp.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_lmtp_xquarantine_parameter(deliverd_factory):
    d = deliverd_factory(user="")
    c = d.lmtp()
    try:
        code, text = c.ehlo("client.test")
        assert code == 250 and b"XQUARANTINE" in text.split(b"\n"), text
        for bad in ("XQUARANTINE=bad+2", "XQUARANTINE=+2b", "XQUARANTINE=a=b",
                    "XQUARANTINE=line+0Abreak", "XQUARANTINE=nul+00",
                    "XQUARANTINE=", "XQUARANTINE", "XQUARANTINE=" + "x" * 513,
                    "XQUARANTINE=a XQUARANTINE=b"):
            code, text = c.docmd(f"MAIL FROM:<alice@sender.test> {bad}")
            assert code == 501 and text.startswith(b"5.5.4"), (bad, code, text)
        code, text = c.docmd("MAIL FROM:<alice@sender.test> XSOMETHING=1")
        assert (code, text[:5]) == (555, b"5.5.4"), text
        code, text = c.docmd("MAIL FROM:<alice@sender.test> XQUARANTINEX=1")
        assert code == 555, text
        code, text = c.docmd("MAIL FROM:<alice@sender.test> BODY=8BITMIME "
                             "xquarantine=held+20by+20hand+2B+3D" + "x" * 490)
        assert code == 250, text
        code, text = c.docmd("RCPT TO:<bob@example.test>")
        assert code == 250, text
        code, text = c.docmd("DATA")
        assert code == 354, text
        c.send(message("by hand").encode() + b".\r\n")
        code, text = c.getreply()
        assert code == 250 and b"held as" in text, text
    finally:
        c.close()
    qid = text.decode().split()[-1]
    assert d.queue_ids(held=True) == [qid]
    assert d.queue_ids() == []
    d.wait_log(rf"id={qid} held reason=\"held by hand\+=x{{490}}\"")
    out = d.queue("list", check=True).stdout
    assert "(quarantined: held by hand+=" + "x" * 490 + ")" in out, out
