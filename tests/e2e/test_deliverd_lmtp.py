"""deliverd's LMTP server, control socket and queue tool, end to end.

Clients are Python's smtplib.LMTP over the unix socket and over TCP, raw
sockets where a test needs exact bytes (pipelining, bare CR, NUL), and a
real Postfix handing mail over with its lmtp(8) client.

Remote recipients go through a smarthost on a loopback port where nobody
listens: their mail stays queued (deferred), so a test can read exactly
what deliverd stored in its spool.  Local recipients land in mbox files,
read back with Python's mailbox module.
"""
import os
import pathlib
import re
import socket
import subprocess

import pytest

import postfix
from conftest import free_port, poll
from deliverd import Deliverd, deliverd_factory  # noqa: F401  (fixture)

REMOTE = "r@remote.test"


@pytest.fixture
def mkd(deliverd_factory):
    """deliverd with remote mail parked at a dead smarthost."""
    def make(**kw):
        kw.setdefault("smarthost", f"127.0.0.1:{free_port()}")
        kw.setdefault("smarthost_tls", "none")
        kw.setdefault("aliases", {"info": "alice, bob", "ext": "x@remote.test",
                                  "pipe": "|/bin/cat", "loop1": "loop2", "loop2": "loop1"})
        return deliverd_factory(**kw)
    return make


def spool_file(d, qid):
    """(header lines, message text) of a queued message."""
    for sub in ("queue", "hold"):
        p = d.spool / sub / qid
        if p.exists():
            raw = p.read_bytes()
            head, _, text = raw.partition(b"\nend\n")
            return head.decode().splitlines(), text
    raise AssertionError(f"{qid} not in the spool")


def without_received(text):
    """The message text after deliverd's own Received: header."""
    assert text.startswith(b"Received: from "), text[:200]
    m = re.match(rb"Received: [^\n]*(?:\n[ \t][^\n]*)*\n", text)
    return text[m.end():]


def qid_of(reply):
    m = re.search(r"queued as ([0-9A-Z]+)", reply[1])
    assert m, reply
    return m.group(1)


def landed(d, user, marker, timeout=20):
    """Wait until a message with marker in it is in user's mbox."""
    def find():
        return any(marker in m.get_payload() for m in d.messages(user))
    return poll(find, timeout, f"{marker!r} in {d.mailbox(user)}\n{d.log()}")


def tmp_empty(d):
    """No partial message left in spool/tmp (polled: the scheduler passes
    its small defer notes through tmp/ too, for an instant)."""
    poll(lambda: not any((d.spool / "tmp").iterdir()), 10,
         f"an empty {d.spool / 'tmp'}: {list((d.spool / 'tmp').iterdir())}")


class Raw:
    """A raw LMTP connection: exact bytes out, replies parsed in."""

    def __init__(self, d, kind="unix"):
        if kind == "unix":
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.connect(d.sock)
        else:
            self.s = socket.create_connection(("127.0.0.1", d.port))
        self.s.settimeout(30)
        self.buf = b""
        assert self.reply()[0] == 220

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode()

    def reply(self):
        """(code, [lines]) of one possibly multi-line reply."""
        lines = []
        while True:
            line = self.line()
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines

    def close(self):
        self.s.close()


# --- greeting and commands -------------------------------------------------

@pytest.mark.parametrize("kind", ["unix", "inet"])
def test_lhlo_capabilities(mkd, kind):
    d = mkd(inet=True, message_size_limit=123456)
    c = d.lmtp(kind)
    code, text = c.ehlo("client.test")
    assert code == 250
    caps = text.decode().splitlines()
    assert caps[0] == "mx.example.test"
    assert set(caps[1:]) == {"PIPELINING", "SIZE 123456", "8BITMIME", "ENHANCEDSTATUSCODES",
                             "XQUARANTINE"}
    c.quit()


