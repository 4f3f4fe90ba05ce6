"""Started as root, every daemon becomes its own user.

deliverd, relayd and filterd are started as root with [section] user set
(spfgate-deliverd, spfgate-relayd, spfgate-filterd, primary group
spfgate; spfgate-deliverd also in group mail, as contrib's sysusers file
makes them) and checked from /proc: no thread keeps uid 0, relayd and
filterd hold no capability, deliverd only CAP_SETUID, CAP_SETGID and
CAP_CHOWN (and CAP_DAC_READ_SEARCH permitted, not effective).  Mail still
flows through all three, and each mailbox is written with its recipient's
identity: under a /var/mail-like folder (root:mail 2775) the mailbox
belongs to the recipient, group mail, mode 0600; under a private home
(%h, 0700) the whole delivery runs as the recipient.

The users are created with useradd/groupadd when missing (the tests run
as root, as CI does).
"""
import os
import pathlib
import pwd
import grp
import shutil
import stat
import subprocess
import tempfile

import pytest

import postfix as pfmod
from conftest import free_port, poll
from deliverd import Deliverd
from filterd import Filterd
from relayd import Relayd
from smarthost import Smarthost

CAP_CHOWN, CAP_DAC_READ_SEARCH, CAP_SETGID, CAP_SETUID = 0, 2, 6, 7
DELIVERD_EFF = (1 << CAP_CHOWN) | (1 << CAP_SETGID) | (1 << CAP_SETUID)
DELIVERD_PRM = DELIVERD_EFF | (1 << CAP_DAC_READ_SEARCH)
RECIPIENTS = ("sgtbob", "sgtcarol")


def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd}: {r.stderr}"


def ensure_group(name):
    try:
        grp.getgrnam(name)
    except KeyError:
        run("groupadd", "--system", name)


def ensure_user(name, system=True, groups=(), home=None):
    try:
        pwd.getpwnam(name)
    except KeyError:
        cmd = ["useradd", "--shell", "/usr/sbin/nologin"]
        if system:
            cmd += ["--system", "--gid", "spfgate", "--no-create-home",
                    "--home-dir", "/nonexistent"]
        else:
            cmd += ["--create-home", "--home-dir", home, "--user-group"]
        if groups:
            cmd += ["--groups", ",".join(groups)]
        run(*cmd, name)
    if home:
        os.chmod(home, 0o700)


@pytest.fixture(scope="module")
def users():
    if os.geteuid() != 0:
        pytest.fail("these tests start the daemons as root: run them as root")
    for tool in ("useradd", "groupadd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} (package passwd) is needed")
    ensure_group("spfgate")
    ensure_group("mail")
    ensure_user("spfgate-deliverd", groups=("mail",))
    ensure_user("spfgate-relayd")
    ensure_user("spfgate-filterd")
    for u in RECIPIENTS:
        ensure_user(u, system=False, home=f"/home/{u}")
    return {u: pwd.getpwnam(u) for u in
            ("spfgate-deliverd", "spfgate-relayd", "spfgate-filterd") + RECIPIENTS}


@pytest.fixture
def top():
    """A folder every daemon user may enter (pytest's tmp_path is root's 0700)."""
    d = tempfile.mkdtemp(prefix="privs", dir="/tmp")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


def wait_for(cond, *daemons):
    try:
        return poll(cond, 20)
    except AssertionError as e:
        raise AssertionError(f"{e}\n" + "\n".join(p.log() for p in daemons)) from None


def status(pid):
    """{task id: (uids, CapEff, CapPrm)} of every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        f = {}
        try:
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                k, _, v = line.partition(":")
                f[k] = v.split()
        except FileNotFoundError:
            continue
        out[tid] = ([int(x) for x in f["Uid"]], int(f["CapEff"][0], 16),
                    int(f["CapPrm"][0], 16))
    return out


def spool_mail_folder(top):
    """Like Debian's /var/mail: root:mail, 2775."""
    d = top / "varmail"
    d.mkdir()
    os.chown(d, 0, grp.getgrnam("mail").gr_gid)
    os.chmod(d, 0o2775)
    return d


def deliverd_as_user(top, users, **kw):
    d = Deliverd(os.environ["SPFGATE_BUILDDIR"], top / "d", local_users="system",
                 user="spfgate-deliverd", **kw)
    os.chmod(d.dir, 0o755)
    return d


@pytest.fixture
def started():
    made = []
    yield made.append
    for p in reversed(made):
        try:
            p.stop()
        finally:
            if hasattr(p, "cleanup"):
                p.cleanup()


