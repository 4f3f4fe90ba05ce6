"""deliverd's scheduler end to end: a slow destination never stalls the
others, and DELETE stops a delivery in flight.

- concurrency 2, destination_concurrency 1, an MX that accepts and never
  greets, several messages queued to it: a message to a local user is
  delivered at once (no worker waits for the busy destination);
- DELETE of a message whose delivery is in progress: no defer/ note is
  left for it and it is not delivered (nor tried) afterwards.
"""
import os
import re
import socket

import pytest

from deliverd import _poll, deliverd_factory  # noqa: F401
from dnsserver import dns_server  # noqa: F401
from conftest import free_port

MX_ADDR = "127.0.0.7"
SMTP_TIMEOUT = 30     # a stall behind the silent MX would last this long
PROMPT = 8            # well below SMTP_TIMEOUT


@pytest.fixture
def silent_mx():
    """A TCP listener on MX_ADDR that accepts and never sends a greeting;
    everything closed at teardown."""
    port = free_port(MX_ADDR)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((MX_ADDR, port))
    ls.listen(16)
    ls.settimeout(PROMPT)
    conns = []

    class MX:
        addr, sock = MX_ADDR, ls

        def __init__(self):
            self.port = port

        def accept(self):
            """The next connection (bounded wait); kept open, silent."""
            c, _ = ls.accept()
            conns.append(c)
            return c

        def close(self):
            for c in conns:
                c.close()
            ls.close()

    mx = MX()
    yield mx
    mx.close()


def remote_setup(deliverd_factory, dns_server, mx, monkeypatch, **kw):
    monkeypatch.setenv("SPFGATE_TEST_SMTP_TIMEOUT", str(SMTP_TIMEOUT))
    dns = dns_server({"slow.test": f"@ MX 10 mx\nmx A {mx.addr}\n"})
    return deliverd_factory(nameserver=dns.addr, smtp_port=mx.port,
                            retry_min="1h", retry_max="2h", **kw)


def test_slow_destination_does_not_stall_local(deliverd_factory, dns_server,
                                               silent_mx, monkeypatch):
    d = remote_setup(deliverd_factory, dns_server, silent_mx, monkeypatch,
                     concurrency=2, destination_concurrency=1)
    for n in range(4):
        r = d.send("alice@example.test", ["carol@slow.test"],
                   f"Subject: slow {n}\n\nx\n")
        assert r["carol@slow.test"][0] == 250, r
    # one delivery is in progress: it holds the destination's only slot
    silent_mx.accept()
    r = d.send("sender@remote.test", ["bob@example.test"], "Subject: local\n\nhi\n")
    assert r["bob@example.test"][0] == 250, r
    (m,) = d.wait_mailbox("bob", timeout=PROMPT)
    assert m["Subject"] == "local"
    # the other remote messages wait for the slot: still queued, not tried
    _poll(lambda: len(d.queue_ids()) == 4, PROMPT, "the local message removed")
    assert not re.search(r"status=deferred", d.log())


def test_delete_in_flight_leaves_no_defer_note(deliverd_factory, dns_server,
                                               silent_mx, monkeypatch):
    d = remote_setup(deliverd_factory, dns_server, silent_mx, monkeypatch,
                     concurrency=2, destination_concurrency=1)
    r = d.send("alice@example.test", ["carol@slow.test"], "Subject: doomed\n\nx\n")
    assert r["carol@slow.test"][0] == 250, r
    (qid,) = d.queue_ids()
    conn = silent_mx.accept()          # its delivery is in progress
    res = d.queue("delete", qid)
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert d.queue_ids() == []
    # end the attempt now (EOF instead of a greeting; reconnects refused)
    silent_mx.close()
    d.wait_log(rf"id={qid} status=stopped", timeout=PROMPT)
    assert not (d.spool / "defer" / qid).exists()
    assert not list((d.spool / "defer").iterdir())
    # later: a flush and another delivery (a sync point); the deleted
    # message is never tried again nor delivered
    d.flush()
    r = d.send("sender@remote.test", ["bob@example.test"], "Subject: after\n\nhi\n")
    assert r["bob@example.test"][0] == 250, r
    d.wait_mailbox("bob", timeout=PROMPT)
    d.wait_queue_empty(timeout=PROMPT)
    tail = d.log().split(f"id={qid} status=stopped", 1)[1]
    assert f"id={qid}" not in tail, tail
    assert not list((d.spool / "defer").iterdir())
    assert not re.search(rf"id={qid} .*status=(sent|deferred)", d.log())
    del conn


def test_parked_backlog_drains_one_wakeup_at_a_time(deliverd_factory):
    """Messages parked on a busy mailbox are woken one per release (not all
    of them on every release), and one deleted while parked does not leave
    the others parked for good."""
    d = deliverd_factory()
    box = d.mailbox("bob")
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    lock = box.with_name("bob.lock")
    lock.write_text(f"{os.getpid()} {boot}\n")     # a live writer holds bob's mailbox
    ids = []
    for i in range(6):
        r = d.send("a@remote.test", ["bob@example.test"], f"Subject: m{i}\n\nbody {i}\n")
        assert r["bob@example.test"][0] == 250, r
        ids.append(re.search(r"as ([0-9A-F]+)", r["bob@example.test"][1]).group(1))
    # the first takes the mailbox and waits for the lock; the others park
    _poll(lambda: len(d.queue_ids()) == 6, 10, "six queued")
    victim = ids[1]
    assert d.queue("delete", victim).returncode == 0
    lock.unlink()                                    # the writer is done
    msgs = d.wait_mailbox("bob", count=5, timeout=60)
    assert sorted(m["Subject"] for m in msgs) == ["m0", "m2", "m3", "m4", "m5"]
    d.wait_queue_empty(timeout=30)
