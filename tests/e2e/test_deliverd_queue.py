"""deliverd's queue core end to end: spool, scheduler, retries, DSNs.

- local delivery empties the queue and logs sent/removed;
- crash test: messages injected over LMTP while deliverd is killed with
  SIGKILL at random moments and restarted; every message that got 250 is
  in its mailbox exactly once;
- an unreachable MX (a closed loopback port): deferred, retried with
  backoff, bounced with an RFC 3464 DSN (checked with Python's email
  package) when the shortened lifetime ends;
- a null MX bounces at once; the null sender never gets a DSN;
- a corrupt file in the queue is moved aside at start-up, a tmp/ leftover
  removed, and the rest of the queue still delivered;
- a flush (SIGUSR1) retries a deferred message at once; a restart too,
  remembering its attempts;
- one message to a mailbox, a working MX and a refusing MX: delivered
  once each, one DSN naming only the refused recipient.
"""
import os
import random
import re
import smtplib
import socket
import threading
import time

import pytest

from deliverd import _poll, deliverd_factory  # noqa: F401
from dnsserver import dns_server  # noqa: F401
from conftest import free_port

REMOTE_ZONE = """
mx      A   127.0.0.1
"""


def closed_port():
    """A loopback TCP port nothing listens on (connect is refused)."""
    return free_port()


def msg(n, subject="crash test"):
    return (f"From: sender@remote.test\nTo: alice@example.test\n"
            f"Subject: {subject} {n}\nMessage-ID: <m{n}@remote.test>\n\n"
            f"body of message {n}\nFrom the start of a line\n.\n..dots\n")


def test_local_delivery_logs_and_empties_queue(deliverd_factory):
    d = deliverd_factory()
    r = d.send("sender@remote.test", ["alice@example.test", "bob@example.test"], msg(1))
    assert all(code == 250 for code, _ in r.values()), r
    (m,) = d.wait_mailbox("alice")
    assert m["Subject"] == "crash test 1"
    d.wait_mailbox("bob")
    d.wait_queue_empty()
    line = d.wait_log(r"to=alice .*status=sent")
    qid = re.search(r"id=([0-9A-Z]+)", line).group(1)
    assert re.search(r"relay=local delay=\d+ dsn=2\.0\.0", line), line
    d.wait_log(rf"id={qid} status=removed")
    assert not list((d.spool / "defer").iterdir())


def count_subjects(d, users=("alice",)):
    seen = {}
    for u in users:
        for m in d.messages(u):
            seen[m["Subject"]] = seen.get(m["Subject"], 0) + 1
    return seen


def crash_run(d, n_msgs, rcpt_of, seed=1234):
    """Inject n_msgs messages (message n to rcpt_of(n)) in 3 parallel
    streams while d is killed with SIGKILL at random moments and
    restarted.  Returns (subjects acknowledged with 250, kills)."""
    acked, lock = set(), threading.Lock()
    counter = iter(range(n_msgs))
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            with lock:
                n = next(counter, None)
            if n is None:
                return
            rcpt = rcpt_of(n)
            try:
                r = d.send("sender@remote.test", [rcpt], msg(n))
            except (OSError, smtplib.SMTPException, AssertionError):
                # killed mid-transaction: not acknowledged, may or may not exist
                r = {}
            if r.get(rcpt, (0,))[0] == 250:
                with lock:
                    acked.add(f"crash test {n}")
            elif r == {}:
                # deliverd is down: wait (bounded) until it listens again
                for _ in range(200):
                    if d.alive() and d.ready():
                        break
                    time.sleep(0.02)

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    rng = random.Random(seed)
    kills = 0
    try:
        for _ in range(200):              # bounded: at most 200 kills
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(rng.uniform(0.02, 0.3))   # a random moment, not a sync
            d.kill()
            kills += 1
            d.start()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    # after the last restart everything queued is delivered
    d.wait_queue_empty(timeout=60)
    return acked, kills


