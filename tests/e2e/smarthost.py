"""Receiving MTAs for deliverd's remote delivery tests.

Smarthost: a private Postfix (tests/e2e/postfix.py) with STARTTLS (a
self-signed certificate made with openssl) and SMTP AUTH through Cyrus
SASL (sasldb2 made with saslpasswd2, mechanisms PLAIN and LOGIN), AUTH
offered only after STARTTLS (smtpd_tls_auth_only).  Its own domain
example.test is delivered into mbox files; any other domain is relayed
only for authenticated clients (and then stays queued: nothing leaves).

    sh = Smarthost(tmp, port, users={"alice": "s3cret"},
                   mailboxes={"bob@example.test"})
    sh.start() ... sh.stop()

Sink: Postfix's smtp-sink on any loopback address, storing each
message it accepts as a file in a directory; extra options make it
refuse commands ("-f", "RCPT" for 5xx, "-r", "RCPT" for 4xx).  It offers
no STARTTLS.

    s = Sink(tmp, "127.0.0.5", port)
    s.start() ... s.messages() ... s.stop()
"""
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile

from postfix import Postfix, _wait

SMTP_SINK = "/usr/sbin/smtp-sink"
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
REALM = "example.test"


class Smarthost(Postfix):
    def __init__(self, tmpdir, port, users=None, mailboxes=(), tls=True,
                 hostname="smarthost.test", extra=None):
        self.users = dict(users or {})
        self.tls = tls
        settings = {
            # clients are trusted only when authenticated
            "mynetworks": "192.0.2.0/24",
            "smtpd_relay_restrictions":
                "permit_sasl_authenticated, reject_unauth_destination",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "smtpd_sasl_local_domain": REALM,
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_tls_auth_only": "yes" if tls else "no",
            "broken_sasl_auth_clients": "no",
        }
        settings.update(extra or {})
        super().__init__(tmpdir, port, mailboxes=mailboxes, hostname=hostname,
                         mynetworks="192.0.2.0/24", extra=settings)
        self.extra["cyrus_sasl_config_path"] = str(self.dir / "sasl")
        if tls:
            self.extra.update({
                "smtpd_tls_security_level": "may",
                "smtpd_tls_cert_file": str(self.dir / "cert.pem"),
                "smtpd_tls_key_file": str(self.dir / "key.pem"),
                "smtpd_tls_loglevel": "1",
                "smtpd_tls_received_header": "yes",
            })

    def write(self):
        super().write()
        if not os.path.exists(SASLPASSWD2):
            raise RuntimeError("saslpasswd2 is missing: apt-get install -y sasl2-bin")
        pf = pwd.getpwnam("postfix")
        sasl = self.dir / "sasl"
        sasl.mkdir(exist_ok=True)
        db = sasl / "sasldb2"
        for user, pw in self.users.items():
            subprocess.run([SASLPASSWD2, "-c", "-p", "-f", str(db), "-u", REALM, user],
                           input=pw.encode(), check=True, capture_output=True, timeout=30)
        if db.exists():
            os.chown(db, pf.pw_uid, pf.pw_gid)
            os.chmod(db, 0o600)
        # Debian's Postfix reads $config_directory/sasl/smtpd.conf whatever
        # cyrus_sasl_config_path says: write it in both places
        (self.conf / "sasl").mkdir(exist_ok=True)
        (sasl / "smtpd.conf").write_text(self._sasl_conf(db))
        (self.conf / "sasl" / "smtpd.conf").write_text(self._sasl_conf(db))
        if self.tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                 "-subj", "/CN=smarthost.test", "-days", "2",
                 "-keyout", str(self.dir / "key.pem"), "-out", str(self.dir / "cert.pem")],
                check=True, capture_output=True, timeout=60)
            os.chmod(self.dir / "key.pem", 0o600)
            with open(self.conf / "master.cf", "a") as f:
                f.write("tlsmgr    unix  - - n 1000? 1 tlsmgr\n")

    @staticmethod
    def _sasl_conf(db):
        return ("pwcheck_method: auxprop\n"
                "auxprop_plugin: sasldb\n"
                f"sasldb_path: {db}\n"
                "mech_list: PLAIN LOGIN\n")

    def queued(self):
        """Count of messages in the instance's queue (relayed mail stays)."""
        n = 0
        for sub in ("incoming", "active", "deferred", "maildrop"):
            d = self.queue / sub
            if d.exists():
                n += sum(len(files) for _, _, files in os.walk(d))
        return n


class Sink:
    """smtp-sink on addr:port, every accepted message a file in .dir."""

    def __init__(self, tmpdir, addr, port, options=()):
        self.addr = addr
        self.port = port
        self.options = list(options)
        # smtp-sink runs as nobody: its directory must be reachable, which
        # pytest's are not; the messages are copied to tmpdir at stop
        self.keep = pathlib.Path(tmpdir) / f"sink-{addr}-{port}"
        self.top = pathlib.Path(tempfile.mkdtemp(prefix="sink", dir="/tmp"))
        os.chmod(self.top, 0o755)
        self.dir = self.top / "mail"
        self.proc = None
        self._log = None

    def start(self, timeout=15):
        if not os.path.exists(SMTP_SINK):
            raise RuntimeError("smtp-sink is missing: it comes with the postfix package")
        self.dir.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
        self._log = open(self.top / "sink.log", "ab")
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", "-d", f"{self.dir}/%H%M%S.", *self.options,
             f"{self.addr}:{self.port}", "64"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        _wait(self._banner, timeout, f"smtp-sink on {self.addr}:{self.port}")
        return self

    def _banner(self):
        """Listening yet?  (A connect is enough: with -W CONNECT:n the
        greeting itself is late on purpose.)"""
        if self.proc.poll() is not None:
            raise RuntimeError(f"smtp-sink exited with {self.proc.returncode}")
        try:
            with socket.create_connection((self.addr.strip("[]"), self.port), timeout=2):
                return True
        except OSError:
            return False

    def messages(self):
        """The stored messages' texts, oldest first."""
        d = self.dir if self.dir.exists() else self.keep / "mail"
        if not d.exists():
            return []
        # smtp-sink opens its dump file at MAIL: a transaction refused
        # later leaves an empty file, which is no message, or removes it
        # while we look
        found = []
        for f in d.iterdir():
            try:
                found.append((f.stat().st_mtime_ns, f.read_text(errors="replace")))
            except FileNotFoundError:
                continue
        return [t for _, t in sorted(found) if t]

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        if self.top.exists():
            shutil.copytree(self.top, self.keep, dirs_exist_ok=True)
            shutil.rmtree(self.top, ignore_errors=True)