def test_commands(mkd):
    d = mkd()
    r = Raw(d)
    for cmd, want in [(b"MAIL FROM:<a@b.test>", "503 5.5.1"), (b"EHLO x", "500 5.5.1"),
                      (b"LHLO client.test", "250"), (b"NOOP", "250 2.0.0"),
                      (b"VRFY alice", "252 2.5.2"), (b"HELP", "214"),
                      (b"RCPT TO:<alice@example.test>", "503 5.5.1"),
                      (b"DATA", "503 5.5.1"), (b"FOO", "500 5.5.2"),
                      (b"MAIL FROM:<a@b.test> SIZE=1 BODY=8BITMIME", "250 2.1.0"),
                      (b"MAIL FROM:<a@b.test>", "503 5.5.1"),
                      (b"RSET", "250 2.0.0"), (b"MAIL FROM:<a@b.test> FOO=1", "555 5.5.4"),
                      (b"MAIL FROM:<bad address>", "501"),
                      (b"MAIL FROM:<>", "250 2.1.0"),
                      (b"RCPT TO:<>", "501"), (b"RCPT TO:<Postmaster>", None),
                      (b"X" * 5000, "500 5.5.2"), (b"NOOP", "250"),
                      (b"QUIT", "221 2.0.0")]:
        r.send(cmd + b"\r\n")
        code, lines = r.reply()
        if want:
            assert f"{code} {lines[-1]}".startswith(want), (cmd, code, lines)
    assert r.s.recv(100) == b""
    r.close()


def test_unknown_user_refused_at_rcpt(mkd):
    d = mkd(inet=True)
    c = d.lmtp("inet")
    c.ehlo("client.test")
    assert c.mail("s@remote.test")[0] == 250
    code, text = c.rcpt("nobody@example.test")
    assert (code, text[:5]) == (550, b"5.1.1")
    code, text = c.rcpt("pipe@example.test")
    assert (code, text[:5]) == (550, b"5.7.1")
    code, text = c.rcpt("loop1@example.test")
    assert (code, text[:5]) == (550, b"5.4.6")
    assert c.rcpt("ALICE@Example.Test")[0] == 250
    c.quit()
    assert "reject rcpt=nobody@example.test" in d.log()


def test_mixed_recipients_one_reply_each(mkd):
    d = mkd()
    rcpts = ["alice@example.test", "nobody@example.test", "info@example.test",
             REMOTE, "ext@example.test", "postmaster@example.test"]
    out = d.send("s@remote.test", rcpts, "Subject: mixed\n\nmixed body\n")
    assert out["nobody@example.test"][0] == 550
    ok = [r for r in rcpts if r != "nobody@example.test"]
    for r in ok:
        assert out[r][0] == 250 and out[r][1].startswith("2.0.0"), out
    ids = {qid_of(out[r]) for r in ok}
    assert len(ids) == 1
    qid = ids.pop()
    line = d.wait_log(rf"id={qid} from=<s@remote.test> size=\d+ nrcpt=\d+ client=local")
    assert "nrcpt=" in line
    landed(d, "alice", "mixed body")
    landed(d, "bob", "mixed body")


def test_spool_recipients_and_received(mkd):
    d = mkd()
    out = d.send("s@remote.test", [REMOTE, "ext@example.test"], "Subject: s\n\nbody\n")
    qid = qid_of(out[REMOTE])
    head, text = spool_file(d, qid)
    rcpts = sorted(h for h in head if h.startswith("rcpt "))
    assert rcpts == ["rcpt - r@remote.test\tr@remote.test",
                     "rcpt - x@remote.test\text@example.test"]
    assert "sender s@remote.test" in head
    first = text.split(b"\n\t")
    assert first[0] == b"Received: from client.test (local)"
    assert first[1].startswith(b"by mx.example.test (spfgate deliverd) with LMTP id " + qid.encode())
    assert without_received(text) == b"Subject: s\n\nbody\n"
    # one recipient: the Received header names it
    out = d.send("<>", [REMOTE], "Subject: one\n\nx\n")
    head, text = spool_file(d, qid_of(out[REMOTE]))
    assert b"\tfor <r@remote.test>;" in text.split(b"\n\n")[0]
    assert "sender " in head or "sender" in head


