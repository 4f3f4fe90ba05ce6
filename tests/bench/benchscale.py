"""benchscale: relayd holding many idle SMTP sessions at once.

run(stack, milter, n, per_client, probes, timeout, inflight) starts a
further relayd on an Spfgate stack (benchspfgate), with filterd as its
milter or without milters, max_sessions n + 100 and max_sessions_per_client
per_client, and:

  1. sends one whole transaction (so that "before" includes what the
     first session touches once), then reads relayd's VmRSS and Pss
     (/proc/PID/status, /proc/PID/smaps_rollup) and filterd's;
  2. opens n sessions (idlesessions: each reads its 220 and stays idle),
     spread over 127.0.1.x source addresses, per_client each, at most
     `inflight` of them connecting at a time;
  3. reads the memory again, and relayd's CPU time over a second of
     idling (idle sessions should cost none);
  4. sends `probes` whole transactions on new sessions from 127.0.0.1
     and waits (bounded) for their Message-IDs in the mbox;
  5. sends QUIT on every idle session and counts the 221s;
  6. stops that relayd.

report(res, say) prints the result as Markdown; summary_rows(res) are its
lines in the summary table.  Per session = (with - before) / sessions open.
"""
import os
import re
import resource
import smtplib
import statistics
import time

from benchutil import BenchError, note, proc_status, kib, socket_fds
from benchpeers import DOMAIN, SENDER, RCPT, HELO, Postfix
from idlesessions import IdleSessions, sources_for

GOAL_KIB = 20.0             # relayd memory per idle session
# relayd log lines that say why a session was refused or went wrong
PROBLEM = re.compile(r"refuse |accept: |milter \S+: |lmtp: |cannot |"
                     r"out of memory|dropped")
VARIANT = {
    True: "relayd with filterd as its milter (the configuration measured "
          "for speed)",
    False: "relayd without milters",
}


def memory_of(pid):
    st = proc_status(pid)
    m = {"rss": kib(st["VmRSS"]), "hwm": kib(st["VmHWM"]),
         "threads": int(st["Threads"]), "pss": None,
         "socks": socket_fds(pid)}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    m["pss"] = kib(line.split(":", 1)[1])
    except OSError:
        pass
    return m


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_drops():
    """The kernel's counts of connections dropped at a full listen queue
    (TcpExt ListenOverflows, ListenDrops; /proc/net/netstat)."""
    try:
        lines = [ln.split() for ln in open("/proc/net/netstat")
                 if ln.startswith("TcpExt:")]
        row = dict(zip(lines[0][1:], (int(x) for x in lines[1][1:])))
        return row.get("ListenOverflows", 0), row.get("ListenDrops", 0)
    except (OSError, IndexError, ValueError):
        return None


def transaction(port, tag, size=2048):
    """One whole SMTP transaction from 127.0.0.1: {greet_ms, total_ms,
    mid, error} (error: None, or what went wrong)."""
    mid = f"<scale-{tag}-{time.time_ns()}@{DOMAIN}>"
    body = ("x" * 76 + "\r\n") * max(1, size // 78)
    t0 = time.monotonic()
    res = {"mid": mid, "greet_ms": None, "total_ms": None, "error": None}
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname=HELO,
                          timeout=60) as s:
            res["greet_ms"] = 1000 * (time.monotonic() - t0)
            s.sendmail(SENDER, [RCPT],
                       f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nMessage-ID: "
                       f"{mid}\r\nSubject: bench-spfgate scale {tag}\r\n\r\n"
                       + body)
        res["total_ms"] = 1000 * (time.monotonic() - t0)
    except (smtplib.SMTPException, OSError) as e:
        res["error"] = f"{type(e).__name__}: {e}"[:160]
    return res


