"""log = files:/DIR: Exim's three log files.

filterd behind relayd, with a real DNS server publishing the sender's
SPF record, logs to a folder: every line in mainlog, refused mail in
rejectlog as well, errors in paniclog as well; SIGHUP reopens the files
after logrotate has moved them away.
"""
import re
import signal

import pytest

from deliverd import deliverd_factory  # noqa: F401  (fixture)
from dnsserver import DnsServer
from filterd import Filterd
from relayd import relayd_factory  # noqa: F401  (fixture)
from conftest import poll

ZONE = '@ TXT "v=spf1 ip4:127.0.0.2 -all"\n'
STAMP = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d filterd\[\d+\]: "


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    srv = DnsServer(tmp_path_factory.mktemp("nsd"), {"sender.test": ZONE})
    srv.start()
    yield srv
    srv.stop()


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_main_reject_and_panic_logs(builddir, tmp_path, dns, deliverd_factory, relayd_factory):
    logdir = tmp_path / "log"
    logdir.mkdir()
    f = Filterd(builddir, tmp_path / "f", nameserver=dns.addr, log=f"files:{logdir}")
    f.start()
    try:
        d = deliverd_factory()
        r = relayd_factory(lmtp=f"unix:{d.sock}", milters=f.listen)
        main, reject, panic = (logdir / n for n in ("mainlog", "rejectlog", "paniclog"))

        with r.smtp(source="127.0.0.3") as s:        # forged: SPF fail
            s.ehlo("client.example")
            code, _ = s.mail("alice@sender.test")
            assert code == 550
        with r.smtp(source="127.0.0.2") as s:        # permitted
            assert s.sendmail("alice@sender.test", ["bob@example.test"],
                              "Subject: ok\r\n\r\nhi\r\n") == {}
        d.wait_mailbox("bob")

        poll(lambda: any("action=reject" in x for x in lines(main)), 10, "the reject in mainlog")
        rej = lines(reject)
        assert len(rej) == 1 and "client=127.0.0.3" in rej[0] and "spf=fail" in rej[0], rej
        assert re.match(STAMP, rej[0]), rej[0]
        assert any("client=127.0.0.2" in x and "action=accept" in x for x in lines(main))
        assert not any("action=accept" in x for x in rej)
        assert any(re.match(STAMP + "start: ", x) for x in lines(main))
        assert lines(panic) == []

        # an error (a broken configuration on reload) goes to paniclog too
        good = f.conf.read_text()
        f.conf.write_text(good + "on_fail = sometimes\n")
        f.proc.send_signal(signal.SIGHUP)
        poll(lambda: any("keeping the running configuration" in x for x in lines(panic)),
             10, "the reload error in paniclog")
        assert any("keeping the running configuration" in x for x in lines(main))
        f.conf.write_text(good)

        # logrotate moves the files; SIGHUP makes filterd write new ones
        for p in (main, reject, panic):
            p.rename(p.with_name(p.name + ".1"))
        f.proc.send_signal(signal.SIGHUP)
        poll(main.exists, 10, "a new mainlog")
        with r.smtp(source="127.0.0.3") as s:
            s.ehlo("client.example")
            reply = s.mail("alice@sender.test")
            assert reply[0] == 550, reply
        poll(lambda: len(lines(reject)) == 1, 10, "the new reject in the new rejectlog")
        assert len(lines(logdir / "rejectlog.1")) == 1
    finally:
        f.stop()


def test_bad_log_spec_refused_by_check_mode(builddir, tmp_path):
    import subprocess
    conf = tmp_path / "c.conf"
    conf.write_text("[global]\nmail_name = mx.example.test\nlog = file:/var/log\n")
    for prog in ("filterd/filterd", "relayd/relayd", "deliverd/deliverd"):
        r = subprocess.run([f"{builddir}/{prog}", "-t", "-c", str(conf)],
                           capture_output=True, text=True)
        assert r.returncode == 2, (prog, r)
        assert f"{conf}:3:" in r.stderr and "files:/DIR" in r.stderr, (prog, r.stderr)


def test_unwritable_log_folder_stops_start(builddir, tmp_path):
    f = Filterd(builddir, tmp_path / "f", log=f"files:{tmp_path}/no/such/dir")
    with pytest.raises(RuntimeError):
        f.start(timeout=10)
    # nothing could be logged there: the reason is on stderr
    assert "log file" in f.log() and "No such file or directory" in f.log()
