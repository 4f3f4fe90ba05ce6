"""spfgate-sendmail end to end: a local program -> spfgate-sendmail ->
SMTP on loopback -> relayd -> LMTP -> deliverd -> mbox, all real.

- recipients on the command line (a bare name gets @mail_name); -t with
  Bcc: removed from every copy; "." ending the input unless -i; -f, -F;
  From:, Date:, Message-ID: and a Received: line added when missing;
- mailutils' mail(1) using it as its sendmail, the message then read from
  bob's mbox with Python's mailbox module;
- cron's command line, ignored options, long lines, 8-bit text, bare CR;
- -bs (an SMTP session on stdin/stdout), -bv, -bi, -bp and -q (through
  spfgate-queue), the name "mailq";
- relayd down, or deliverd down behind it: exit 75 and a message naming
  relayd's address; an unknown recipient: exit 67 (EX_NOUSER);
- against a scripted server without extensions: no SIZE or BODY on MAIL,
  a refused message is 65 (EX_DATAERR), a 4xx recipient sends nothing.
"""
import email.utils
import mailbox
import os
import pwd
import select
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port
from deliverd import deliverd_factory  # noqa: F401  (fixture)
from relayd import relayd_factory  # noqa: F401  (fixture)

EX_USAGE, EX_NOUSER, EX_TEMPFAIL = 64, 67, 75
MAIL_NAME = "mx.example.test"
ME = pwd.getpwuid(os.getuid()).pw_name


class Stack:
    """deliverd and relayd, and a configuration file for spfgate-sendmail
    naming both (its [relayd] listen is relayd's port)."""

    def __init__(self, builddir, tmp_path, deliverd, relayd):
        self.builddir, self.d, self.r = builddir, deliverd, relayd
        self.binary = builddir / "relayd" / "spfgate-sendmail"
        if not self.binary.exists():
            pytest.fail(f"{self.binary} not built")
        self.conf = tmp_path / "spfgate.conf"
        self.conf.write_text(deliverd.conf.read_text()
                             + f"[relayd]\nlisten = 127.0.0.1:{relayd.port}\nuser =\n"
                             + "[filterd]\nuser =\n")
        self.env = dict(os.environ, SPFGATE_QUEUE=str(builddir / "deliverd" / "spfgate-queue"))
        self.env.pop("NAME", None)
        self.env.pop("SPFGATE_RELAYD", None)

    def run(self, *args, input=b"", argv0=None, env=None, conf=True):
        """spfgate-sendmail [-C conf] ARGS with input on stdin."""
        cmd = [str(argv0 or self.binary)] + (["-C", str(self.conf)] if conf else []) + list(args)
        if isinstance(input, str):
            input = input.encode()
        return subprocess.run(cmd, input=input, capture_output=True, timeout=60,
                              env=dict(self.env, **(env or {})))


@pytest.fixture
def stack(builddir, tmp_path, deliverd_factory, relayd_factory):
    # a name server that never answers: remote mail stays in the queue
    d = deliverd_factory(users=("alice", "bob", "carol"), user="",
                         nameserver=f"127.0.0.1:{free_port()}", dns_timeout=1)
    r = relayd_factory(lmtp=f"unix:{d.sock}", user="")
    return Stack(builddir, tmp_path, d, r)


def ok(p):
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p


def test_plain_recipients_and_added_headers(stack):
    ok(stack.run("alice", "bob@example.test", input="Subject: plain\n\nhello\n"))
    for user in ("alice", "bob"):
        (m,) = stack.d.wait_mailbox(user)
        assert m["Subject"] == "plain"
        assert m["Return-Path"] == f"<{ME}@{MAIL_NAME}>"
        gecos = pwd.getpwuid(os.getuid()).pw_gecos.split(",")[0]
        assert m["From"] == (f"{gecos} <{ME}@{MAIL_NAME}>" if gecos else f"{ME}@{MAIL_NAME}")
        assert email.utils.parsedate_tz(m["Date"]) is not None
        assert m["Message-ID"].endswith(f"@{MAIL_NAME}>"), m["Message-ID"]
        recv = [" ".join(h.split()) for h in m.get_all("Received")]
        assert any(h.startswith(f"by {MAIL_NAME} (spfgate-sendmail, from userid {os.getuid()});")
                   for h in recv), recv
        assert m.get_payload() == "hello\n"
    ids = {stack.d.messages(u)[0]["Message-ID"] for u in ("alice", "bob")}
    assert len(ids) == 1