def test_deliverd_drops_to_its_user_and_writes_as_recipient(users, top, started):
    mail = spool_mail_folder(top)
    d = deliverd_as_user(top, users, mailbox=f"{mail}/%u")
    d.start()
    started(d)
    du = users["spfgate-deliverd"]
    r = d.send("someone@remote.test", ["sgtbob@example.test"],
               "Subject: as bob\n\nhello bob\n")
    assert r["sgtbob@example.test"][0] == 250, r
    box = mail / "sgtbob"
    wait_for(lambda: box.exists() and b"hello bob" in box.read_bytes(), d)
    st = box.stat()
    assert (st.st_uid, st.st_gid) == (users["sgtbob"].pw_uid, grp.getgrnam("mail").gr_gid)
    assert stat.S_IMODE(st.st_mode) == 0o600
    wait_for(lambda: not (mail / "sgtbob.lock").exists(), d)   # released after the write
    # every thread left root; the workers hold only what mailboxes need
    tasks = status(d.proc.pid)
    assert tasks and all(set(u) == {du.pw_uid} for u, _, _ in tasks.values()), tasks
    main = tasks[str(d.proc.pid)]
    assert (main[1], main[2]) == (DELIVERD_EFF, DELIVERD_PRM), tasks
    assert all(eff & ~DELIVERD_EFF == 0 for _, eff, _ in tasks.values()), tasks
    # the spool and the sockets are its own
    for p in [d.spool, *d.spool.iterdir()]:
        assert p.stat().st_uid == du.pw_uid, p
    sk = os.stat(d.sock)
    assert (sk.st_uid, sk.st_gid, stat.S_IMODE(sk.st_mode)) == (du.pw_uid, du.pw_gid, 0o660)
    assert stat.S_IMODE(os.stat(d.control).st_mode) == 0o600
    assert f"uid={du.pw_uid}" in d.log()


def test_deliverd_private_home_mailbox_written_as_recipient(users, top, started):
    d = deliverd_as_user(top, users, mailbox="%h/mbox")
    d.start()
    started(d)
    home = pathlib.Path(users["sgtcarol"].pw_dir)
    box = home / "mbox"
    if box.exists():
        box.unlink()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    r = d.send("someone@remote.test", ["sgtcarol@example.test"],
               "Subject: home\n\nhello carol\n")
    assert r["sgtcarol@example.test"][0] == 250, r
    wait_for(lambda: box.exists() and b"hello carol" in box.read_bytes(), d)
    assert box.stat().st_uid == users["sgtcarol"].pw_uid
    wait_for(lambda: not (home / "mbox.lock").exists(), d)
    # a second message appends, as carol again
    r = d.send("someone@remote.test", ["sgtcarol@example.test"], "Subject: two\n\nagain\n")
    wait_for(lambda: box.read_bytes().count(b"\nFrom ") == 1, d)
    box.unlink()


def test_mail_flows_through_three_unprivileged_daemons(users, top, started):
    mail = spool_mail_folder(top)
    d = deliverd_as_user(top, users, mailbox=f"{mail}/%u")
    d.start()
    started(d)
    f = Filterd(os.environ["SPFGATE_BUILDDIR"], top / "f", user="spfgate-filterd")
    f.start()
    started(f)
    r = Relayd(os.environ["SPFGATE_BUILDDIR"], top / "r", lmtp=f"unix:{d.sock}",
               milters=f.listen, user="spfgate-relayd")
    r.start()
    started(r)
    for proc, name in ((r.proc, "spfgate-relayd"), (f.proc, "spfgate-filterd")):
        tasks = status(proc.pid)
        want = users[name].pw_uid
        assert all(set(u) == {want} and eff == 0 and prm == 0
                   for u, eff, prm in tasks.values()), (name, tasks)
    s = r.smtp(source="127.0.0.2")
    refused = s.sendmail("", ["sgtbob@example.test"],
                         b"Subject: three daemons\r\n\r\nthrough all three\r\n")
    assert refused == {}
    s.quit()
    box = mail / "sgtbob"
    wait_for(lambda: box.exists() and b"through all three" in box.read_bytes(), d, r)
    text = box.read_bytes()
    assert b"Received-SPF:" in text            # filterd saw it
    assert box.stat().st_uid == users["sgtbob"].pw_uid


def test_smarthost_password_file_only_root_reads(users, tmp_path, top, started):
    """The AUTH credentials stay readable by root alone (0600 root) and
    deliverd, no longer root, still authenticates with them."""
    if not pfmod.available():
        pytest.fail("Postfix is needed (and root): " + pfmod.install_hint())
    pf = Smarthost(tmp_path / "pf", free_port(), users={"alice": "s3cret"},
                   mailboxes={"bob@example.test"})
    pf.start()
    started(pf)
    secret = top / "smarthost.auth"
    secret.write_text("alice s3cret\n")
    os.chmod(secret, 0o600)
    d = deliverd_as_user(top, users, smarthost=f"[127.0.0.1]:{pf.port}",
                         smarthost_tls="required", smarthost_auth_file=secret)
    d.start()
    started(d)
    r = d.send("sgtbob@example.test", ["carol@far.test"], "Subject: out\n\nvia smarthost\n")
    assert r["carol@far.test"][0] == 250, r
    d.wait_log(r"to=carol@far\.test .*status=sent", timeout=30)
    assert "auth=ok user=alice" in d.log()
    assert secret.stat().st_uid == 0


