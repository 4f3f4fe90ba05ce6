"""Mailboxes written by deliverd's mbox code, read back by real mail readers.

tests/mboxw (a check program over deliverd/mbox.c) appends messages; GNU
mailutils' mail(1) and Python's mailbox.mbox read the result.  Quoting is
mboxo, as Postfix and Exim write it: a body line "From x" is stored as
">From x"; Python shows the stored line, mailutils takes the mailbox for
mboxrd and strips one '>' from every ">...From " line.  Then the whole
path: LMTP into deliverd, its mbox out, mail(1) reads it.
"""
import mailbox
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from deliverd import deliverd_factory  # noqa: F401  (fixture)

MAIL = "/usr/bin/mail"


@pytest.fixture(autouse=True)
def _need_mailutils():
    # A missing peer is a failure, never a silent skip.
    if not (os.path.exists(MAIL) and "mailutils" in os.path.realpath(MAIL)):
        pytest.fail("GNU mail(1) is missing: apt-get install -y mailutils")


@pytest.fixture
def mboxw(builddir):
    prog = pathlib.Path(builddir) / "tests" / "mboxw"
    if not prog.exists():
        pytest.fail(f"{prog} is not built: make check TESTS= builds it")
    return prog


def append(mboxw, box, sender, rcpt, *texts, tmp, check=True, args=()):
    """Append each text as one message; returns the CompletedProcess."""
    files = []
    for i, t in enumerate(texts):
        f = tmp / f"msg{len(list(tmp.glob('msg*')))}-{i}"
        f.write_bytes(t.encode() if isinstance(t, str) else t)
        files.append(str(f))
    r = subprocess.run([str(mboxw), *args, str(box), sender, rcpt, *files],
                       capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def mail_cmd(box, commands, home):
    """Run mail(1) on box with commands on stdin."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C",
           "MAILRC": "/dev/null"}
    r = subprocess.run([MAIL, "-n", "-N", "-f", str(box)], input=commands,
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def mail_headers(box, home):
    """mail -H: one summary line per message; returns the subjects."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C",
           "MAILRC": "/dev/null"}
    r = subprocess.run([MAIL, "-n", "-H", "-f", str(box)], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    subjects = []
    for line in r.stdout.splitlines():
        # ">N   1 a@b   Mon Nov 30 00:37   8/120   subject"
        parts = line.split()
        for i, p in enumerate(parts):
            if "/" in p and p.replace("/", "").isdigit():
                subjects.append(" ".join(parts[i + 1:]))
                break
    return subjects


def py_messages(box):
    mb = mailbox.mbox(str(box), create=False)
    try:
        return [m for m in mb]
    finally:
        mb.close()


ONE = ("Subject: one\nFrom: Alice <alice@example.org>\nTo: bob@example.test\n\n"
       "Hello Bob,\nFrom the start of a line.\n>From an already quoted line.\n"
       "Fromage is not quoted.\n")
TWO = "Subject: two\n\nno final newline"
THREE = "Subject: three\nContent-Type: text/plain; charset=utf-8\n\nGrüße\n\n\nFrom x\n"


def test_readers_read_what_mbox_wrote(mboxw, tmp_path):
    box = tmp_path / "bob"
    append(mboxw, box, "alice@example.org", "bob@example.test", ONE, TWO, tmp=tmp_path)
    append(mboxw, box, "", "Bob@Example.TEST", THREE, tmp=tmp_path)
    raw = box.read_bytes()
    assert raw.endswith(b"\n\n")
    assert raw.count(b"\nFrom ") + 1 == 3

    msgs = py_messages(box)
    assert [m["Subject"] for m in msgs] == ["one", "two", "three"]
    assert msgs[0].get_from().startswith("alice@example.org  ")
    assert msgs[2].get_from().startswith("MAILER-DAEMON  ")
    assert [m["Return-Path"] for m in msgs] == ["<alice@example.org>"] * 2 + ["<>"]
    assert [m["Delivered-To"] for m in msgs] == ["bob@example.test"] * 2 + ["Bob@Example.TEST"]
    body = msgs[0].get_payload()
    assert ">From the start of a line.\n" in body
    assert ">From an already quoted line.\n" in body
    assert "\nFromage is not quoted.\n" in body
    assert msgs[1].get_payload() == "no final newline\n"
    assert msgs[2].get_payload(decode=True).decode() == "Grüße\n\n\n>From x\n"

    assert mail_headers(box, tmp_path) == ["one", "two", "three"]
    out = mail_cmd(box, "print 1\nprint 3\nexit\n", tmp_path)
    assert "Hello Bob,\nFrom the start of a line.\n" in out
    assert "Fromage is not quoted." in out
    assert "Subject: three" in out
    # mail(1) adds X-IMAPbase/X-UID headers on first open (under its own
    # lock); the mailbox stays sound for everyone
    assert [m["Subject"] for m in py_messages(box)] == ["one", "two", "three"]
    assert oct(box.stat().st_mode & 0o777) == oct(0o600)


def test_append_after_a_reader_rewrote_the_mailbox(mboxw, tmp_path):
    """mail(1) deletes a message (rewriting the file under its own dotlock);
    later appends land after what it wrote, and both readers agree."""
    box = tmp_path / "bob"
    append(mboxw, box, "a@example.org", "bob@example.test", ONE, TWO, THREE, tmp=tmp_path)
    mail_cmd(box, "delete 2\nquit\n", tmp_path)
    assert mail_headers(box, tmp_path) == ["one", "three"]
    append(mboxw, box, "c@example.org", "bob@example.test", "Subject: four\n\nx\n",
           tmp=tmp_path)
    assert [m["Subject"] for m in py_messages(box)] == ["one", "three", "four"]
    assert mail_headers(box, tmp_path) == ["one", "three", "four"]


def test_mailutils_dotlock_is_respected(mboxw, tmp_path):
    box = tmp_path / "bob"
    append(mboxw, box, "a@example.org", "bob@example.test", ONE, tmp=tmp_path)
    subprocess.run(["dotlock", str(box)], check=True, timeout=30)
    try:
        r = append(mboxw, box, "a@example.org", "bob@example.test", TWO,
                   tmp=tmp_path, check=False, args=("-t", "300"))
        assert r.returncode == 75, r.stderr
        assert "4.2.0 mailbox locked" in r.stderr
    finally:
        subprocess.run(["dotlock", "-u", str(box)], check=True, timeout=30)
    append(mboxw, box, "a@example.org", "bob@example.test", TWO, tmp=tmp_path)
    assert mail_headers(box, tmp_path) == ["one", "two"]


def test_refused_mailboxes(mboxw, tmp_path):
    target = tmp_path / "target"
    target.write_text("")
    box = tmp_path / "bob"
    box.symlink_to(target)
    r = append(mboxw, box, "a@example.org", "bob@example.test", ONE, tmp=tmp_path,
               check=False)
    assert r.returncode == 69 and "5.2.0" in r.stderr and "symbolic link" in r.stderr
    assert target.read_text() == ""


def test_kill_during_a_write(mboxw, tmp_path):
    """SIGKILL while a big message is being appended (write or fsync): the
    next append removes what the killed writer left, since it never
    reported the message delivered (the spool delivers it again); readers
    see whole messages only.  A writer that finished before the kill
    keeps its message."""
    box = tmp_path / "bob"
    append(mboxw, box, "a@example.org", "bob@example.test", ONE, tmp=tmp_path)
    size0 = box.stat().st_size
    one = box.read_bytes()
    line = "x" * 99 + "\n"
    big = "Subject: big\n\n" + line * (1 << 20)      # about 100 MB
    f = tmp_path / "big"
    f.write_text(big)
    outcomes = []
    for attempt in range(3):
        p = subprocess.Popen([str(mboxw), str(box), "a@example.org", "bob@example.test",
                              str(f)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while box.stat().st_size == size0 and p.poll() is None \
                and time.monotonic() < deadline:
            pass
        p.send_signal(signal.SIGKILL)
        rc = p.wait(timeout=30)
        p.stderr.close()
        cut = box.stat().st_size - size0
        append(mboxw, box, "a@example.org", "bob@example.test",
               f"Subject: after{attempt}\n\ny\n", tmp=tmp_path)
        msgs = py_messages(box)
        subjects = [m["Subject"] for m in msgs]
        if rc == 0:
            outcomes.append("finished before the kill, kept")
            assert subjects == ["one", "big", f"after{attempt}"]
            assert msgs[1].get_payload() == line * (1 << 20)
        else:
            outcomes.append(f"killed with {cut} bytes written, removed")
            assert rc == -signal.SIGKILL
            assert subjects == ["one", f"after{attempt}"]
            assert mail_headers(box, tmp_path) == subjects
        # back to one message for the next attempt (mail(1) rewrote it)
        box.write_bytes(one)
    print("kill during write:", ", ".join(outcomes))
    assert not pathlib.Path(f"{box}.lock").exists()
    f.unlink()          # pytest keeps old tmp dirs: not 100 MB of them
    box.unlink()


def test_lmtp_to_mbox_read_by_mail(deliverd_factory, tmp_path):   # noqa: F811
    """The whole path: LMTP in, deliverd's spool and scheduler, mbox out."""
    d = deliverd_factory(users=("alice", "bob"),
                         aliases={"info": "alice, bob", "prog": "|/bin/cat"})
    msg = ("From: Sender <s@remote.test>\nTo: info@example.test\nSubject: via lmtp\n\n"
           "Hello,\nFrom the start of a line.\n.leading dot\n")
    r = d.send("s@remote.test", ["info@example.test", "nobody@example.test",
                                 "prog@example.test"], msg)
    assert r["info@example.test"][0] == 250
    assert r["nobody@example.test"][0] == 550
    assert r["prog@example.test"][0] == 550
    r = d.send("s@remote.test", ["Alice+tag@Example.TEST"], msg)
    assert r["Alice+tag@Example.TEST"][0] == 250
    d.wait_mailbox("alice", count=2)
    d.wait_mailbox("bob", count=1)
    alice = pathlib.Path(d.mailbox("alice"))
    for m in py_messages(alice):
        assert m["Return-Path"] == "<s@remote.test>"
        assert m["Subject"] == "via lmtp"
        assert ">From the start of a line.\n.leading dot\n" in m.get_payload()
    assert mail_headers(alice, tmp_path) == ["via lmtp", "via lmtp"]
    out = mail_cmd(alice, "print 1\nexit\n", tmp_path)
    assert "Hello,\nFrom the start of a line.\n.leading dot\n" in out
    assert alice.read_bytes().endswith(b"\n\n")


def test_same_bytes_as_postfix(mboxw, tmp_path):
    """Postfix (virtual(8), the same mail_copy() code as local(8)) delivers
    a message; mboxw appends the message Postfix stored: both entries are
    byte for byte the same but for the date and Postfix's X-Original-To."""
    import re
    import smtplib

    import postfix
    from conftest import free_port
    if not postfix.available():
        pytest.fail(postfix.install_hint())
    pf = postfix.Postfix(tmp_path / "pf", free_port(), mailboxes=["bob@example.test"])
    pf.start()
    try:
        body = ("Subject: compare\nFrom: Alice <alice@example.org>\n\n"
                "From the start.\nFromage\n From indented\n\n\nlast\n")
        with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
            s.sendmail("alice@example.org", ["Bob@Example.TEST"],
                       body.replace("\n", "\r\n").encode())
        pf.wait_for_mail("bob@example.test", count=1)
        theirs = pf.mailbox("bob@example.test").read_bytes()
    finally:
        pf.stop()

    lines = theirs.split(b"\n")
    assert lines[0].startswith(b"From alice@example.org  ")
    assert lines[1] == b"Return-Path: <alice@example.org>"
    assert lines[2].startswith(b"X-Original-To: ")
    # Postfix 3.7 keeps the recipient's case here
    assert lines[3] == b"Delivered-To: Bob@Example.TEST"
    # the message as Postfix stored it, its mboxo quoting undone
    assert theirs.endswith(b"\n\n")
    stored = b"\n".join(lines[4:])[:-1]
    assert b">>From" not in stored
    stored = re.sub(rb"(?m)^>From ", b"From ", stored)
    assert b"\nFrom the start.\n" in stored

    box = tmp_path / "ours"
    append(mboxw, box, "alice@example.org", "Bob@Example.TEST", stored, tmp=tmp_path)
    ours = box.read_bytes()
    date = rb"^(From \S+  )\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
    assert re.match(date, ours) and re.match(date, theirs)
    norm = lambda b: re.sub(date, rb"\1DATE\n", b, count=1)      # noqa: E731
    theirs_wo = b"\n".join(lines[:2] + lines[3:])
    assert norm(ours) == norm(theirs_wo)


def test_disk_full_leaves_whole_messages(mboxw, tmp_path):
    """A mailbox on a tiny tmpfs: appends fail with 4.3.1 once it is full,
    and what is there is whole messages only; space back, appends work."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (needs root): {r.stderr}")
    try:
        box = mnt / "bob"
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * 16384)
        msg = "Subject: m{}\n\n" + ("y" * 79 + "\n") * 100       # about 8 KB
        good = 0
        for i in range(20):
            r = append(mboxw, box, "a@example.org", "bob@example.test",
                       msg.format(i), tmp=tmp_path, check=False)
            if r.returncode != 0:
                break
            good += 1
        assert r.returncode == 75, r.stderr
        assert "4.3.1" in r.stderr
        assert 0 < good < 20
        size = box.stat().st_size
        assert [m["Subject"] for m in py_messages(box)] == [f"m{i}" for i in range(good)]
        assert box.read_bytes().endswith(b"\n\n")
        assert not pathlib.Path(f"{box}.lock").exists()
        filler.unlink()
        append(mboxw, box, "a@example.org", "bob@example.test", msg.format("last"),
               tmp=tmp_path)
        assert box.stat().st_size > size
        assert mail_headers(box, tmp_path)[-1] == "mlast"
    finally:
        subprocess.run(["umount", str(mnt)], timeout=30)