def test_headers_present_are_kept(stack):
    msg = ("From: Someone <someone@remote.test>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
           "Message-ID: <kept@remote.test>\nSubject: kept\n\nbody\n")
    ok(stack.run("-F", "Not Used", "alice", input=msg))
    (m,) = stack.d.wait_mailbox("alice")
    assert m["From"] == "Someone <someone@remote.test>"
    assert m["Date"] == "Mon, 1 Jan 2024 00:00:00 +0000"
    assert m["Message-ID"] == "<kept@remote.test>"
    assert len(m.get_all("From")) == 1


def test_t_takes_recipients_and_removes_bcc(stack):
    msg = ("To: Alice <alice@example.test>\nCc: \"Smith, Bob\" <bob@example.test>\n"
           "Bcc: carol\nSubject: extracted\n\nto three\n")
    ok(stack.run("-t", "-i", input=msg))
    for user in ("alice", "bob", "carol"):
        (m,) = stack.d.wait_mailbox(user)
        assert m["Subject"] == "extracted"
        assert m["Bcc"] is None
        if user != "carol":                 # hers says Delivered-To: carol
            assert "carol" not in str(m)
        assert m["To"] == "Alice <alice@example.test>"


def test_t_adds_to_command_line_and_needs_recipients(stack):
    ok(stack.run("-t", "carol", input="To: alice\nSubject: both\n\nx\n"))
    assert stack.d.wait_mailbox("alice")[0]["Subject"] == "both"
    assert stack.d.wait_mailbox("carol")[0]["Subject"] == "both"
    p = stack.run("-t", input="Subject: nobody\n\nx\n")
    assert p.returncode == EX_USAGE and b"no recipients" in p.stderr, p
    p = stack.run(input="Subject: nobody\n\nx\n")
    assert p.returncode == EX_USAGE and b"no recipients" in p.stderr, p


def test_dot_ends_input_unless_i(stack):
    ok(stack.run("alice", input="Subject: dot\n\nline1\n..two\n.\nline2\n"))
    (m,) = stack.d.wait_mailbox("alice")
    assert m.get_payload() == "line1\n..two\n"
    ok(stack.run("-i", "bob", input="Subject: dot\n\nline1\n.\nline2\n"))
    (m,) = stack.d.wait_mailbox("bob")
    assert m.get_payload() == "line1\n.\nline2\n"
    ok(stack.run("-oi", "carol", input="Subject: dot\n\n.\r\nline2\r\n"))
    (m,) = stack.d.wait_mailbox("carol")
    assert m.get_payload() == ".\nline2\n"


def test_f_sender(stack):
    ok(stack.run("-f", "someone@remote.test", "alice", input="Subject: f\n\nx\n"))
    (m,) = stack.d.wait_mailbox("alice")
    assert m["Return-Path"] == "<someone@remote.test>"
    assert m["From"] == "someone@remote.test"
    ok(stack.run("-r", "<>", "bob", input="Subject: null\n\nx\n"))
    (m,) = stack.d.wait_mailbox("bob")
    assert m["Return-Path"] == "<>"
    assert m["From"].endswith(f"{ME}@{MAIL_NAME}") or m["From"].endswith(f"<{ME}@{MAIL_NAME}>")
    p = stack.run("-f", "bad address@", "bob", input="x\n")
    assert p.returncode == EX_USAGE, p


