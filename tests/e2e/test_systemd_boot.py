"""The installed units under a real systemd.

systemd-nspawn boots this machine's own /usr (--volatile=yes: a fresh,
empty /etc and /var on tmpfs, so nothing of the host is touched) with
the `make install` tree of the build bound over its prefix, the units,
sysusers.d and tmpfiles.d files in /etc, and systemd.unit=spfgate.target.
The container shares the host's network, so the test talks to relayd on
a loopback port.  Checked: systemd-sysusers makes the users, the three
services start in order and stay active, each daemon runs as its own
user with the capabilities the privilege drop leaves, mail arrives in a
mailbox (a host folder bound in), `systemctl reload` of all three
succeeds (ExecReload as the units write it) and mail still flows, and
`systemctl stop spfgate.target` stops all three cleanly.
"""
import grp
import os
import pathlib
import shutil
import signal
import smtplib
import subprocess
import time

import pytest

from conftest import free_port, poll
from test_install import destdir, install, mv, need, under  # noqa: F401  (fixtures)

UNITS = ("spfgate-deliverd.service", "spfgate-filterd.service",
         "spfgate-relayd.service", "spfgate.target")
SERVICES = ("spfgate-deliverd", "spfgate-filterd", "spfgate-relayd")
# what each daemon keeps after it dropped root (CapEff, hex)
CAPEFF = {"spfgate-relayd": 0, "spfgate-filterd": 0,
          "spfgate-deliverd": (1 << 0) | (1 << 6) | (1 << 7)}


class Container:
    def __init__(self, workdir, args):
        self.log = workdir / "boot.log"
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.init = None

    def find_init(self):
        """The container's PID 1, as a host pid (nspawn's child)."""
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited:\n{self.log.read_text()[-3000:]}")
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            kids = open(f"/proc/{self.proc.pid}/task/{task}/children").read().split()
            for k in kids:
                try:
                    if open(f"/proc/{k}/comm").read().strip() == "systemd":
                        self.init = int(k)
                        return self.init
                except FileNotFoundError:
                    continue
        return None

    def run(self, *cmd, check=True):
        r = subprocess.run(["nsenter", "-t", str(self.init), "-a", *cmd],
                           capture_output=True, text=True, timeout=60)
        if check:
            assert r.returncode == 0, (cmd, r.stdout, r.stderr, self.journal())
        return r

    def journal(self):
        if not self.init:
            return ""
        r = subprocess.run(["nsenter", "-t", str(self.init), "-a", "journalctl",
                            "--no-pager", "-o", "short", "-u", "spfgate-*"],
                           capture_output=True, text=True, timeout=60)
        return r.stdout[-6000:]

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)     # nspawn: power the container off
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def send(port, subject):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.example")
        assert s.sendmail("alice@example.test", ["bob@example.test"],
                          f"Subject: {subject}\r\n\r\nunder systemd\r\n") == {}


def greets(port):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
            return s.noop()[0] == 250
    except OSError:
        return False