def test_pipelining_in_one_write(mkd):
    d = mkd()
    r = Raw(d)
    r.send(b"LHLO client.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<r@remote.test>\r\n"
           b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<x2@remote.test>\r\nDATA\r\n")
    replies = [r.reply() for _ in range(6)]
    assert [c for c, _ in replies] == [250, 250, 250, 550, 250, 354]
    # the body, the final dot and the next transaction in one write
    r.send(b"Subject: p\r\n\r\npiped\r\n.\r\nMAIL FROM:<t@remote.test>\r\n"
           b"RCPT TO:<r@remote.test>\r\nDATA\r\n")
    done = [r.reply() for _ in range(5)]
    assert [c for c, _ in done] == [250, 250, 250, 250, 354]
    r.send(b"second\r\n.\r\nQUIT\r\n")
    assert r.reply()[0] == 250
    assert r.reply()[0] == 221
    r.close()
    assert len(d.queue_ids()) == 2


def test_dot_stuffing_and_line_ends(mkd):
    d = mkd()
    body = "Subject: dots\n\n.leading\n..two\n...\nend.\n. \n"
    out = d.send("s@remote.test", [REMOTE], body)
    _, text = spool_file(d, qid_of(out[REMOTE]))
    assert without_received(text) == body.encode()
    # bare LF line ends, the final dot included, are taken too
    r = Raw(d)
    r.send(b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<r@remote.test>\r\nDATA\r\n")
    assert [r.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    r.send(b"Subject: lf\n\n..x\r\ny\n.\n")
    code, lines = r.reply()
    assert code == 250, lines
    _, text = spool_file(d, re.search(r"queued as (\w+)", lines[0]).group(1))
    assert without_received(text) == b"Subject: lf\n\n.x\ny\n"
    r.close()


def test_data_split_anywhere(mkd):
    """The DATA state machine keeps its place across reads: byte by byte."""
    d = mkd()
    r = Raw(d)
    r.send(b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<r@remote.test>\r\nDATA\r\n")
    assert [r.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    wire = b"Subject: split\r\n\r\n..a\r\nb.\r\n...\r\n" + b"c" * 100 + b"\r\n.\r\nNOOP\r\n"
    for i in range(len(wire)):
        r.send(wire[i:i + 1])
    code, lines = r.reply()
    assert code == 250, lines
    assert r.reply()[0] == 250          # the NOOP after the dot
    _, text = spool_file(d, re.search(r"queued as (\w+)", lines[0]).group(1))
    assert without_received(text) == b"Subject: split\n\n.a\nb.\n..\n" + b"c" * 100 + b"\n"
    r.close()


@pytest.mark.parametrize("bad", [b"nul\x00byte", b"bare\rcr", b"end cr\r"])
def test_nul_and_bare_cr_refused(mkd, bad):
    d = mkd()
    r = Raw(d)
    r.send(b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<r@remote.test>\r\n"
           b"RCPT TO:<q@remote.test>\r\nDATA\r\n")
    assert [r.reply()[0] for _ in range(5)] == [250, 250, 250, 250, 354]
    r.send(b"Subject: bad\r\n\r\n" + bad + b"\r\nmore\r\n.\r\n")
    for _ in range(2):
        code, lines = r.reply()
        assert (code, lines[0][:5]) == (554, "5.6.0")
    # the session goes on
    r.send(b"NOOP\r\n")
    assert r.reply()[0] == 250
    r.close()
    assert d.queue_ids() == []
    tmp_empty(d)


def test_half_closed_client_gets_its_replies(mkd):
    """Everything in one write, then shutdown(SHUT_WR): replies still come."""
    d = mkd()
    r = Raw(d)
    r.send(b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<r@remote.test>\r\nDATA\r\n"
           b"Subject: h\r\n\r\nhalf\r\n.\r\nQUIT\r\n")
    r.s.shutdown(socket.SHUT_WR)
    assert [r.reply()[0] for _ in range(6)] == [250, 250, 250, 354, 250, 221]
    assert r.s.recv(10) == b""
    r.close()
    assert len(d.queue_ids()) == 1
    # shut down in the middle of DATA: nothing stored
    r = Raw(d)
    r.send(b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<r@remote.test>\r\nDATA\r\n"
           b"Subject: h\r\n\r\ncut off\r\n")
    r.s.shutdown(socket.SHUT_WR)
    assert [r.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    assert r.s.recv(10) == b""
    r.close()
    d.wait_log("lost connection client=local in DATA")
    assert len(d.queue_ids()) == 1
    tmp_empty(d)


def _memory_kb(pid, field="VmHWM"):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _plain_binary(binary):
    """An ELF file without sanitizers (not a valgrind wrapper script)."""
    data = pathlib.Path(binary).read_bytes()
    return data.startswith(b"\x7fELF") and b"__asan_init" not in data


def test_large_message_streamed(mkd):
    d = mkd(message_size_limit=20000000)
    line = ("x" * 75 + "\n")
    body = "Subject: big\n\n" + line * (5 * 1024 * 1024 // len(line))
    before = _memory_kb(d.proc.pid)
    out = d.send("s@remote.test", [REMOTE], body)
    assert out[REMOTE][0] == 250, out
    _, text = spool_file(d, qid_of(out[REMOTE]))
    assert without_received(text) == body.encode()
    if _plain_binary(d.binary):
        # streamed to disk: the peak grew by far less than the message
        assert _memory_kb(d.proc.pid) - before < 2048, (before, _memory_kb(d.proc.pid))


def test_over_size(mkd):
    d = mkd(message_size_limit=100000)
    c = d.lmtp()
    c.ehlo("c")
    code, text = c.mail("s@remote.test", ["SIZE=200000"])
    assert (code, text[:5]) == (552, b"5.3.4")
    c.quit()
    out = d.send("s@remote.test", [REMOTE, "q@remote.test"],
                 "Subject: big\n\n" + "y" * 150000 + "\n")
    for r in (REMOTE, "q@remote.test"):
        assert (out[r][0], out[r][1][:5]) == (552, "5.3.4"), out
    assert d.queue_ids() == []
    # just under the limit passes
    out = d.send("s@remote.test", [REMOTE], "Subject: ok\n\n" + "y" * 90000 + "\n")
    assert out[REMOTE][0] == 250


def test_many_sessions_at_once(mkd):
    """Sessions interleave: 40 open at once, each finishing in turn."""
    d = mkd()
    conns = [Raw(d) for _ in range(40)]
    for i, r in enumerate(conns):
        r.send(b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<r@remote.test>\r\nDATA\r\n")
    for r in conns:
        assert [r.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    for i, r in enumerate(conns):
        r.send(f"Subject: {i}\r\n\r\nparallel {i}\r\n.\r\n".encode())
    for r in conns:
        assert r.reply()[0] == 250
        r.close()
    assert len(d.queue_ids()) == 40


def test_out_of_descriptors_recovers(mkd):
    """accept() failing with EMFILE pauses the listener instead of spinning;
    once descriptors are free again, connections are served."""
    d = mkd()
    subprocess.run(["prlimit", f"--pid={d.proc.pid}", "--nofile=64:64"], check=True)
    conns, starved = [], 0
    for _ in range(120):                # bounded: well past the limit
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(0.5)
        s.connect(d.sock)               # the kernel's backlog takes it
        conns.append(s)
        try:
            if not s.recv(100).startswith(b"220"):
                starved += 1
        except socket.timeout:
            starved += 1
        if starved:
            break
    assert starved, "never ran out of descriptors"
    d.wait_log("lmtp: accept: .*pausing")
    for s in conns:
        s.close()
    assert d.send("s@remote.test", [REMOTE], "after\n")[REMOTE][0] == 250
    assert d.alive()


# --- signals ---------------------------------------------------------------

def test_check_mode(builddir, tmp_path):
    d = Deliverd(builddir, tmp_path / "d")
    ok = subprocess.run([str(d.binary), "-t", "-c", str(d.conf)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text(d.conf.read_text() + "message_size_limit = lots\n")
    r = subprocess.run([str(d.binary), "-t", "-c", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    n = len(bad.read_text().splitlines())
    assert r.stderr.startswith(f"{bad}:{n}: "), r.stderr
    assert subprocess.run([str(d.binary), "-x"], capture_output=True).returncode == 2
    d.cleanup()


def test_sighup_reload(mkd):
    d = mkd()
    assert d.send("s@remote.test", ["carol@example.test"], "x\n")["carol@example.test"][0] == 550
    d.users_file.write_text("alice\nbob\ncarol\n")
    d.reload()
    d.wait_log("reload: config=")
    assert d.send("s@remote.test", ["carol@example.test"], "x\n")["carol@example.test"][0] == 250
    # a broken file is logged and the running configuration kept
    good = d.conf.read_text()
    d.conf.write_text(good + "no_such_key = 1\n")
    d.reload()
    d.wait_log("keeping the running configuration")
    assert d.alive()
    assert d.send("s@remote.test", ["carol@example.test"], "x\n")["carol@example.test"][0] == 250
    d.conf.write_text(good)


def test_sigterm_lets_open_transaction_finish(mkd):
    d = mkd()
    idle = Raw(d)
    r = Raw(d)
    r.send(b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<r@remote.test>\r\n")
    assert [r.reply()[0] for _ in range(3)] == [250, 250, 250]
    os.kill(d.proc.pid, 15)
    # the idle session is let go at once, the open one may finish
    assert idle.reply()[0] == 421
    poll(lambda: not os.path.exists(d.sock), 10, "the socket to go")
    r.send(b"DATA\r\n")
    assert r.reply()[0] == 354
    r.send(b"Subject: late\r\n\r\nlate\r\n.\r\n")
    code, lines = r.reply()
    assert code == 250, lines
    assert r.reply()[0] == 421
    assert d.proc.wait(timeout=20) == 0
    d.proc = None
    qid = re.search(r"queued as (\w+)", lines[0]).group(1)
    assert qid in d.queue_ids()
    idle.close()
    r.close()


# --- queue tool --------------------------------------------------------------

def test_queue_tool(mkd):
    d = mkd()
    assert d.queue("list").stdout.strip() == "Mail queue is empty"
    a = qid_of(d.send("s@remote.test", [REMOTE, "ext@example.test"], "Subject: a\n\na\n")[REMOTE])
    b = qid_of(d.send("<>", [REMOTE], "Subject: b\n\nb\n")[REMOTE])
    out = d.queue("list").stdout
    assert a in out and b in out and "<s@remote.test>" in out and "<>" in out
    assert "pending   ext@example.test -> x@remote.test" in out
    assert "2 Requests" in out
    r = d.queue("hold", a)
    assert r.returncode == 0, r.stderr
    assert d.queue_ids(held=True) == [a]
    assert re.search(rf"^{a}!", d.queue("list").stdout, re.M)
    r = d.queue("hold", a)
    assert r.returncode == 1 and "already held" in r.stderr
    assert d.queue("release", a).returncode == 0
    assert a in d.queue_ids()
    assert d.queue("delete", b).returncode == 0
    assert d.queue_ids() == [a]
    r = d.queue("delete", "0000000000000000Z")
    assert r.returncode == 1 and "no such message" in r.stderr
    assert d.queue("delete", "../etc").returncode == 2
    assert d.queue("flush").returncode == 0
    d.wait_log("control: flush")
    d.flush()
    d.wait_log("flush: SIGUSR1")
    assert d.queue("bogus").returncode == 2
    # the control protocol itself; a connection left open does not hold up a stop
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.connect(d.control)
    ctl.settimeout(10)
    ctl.sendall(b"LIST\nHOLD nonsense\nFOO\n")
    got = b""
    while got.count(b"\n") < 4:
        got += ctl.recv(4096)
    assert got.decode().splitlines() == [f"{a} queue", "ok", "error: not a queue id",
                                         "error: unknown command (LIST FLUSH DELETE HOLD RELEASE QUIT)"]
    # list works without deliverd; the rest says it is not running
    assert d.stop() == 0
    ctl.close()
    assert a in d.queue("list").stdout
    r = d.queue("flush")
    assert r.returncode == 1 and "deliverd is not running" in r.stderr


def test_control_socket_mode(mkd):
    d = mkd()
    assert os.stat(d.control).st_mode & 0o777 == 0o600
    assert os.stat(d.sock).st_mode & 0o777 == 0o666


def test_stale_socket_replaced_and_live_one_kept(mkd, builddir, tmp_path):
    d = mkd()
    d.kill()
    assert os.path.exists(d.sock)           # left behind by the dead one
    d.start()                               # replaced
    assert d.send("s@remote.test", [REMOTE], "x\n")[REMOTE][0] == 250
    # a second deliverd on the same socket refuses to start
    other = Deliverd(builddir, tmp_path / "other")
    other.conf.write_text(other.conf.read_text().replace(f"unix:{other.sock}", f"unix:{d.sock}"))
    with pytest.raises(RuntimeError, match="in use"):
        other.start(timeout=5)
    other.cleanup()
    # nor does one on another socket but the same spool
    third = Deliverd(builddir, tmp_path / "third", spool=d.spool)
    with pytest.raises(RuntimeError, match="in use by another deliverd"):
        third.start(timeout=10)
    third.cleanup()
    assert d.send("s@remote.test", [REMOTE], "y\n")[REMOTE][0] == 250


# --- disk full -----------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.fail("the disk-full test mounts a tmpfs: run as root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full(mkd, tmpfs):
    d = mkd(spool=tmpfs / "spool", message_size_limit=5000000)
    acked = []
    body = "Subject: fill\n\n" + ("z" * 99 + "\n") * 1500     # ~150 kB
    refused = None
    for i in range(20):
        out = d.send("s@remote.test", [REMOTE, "q@remote.test"], body + f"n{i}\n")
        codes = {c for c, _ in out.values()}
        if codes == {250}:
            acked.append(qid_of(out[REMOTE]))
            continue
        refused = out
        break
    assert refused, "the 1 MB spool never filled up"
    for code, text in refused.values():
        assert (code, text[:5]) == (452, "4.3.1"), refused
    # everything acknowledged is there, whole; nothing half written left
    for i, qid in enumerate(acked):
        _, text = spool_file(d, qid)
        assert without_received(text) == (body + f"n{i}\n").encode()
    tmp_empty(d)
    assert d.alive()
    # space comes back: accepted again
    for qid in acked[:3]:
        assert d.queue("delete", qid).returncode == 0
    out = d.send("s@remote.test", [REMOTE], body)
    assert out[REMOTE][0] == 250, out


def test_unwritable_spool(mkd):
    """The spool's tmp/ gone from under it: 452 4.3.1, then fine again."""
    d = mkd()
    tmp = d.spool / "tmp"
    aside = d.spool / "tmp.aside"
    tmp.rename(aside)
    aside.rmdir()                   # deliverd's handle now points nowhere
    c = d.lmtp()
    c.ehlo("c")
    assert c.mail("s@remote.test")[0] == 250
    assert c.rcpt(REMOTE)[0] == 250
    code, text = c.docmd("DATA")
    assert (code, text[:5]) == (452, b"4.3.1")
    c.quit()
    assert d.queue_ids() == []
    d.restart()                     # the spool is set up again at start
    assert d.send("s@remote.test", [REMOTE], "x\n")[REMOTE][0] == 250


# --- Postfix in front ----------------------------------------------------------

class PostfixLmtp(postfix.Postfix):
    """The shared private Postfix, plus the lmtp(8) client it needs."""

    def write(self):
        super().write()
        with open(self.conf / "master.cf", "a") as f:
            f.write("lmtp      unix  -       -       n       -       -       lmtp\n")


def test_postfix_delivers_over_lmtp(mkd, tmp_path):
    if not postfix.available():
        pytest.fail(postfix.install_hint())
    d = mkd()
    port = free_port()
    pf = PostfixLmtp(tmp_path / "pf", port,
                     mailboxes={"alice@example.test", "bob@example.test",
                                "nobody@example.test"},
                     extra={"virtual_transport": d.postfix,
                            "lmtp_destination_recipient_limit": "50"})
    pf.start()
    try:
        import smtplib
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("client.test")
            s.sendmail("sender@remote.test", ["alice@example.test", "bob@example.test"],
                       "Subject: via postfix\r\n\r\npostfix to deliverd\r\n")
            s.sendmail("sender@remote.test", ["nobody@example.test"],
                       "Subject: unknown\r\n\r\nnobody\r\n")
        landed(d, "alice", "postfix to deliverd", timeout=60)
        landed(d, "bob", "postfix to deliverd", timeout=60)
        poll(lambda: re.search(r"to=<nobody@example.test>.*status=bounced.*5\.1\.1", pf.log()),
             60, "Postfix to bounce the unknown user")
        assert re.search(r"to=<alice@example.test>.*relay=.*status=sent \(250 2\.0\.0", pf.log())
        d.wait_log(r"id=\w+ from=<sender@remote.test> size=\d+ nrcpt=2 client=local")
    finally:
        pf.stop()


def test_client_that_never_reads_cannot_grow_memory(mkd):
    """Pipelined commands whose replies are never read: deliverd stops
    reading instead of buffering replies without bound."""
    d = mkd()
    r = Raw(d)
    before = _memory_kb(d.proc.pid, "VmRSS")
    r.s.settimeout(3)
    chunk = b"NOOP\r\n" * 20000          # 120 KB of commands, 160 KB of replies
    sent = 0
    try:
        for _ in range(400):             # at most 48 MB
            r.s.sendall(chunk)
            sent += len(chunk)
    except (socket.timeout, BlockingIOError):
        pass                             # the kernel buffers are full: good
    # far less than everything went in: reading stopped
    assert sent < 400 * len(chunk), "deliverd kept reading a client that never reads"
    grown = _memory_kb(d.proc.pid, "VmRSS") - before
    assert grown < 32 * 1024, f"deliverd grew by {grown} KiB"
    # once the client reads again, every reply arrives and the session goes on
    # (a chunk cut by the timeout may have gone in partly: a broken
    # command then gets a 5xx, which is fine; what counts is the end)
    import threading
    r.s.settimeout(30)
    seen = {"ok": 0, "end": None}

    def read_all():
        for _ in range(sent // 6 + 20002):
            code = r.reply()[0]
            if code == 221:
                seen["end"] = code
                return
            seen["ok"] += code == 250

    t = threading.Thread(target=read_all)
    t.start()
    r.send(b"\r\nQUIT\r\n")
    t.join(60)
    assert seen["end"] == 221
    assert seen["ok"] >= sent // 6
    r.close()