def check_crash(what, n_msgs, acked, kills, seen, d):
    lost = sorted(acked - set(seen))
    dup = sorted(s for s, c in seen.items() if c > 1)
    print(f"crash test ({what}): N={n_msgs} attempted, {len(acked)} acknowledged, "
          f"{kills} SIGKILLs, {len(seen)} delivered, lost={len(lost)} "
          f"duplicated={len(dup)}")
    assert not lost, f"acknowledged but lost: {lost[:10]}"
    # at-least-once: a kill between the delivery (mailbox unlocked, or the
    # MX's 250 after DATA) and the spool state update repeats that one
    # delivery; never more than one per kill, never three copies
    assert len(dup) <= kills, f"delivered twice: {dup[:10]}"
    assert all(c <= 2 for c in seen.values())
    assert kills >= 3
    assert not list((d.spool / "corrupt").iterdir())
    assert d.sanitizer_reports() == []


def test_crash_sigkill_loses_nothing(deliverd_factory):
    """Crash test, local mailbox: every message that got 250 ends up in
    the mailbox; duplicates only from the at-least-once window (killed
    after the append was complete and unlocked, before the spool recorded
    it), at most one per kill."""
    N = int(os.environ.get("SPFGATE_CRASH_N", "3000"))
    d = deliverd_factory(retry_min="1s", retry_max="2s")
    acked, kills = crash_run(d, N, lambda n: "alice@example.test")
    check_crash("mbox", N, acked, kills, count_subjects(d), d)


def test_crash_sigkill_remote_and_local(deliverd_factory, dns_server, sink_factory):
    """Crash test, half the messages to a remote MX (smtp-sink), half to a
    local mailbox: every message that got 250 is at the MX or in the
    mailbox."""
    N = int(os.environ.get("SPFGATE_CRASH_N", "3000")) // 2
    port = free_port("127.0.0.5")
    dns = dns_server({"remote.test": "@ MX 10 mx\nmx A 127.0.0.5\n"})
    mx = sink_factory("127.0.0.5", port)
    d = deliverd_factory(nameserver=dns.addr, smtp_port=port,
                         retry_min="1s", retry_max="2s")
    acked, kills = crash_run(
        d, N, lambda n: "carol@remote.test" if n % 2 else "alice@example.test", seed=99)
    seen = count_subjects(d)
    for text in mx.messages():
        m = re.search(r"(?m)^Subject: (.*)$", text)
        if m:
            seen[m.group(1)] = seen.get(m.group(1), 0) + 1
    check_crash("mbox + MX", N, acked, kills, seen, d)


def dsn_of(m):
    """Check an RFC 3464 DSN with the email package; returns the
    per-recipient field blocks of its message/delivery-status part."""
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    assert m["Auto-Submitted"] == "auto-replied"
    assert "MAILER-DAEMON@" in m["From"]
    parts = m.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = parts[1].get_payload()    # list: per-message block, then per-recipient
    assert status[0]["Reporting-MTA"] == "dns; mx.example.test"
    assert status[0]["Arrival-Date"]
    return parts, status[1:]


def test_unreachable_mx_deferred_retried_then_bounced(deliverd_factory, dns_server):
    dns = dns_server({"remote.test": REMOTE_ZONE + "@ MX 10 mx.remote.test.\n"})
    d = deliverd_factory(nameserver=dns.addr, smtp_port=closed_port(),
                         retry_min="1s", retry_max="2s", queue_lifetime="6s")
    r = d.send("alice@example.test", ["carol@remote.test"],
               "From: alice@example.test\nTo: carol@remote.test\n"
               "Subject: to nowhere\n\nthe body stays home\n")
    assert r["carol@remote.test"][0] == 250
    qid = re.search(r"id=([0-9A-Z]+)", d.wait_log(r"to=carol@remote\.test .*status=deferred")).group(1)
    # retried: at least two attempts before the lifetime ends
    _poll(lambda: len(re.findall(rf"id={qid} to=carol@remote\.test .*status=deferred",
                                 d.log())) >= 2, 20, "a retry")
    d.wait_log(rf"id={qid} status=deferred attempts=\d+ retry_in=\d+")
    d.wait_log(rf"id={qid} to=carol@remote\.test .*status=expired", timeout=30)
    d.wait_log(rf"id={qid} status=bounced nrcpt=1")
    (m,) = d.wait_mailbox("alice")
    parts, rcpts = dsn_of(m)
    assert len(rcpts) == 1
    assert rcpts[0]["Final-Recipient"] == "rfc822; carol@remote.test"
    assert rcpts[0]["Action"] == "failed"
    assert re.fullmatch(r"4\.\d+\.\d+", rcpts[0]["Status"]), rcpts[0]["Status"]
    assert "expired" in rcpts[0]["Diagnostic-Code"]
    assert "Subject: to nowhere" in parts[2].get_payload()
    assert "the body stays home" not in m.as_string()
    assert m["To"] == "<alice@example.test>"
    d.wait_queue_empty()
    # the DSN itself came from the null sender
    assert m["Return-Path"] == "<>", m["Return-Path"]