def test_F_fullname(stack):
    ok(stack.run("-F", "Cron Daemon", "alice", input="Subject: F\n\nx\n"))
    (m,) = stack.d.wait_mailbox("alice")
    assert m["From"] == f"Cron Daemon <{ME}@{MAIL_NAME}>"
    # the NAME variable, as Postfix reads it; a name with specials quoted
    ok(stack.run("bob", input="Subject: NAME\n\nx\n", env={"NAME": "Smith, J."}))
    (m,) = stack.d.wait_mailbox("bob")
    assert m["From"] == f"\"Smith, J.\" <{ME}@{MAIL_NAME}>"


def test_cron_command_line(stack):
    """Debian's cron: sendmail -i -FCronDaemon -B8BITMIME -oem USER; and
    the other options Postfix ignores."""
    out = "progress 10%\r50%\r100%\nd\xe9j\xe0 vu\n"
    ok(stack.run("-i", "-FCronDaemon", "-B8BITMIME", "-oem", "alice",
                 input=b"Subject: cron\n\n" + out.encode("utf-8")))
    (m,) = stack.d.wait_mailbox("alice")
    assert m["From"] == f"CronDaemon <{ME}@{MAIL_NAME}>"
    assert m.get_payload(decode=True).decode() == "progress 10%\n50%\n100%\ndéjà vu\n"
    ok(stack.run("-oee", "-odi", "-odb", "-em", "-N", "never", "-U", "-h", "5",
                 "-R", "hdrs", "-V", "envid", "-oQ/tmp", "-O", "x=y", "-L", "lbl", "-G",
                 "-n", "-m", "bob", input="Subject: ignored\n\nx\n"))
    assert stack.d.wait_mailbox("bob")[0]["Subject"] == "ignored"


def test_long_lines_and_8bit(stack):
    body_line = "\u00e9" * 1500                 # 3000 octets of UTF-8
    subject = " ".join(["word"] * 300)          # 1499 octets
    msg = f"Subject: {subject}\nX-Blob: {'b' * 1200}\n\n{body_line}\nshort\n"
    p = ok(stack.run("-v", "alice", input=msg.encode()))
    assert b"BODY=8BITMIME" in p.stderr, p.stderr       # -v shows the dialogue
    (m,) = stack.d.wait_mailbox("alice")
    raw = stack.d.mailbox("alice").read_bytes()
    assert max(len(line) for line in raw.split(b"\n")) <= 998
    # a fold at white space: the header means the same
    assert " ".join(m["Subject"].split()) == subject
    # the body line broken at character boundaries, nothing added
    lines = m.get_payload(decode=True).decode("utf-8").split("\n")
    assert "".join(lines[:-2]) == body_line and lines[-2:] == ["short", ""]
    assert [len(x.encode()) for x in lines[:-2]] == [998, 998, 998, 6]


def test_mailutils_mail(stack, tmp_path):
    """mail(1) from mailutils with spfgate-sendmail as its sendmail: it runs
    "sendmail -oi -f USER@HOST -t" (through a wrapper giving -C here)."""
    wrapper = tmp_path / "sendmail-wrapper"
    wrapper.write_text(f"#!/bin/sh\nexec {stack.binary} -C {stack.conf} \"$@\"\n")
    wrapper.chmod(0o755)
    p = subprocess.run(["mail", "-E", f"set sendmail=sendmail:{wrapper}",
                        "-s", "from mailutils", "bob@example.test"],
                       input=b"hello from mail(1)\n", capture_output=True, timeout=60,
                       env=dict(stack.env, HOME=str(tmp_path), MAILRC="/dev/null"))
    assert p.returncode == 0, p
    stack.d.wait_mailbox("bob")             # polls until deliverd wrote it
    box = mailbox.mbox(str(stack.d.mailbox("bob")), create=False)
    try:
        (m,) = box.values()
        assert m["Subject"] == "from mailutils"
        assert m["To"] == "<bob@example.test>"
        assert m["Message-ID"].endswith(f"@{MAIL_NAME}>")
        assert m.get_payload() == "hello from mail(1)\n"
    finally:
        box.close()


