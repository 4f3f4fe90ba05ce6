"""benchpeers: the mail peers the benchmarks compare, on loopback.

- DNS: an nsd from tests/e2e/dnsserver.py (response-rate limiting off)
  serving bench.test with "v=spf1 ip4:127.0.0.0/8 -all" (and
  fail.bench.test with "-all"), on 127.0.0.1:PORT and on port 53 of a
  second loopback address, for resolvers that only read resolv.conf;
- Postfix: a private instance (postfix -c DIR start-fg, chroot n,
  maillog_file) on 127.0.0.1:PORT delivering with local(8) into one mbox,
  with or without a milter;
- filterd from a build tree and Debian's pyspf-milter (in a mount
  namespace whose /etc/resolv.conf names the port-53 nsd), both set up so
  that they really check SPF for a loopback client;
- Mbox, which counts the messages appended to an mbox file, and sanity(),
  which proves a milter checked: its "pass" header is in the delivered
  message and a sender whose domain says "-all" is refused.
"""
import os
import pathlib
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time

from benchutil import (BenchError, PROCS, note, pid_alive, stop_popen,
                       free_port, wait_connectable)


SRCDIR = pathlib.Path(__file__).resolve().parents[2]
E2EDIR = SRCDIR / "tests" / "e2e"

SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX = "/usr/sbin/postfix"
PYSPF = "/usr/bin/pyspf-milter"
NSD = "/usr/sbin/nsd"
UNSHARE = "/usr/bin/unshare"

DOMAIN = "bench.test"
SENDER = f"sender@{DOMAIN}"
FORGED = f"forged@fail.{DOMAIN}"      # its domain publishes -all
RCPT_USER = "nobody"                   # a local user on every Debian system
RCPT = f"{RCPT_USER}@{DOMAIN}"
HELO = f"client.{DOMAIN}"
MAIL_NAME = f"mail.{DOMAIN}"
ZONE = """\
@       TXT "v=spf1 ip4:127.0.0.0/8 -all"
mail    A   127.0.0.1
client  A   127.0.0.1
client  TXT "v=spf1 ip4:127.0.0.0/8 -all"
fail    TXT "v=spf1 -all"
"""


# ---------------------------------------------------------------------------
# packages

