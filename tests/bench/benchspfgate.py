"""benchspfgate: spfgate itself as a benchmark peer, run from a build tree.

Spfgate(base, builddir, dns_addr) is the whole system on loopback:
relayd on 127.0.0.1:PORT with filterd as its milter over a unix socket
(filterd as benchpeers.Filterd sets it up: it SPF-checks loopback
clients) and deliverd behind it over LMTP on a unix socket, delivering
durably into one mbox (the `nobody` user's, under the work directory),
like the Postfix peers in benchpeers.  It offers what those offer to the
benchmark code: .port, .mbox, .queued(), .pids(), .log_tail(), start()
and stop().

add_relayd() starts a further relayd on the same deliverd (with the same
filterd as its milter, or without milters) and its own [relayd] keys
(the scale test's session limits); drop_relayd() stops it.

Every daemon is started as root with `user =` empty, so that it stays as
started instead of switching to an spfgate-* account this machine may
not have, and logs to a file under its directory (log = stderr,
redirected), as Postfix's maillog_file does.
"""
import os
import pathlib
import shutil
import subprocess
import tempfile

from benchutil import (BenchError, PROCS, stop_popen, free_port,
                       wait_connectable)
from benchpeers import DOMAIN, MAIL_NAME, RCPT_USER, Mbox, Filterd, Postfix


def global_section(dns_addr):
    return f"""\
[global]
mail_name = {MAIL_NAME}
local_domains = {DOMAIN}, {MAIL_NAME}
# NOT the loopback client: every message is SPF-checked
relay_networks = 192.0.2.0/24
nameservers = {dns_addr}
dns_timeout = 5
log = stderr
"""


def check_config(binary, conf, name):
    r = subprocess.run([str(binary), "-c", str(conf), "-t"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"{name} -t refuses {conf}:\n" + r.stdout + r.stderr)


def start_daemon(binary, conf, logfile, name):
    """binary -d -c conf, its output appended to logfile.  Returns the
    Popen; the caller registers its stop in PROCS."""
    check_config(binary, conf, name)
    out = open(logfile, "ab")
    try:
        p = subprocess.Popen([str(binary), "-d", "-c", str(conf)],
                             stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        out.close()
    return p


class Deliverd:
    """deliverd with one local user (nobody) and one LMTP unix socket."""

    def __init__(self, base, binary, dns_addr):
        self.binary = binary
        self.dir = base / "deliverd"
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)
        self.spool = self.dir / "spool"
        self.maildir = self.dir / "mail"
        self.maildir.mkdir()
        os.chmod(self.maildir, 0o1777)
        self.users = self.dir / "users"
        self.users.write_text(f"{RCPT_USER}\n")
        self.logfile = self.dir / "deliverd.log"
        # sun_path holds 108 bytes: the sockets live in a short directory
        self.sockdir = pathlib.Path(tempfile.mkdtemp(prefix="bs", dir="/tmp"))
        os.chmod(self.sockdir, 0o755)
        self.sock = str(self.sockdir / "lmtp.sock")
        self.conf = self.dir / "deliverd.conf"
        self.conf.write_text(global_section(dns_addr) + f"""
[deliverd]
# empty: stay the user it was started as (no spfgate-deliverd account here)
user =
listen = unix:{self.sock}
control = {self.sockdir / 'ctl'}
spool = {self.spool}
mailbox = {self.maildir}/%u
local_users = {self.users}
aliases =
""")
        self.proc = None

    def start(self):
        self.proc = start_daemon(self.binary, self.conf, self.logfile,
                                 "deliverd")
        PROCS.add("deliverd", self.stop)
        wait_connectable(self.sock, self.proc, "deliverd")

    def queued(self):
        """Messages in the spool (received, not yet delivered/removed)."""
        n = 0
        for d in ("queue", "tmp"):
            try:
                n += sum(1 for p in os.listdir(self.spool / d)
                         if not p.startswith("."))
            except FileNotFoundError:
                pass
        return n

    def stop(self):
        if self.proc is not None:
            stop_popen(self.proc, "deliverd", timeout=40)
            self.proc = None
        shutil.rmtree(self.sockdir, ignore_errors=True)


class Relayd:
    """One relayd on 127.0.0.1:port with the given milter and LMTP spec."""

    def __init__(self, base, name, binary, dns_addr, milter, lmtp, **keys):
        self.name = name
        self.binary = binary
        self.dir = base / name
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.logfile = self.dir / "relayd.log"
        self.conf = self.dir / "relayd.conf"
        extra = "".join(f"{k} = {v}\n" for k, v in keys.items())
        self.conf.write_text(global_section(dns_addr) + f"""
[relayd]
# empty: stay the user it was started as (no spfgate-relayd account here)
user =
listen = 127.0.0.1:{self.port}
milters = {milter}
lmtp = unix:{lmtp}
""" + extra)
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        self.proc = start_daemon(self.binary, self.conf, self.logfile,
                                 self.name)
        PROCS.add(self.name, self.stop)
        wait_connectable(("127.0.0.1", self.port), self.proc, self.name)

    def stop(self):
        if self.proc is not None:
            stop_popen(self.proc, self.name, timeout=40)
            self.proc = None

    def log_tail(self):
        return Postfix.tail(self.logfile)


class Spfgate:
    def __init__(self, base, builddir, dns_addr):
        self.builddir = builddir
        self.base = base
        self.dns_addr = dns_addr
        self.filterd = Filterd(base, "filterd-relayd",
                               builddir / "filterd" / "filterd", "unix",
                               dns_addr)
        self.deliverd = Deliverd(base, builddir / "deliverd" / "deliverd",
                                 dns_addr)
        self.relayds = [self._relayd("relayd")]
        self.mbox = Mbox(self.deliverd.maildir / RCPT_USER)
        self.log = self.relayds[0].logfile

    def _relayd(self, name, milter=True, **keys):
        return Relayd(self.base, name, self.builddir / "relayd" / "relayd",
                      self.dns_addr,
                      self.filterd.postfix_milter if milter else "",
                      self.deliverd.sock, **keys)

    @property
    def port(self):
        return self.relayds[0].port

    @property
    def relayd(self):
        return self.relayds[0]

    def start(self):
        self.filterd.start()
        self.deliverd.start()
        self.relayd.start()

    def add_relayd(self, name, milter=True, **keys):
        """A further relayd on deliverd, with filterd as its milter or
        without milters; keys are more [relayd] settings."""
        r = self._relayd(name, milter, **keys)
        self.relayds.append(r)
        r.start()
        return r

    def drop_relayd(self, r):
        r.stop()
        self.relayds.remove(r)

    def pids(self):
        return [p.proc.pid for p in
                [self.filterd, self.deliverd] + self.relayds
                if p.proc is not None]

    def alive(self):
        """The names of the daemons that are not running."""
        dead = []
        for name, p in ([("filterd", self.filterd.proc),
                         ("deliverd", self.deliverd.proc)]
                        + [(r.name, r.proc) for r in self.relayds]):
            if p is None or p.poll() is not None:
                dead.append(name)
        return dead

    def queued(self):
        return self.deliverd.queued()

    def log_tail(self):
        return "".join(f"--- {name}:\n{Postfix.tail(path)}" for name, path in
                       [(r.name, r.logfile) for r in self.relayds]
                       + [("filterd", self.filterd.logfile),
                          ("deliverd", self.deliverd.logfile)])