@pytest.fixture
def booted(destdir, mv, tmp_path):  # noqa: F811
    if os.geteuid() != 0:
        pytest.fail("booting a container needs root")
    nspawn = need("systemd-nspawn")
    need("nsenter")
    prefix = mv["prefix"]
    if prefix in ("/", "/usr"):
        pytest.fail(f"prefix {prefix}: the test binds the installed prefix over the "
                    "container's (build with the default /usr/local)")
    port = free_port()
    mail = tmp_path / "mail"
    mail.mkdir()
    os.chown(mail, 0, grp.getgrnam("mail").gr_gid)
    os.chmod(mail, 0o2775)
    etc = under(destdir, mv["sysconfdir"]) / "spfgate"
    run_dir = "/run/spfgate"
    (etc / "users").write_text("bob\n")
    (etc / "spfgate.conf").write_text(f"""[global]
mail_name = mx.example.test
local_domains = example.test
relay_networks = 127.0.0.1/32
dns_timeout = 2
[filterd]
listen = unix:{run_dir}/filterd.sock
[relayd]
listen = 127.0.0.1:{port}
milters = unix:{run_dir}/filterd.sock
lmtp = unix:{run_dir}/deliverd.sock
[deliverd]
listen = unix:{run_dir}/deliverd.sock
control = {run_dir}/deliverd.ctl
mailbox = {mv['localstatedir']}/mail/%u
local_users = {mv['sysconfdir']}/spfgate/users
aliases =
""")
    os.chmod(etc / "spfgate.conf", 0o644)
    under(destdir, mv["localstatedir"]).joinpath("mail").mkdir(parents=True, exist_ok=True)
    unitdir = under(destdir, mv["systemdsystemunitdir"])
    args = [nspawn, "-D", "/", "--volatile=yes", "--register=no", "--keep-unit",
            "-M", f"spfgate{port}",
            f"--bind={under(destdir, prefix)}:{prefix}",
            f"--bind={mail}:{mv['localstatedir']}/mail"]
    args += [f"--bind-ro={unitdir / u}:/etc/systemd/system/{u}" for u in UNITS]
    args += [f"--bind-ro={under(destdir, mv['sysusersdir'])}/spfgate.conf:/etc/sysusers.d/spfgate.conf",
             f"--bind-ro={under(destdir, mv['tmpfilesdir'])}/spfgate.conf:/etc/tmpfiles.d/spfgate.conf",
             "-b", "--", "systemd.unit=spfgate.target", "systemd.firstboot=off"]
    c = Container(tmp_path, args)
    try:
        poll(c.find_init, 60, "the container's systemd")
        try:
            poll(lambda: greets(port), 90, "relayd under systemd")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{c.log.read_text()[-3000:]}\n{c.journal()}") from None
        c.port, c.mail = port, mail
        yield c
    finally:
        c.stop()


def main_pid_status(c, service):
    pid = c.run("systemctl", "show", "-p", "MainPID", "--value", f"{service}.service").stdout.strip()
    assert pid not in ("", "0"), (service, c.journal())
    fields = {}
    for line in c.run("cat", f"/proc/{pid}/status").stdout.splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.split()
    return fields


def test_spfgate_under_systemd(booted):
    c = booted
    r = c.run("systemctl", "is-active", *SERVICES)
    assert r.stdout.split() == ["active"] * 3, r.stdout
    for service in SERVICES:
        st = main_pid_status(c, service)
        uid = c.run("id", "-u", service).stdout.strip()
        assert set(st["Uid"]) == {uid}, (service, st["Uid"])
        assert int(st["CapEff"][0], 16) == CAPEFF[service], (service, st["CapEff"])
    # sysusers: the primary group of all three, deliverd also in mail
    assert "mail" in c.run("id", "-Gn", "spfgate-deliverd").stdout.split()

    send(c.port, "first")
    box = c.mail / "bob"
    poll(lambda: box.exists() and b"Subject: first" in box.read_bytes(), 30, "the first message")

    c.run("systemctl", "reload", *SERVICES)
    j = c.journal()
    for daemon in ("relayd", "filterd", "deliverd"):
        assert f"{daemon}[" in j and "reload: config=" in j, j
    assert c.run("systemctl", "is-active", *SERVICES).stdout.split() == ["active"] * 3
    send(c.port, "after reload")
    poll(lambda: b"Subject: after reload" in box.read_bytes(), 30, "the message after the reload")

    # the target's stop job ends before those of its parts (PartOf=)
    c.run("systemctl", "stop", "spfgate.target")
    states = lambda: c.run("systemctl", "is-active", *SERVICES, check=False).stdout.split()
    try:
        poll(lambda: all(x in ("inactive", "failed") for x in states()), 60, "all stopped")
    except AssertionError as e:
        raise AssertionError(f"{e}: {states()}\n{c.journal()}") from None
    assert states() == ["inactive"] * 3, c.journal()      # none failed
    j = c.journal()
    assert "relayd[" in j and "stop: done" in j, j