def test_null_mx_bounces_at_once(deliverd_factory, dns_server):
    dns = dns_server({"nomail.test": "@ MX 0 .\n"})
    d = deliverd_factory(nameserver=dns.addr, retry_min="1h", queue_lifetime="5d")
    r = d.send("bob@example.test", ["x@nomail.test", "alice@example.test"],
               "Subject: mixed\n\nhello\n")
    assert all(c == 250 for c, _ in r.values()), r
    d.wait_mailbox("alice")
    (m,) = d.wait_mailbox("bob")
    parts, rcpts = dsn_of(m)
    assert rcpts[0]["Final-Recipient"] == "rfc822; x@nomail.test"
    assert rcpts[0]["Status"] == "5.1.10"
    d.wait_queue_empty()
    d.wait_log(r"to=x@nomail\.test .*dsn=5\.1\.10 status=bounced")


def test_null_sender_gets_no_dsn(deliverd_factory, dns_server):
    dns = dns_server({"nomail.test": "@ MX 0 .\n"})
    d = deliverd_factory(nameserver=dns.addr)
    r = d.send("", ["x@nomail.test"], "Subject: a bounce\n\nx\n")
    assert r["x@nomail.test"][0] == 250
    d.wait_log(r"status=bounced nrcpt=1 dsn=none")
    d.wait_queue_empty()
    # nothing new is queued or delivered: the DSN was dropped, not sent
    assert "kind=dsn" not in d.log()
    assert d.messages("alice") == [] and d.messages("bob") == []


def test_corrupt_and_leftover_files_at_start(deliverd_factory):
    d = deliverd_factory(start=False)
    d.start()
    r = d.send("s@remote.test", ["alice@example.test"], "Subject: before\n\nx\n")
    assert r["alice@example.test"][0] == 250
    d.wait_mailbox("alice")
    d.stop()
    # a message deliverd wrote, copied in under a new id while stopped
    # (it is valid, so its id must match), plus junk
    (d.spool / "queue" / "0000000000000000Z").write_text("SPFGATE-SPOOL 1\nid 00\n")
    (d.spool / "queue" / "notes.txt").write_text("hello\n")
    (d.spool / "tmp" / "0000000000000001A").write_text("half written")
    d.start()
    _poll(lambda: (d.spool / "corrupt" / "0000000000000000Z").exists(), 10, "corrupt/ move")
    _poll(lambda: (d.spool / "corrupt" / "notes.txt").exists(), 10, "foreign file move")
    assert not (d.spool / "tmp" / "0000000000000001A").exists()
    r = d.send("s@remote.test", ["alice@example.test"], "Subject: after\n\nx\n")
    assert r["alice@example.test"][0] == 250
    d.wait_mailbox("alice", count=2)
    d.wait_queue_empty()
    assert d.alive()
    d.wait_log(r"id=0000000000000000Z status=corrupt")


