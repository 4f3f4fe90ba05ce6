"""Run deliverd from the build tree for end-to-end tests.

    d = Deliverd(builddir, tmp_path / "d", users=("alice", "bob"),
                 aliases={"info": "alice, bob"}, nameserver=dns.addr,
                 inet=True, retry_min="1s", queue_lifetime="20s")
    d.start()                       # returns once LMTP answers (bounded poll)
    r = d.send("a@remote.test", ["alice@example.test"], "Subject: x\\n\\nhi\\n")
    d.wait_mailbox("alice", count=1)
    d.kill()                        # SIGKILL, for crash tests
    d.start()                       # same config, same spool
    d.stop()                        # SIGTERM, SIGKILL after a bound; -> rc

Layout under the directory given (everything of one instance):
    deliverd.conf    the configuration (written by the constructor)
    deliverd.log     deliverd -d's stderr (appended across restarts)
    users            the users file (one name a line)
    aliases          the aliases(5) file ("" in the config when aliases=None)
    spool/           [deliverd] spool (or spool=PATH, e.g. on a small tmpfs)
    mail/<user>      mailboxes ([deliverd] mailbox = <dir>/mail/%u)
The LMTP unix socket and the control socket live in a short directory of
their own under /tmp (sun_path holds only 108 bytes; mode 0755 so that
Postfix's lmtp client, user postfix, can reach the 0666 socket).

Attributes:
    .dir .conf .logfile .spool .maildir .users_file .aliases_file
    .sock           LMTP unix socket path (None when unix=False)
    .port           LMTP TCP port on 127.0.0.1 (None unless inet=True)
    .control        control socket path
    .postfix        Postfix transport for it: "lmtp:unix:/path" (or inet)
    .proc           the subprocess.Popen while running
Methods:
    start(timeout=15) stop(timeout=20) -> rc  kill()  restart()  alive()
    cleanup() (stop + remove the socket directory; the fixture calls it)
    reload() (SIGHUP)  flush() (SIGUSR1)
    lmtp(kind=None)  -> a connected smtplib.LMTP (unix, or "inet")
    send(sender, rcpts, msg, kind=None) -> {rcpt: (code, text)} per recipient
        (the RCPT refusals and the per-recipient DATA replies; never raises
        for an SMTP error reply)
    queue(*args, check=False) -> CompletedProcess of spfgate-queue -c conf args
    queue_ids(held=False) -> ids of the files in spool/queue (or spool/hold)
    mailbox(user) -> path;  messages(user) -> list of email.message.Message
        (read with Python's mailbox.mbox)
    wait_mailbox(user, count=1, timeout=20) -> the messages
    wait_queue_empty(timeout=20)
    log()  wait_log(pattern, timeout=10) -> line  sanitizer_reports()

The `deliverd_factory` fixture makes instances (keyword arguments as the
constructor's), starts them, and stops them at teardown, failing the test
on a sanitizer report in the log.
"""
import email
import mailbox as mboxlib
import os
import pathlib
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile

import pytest

from conftest import poll as _poll, free_port
from daemonproc import DaemonProcess

MAIL_NAME = "mx.example.test"
LOCAL_DOMAINS = "example.test, mx.example.test"


def write_config(path, listen, control, spool, mailbox, users_file,
                 aliases_file="", nameserver="", mail_name=MAIL_NAME,
                 local_domains=LOCAL_DOMAINS, dns_timeout=2, **deliverd):
    """Write a config file; extra keyword arguments are [deliverd] keys."""
    lines = ["[global]",
             f"mail_name = {mail_name}",
             f"local_domains = {local_domains}",
             f"nameservers = {nameserver}",
             f"dns_timeout = {dns_timeout}",
             "log = stderr",
             "[deliverd]",
             f"listen = {listen}",
             f"control = {control}",
             f"spool = {spool}",
             f"mailbox = {mailbox}",
             f"local_users = {users_file}",
             f"aliases = {aliases_file}"]
    # started as root, stay root unless a test names the user to become
    deliverd.setdefault("user", "")
    lines += [f"{k} = {v}" for k, v in deliverd.items()]
    pathlib.Path(path).write_text("\n".join(lines) + "\n")
    return path