class Session:
    """spfgate-sendmail -bs driven line by line (bounded reads)."""

    def __init__(self, stack):
        self.p = subprocess.Popen([str(stack.binary), "-C", str(stack.conf), "-bs"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=stack.env)
        self.buf = b""

    def reply(self, timeout=20):
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                left = deadline - time.monotonic()
                assert left > 0, f"no reply; have {self.buf!r}"
                r, _, _ = select.select([self.p.stdout], [], [], left)
                if r:
                    chunk = os.read(self.p.stdout.fileno(), 4096)
                    assert chunk, f"EOF; have {self.buf!r}"
                    self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\r\n")
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def send(self, text):
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def cmd(self, text):
        self.send(text + "\n")                # LF alone: made CRLF on the way
        return self.reply()


def test_bs_session(stack):
    s = Session(stack)
    try:
        assert s.reply()[0] == 220
        code, lines = s.cmd("EHLO client.test")
        assert code == 250 and "8BITMIME" in " ".join(lines), lines
        assert s.cmd("MAIL FROM:<someone@example.test>")[0] == 250
        assert s.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert s.cmd("RCPT TO:<ghost@example.test>")[0] == 550
        assert s.cmd("DATA")[0] == 354
        s.send("Subject: over -bs\n\nvia stdin\n..dot\n.\n")
        code, lines = s.reply()
        assert code == 250, lines
        assert s.cmd("QUIT")[0] == 221
        assert s.p.wait(timeout=20) == 0
    finally:
        if s.p.poll() is None:
            s.p.kill()
            s.p.wait(timeout=10)
    (m,) = stack.d.wait_mailbox("alice")
    assert m["Subject"] == "over -bs"
    assert m["Return-Path"] == "<someone@example.test>"
    assert m.get_payload() == "via stdin\n.dot\n"


def test_bp_lists_queue_and_mailq_name(stack, tmp_path):
    ok(stack.run("far@remote.test", input="Subject: stays queued\n\nx\n"))
    (qid,) = stack.d.queue_ids()
    p = ok(stack.run("-bp"))
    out = p.stdout.decode()
    assert qid in out and "far@remote.test" in out and f"<{ME}@{MAIL_NAME}>" in out, out
    mailq = tmp_path / "mailq"
    mailq.symlink_to(stack.binary)
    p = ok(stack.run(argv0=mailq))
    assert qid in p.stdout.decode() and "far@remote.test" in p.stdout.decode()
    # -q: flush through deliverd's control socket
    ok(stack.run("-q"))
    # -q with an interval is the daemon's business: nothing to do
    ok(stack.run("-q30m"))
    assert stack.d.queue_ids() == [qid]


def test_bv_verifies_without_sending(stack):
    p = stack.run("-bv", "alice", "ghost@example.test")
    assert p.returncode == EX_NOUSER, p
    out = p.stdout.decode()
    assert f"alice@{MAIL_NAME}... deliverable: 250" in out, out
    assert "ghost@example.test... undeliverable: 550 5.1.1" in out, out
    assert not stack.d.mailbox("alice").exists()
    assert stack.d.queue_ids() == []


def test_bi_newaliases_and_unsupported_modes(stack, tmp_path):
    p = ok(stack.run("-bi"))
    assert b"no alias database to build" in p.stderr, p.stderr
    link = tmp_path / "newaliases"
    link.symlink_to(stack.binary)
    p = ok(stack.run(argv0=link))
    assert b"no alias database to build" in p.stderr
    p = stack.run("-bd")
    assert p.returncode == EX_USAGE and b"-bd is not supported" in p.stderr, p


def test_unknown_recipient_refused(stack):
    p = stack.run("ghost@example.test", input="Subject: ghost\n\nx\n")
    assert p.returncode == EX_NOUSER, p
    err = p.stderr.decode()
    assert f"relayd at 127.0.0.1:{stack.r.port} refused RCPT TO:<ghost@example.test>: 550 5.1.1" \
        in err, err
    # with a good recipient too: that one gets it, the exit status still says
    p = stack.run("ghost@example.test", "alice", input="Subject: half\n\nx\n")
    assert p.returncode == EX_NOUSER, p
    assert b"not sent to this recipient" in p.stderr
    assert stack.d.wait_mailbox("alice")[0]["Subject"] == "half"


def test_relayd_down_is_tempfail(stack):
    port = free_port()
    p = stack.run("alice", input="Subject: down\n\nx\n",
                  env={"SPFGATE_RELAYD": f"127.0.0.1:{port}"})
    assert p.returncode == EX_TEMPFAIL, p
    err = p.stderr.decode()
    assert f"cannot connect to relayd at 127.0.0.1:{port}: Connection refused" in err, err
    assert "message not sent" in err


def test_deliverd_down_is_tempfail(stack):
    stack.d.stop()
    p = stack.run("alice", input="Subject: later\n\nx\n")
    assert p.returncode == EX_TEMPFAIL, p
    err = p.stderr.decode()
    assert f"relayd at 127.0.0.1:{stack.r.port} refused" in err and ": 4" in err, err


def test_config_errors(stack, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[relayd]\nlisten = nowhere\n")
    p = stack.run("-C", str(bad), "alice", input="x\n", conf=False)
    assert p.returncode == 78 and f"{bad}:2:".encode() in p.stderr, p


class FakeServer:
    """A minimal SMTP server with no extensions, answering from a script:
    replies[command word] (default 250); records every line it reads."""

    def __init__(self, replies):
        self.replies = replies
        self.lines = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.sock.accept()
        conn.settimeout(30)
        f = conn.makefile("rb")
        conn.sendall(b"220 fake ESMTP\r\n")
        in_data = False
        for raw in f:
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.lines.append(line)
            if in_data:
                if line == ".":
                    in_data = False
                    conn.sendall(self.replies.get(".", "250 2.0.0 ok").encode() + b"\r\n")
                continue
            word = line.split(":")[0].split(" ")[0].upper()
            if word == "RCPT":
                word = line
            reply = self.replies.get(word, "354 go" if word == "DATA" else "250 ok")
            conn.sendall(reply.encode() + b"\r\n")
            if word == "DATA" and reply.startswith("354"):
                in_data = True
            if word == "QUIT":
                break
        conn.close()
        self.sock.close()


def test_plain_server_and_refusals(stack):
    """No SIZE, no 8BITMIME: neither parameter goes on MAIL; a 5.6.0 after
    the dot is EX_DATAERR; a 4xx for one recipient sends nothing (75)."""
    srv = FakeServer({".": "554 5.6.0 content refused"})
    p = stack.run("alice", input="Subject: x\n\n\xe9t\xe9\n".encode("latin-1"),
                  env={"SPFGATE_RELAYD": f"127.0.0.1:{srv.port}"})
    srv.thread.join(timeout=30)
    assert p.returncode == 65, p
    assert f"relayd at 127.0.0.1:{srv.port} refused the message: 554 5.6.0 content refused" \
        in p.stderr.decode(), p.stderr
    assert srv.lines[0] == f"EHLO {MAIL_NAME}"
    assert srv.lines[1] == f"MAIL FROM:<{ME}@{MAIL_NAME}>", srv.lines
    assert srv.lines[-1] == "QUIT"

    srv = FakeServer({"RCPT TO:<bob@example.test>": "452 4.2.2 mailbox full"})
    p = stack.run("alice", "bob@example.test", input="Subject: x\n\nx\n",
                  env={"SPFGATE_RELAYD": f"127.0.0.1:{srv.port}"})
    srv.thread.join(timeout=30)
    assert p.returncode == EX_TEMPFAIL, p
    assert b"452 4.2.2 mailbox full; message not sent" in p.stderr, p.stderr
    assert "DATA" not in srv.lines and srv.lines[-1] == "QUIT", srv.lines
