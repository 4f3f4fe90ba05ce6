"""A private Postfix instance for end-to-end tests.

Postfix(tmpdir, port, ...) writes its own main.cf and master.cf under a
directory of its own in /tmp (nothing under /etc/postfix is touched;
the mail log is copied to tmpdir at stop), listens for SMTP on
127.0.0.1:port, delivers the virtual domain(s) into mbox files under
tmpdir/vmail with virtual(8), and logs to tmpdir/maillog.  No chroot,
no DNS: the client name is not looked up and mail for other domains is
only ever refused or left queued.  Needs root (Postfix's master does).

    pf = Postfix(tmp, port, milters="inet:127.0.0.1:8891",
                 mailboxes={"bob@example.test"})
    pf.start()
    ...
    pf.wait_for_mail("bob@example.test", count=1)
    pf.stop()
"""
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile

from conftest import poll as _wait

POSTFIX = "/usr/sbin/postfix"

# Every service a plain Postfix needs, none chrooted (a chroot would need
# copies of the sockets and /etc files inside it).
MASTER_CF = """\
{listen} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def install_hint():
    return ('install Postfix: echo "postfix postfix/main_mailer_type select No '
            'configuration" | debconf-set-selections; '
            'DEBIAN_FRONTEND=noninteractive apt-get install -y postfix')


def available():
    return os.path.exists(POSTFIX) and os.geteuid() == 0


class Postfix:
    def __init__(self, tmpdir, port, milters="", mynetworks="127.0.0.0/8",
                 domains=("example.test",), mailboxes=(), hostname="mx.example.test",
                 extra=None):
        # Postfix's daemons run as postfix and nobody: every directory on
        # the way must be searchable for them, which pytest's are not.
        self.keep = pathlib.Path(tmpdir)
        self.keep.mkdir(parents=True, exist_ok=True)
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="pf", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.port = port
        self.milters = milters
        self.mynetworks = mynetworks
        self.domains = list(domains)
        self.mailboxes = list(mailboxes)
        self.hostname = hostname
        self.extra = dict(extra or {})
        self.conf = self.dir / "etc"
        self.queue = self.dir / "queue"
        self.data = self.dir / "data"
        self.vmail = self.dir / "vmail"
        self.maillog = self.dir / "maillog"
        self.started = False

    # -- configuration -----------------------------------------------------
    def main_cf(self):
        nobody = pwd.getpwnam("nobody")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "myhostname": self.hostname,
            "mydomain": self.hostname.split(".", 1)[-1],
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_transport": "error:no local delivery here",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": self.mynetworks,
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.dir),
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "biff": "no",
            "append_dot_mydomain": "no",
            "virtual_mailbox_domains": " ".join(self.domains),
            "virtual_mailbox_base": str(self.vmail),
            "virtual_mailbox_maps": f"texthash:{self.conf / 'vmailbox'}",
            "virtual_uid_maps": f"static:{nobody.pw_uid}",
            "virtual_gid_maps": f"static:{nobody.pw_gid}",
            "virtual_minimum_uid": "1",
            "smtpd_milters": self.milters,
            "non_smtpd_milters": "",
            "milter_protocol": "6",
            "milter_default_action": "tempfail",
            # Nothing leaves this instance: mail for elsewhere stays queued.
            "defer_transports": "smtp relay",
            "smtp_dns_support_level": "disabled",
            "disable_dns_lookups": "yes",
        }
        settings.update(self.extra)
        return "".join(f"{k} = {v}\n" for k, v in settings.items())

    def write(self):
        for d in (self.conf, self.queue, self.data, self.vmail):
            d.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.vmail, nobody.pw_uid, nobody.pw_gid)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        (self.conf / "main.cf").write_text(self.main_cf())
        (self.conf / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        lines = []
        for mb in self.mailboxes:
            local, dom = mb.split("@", 1)
            (self.vmail / dom).mkdir(exist_ok=True)
            os.chown(self.vmail / dom, nobody.pw_uid, nobody.pw_gid)
            lines.append(f"{mb} {dom}/{local}\n")
        (self.conf / "vmailbox").write_text("".join(lines))

    # -- control -----------------------------------------------------------
    def _postfix(self, *args, check=True):
        r = subprocess.run([POSTFIX, "-c", str(self.conf), *args],
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed ({r.returncode}): "
                               f"{r.stdout}{r.stderr}{self.log()[-2000:]}")
        return r

    def start(self, timeout=30):
        self.write()
        self._postfix("start")
        self.started = True
        _wait(self._banner, timeout, f"Postfix SMTP banner on port {self.port}")

    def _banner(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def master_pid(self):
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout=30):
        try:
            self._stop(timeout)
        finally:
            # the log stays with the test's files; the instance goes
            if self.maillog.exists():
                shutil.copy(self.maillog, self.keep / "maillog")
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop(self, timeout):
        if not self.started:
            return
        pid = self.master_pid()
        self._postfix("stop", check=False)
        self.started = False
        if pid:
            def gone():
                try:
                    os.kill(pid, 0)
                    return False
                except ProcessLookupError:
                    return True
            _wait(gone, timeout, "Postfix master to exit")

    # -- observation -------------------------------------------------------
    def mailbox(self, address):
        local, dom = address.split("@", 1)
        return self.vmail / dom / local

    def read_mailbox(self, address):
        p = self.mailbox(address)
        return p.read_text(errors="replace") if p.exists() else ""

    def wait_for_mail(self, address, count=1, timeout=30):
        """Wait until the mbox holds count messages; return its text."""
        def enough():
            text = self.read_mailbox(address)
            n = sum(1 for line in text.splitlines() if line.startswith("From "))
            return text if n >= count else None
        return _wait(enough, timeout, f"{count} message(s) in {address}'s mailbox")

    def log(self):
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""