def ensure_packages(need_pyspf, need_cc, install):
    need = {
        POSTFIX: "postfix", SMTP_SOURCE: "postfix", NSD: "nsd",
        UNSHARE: "util-linux",
    }
    if need_pyspf:
        need[PYSPF] = "pyspf-milter"
    if need_cc:
        need["/usr/bin/cc"] = "gcc"
        need["/usr/include/libmilter/mfapi.h"] = "libmilter-dev"
    missing = sorted({pkg for path, pkg in need.items()
                      if not os.path.exists(path)})
    for mod, pkg in (("dns", "python3-dnspython"), ("pytest", "python3-pytest")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if not missing:
        return
    if not install:
        raise BenchError("missing packages: " + " ".join(missing)
                         + " (apt-get install -y ...; or run without "
                         "--no-install as root)")
    note("installing " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], check=True, env=env,
                   input=b"postfix postfix/main_mailer_type select "
                         b"No configuration\n")
    subprocess.run(["apt-get", "update"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"]
                   + missing, check=True, env=env, stdout=subprocess.DEVNULL)
    # a freshly installed python module must be importable now
    import importlib
    importlib.invalidate_caches()


# ---------------------------------------------------------------------------
# DNS: nsd from tests/e2e/dnsserver.py, plus a port-53 address for pyspf

def port53_address():
    """A loopback address where port 53 is free for UDP and TCP."""
    for addr in ("127.0.0.53", "127.53.0.1", "127.53.0.2", "127.53.1.1",
                 "127.53.2.1", "127.53.3.1"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                u.bind((addr, 53))
                t.bind((addr, 53))
            return addr
        except OSError:
            continue
    raise BenchError("no loopback address with a free port 53 for nsd")


def start_dns(base):
    sys.path.insert(0, str(E2EDIR))
    from dnsserver import DnsServer      # noqa: E402 (needs sys.path)

    addr53 = port53_address()

    class BenchDns(DnsServer):
        """DnsServer, also listening on addr53 port 53 (for resolv.conf)."""

        def _write(self):
            super()._write()
            conf_path = self.dir / "nsd.conf"
            conf = conf_path.read_text()
            extra = f"    ip-address: {addr53}@53\n"
            if "server:\n" not in conf:
                raise BenchError("unexpected nsd.conf from dnsserver.py")
            conf = conf.replace("server:\n", "server:\n" + extra, 1)
            conf_path.write_text(conf)

    srv = BenchDns(base / "nsd", {DOMAIN: ZONE})
    srv.start()
    PROCS.add("nsd", srv.stop)
    # both addresses must answer, and with the record we mean
    import dns.message
    import dns.query
    import dns.rdatatype
    for host, port in (("127.0.0.1", srv.port), (addr53, 53)):
        q = dns.message.make_query(DOMAIN + ".", dns.rdatatype.TXT)
        try:
            r = dns.query.udp(q, host, port=port, timeout=2)
        except Exception as e:
            raise BenchError(f"nsd does not answer on {host}:{port}: {e}")
        txt = b"".join(b"".join(rd.strings) for rrs in r.answer for rd in rrs)
        if b"v=spf1" not in txt:
            raise BenchError(f"nsd on {host}:{port} has no SPF record")
    return srv, addr53


# ---------------------------------------------------------------------------
# Postfix

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Mbox:
    """Counts the messages local(8) appended to one mbox file."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.count = 0

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        end = data.rfind(b"\n") + 1          # whole lines only
        chunk = data[:end]
        if chunk:
            # whole lines only, so a chunk starts at the start of a line
            self.count += chunk.count(b"\nFrom ")
            if chunk.startswith(b"From "):
                self.count += 1
            self.offset += end
        return self.count

    def wait_for(self, n, timeout):
        deadline = time.monotonic() + timeout
        while self.poll() < n:
            if time.monotonic() > deadline:
                raise BenchError(f"only {self.count} of {n} messages reached "
                                 f"{self.path} within {timeout:.0f} s")
            time.sleep(0.02)
        return time.monotonic()

    def reset(self):
        try:
            with open(self.path, "r+b") as f:
                f.truncate(0)
        except FileNotFoundError:
            pass
        self.offset = 0
        self.count = 0

    def last_message_headers(self):
        data = pathlib.Path(self.path).read_bytes()
        i = data.rfind(b"\nFrom ")
        msg = data[i + 1:] if i >= 0 else data
        head = msg.split(b"\n\n", 1)[0].decode("utf-8", "replace")
        return re.sub(r"\n[ \t]+", " ", head)   # unfold


class Postfix:
    """A private Postfix instance (postfix -c DIR) on 127.0.0.1:port."""

    def __init__(self, base, name, milter=None):
        self.name = name
        self.dir = base / f"postfix-{name}"
        self.conf = self.dir / "conf"
        self.queue = self.dir / "queue"
        self.data = self.dir / "data"
        self.spool = self.dir / "mail"
        self.log = self.dir / "maillog"
        self.port = free_port()
        self.milter = milter
        self.proc = None
        self.master_pid = None
        self.mbox = Mbox(self.spool / RCPT_USER)

    def write(self):
        for d in (self.conf, self.queue, self.data, self.spool):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        shutil.chown(self.data, "postfix")
        os.chmod(self.spool, 0o1777)
        main = f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
maillog_file = {self.log}
maillog_file_prefixes = {self.dir}
myhostname = {MAIL_NAME}
mydomain = {DOMAIN}
myorigin = $myhostname
mydestination = {DOMAIN}, {MAIL_NAME}, localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
mail_spool_directory = {self.spool}
mailbox_size_limit = 0
# one mbox: two local(8) at once would wait on its dotlock (1 s retry)
local_destination_concurrency_limit = 1
biff = no
smtputf8_enable = no
smtpd_peername_lookup = no
# 100 concurrent sessions for the memory report, from one client
default_process_limit = 150
smtpd_client_connection_count_limit = 0
smtpd_milters = {self.milter or ""}
non_smtpd_milters =
milter_default_action = tempfail
milter_protocol = 6
"""
        (self.conf / "main.cf").write_text(main)
        (self.conf / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))

    def start(self):
        self.write()
        pidfile = self.queue / "pid" / "master.pid"
        try:
            pidfile.unlink()
        except FileNotFoundError:
            pass
        out = open(self.dir / "start-fg.out", "ab")
        self.proc = subprocess.Popen(
            [POSTFIX, "-c", str(self.conf), "start-fg"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        PROCS.add(f"postfix {self.name}", self.stop)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"postfix {self.name} did not start:\n"
                    + self.tail(self.dir / "start-fg.out") + self.tail(self.log))
            try:
                pid = int(pidfile.read_text().split()[0])
                if pid_alive(pid):
                    self.master_pid = pid
                    break
            except (FileNotFoundError, ValueError, IndexError):
                pass
            time.sleep(0.1)
        else:
            raise BenchError(f"postfix {self.name}: no master.pid")
        wait_connectable(("127.0.0.1", self.port), self.proc,
                         f"postfix {self.name}")

    @staticmethod
    def tail(path, n=20):
        try:
            return "".join(pathlib.Path(path).read_text(
                errors="replace").splitlines(True)[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.master_pid and pid_alive(self.master_pid):
            os.kill(self.master_pid, signal.SIGTERM)   # ends its children
            deadline = time.monotonic() + 20
            while pid_alive(self.master_pid) and time.monotonic() < deadline:
                if self.proc is not None:
                    self.proc.poll()                    # reap our child
                time.sleep(0.1)
            if pid_alive(self.master_pid):
                os.kill(self.master_pid, signal.SIGKILL)
        self.master_pid = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stop_popen(self.proc, f"postfix {self.name} start-fg")
            self.proc = None


# ---------------------------------------------------------------------------
# milters

class Filterd:
    def __init__(self, base, name, binary, kind, dns_addr):
        self.name = name
        self.binary = binary
        self.dir = base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "spfgate.conf"
        self.logfile = self.dir / "filterd.log"
        if kind == "unix":
            self.sock = str(self.dir / "filterd.sock")
            self.listen = f"unix:{self.sock}"
            self.postfix_milter = f"unix:{self.sock}"
            self.addr = self.sock
        else:
            port = free_port()
            self.listen = f"inet:{port}@127.0.0.1"
            self.postfix_milter = f"inet:127.0.0.1:{port}"
            self.addr = ("127.0.0.1", port)
        self.conf.write_text(f"""\
[global]
mail_name = {MAIL_NAME}
local_domains = {DOMAIN}, {MAIL_NAME}
# NOT the loopback client: every message is SPF-checked
relay_networks = 192.0.2.0/24
nameservers = {dns_addr}
dns_timeout = 5
log = stderr

[filterd]
listen = {self.listen}
# empty: stay the user it was started as (no spfgate-filterd account here)
user =
""")
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        r = subprocess.run([self.binary, "-c", str(self.conf), "-t"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"filterd -t refuses {self.conf}:\n"
                             + r.stdout + r.stderr)
        out = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        PROCS.add(self.name, lambda: stop_popen(self.proc, self.name))
        wait_connectable(self.addr, self.proc, self.name)

    def log_tail(self):
        return Postfix.tail(self.logfile)


class Pyspf:
    """Debian's pyspf-milter with our own config file, in a private mount
    namespace whose /etc/resolv.conf points at the benchmark's nsd."""

    def __init__(self, base, name, kind, addr53):
        self.name = name
        self.dir = base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.dir, "nobody", "postfix")
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "pyspf-milter.conf"
        self.pidfile = self.dir / "pyspf-milter.pid"
        self.resolv = self.dir / "resolv.conf"
        self.logfile = self.dir / "pyspf-milter.log"
        if kind == "unix":
            self.sock = str(self.dir / "pyspf-milter.sock")
            sockspec = f"local:{self.sock}"
            self.postfix_milter = f"unix:{self.sock}"
            self.addr = self.sock
        else:
            port = free_port()
            sockspec = f"inet:{port}@127.0.0.1"
            self.postfix_milter = f"inet:127.0.0.1:{port}"
            self.addr = ("127.0.0.1", port)
        self.resolv.write_text(f"nameserver {addr53}\n"
                               "options timeout:5 attempts:1\n")
        # Debian's defaults, except: no client we use is exempt from the
        # check (it skips 127.0.0.0/8 and treats 127.0.0.1 as internal by
        # default; an empty skip_addresses crashes pyspf-milter 3.0.4 with
        # "TypeError: 'NoneType' object is not subscriptable" in
        # _spfcheck, so it names a TEST-NET address instead), only the MAIL FROM identity is checked (as filterd's
        # helo_check = off), and the socket is reachable by smtpd (user
        # nobody, group postfix, umask 007).
        self.conf.write_text(f"""\
debugLevel = 1
TestOnly = 1
HELO_reject = No_Check
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 192.0.2.1/32
InternalHosts = 192.0.2.1
Authserv_Id = {MAIL_NAME}
Socket = {sockspec}
PidFile = {self.pidfile}
UserID = nobody:postfix
UMask = 7
""")
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        for stale in (self.pidfile, getattr(self, "sock", None)):
            if stale:
                try:
                    os.unlink(stale)
                except FileNotFoundError:
                    pass
        out = open(self.logfile, "ab")
        # unshare(1) execs sh, sh execs pyspf-milter: one PID throughout
        script = 'mount --bind "$1" /etc/resolv.conf && exec "$2" "$3"'
        self.proc = subprocess.Popen(
            [UNSHARE, "-m", "--propagation", "private", "sh", "-c", script,
             "sh", str(self.resolv), PYSPF, str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        PROCS.add(self.name, lambda: stop_popen(self.proc, self.name))
        wait_connectable(self.addr, self.proc, self.name)

    def log_tail(self):
        return Postfix.tail(self.logfile)


# ---------------------------------------------------------------------------
# did the milter check?

def sanity(pf, kind, milter):
    """A message from bench.test is delivered with the milter's 'pass'
    header; a sender whose domain publishes -all is refused."""
    pf.mbox.reset()
    with smtplib.SMTP("127.0.0.1", pf.port, local_hostname=HELO,
                      timeout=30) as s:
        s.sendmail(SENDER, [RCPT],
                   f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\n"
                   "Subject: bench-filterd sanity\r\n\r\nhello\r\n")
    pf.mbox.wait_for(1, timeout=60)
    head = pf.mbox.last_message_headers()
    pf.mbox.reset()
    rspf = re.findall(r"^Received-SPF:.*$", head, re.M | re.I)
    ares = re.findall(r"^Authentication-Results:.*$", head, re.M | re.I)
    if kind in ("postfix", "null-unix"):
        return "delivered (no SPF check here)"
    if kind.startswith("filterd"):
        ok = (any(re.match(r"Received-SPF:\s*pass\b", h, re.I) for h in rspf)
              and any(re.search(r"\bspf=pass\b", h) for h in ares))
        want = "Received-SPF: pass and Authentication-Results spf=pass"
    else:
        # pyspf-milter can only write Authentication-Results
        ok = any(re.search(r"\bspf=pass\b", h) for h in ares)
        want = "Authentication-Results spf=pass"
    if not ok:
        raise BenchError(
            f"{kind}: the delivered message lacks {want}; its header:\n"
            f"{head}\n--- milter log:\n{milter.log_tail()}")
    # a forged sender must be refused (at MAIL FROM, or at RCPT)
    with smtplib.SMTP("127.0.0.1", pf.port, local_hostname=HELO,
                      timeout=30) as s:
        s.ehlo(HELO)
        code, msg = s.mail(FORGED)
        if code == 250:
            code, msg = s.rcpt(RCPT)
        s.rset()
    if code // 100 != 5:
        raise BenchError(f"{kind}: MAIL FROM:<{FORGED}> (SPF fail) was not "
                         f"refused: {code} {msg!r}\n{milter.log_tail()}")
    shown = rspf[0] if rspf else ares[0]
    return f"{shown[:110]}...; forged sender: {code} {msg.decode()[:40]}"
