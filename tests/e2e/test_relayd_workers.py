"""relayd as several processes ([relayd] processes = 2).

A parent binds, drops privileges and supervises two workers, each with
its own event loop; the kernel hands each client address to one worker
(SO_REUSEPORT with a BPF program), so max_sessions_per_client holds
across them.  Mail flows through both; a killed worker is started again;
SIGHUP reaches every worker; SIGTERM stops them all and relayd exits 0.
"""
import os
import re
import signal
import subprocess

from conftest import poll
from deliverd import deliverd_factory  # noqa: F401  (fixture)
from relayd import relayd_factory  # noqa: F401  (fixture)


def workers(r):
    """pids of the parent's children (the workers)."""
    out = []
    for task in os.listdir(f"/proc/{r.proc.pid}/task"):
        out += [int(x) for x in open(f"/proc/{r.proc.pid}/task/{task}/children").read().split()]
    return sorted(out)


def test_two_workers(relayd_factory, deliverd_factory):
    d = deliverd_factory()
    r = relayd_factory(lmtp=f"unix:{d.sock}", processes="2", max_sessions_per_client="3")
    poll(lambda: len(workers(r)) == 2, 10, "two workers")
    r.wait_log(r"start: .*worker=1/2")
    r.wait_log(r"start: .*worker=2/2")

    # clients from eight addresses: both workers take some, all mail arrives
    for i in range(8):
        with r.smtp(source=f"127.0.0.{10 + i}") as s:
            assert s.sendmail("a@remote.test", ["bob@example.test"],
                              f"Subject: w{i}\r\n\r\nhi\r\n") == {}
    msgs = d.wait_mailbox("bob", count=8)
    assert sorted(m["Subject"] for m in msgs) == [f"w{i}" for i in range(8)]
    ids = re.findall(r"relayd: id=([0-9A-F]+) from=", r.log())
    assert len(set(ids)) == 8, ids

    # clients are spread over both workers
    open_ = [r.raw(source=f"127.0.0.{10 + i}") for i in range(8)]
    ss = subprocess.run(["ss", "-tnpH", "state", "established", f"sport = :{r.port}"],
                        capture_output=True, text=True, check=True)
    assert set(re.findall(r"pid=(\d+)", ss.stdout)) == {str(p) for p in workers(r)}, ss.stdout
    for c in open_:
        c.close()

    # one client's sessions all reach the same worker: the limit holds
    held = [r.raw(source="127.0.0.30") for _ in range(3)]
    ss = subprocess.run(["ss", "-tnpH", "state", "established", f"sport = :{r.port}",
                         "dst", "127.0.0.30"], capture_output=True, text=True, check=True)
    pids = set(re.findall(r"pid=(\d+)", ss.stdout))
    assert len(ss.stdout.splitlines()) == 3 and len(pids) == 1, ss.stdout
    c = r.raw(source="127.0.0.30", greeting=False)
    code, lines = c.reply()
    assert code == 421 and "too many sessions from you" in lines[-1], lines
    c.close()
    for c in held:
        c.close()

    # a worker that dies is replaced; service goes on
    before = workers(r)
    os.kill(before[0], signal.SIGKILL)
    poll(lambda: len(workers(r)) == 2 and workers(r) != before, 15, "a new worker")
    r.wait_log(r"worker \d: pid=\d+ ended \(signal Killed\); starting it again")
    for i in range(4):
        with r.smtp(source=f"127.0.0.{40 + i}") as s:
            assert s.sendmail("a@remote.test", ["bob@example.test"],
                              f"Subject: after{i}\r\n\r\nhi\r\n") == {}
    d.wait_mailbox("bob", count=12)

    # SIGHUP: the parent and both workers read the configuration again
    n = r.log().count("reload: config=")
    r.reload()
    poll(lambda: r.log().count("reload: config=") >= n + 3, 10, "three reloads")

    # SIGTERM: everything stops, exit 0, the port is closed
    assert r.stop() == 0, r.log()
    assert r.log().count("stop: done") >= 3
