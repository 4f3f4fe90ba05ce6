"""A private Sendmail daemon for end-to-end tests.

Debian's sendmail-bin cannot be installed next to Postfix (both provide
mail-transport-agent, and Postfix is a peer of other tests), so:

- fetch-sendmail downloads sendmail-bin with `apt-get download` and
  unpacks it with `dpkg-deb -x` into BUILDDIR/sendmail-pkg, once; only
  the binary usr/libexec/sendmail/sendmail is used.  Its libraries are
  ordinary packages (libwrap0 is the one Postfix does not pull in).
- sendmail.cf is built with m4 from the installed sendmail-cf
  (/usr/share/sendmail/cf) and a minimal .mc (make_mc below): every path
  Sendmail would take from /etc/mail or /var (queue, pid, status, class
  files, service switch, host status) points into the instance's
  directory, no alias file, no ident lookups, no canonification
  (nocanonify), unresolvable sender domains accepted (no DNS), relaying
  allowed for 127.0.0.0/8 (RELAY_DOMAIN) so that relay refusals are the
  milter's, and the lines of contrib/sendmail.mc with the S= socket of
  the test's filterd.  Local delivery (the domains given, class w) runs
  a script that stores each message as a file DIR/mail/USER.XXXXXX.
- Sendmail runs as root in the foreground (-bD) inside `unshare -m -u`,
  a private mount and UTS namespace where (nothing leaks out):
    * the host name is the mail name: with an unqualified host name
      Sendmail sleeps a minute at start ("My unqualified host name ...
      unknown; sleeping for retry");
    * /etc/resolv.conf says `nameserver 127.0.0.1` (where normally
      nothing listens), so the client reverse lookups Sendmail always
      makes fail at once instead of waiting on an unreachable name server;
    * /dev is a directory of the instance holding bind mounts of null,
      zero, random and urandom plus the socket `log`, on which a thread
      here collects Sendmail's syslog lines into DIR/maillog (there is no
      log file option, and the host may have no syslog daemon).
- Sendmail checks the safety of every file and directory on a path; the
  instance lives under /tmp, world-writable and sticky, which
  DontBlameSendmail=TrustStickyBit accepts (so does a filterd socket in
  /tmp/fdXXXX).

    sm = Sendmail(tmp, port, milter="unix:/tmp/fdX/filterd.sock",
                  builddir=builddir, srcdir=srcdir)
    sm.start() ... sm.wait_for_mail("bob") ... sm.log() ... sm.stop()

The instance lives in /tmp/smXXXXXX (sun_path is short); stop() copies
its log, .mc and mail to tmpdir and removes it.
"""
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading

import pytest

from conftest import poll

CF_M4 = "/usr/share/sendmail/cf/m4/cf.m4"
BINARY = "usr/libexec/sendmail/sendmail"
FETCH = pathlib.Path(__file__).with_name("fetch-sendmail")
# contrib/sendmail.mc's socket, replaced by the test filterd's
CONTRIB_SOCKET = "S=unix:/run/spfgate/filterd.sock"

# Runs inside the namespaces: $1 the instance directory, $2 the host
# name, $3 the binary.
NAMESPACE_SH = r'''
set -e
d=$1
hostname "$2"
if [ -e /etc/resolv.conf ]; then mount --bind "$d/resolv.conf" /etc/resolv.conf; fi
for n in null zero random urandom; do
	: > "$d/dev/$n"
	mount --bind "/dev/$n" "$d/dev/$n"
done
mount --bind "$d/dev" /dev
exec "$3" -C "$d/sendmail.cf" -bD -L sm-mta
'''

DELIVER_SH = '''#!/bin/sh
# Sendmail's local mailer here: one file per message and recipient
set -e
# written aside, then renamed: a reader never sees half a message
f=$(mktemp "{mail}/.new.XXXXXX")
cat > "$f"
mv "$f" "{mail}/$1.${{f##*.}}"
'''


def install_hint():
    return ("install sendmail-cf, m4 and libwrap0 (apt-get install sendmail-cf "
            "libwrap0); tests/e2e/fetch-sendmail needs apt-get download to work")