def test_reload_after_the_drop(users, top, started):
    """SIGHUP as the daemons' users: deliverd reads its tables again;
    relayd keeps its TLS key when the new one is root's alone, and takes
    it when its user may read it."""
    mail = spool_mail_folder(top)
    d = deliverd_as_user(top, users, mailbox=f"{mail}/%u")
    d.start()
    started(d)
    r = Relayd(os.environ["SPFGATE_BUILDDIR"], top / "r", lmtp=f"unix:{d.sock}", tls=True,
               user="spfgate-relayd")
    os.chmod(r.dir, 0o755)
    os.chmod(r.key, 0o600)                       # root's alone, read before the drop
    r.start()
    started(r)
    d.reload()
    d.wait_log(r"reload: config=")
    r.reload()
    r.wait_log(r"reload: .*key.*keeping the running configuration")
    with r.smtp(source="127.0.0.2") as s:        # still served, still with TLS
        s.ehlo("client.example")
        s.starttls()
        s.ehlo("client.example")
        assert s.sendmail("", ["sgtbob@example.test"], b"Subject: after reload\r\n\r\nx\r\n") == {}
    box = mail / "sgtbob"
    wait_for(lambda: box.exists() and b"Subject: after reload" in box.read_bytes(), d, r)
    os.chown(r.key, 0, users["spfgate-relayd"].pw_gid)   # group spfgate may read it
    os.chmod(r.key, 0o640)
    r.reload()
    r.wait_log(r"reload: config=.* tls=yes")


def unit_caps(srcdir, daemon):
    """setpriv's --bounding-set for the CapabilityBoundingSet of the unit."""
    text = (srcdir / "contrib" / "systemd" / f"spfgate-{daemon}.service.in").read_text()
    line = [x for x in text.splitlines() if x.startswith("CapabilityBoundingSet=")][-1]
    caps = line.split("=", 1)[1].split()
    return ["setpriv", "--bounding-set", "-all," + ",".join(
        "+" + c.lower().removeprefix("cap_") for c in caps), "--inh-caps", "-all"]


def test_daemons_work_with_only_their_units_capabilities(users, top, started, srcdir):
    """As systemd starts them: root, but only the units' bounding sets,
    and a spool that already belongs to spfgate-deliverd (tmpfiles)."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (package util-linux) is needed")
    mail = spool_mail_folder(top)
    du = users["spfgate-deliverd"]
    d = deliverd_as_user(top, users, mailbox=f"{mail}/%u")
    d.spool.mkdir(mode=0o700)
    os.chown(d.spool, du.pw_uid, du.pw_gid)
    d.prefix = unit_caps(srcdir, "deliverd")
    d.start()
    started(d)
    f = Filterd(os.environ["SPFGATE_BUILDDIR"], top / "f", user="spfgate-filterd")
    f.prefix = unit_caps(srcdir, "filterd")
    f.start()
    started(f)
    r = Relayd(os.environ["SPFGATE_BUILDDIR"], top / "r", lmtp=f"unix:{d.sock}", tls=True,
               milters=f.listen, user="spfgate-relayd")
    os.chmod(r.dir, 0o755)
    r.prefix = unit_caps(srcdir, "relayd")
    r.start()
    started(r)
    s = r.smtp(source="127.0.0.2")
    s.ehlo("client.example")
    s.starttls()
    s.ehlo("client.example")
    assert s.sendmail("", ["sgtbob@example.test"], b"Subject: unit caps\r\n\r\nhi\r\n") == {}
    s.quit()
    box = mail / "sgtbob"
    wait_for(lambda: box.exists() and b"Subject: unit caps" in box.read_bytes(), d, r)
    assert box.stat().st_uid == users["sgtbob"].pw_uid
    tasks = status(d.proc.pid)
    main = tasks[str(d.proc.pid)]
    assert (main[1], main[2]) == (DELIVERD_EFF, DELIVERD_PRM), tasks


@pytest.mark.parametrize("daemon", ["deliverd", "relayd", "filterd"])
def test_missing_user_stops_start_with_clear_error(users, top, daemon):
    b = os.environ["SPFGATE_BUILDDIR"]
    if daemon == "deliverd":
        p = Deliverd(b, top / "d", user="spfgate-nosuchuser")
    elif daemon == "relayd":
        p = Relayd(b, top / "r", user="spfgate-nosuchuser")
    else:
        p = Filterd(b, top / "f", user="spfgate-nosuchuser")
    with pytest.raises(RuntimeError):
        p.start(timeout=10)
    assert "user spfgate-nosuchuser does not exist" in p.log()
    if hasattr(p, "cleanup"):
        p.cleanup()