def in_mbox(mbox, mids, timeout=60):
    """Until every Message-ID is in the mbox (bounded); the ones found."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = mbox.path.read_bytes()
        except FileNotFoundError:
            data = b""
        found = [m for m in mids if m.encode() in data]
        if len(found) == len(mids) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def run(stack, milter, n, per_client, probes, timeout, inflight):
    sources = sources_for(n, per_client)
    name = "relayd-scale-milter" if milter else "relayd-scale-nomilter"
    r = stack.add_relayd(name, milter=milter, max_sessions=n + 100,
                         max_sessions_per_client=per_client,
                         command_timeout="30m")
    res = {"milter": milter, "n": n, "per": per_client,
           "inflight": inflight, "nsrc": len(sources), "port": r.port,
           "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    try:
        warm = transaction(r.port, "warm")
        if warm["error"] or not in_mbox(stack.mbox, [warm["mid"]]):
            raise BenchError(f"{name}: a first message did not reach the "
                               f"mbox: {warm['error']}\n{r.log_tail()}")
        res["before"] = memory_of(r.pid)
        res["filterd_before"] = memory_of(stack.filterd.pid)
        note(f"scale ({name}): opening {n} idle sessions from "
             f"{len(sources)} addresses ({sources[0]}..{sources[-1]})")
        h = IdleSessions(("127.0.0.1", r.port), sources, inflight)
        drops0 = listen_drops()
        try:
            h.open(n, timeout=timeout)
            drops1 = listen_drops()
            res["drops"] = (None if drops0 is None or drops1 is None else
                            tuple(b - a for a, b in zip(drops0, drops1)))
            res["opened"] = h.opened
            res["failures"] = dict(h.failures)
            res["open_s"] = h.open_s
            g = sorted(h.greet_ms)
            res["greet_ms"] = statistics.median(g) if g else None
            res["greet_p99"] = g[int(0.99 * (len(g) - 1))] if g else None
            note(f"scale ({name}): {h.opened} sessions open after "
                 f"{h.open_s:.1f} s"
                 + (f"; failures: {dict(h.failures)}" if h.failures else ""))
            # a second of holding them: what idle sessions cost in CPU
            c0, t0 = cpu_seconds(r.pid), time.monotonic()
            time.sleep(1)
            res["idle_cpu"] = 100 * (cpu_seconds(r.pid) - c0) \
                / (time.monotonic() - t0)
            res["with"] = memory_of(r.pid)
            res["filterd_with"] = memory_of(stack.filterd.pid)
            # new sessions while they are open, delivered into the mbox
            res["probes"] = [transaction(r.port, f"probe{i}")
                             for i in range(probes)]
            sent = [p["mid"] for p in res["probes"] if not p["error"]]
            res["probes_delivered"] = len(in_mbox(stack.mbox, sent)) \
                if sent else 0
            note(f"scale ({name}): {res['probes_delivered']} of {probes} new "
                 "transactions in the mbox while the sessions were open")
            res["idle_alive"] = h.quit()
            note(f"scale ({name}): {res['idle_alive']} idle sessions "
                 "answered QUIT")
        finally:
            h.close()
        res["relayd_alive"] = r.proc.poll() is None
        res["after"] = memory_of(r.pid) if res["relayd_alive"] else None
        res["problems"] = [ln for ln in
                           Postfix.tail(r.logfile, 10 ** 6).splitlines()
                           if PROBLEM.search(ln)]
    finally:
        stack.drop_relayd(r)
    return res


def per_session(res, key):
    if not res.get("opened") or res["before"][key] is None \
            or res["with"][key] is None:
        return None
    return (res["with"][key] - res["before"][key]) / res["opened"]


def verdict_kib(v):
    if v is None:
        return "not measured"
    return "met" if v < GOAL_KIB else "MISSED"


def fmt(x, nd=0):
    return "-" if x is None else f"{x:.{nd}f}"


def fmt_mib(k):
    return "-" if k is None else f"{k / 1024:.1f} MiB"


def report(res, say):
    n = res["n"]
    b, w = res["before"], res["with"]
    say(f"## Scale: {n} idle SMTP sessions, {VARIANT[res['milter']]}")
    say("")
    say(f"- relayd on 127.0.0.1:{res['port']}, max_sessions {n + 100}, "
        f"max_sessions_per_client {res['per']}; clients spread round-robin "
        f"over {res['nsrc']} source addresses from 127.0.1.1, at most "
        f"{res['inflight']} awaiting their greeting at a time; RLIMIT_NOFILE "
        f"{res['fd_limit']} for the client and the daemons")
    if res["milter"]:
        short = res["fd_limit"] < 2 * n + 20
        say("- relayd opens a milter connection per session when the client "
            "connects (the milter's connect event may refuse it), so it "
            f"holds 2 descriptors per session: {n} sessions need "
            f"RLIMIT_NOFILE above {2 * n}"
            + (f"; **{res['fd_limit']} is too low for that**" if short
               else ""))
    fails = res["failures"]
    say(f"- opened: **{res['opened']} of {n}** in {res['open_s']:.1f} s "
        f"(greeting after connect: median {fmt(res['greet_ms'], 1)} ms, "
        f"99th percentile {fmt(res['greet_p99'], 1)} ms)"
        + ("; failed: " + ", ".join(f"{v} x \"{k}\""
                                    for k, v in fails.items())
           if fails else ""))
    if res.get("drops") is not None:
        say("- connections the kernel dropped at a full listen queue "
            "meanwhile (TcpExt ListenOverflows, ListenDrops; whole machine): "
            f"{res['drops'][0]}, {res['drops'][1]}")
    say("")
    say("| process | VmRSS before | VmRSS with sessions | Pss before | Pss "
        "with sessions | sockets before / with | threads before / with |")
    say("|---|---|---|---|---|---|---|")
    rows = [("relayd", b, w)]
    if res["milter"]:
        rows.append(("filterd", res["filterd_before"], res["filterd_with"]))
    for name, x, y in rows:
        say(f"| {name} | {x['rss'] / 1024:.1f} MiB | {y['rss'] / 1024:.1f} "
            f"MiB | {fmt_mib(x['pss'])} | {fmt_mib(y['pss'])} | "
            f"{x['socks']} / {y['socks']} | {x['threads']} / "
            f"{y['threads']} |")
    say("")
    per_rss, per_pss = per_session(res, "rss"), per_session(res, "pss")
    say(f"- relayd memory per session: **{fmt(per_rss, 1)} KiB** (VmRSS), "
        f"{fmt(per_pss, 1)} KiB (Pss); goal < {GOAL_KIB:.0f} KiB: "
        + verdict_kib(per_rss))
    if res["milter"] and res["opened"]:
        f = (res["filterd_with"]["rss"] - res["filterd_before"]["rss"]) \
            / res["opened"]
        say(f"- filterd (one milter session each): {f:.1f} KiB per session "
            "(VmRSS)")
    say(f"- relayd CPU while holding them idle for a second: "
        f"{res['idle_cpu']:.0f}%")
    pr = res["probes"]
    ok = [p for p in pr if not p["error"]]
    say(f"- new sessions meanwhile: {len(pr)} whole transactions from "
        "127.0.0.1 (EHLO, MAIL, RCPT, DATA, QUIT): "
        + (f"greeting after {', '.join(fmt(p['greet_ms'], 1) for p in ok)} "
           f"ms, whole transaction "
           f"{', '.join(fmt(p['total_ms'], 1) for p in ok)} ms; "
           if ok else "")
        + f"**{res['probes_delivered']} of {len(pr)} in the mbox**")
    for p in pr:
        if p["error"]:
            say(f"  - failed: {p['error']}")
    say(f"- then QUIT on every idle session: {res['idle_alive']} of "
        f"{res['opened']} answered 221")
    if res["after"]:
        say(f"- relayd after they closed: VmRSS "
            f"{res['after']['rss'] / 1024:.1f} MiB, VmHWM "
            f"{res['after']['hwm'] / 1024:.1f} MiB")
    else:
        say("- **relayd was not running any more**")
    if res["problems"]:
        say(f"- relayd's log: {len(res['problems'])} lines about refusals "
            "or errors; the first ones:")
        say("")
        say("```")
        seen = []
        for ln in res["problems"]:
            if ln not in seen:
                seen.append(ln)
            if len(seen) == 5:
                break
        for ln in seen:
            say(ln)
        say("```")
    say("")


def summary_rows(res):
    """(measurement, value, goal) lines for the summary table."""
    v = "with filterd" if res["milter"] else "without milters"
    per, pss = per_session(res, "rss"), per_session(res, "pss")
    ok = [p["total_ms"] for p in res["probes"] if not p["error"]]
    return [
        (f"relayd {v}: idle sessions open at once",
         f"{res['opened']} of {res['n']}", f"{res['n']}: "
         + ("met" if res["opened"] >= res["n"] else "MISSED")),
        (f"relayd {v}: memory per idle session",
         f"{fmt(per, 1)} KiB VmRSS, {fmt(pss, 1)} KiB Pss",
         f"< {GOAL_KIB:.0f} KiB: {verdict_kib(per)}"),
        (f"relayd {v}: new transactions delivered meanwhile",
         f"{res['probes_delivered']} of {len(res['probes'])}"
         + (f", {statistics.median(ok):.0f} ms each" if ok else ""),
         "all: " + ("met" if res["probes_delivered"] == len(res["probes"])
                    else "MISSED")),
    ]