def sendmail_binary(builddir):
    """The unpacked sendmail, fetched on first use; pytest.fail if not."""
    root = pathlib.Path(builddir) / "sendmail-pkg"
    binary = root / BINARY
    if not binary.exists():
        r = subprocess.run([str(FETCH), str(root)], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0 or not binary.exists():
            pytest.fail(f"fetch-sendmail failed ({r.returncode}): {r.stdout}{r.stderr}\n"
                        + install_hint())
    if not os.path.exists(CF_M4):
        pytest.fail(f"{CF_M4} missing: " + install_hint())
    if os.geteuid() != 0:
        pytest.fail("the Sendmail tests need root (mount namespace, port, queue)")
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    missing = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
    if missing:
        pytest.fail(f"{binary} lacks {', '.join(missing)}: " + install_hint())
    return binary


def contrib_milter_lines(srcdir, milter):
    """contrib/sendmail.mc with its filterd socket replaced by milter."""
    text = (pathlib.Path(srcdir) / "contrib" / "sendmail.mc").read_text()
    active = [line for line in text.splitlines()
              if line.startswith("INPUT_MAIL_FILTER(") and CONTRIB_SOCKET in line]
    assert len(active) == 1, f"contrib/sendmail.mc: one active {CONTRIB_SOCKET} line"
    return text.replace(active[0], active[0].replace(CONTRIB_SOCKET, f"S={milter}"))


def make_mc(d, port, hostname, domains, milter_lines):
    """The instance's .mc; d is its directory."""
    settings = {
        "confDOMAIN_NAME": hostname,
        "QUEUE_DIR": f"{d}/mqueue",
        "STATUS_FILE": f"{d}/statistics",
        "confPID_FILE": f"{d}/sendmail.pid",
        "confHOST_STATUS_DIRECTORY": f"{d}/hoststat",
        "confCW_FILE": f"{d}/local-host-names",
        "confCR_FILE": f"{d}/relay-domains",
        "confCT_FILE": f"{d}/trusted-users",
        "confHELP_FILE": f"{d}/helpfile",
        "confSERVICE_SWITCH_FILE": f"{d}/service.switch",
        "confDEAD_LETTER_DROP": f"{d}/dead.letter",
        "confDEF_USER_ID": "daemon",
        "confDONT_PROBE_INTERFACES": "True",
        "confDONT_BLAME_SENDMAIL": "TrustStickyBit",
        "confTO_IDENT": "0s",
        "confTO_RESOLVER_RETRANS": "1s",
        "confTO_RESOLVER_RETRY": "1",
        "confBIND_OPTS": "-DNSRCH -DEFNAMES",
        "confLOG_LEVEL": "14",
        "confMILTER_LOG_LEVEL": "14",
        # the local mailer: no passwd check (w), runs as root (S), no
        # From_ line (n), one recipient per run (no m)
        "LOCAL_MAILER_PATH": f"{d}/deliver",
        "LOCAL_MAILER_ARGS": "deliver $u",
        "_DEF_LOCAL_MAILER_FLAGS": "lsDFMS",
        "LOCAL_MAILER_FLAGS": "n",
    }
    lines = ["divert(-1)",
             f"define(`MAIL_SETTINGS_DIR', `{d}/')",
             "divert(0)dnl",
             f"include(`{CF_M4}')dnl",
             "OSTYPE(`bsd4.4')dnl"]
    lines += [f"define(`{k}', `{v}')dnl" for k, v in settings.items()]
    lines += ["undefine(`ALIAS_FILE')dnl",
              "FEATURE(`nocanonify')dnl",
              "FEATURE(`accept_unresolvable_domains')dnl",
              "FEATURE(`no_default_msa')dnl",
              "RELAY_DOMAIN(`127')dnl",
              f"DAEMON_OPTIONS(`Family=inet, Name=MTA, Port={port}, Addr=127.0.0.1')dnl"]
    lines += [f"LOCAL_DOMAIN(`{dom}')dnl" for dom in domains]
    lines += [milter_lines.rstrip("\n"),
              "MAILER(`local')dnl",
              "MAILER(`smtp')dnl"]
    return "\n".join(lines) + "\n"


class Sendmail:
    def __init__(self, tmpdir, port, milter, builddir, srcdir,
                 hostname="mx.example.test", domains=("example.test",)):
        """milter: the socket as libmilter writes it (unix:/P, inet:PORT@A)."""
        # a short path: the log socket's name must fit in sun_path
        self.keep = pathlib.Path(tmpdir)
        self.keep.mkdir(parents=True, exist_ok=True)
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="sm", dir="/tmp"))
        self.port = port
        self.milter = milter
        self.builddir, self.srcdir = builddir, srcdir
        self.hostname = hostname
        self.domains = list(domains)
        self.mail = self.dir / "mail"
        self.maillog = self.dir / "maillog"
        self.proc = None
        self._logsock = None
        self._logthread = None
        self._stopping = threading.Event()

    def write(self):
        d = self.dir
        for sub in ("mqueue", "hoststat", "mail", "dev"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "mqueue", 0o700)
        (d / "deliver").write_text(DELIVER_SH.format(mail=self.mail))
        os.chmod(d / "deliver", 0o755)
        (d / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (d / "service.switch").write_text("hosts files\naliases files\n")
        # Sendmail keeps statistics only in a file that exists
        for name in ("local-host-names", "relay-domains", "trusted-users", "helpfile",
                     "statistics"):
            (d / name).touch()
        milter_lines = contrib_milter_lines(self.srcdir, self.milter)
        (d / "sendmail.mc").write_text(
            make_mc(d, self.port, self.hostname, self.domains, milter_lines))
        with open(d / "sendmail.cf", "w") as cf:
            r = subprocess.run(["m4", str(d / "sendmail.mc")], stdout=cf,
                               stderr=subprocess.PIPE, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"m4 failed: {r.stderr}")

    # -- syslog ------------------------------------------------------------
    def _collect_log(self):
        with open(self.maillog, "ab") as out:
            while not self._stopping.is_set():
                try:
                    data = self._logsock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                # "<PRI>Mon DD HH:MM:SS sm-mta[PID]: text" -> without <PRI>
                out.write(re.sub(rb"^<\d+>", b"", data).rstrip(b"\0\n") + b"\n")
                out.flush()

    def _start_log(self):
        path = self.dir / "dev" / "log"
        if path.exists():
            path.unlink()
        self._logsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._logsock.bind(str(path))
        self._logsock.settimeout(0.2)
        self._logthread = threading.Thread(target=self._collect_log, daemon=True)
        self._logthread.start()

    # -- control -----------------------------------------------------------
    def start(self, timeout=30):
        binary = sendmail_binary(self.builddir)
        self.write()
        self._start_log()
        out = open(self.dir / "sendmail.out", "ab")
        try:
            self.proc = subprocess.Popen(
                ["unshare", "-m", "-u", "--", "/bin/sh", "-c", NAMESPACE_SH, "sh",
                 str(self.dir), self.hostname, str(binary)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        finally:
            out.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"sendmail exited with {self.proc.returncode}:\n"
                                   f"{self.output()}{self.log()}")
            return self._banner()
        try:
            poll(ready, timeout, f"Sendmail's banner on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _banner(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def stop(self, timeout=30):
        if self.proc is not None:
            # the daemon and the children it forked for sessions and
            # deliveries share the session started here
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None
        if self._logthread is not None:
            self._stopping.set()
            self._logthread.join(timeout=5)
            self._logsock.close()
            self._logthread = self._logsock = None
        # the logs and the mail stay with the test's files
        for name in ("maillog", "sendmail.out", "sendmail.mc", "mail"):
            src = self.dir / name
            if src.is_dir():
                shutil.copytree(src, self.keep / name, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy(src, self.keep / name)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- observation -------------------------------------------------------
    def messages(self, user):
        """The messages delivered to user, oldest first."""
        files = sorted(self.mail.glob(f"{user}.*"), key=lambda p: p.stat().st_mtime_ns)
        return [p.read_text(errors="replace") for p in files]

    def wait_for_mail(self, user, count=1, timeout=30):
        """Wait until user has count messages; return them."""
        def enough():
            msgs = self.messages(user)
            return msgs if len(msgs) >= count else None
        return poll(enough, timeout, f"{count} message(s) delivered to {user}")

    def output(self):
        try:
            return (self.dir / "sendmail.out").read_text(errors="replace")
        except OSError:
            return ""

    def log(self):
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=10):
        """The first log line matching pattern (regex), polled, bounded."""
        rx = re.compile(pattern)

        def find():
            return next((ln for ln in self.log().splitlines() if rx.search(ln)), None)
        return poll(find, timeout, f"a Sendmail log line matching {pattern!r}")