def test_flush_retries_deferred_now(deliverd_factory, dns_server):
    """A deferred message waits for its retry time (1h here) unless the
    administrator flushes the queue (SIGUSR1): then it is tried at once.
    The defer/ note carries the attempts and the last error."""
    dns = dns_server({"remote.test": REMOTE_ZONE + "@ MX 10 mx.remote.test.\n"})
    d = deliverd_factory(nameserver=dns.addr, smtp_port=closed_port(),
                         retry_min="1h", retry_max="2h")
    r = d.send("alice@example.test", ["carol@remote.test"], "Subject: later\n\nx\n")
    assert r["carol@remote.test"][0] == 250
    line = d.wait_log(r"status=deferred attempts=1 retry_in=3600")
    qid = re.search(r"id=([0-9A-Z]+)", line).group(1)
    note = (d.spool / "defer" / qid).read_text()
    assert note.startswith("attempts 1\nerror ") and "4." in note, note
    d.flush()
    d.wait_log(rf"id={qid} status=deferred attempts=2 retry_in=7200")
    assert (d.spool / "defer" / qid).read_text().startswith("attempts 2\n")
    assert d.queue_ids() == [qid]
    # a restart delivers at once and remembers the attempts so far
    d.restart()
    d.wait_log(rf"id={qid} status=deferred attempts=3 ")


def _common_port(addrs):
    for _ in range(50):
        p = free_port(addrs[0])
        try:
            for a in addrs[1:]:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind((a, p))
            return p
        except OSError:
            continue
    raise RuntimeError("no common free port")


@pytest.fixture
def sink_factory(tmp_path):
    from smarthost import Sink
    made = []

    def make(addr, port, *options):
        s = Sink(tmp_path, addr, port, options)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.stop()


def test_mixed_results_one_partial_dsn(deliverd_factory, dns_server, sink_factory):
    """One message, three destinations: a local mailbox, a domain whose MX
    accepts, a domain whose MX refuses RCPT with 5xx.  The first two are
    delivered once; the DSN names only the refused recipient."""
    port = _common_port(["127.0.0.5", "127.0.0.6"])
    dns = dns_server({"good.test": "@ MX 10 mx\nmx A 127.0.0.5\n",
                      "bad.test": "@ MX 10 mx\nmx A 127.0.0.6\n"})
    good = sink_factory("127.0.0.5", port)
    sink_factory("127.0.0.6", port, "-f", "RCPT")
    d = deliverd_factory(nameserver=dns.addr, smtp_port=port, retry_min="1h")
    r = d.send("alice@example.test", ["bob@example.test", "x@good.test",
                                      "y@good.test", "z@bad.test"],
               "From: alice@example.test\nSubject: mixed bag\n\nhello\n")
    assert all(c == 250 for c, _ in r.values()), r
    d.wait_mailbox("bob")
    (m,) = d.wait_mailbox("alice")
    d.wait_queue_empty()
    msgs = good.messages()
    assert len(msgs) == 1 and "X-Rcpt-Args: <x@good.test>" in msgs[0] \
        and "X-Rcpt-Args: <y@good.test>" in msgs[0]
    parts, rcpts = dsn_of(m)
    assert [b["Final-Recipient"] for b in rcpts] == ["rfc822; z@bad.test"]
    assert rcpts[0]["Status"].startswith("5.")
    assert rcpts[0]["Diagnostic-Code"].startswith("smtp; 5")
    assert rcpts[0]["Remote-MTA"] == "dns; mx.bad.test"
    assert "Subject: mixed bag" in parts[2].get_payload()
    log = d.log()
    assert len(re.findall(r"to=x@good\.test .*status=sent", log)) == 1
    assert len(re.findall(r"to=z@bad\.test .*status=bounced", log)) == 1
    assert d.messages("bob")[0]["Subject"] == "mixed bag"


def test_queue_listing_refused_to_other_users(deliverd_factory):
    """A user who may not read the spool is told so, never "empty"."""
    import subprocess
    import tempfile
    d = deliverd_factory()
    os.chmod(d.spool, 0o700)
    # the configuration is readable by all, as installed; the spool is not
    with tempfile.NamedTemporaryFile("w", suffix=".conf", dir="/tmp") as conf:
        conf.write(d.conf.read_text())
        conf.flush()
        os.chmod(conf.name, 0o644)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            str(d.queue_tool), "-c", conf.name, "list"],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r
    assert "Mail queue is empty" not in r.stdout
    assert "cannot read the queue" in r.stderr and "Permission denied" in r.stderr, r.stderr
    assert d.queue("list").stdout.strip() == "Mail queue is empty"    # root may