class Deliverd(DaemonProcess):
    name = "deliverd"

    def __init__(self, builddir, tmpdir, users=("alice", "bob"), aliases=None,
                 nameserver="", unix=True, inet=False, port=None,
                 binary=None, spool=None, **config):
        """
        users: names for the users file; aliases: dict name -> "target, ..."
        (None: no aliases file); nameserver: "ADDR:PORT" of a test DNS
        server; unix/inet: which LMTP listeners (port: reuse a TCP port);
        spool: another spool directory (e.g. on a small tmpfs);
        config: more [global]/[deliverd] keys, e.g. retry_min="1s",
        queue_lifetime="30s", smarthost="127.0.0.1:2525", smarthost_tls="none",
        message_size_limit=1000000, mail_name=..., local_domains=...
        """
        super().__init__()
        self.builddir = pathlib.Path(builddir)
        self.binary = pathlib.Path(binary) if binary else self.builddir / "deliverd" / "deliverd"
        self.queue_tool = self.builddir / "deliverd" / "spfgate-queue"
        self.dir = pathlib.Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.spool = pathlib.Path(spool) if spool else self.dir / "spool"
        self.maildir = self.dir / "mail"
        self.maildir.mkdir(exist_ok=True)
        self.users_file = self.dir / "users"
        self.users_file.write_text("".join(f"{u}\n" for u in users))
        self.aliases_file = None
        if aliases is not None:
            self.aliases_file = self.dir / "aliases"
            self.aliases_file.write_text(
                "".join(f"{k}: {v}\n" for k, v in aliases.items()))
        self.sockdir = tempfile.mkdtemp(prefix="dd", dir="/tmp")
        os.chmod(self.sockdir, 0o755)
        self.control = os.path.join(self.sockdir, "ctl")
        listens = []
        self.sock = self.port = None
        if unix:
            self.sock = os.path.join(self.sockdir, "lmtp.sock")
            listens.append(f"unix:{self.sock}")
        if inet:
            self.port = port or free_port()
            listens.append(f"inet:{self.port}@127.0.0.1")
        if not listens:
            raise ValueError("deliverd needs unix=True or inet=True")
        self.listen = ", ".join(listens)
        self.postfix = (f"lmtp:unix:{self.sock}" if self.sock
                        else f"lmtp:inet:127.0.0.1:{self.port}")
        mailbox = config.pop("mailbox", f"{self.maildir}/%u")
        local_users = config.pop("local_users", self.users_file)
        self.conf = write_config(
            self.dir / "deliverd.conf", self.listen, self.control, self.spool,
            mailbox, local_users,
            aliases_file=self.aliases_file or "", nameserver=nameserver, **config)
        self.logfile = self.dir / "deliverd.log"

    # --- process control -------------------------------------------------

    def describe(self):
        return f" on {self.listen}"

    def ready(self):
        """True once an LMTP listener answers with a 220 greeting."""
        if self.sock:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr = self.sock
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            addr = ("127.0.0.1", self.port)
        s.settimeout(2)
        try:
            s.connect(addr)
            return s.recv(512).startswith(b"220")
        except OSError:
            return False
        finally:
            s.close()

    def _signal(self, sig):
        if not self.alive():
            raise AssertionError(f"deliverd is not running:\n{self.log()}")
        os.kill(self.proc.pid, sig)

    def reload(self):
        self._signal(signal.SIGHUP)

    def flush(self):
        self._signal(signal.SIGUSR1)

    def kill(self):
        """SIGKILL at once (crash tests); returns the exit status."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            rc = self.proc.returncode
            self.proc = None
        return rc

    def restart(self, timeout=15):
        self.stop()
        return self.start(timeout)

    def cleanup(self):
        """Stop and remove the socket directory (the fixture does this)."""
        self.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    # --- talking to it ---------------------------------------------------

    def lmtp(self, kind=None, timeout=30):
        """A connected smtplib.LMTP: kind None/"unix" or "inet"."""
        if kind == "inet" or (kind is None and not self.sock):
            c = smtplib.LMTP("127.0.0.1", self.port, timeout=timeout)
        else:
            c = smtplib.LMTP(timeout=timeout)
            c.connect(self.sock)
        return c

    def send(self, sender, rcpts, msg, kind=None, lhlo="client.test"):
        """
        One transaction; returns {rcpt: (code, text)} for every recipient:
        the RCPT reply when it was refused, else its reply after DATA.
        msg: str or bytes (LF or CRLF line ends; smtplib dot-stuffs).
        """
        if isinstance(msg, str):
            msg = msg.encode()
        out = {}
        c = self.lmtp(kind)
        try:
            code, text = c.ehlo(lhlo)
            if code != 250:
                raise AssertionError(f"LHLO: {code} {text}")
            code, text = c.mail(sender)
            if code != 250:
                return {r: (code, text.decode(errors="replace")) for r in rcpts}
            ok = []
            for r in rcpts:
                code, text = c.rcpt(r)
                if code in (250, 251):
                    ok.append(r)
                else:
                    out[r] = (code, text.decode(errors="replace"))
            if ok:
                # smtplib's LMTP.data() returns only the first reply; read one
                # reply per accepted recipient ourselves.
                code, text = c.docmd("DATA")
                if code != 354:
                    for r in ok:
                        out[r] = (code, text.decode(errors="replace"))
                else:
                    data = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", msg)
                    data = re.sub(rb"(?m)^\.", b"..", data)
                    if not data.endswith(b"\r\n"):
                        data += b"\r\n"
                    c.send(data + b".\r\n")
                    for r in ok:
                        code, text = c.getreply()
                        out[r] = (code, text.decode(errors="replace"))
            try:
                c.quit()
            except smtplib.SMTPException:
                pass
        finally:
            c.close()
        return out

    def queue(self, *args, check=False, timeout=30):
        """Run spfgate-queue -c conf ARGS; CompletedProcess (text)."""
        if not self.queue_tool.exists():
            pytest.fail(f"{self.queue_tool} not built")
        return subprocess.run([str(self.queue_tool), "-c", str(self.conf), *args],
                              capture_output=True, text=True, check=check,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def queue_ids(self, held=False):
        d = self.spool / ("hold" if held else "queue")
        try:
            return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def wait_queue_empty(self, timeout=20):
        _poll(lambda: not self.queue_ids(), timeout,
              f"an empty queue (left: {self.queue_ids()})\n{self.log()}")

    # --- mailboxes -------------------------------------------------------

    def mailbox(self, user):
        return self.maildir / user

    def messages(self, user):
        p = self.mailbox(user)
        if not p.exists():
            return []
        box = mboxlib.mbox(str(p), create=False)
        try:
            return [email.message_from_bytes(box.get_bytes(k)) for k in box.keys()]
        finally:
            box.close()

    def wait_mailbox(self, user, count=1, timeout=20):
        """Poll until user's mbox holds at least count messages."""
        def enough():
            m = self.messages(user)
            return m if len(m) >= count else None
        return _poll(enough, timeout,
                     f"{count} message(s) in {self.mailbox(user)}\n{self.log()}")

    # --- log ---------------------------------------------------------------


@pytest.fixture
def deliverd_factory(builddir, tmp_path):
    """Factory: deliverd_factory(start=True, **Deliverd kwargs) -> Deliverd."""
    made = []

    def make(start=True, **kw):
        d = Deliverd(builddir, tmp_path / f"deliverd{len(made)}", **kw)
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        d.cleanup()
    for d in made:
        assert not d.sanitizer_reports(), d.log()
