"""relayd's milter client (tests/miltc over relayd/libmilterclient.a)
against real milters: filterd (with nsd publishing SPF records), Debian's
opendkim, and badmilter.py, a milter that breaks the protocol on purpose.

Every failure mode must end in "failed" within the configured timeout,
and the next session on the same milter must work.
"""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from opendkim import opendkim_milter

from badmilter import BadMilter
from dnsserver import DnsServer
from filterd import MAIL_NAME, Filterd, filterd_factory  # noqa: F401

ZONE = r'''
@          TXT "v=spf1 ip4:192.0.2.0/24 -all"
soft       TXT "v=spf1 ip4:192.0.2.0/24 ~all"
'''
GOOD_IP, BAD_IP = "192.0.2.10", "203.0.113.9"


def miltc(builddir, sock, script, *opts, timeout=60, milter=None):
    binary = builddir / "tests" / "miltc"
    if not binary.exists():
        pytest.fail(f"{binary} not built (make check builds it)")
    t0 = time.monotonic()
    p = subprocess.run([str(binary), *opts, sock], input=script, capture_output=True,
                       text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    assert "runtime error" not in p.stderr and "Sanitizer" not in p.stderr, p.stderr
    if milter is not None:
        milter.finished()
    return p.stdout.splitlines(), elapsed


def session(ip="127.0.0.1", sender="<alice@example.test>", rcpts=("<bob@example.test>",),
            headers=(("From", " alice@example.test"), ("Subject", " hi")), body="hello\\r\\n",
            macros=None):
    lines = ["macro j " + MAIL_NAME, "macro {daemon_name} relayd", "macro i 4XyZ12",
             f"macro {{client_addr}} {ip}", "macro {client_name} client.example",
             "macro {client_port} 4567", "macro {if_addr} 127.0.0.1", "macro _ client.example [" + ip + "]"]
    for k, v in (macros or {}).items():
        lines.append(f"macro {k} {v}")
    lines += ["open", f"connect client.example 4 4567 {ip}", "helo client.example",
              f"macro {{mail_addr}} {sender.strip('<>')}", f"mail {sender} BODY=8BITMIME"]
    for r in rcpts:
        lines += [f"macro {{rcpt_addr}} {r.strip('<>')}", f"rcpt {r}"]
    lines.append("data")
    lines += [f"header {n}:{v}" for n, v in headers]
    lines += ["eoh", f"body {body}", "eom", "abort", "quit"]
    return "\n".join(lines) + "\n"


def unescape(text):
    """miltc's escapes (\\r \\n \\t \\\\ \\xHH) back to bytes."""
    out, i = bytearray(), 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            n = text[i + 1]
            if n == "x":
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
            out += {"r": b"\r", "n": b"\n", "t": b"\t"}.get(n, n.encode())
            i += 2
            continue
        out += c.encode()
        i += 1
    return bytes(out)


def replies(out):
    """{event: status...} for the lines that report events."""
    return [line for line in out if not line.startswith("mod ")]


# ---- filterd ----

@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    srv = DnsServer(tmp_path_factory.mktemp("nsd"), {"sender.test": ZONE})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(params=["unix", "inet"])
def kind(request):
    return request.param


def test_filterd_pass_inserts_headers(builddir, filterd_factory, dns, kind):
    fd = filterd_factory(nameserver=dns.addr, kind=kind)
    out, _ = miltc(builddir, fd.listen, session(ip=GOOD_IP, sender="<alice@sender.test>"))
    assert out[0].startswith("open continue"), out
    assert [l.split()[:2] for l in replies(out)][1:] == [
        ["connect", "continue"], ["helo", "continue"], ["mail", "continue"],
        ["rcpt", "continue"], ["data", "continue"], ["header", "continue"],
        ["header", "continue"], ["eoh", "continue"], ["body", "continue"],
        ["eom", "continue"], ["abort"], ["quit"]], out
    mods = [l for l in out if l.startswith("mod ")]
    assert len(mods) == 2, out
    assert mods[0].startswith("mod insheader 0 Authentication-Results: " + MAIL_NAME + ";"), mods
    assert "spf=pass" in mods[0]
    assert mods[1].startswith("mod insheader 0 Received-SPF: pass "), mods
    assert "client-ip=" + GOOD_IP in mods[1]


def test_filterd_fail_rejected_at_mail(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr)
    out, _ = miltc(builddir, fd.listen, session(ip=BAD_IP, sender="<alice@sender.test>"))
    mail = [l for l in out if l.startswith("mail ")][0]
    assert mail.startswith("mail reply 550 5.7.23 "), out
    # the refusal holds for the transaction: nothing more is sent
    assert "rcpt reply 550 5.7.23" in "\n".join(out)
    assert not [l for l in out if l.startswith("mod ")]


def test_filterd_relay_refused_at_rcpt(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr, relay_networks="192.0.2.99/32")
    out, _ = miltc(builddir, fd.listen, session(ip=GOOD_IP, sender="<alice@sender.test>",
                                                 rcpts=("<x@elsewhere.example>",
                                                        "<bob@example.test>")))
    rcpt = [l for l in out if l.startswith("rcpt ")]
    assert rcpt[0].startswith("rcpt reply 5"), out      # relaying refused
    assert rcpt[1] == "rcpt continue", out               # only that recipient
    assert any(l.startswith("mod insheader 0 Received-SPF: pass") for l in out), out


def test_filterd_forged_authentication_results_deleted(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr)
    hdrs = (("Authentication-Results", " other.example; spf=none"),
            ("Authentication-Results", f" {MAIL_NAME}; spf=pass smtp.mailfrom=ceo@example.test"),
            ("From", " alice@sender.test"))
    out, _ = miltc(builddir, fd.listen, session(ip=GOOD_IP, sender="<alice@sender.test>",
                                                 headers=hdrs))
    mods = [l for l in out if l.startswith("mod ")]
    assert "mod chgheader 2 Authentication-Results: (delete)" in mods, out
    assert "mod chgheader 1 Authentication-Results: (delete)" not in mods, out


def test_filterd_two_transactions_in_one_session(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr)
    s = session(ip=GOOD_IP, sender="<alice@sender.test>").replace("quit\n", "")
    s += "mail <alice@sender.test>\nrcpt <bob@example.test>\ndata\nheader Subject: second\neoh\nbody x\\r\\n\neom\nabort\nquit\n"
    out, _ = miltc(builddir, fd.listen, s)
    assert [l for l in out if l.startswith("eom")] == ["eom continue", "eom continue"], out
    assert len([l for l in out if "Received-SPF" in l]) == 2, out


# ---- opendkim ----

def test_opendkim_signs(builddir, tmp_path):
    with opendkim_milter(tmp_path) as dk:
        hdrs = (("From", " alice@example.test"), ("To", " bob@example.test"),
                ("Subject", " signed"), ("Date", " Mon, 30 Nov 2026 01:00:00 +0000"),
                ("Message-ID", " <1@example.test>"))
        out, _ = miltc(builddir, "unix:" + dk.sock, session(headers=hdrs))
        assert "eom accept" in out or "eom continue" in out, out
        sig = [l for l in out if l.startswith("mod ") and "DKIM-Signature:" in l]
        assert len(sig) == 1, out
        # opendkim negotiates SMFIP_HDR_LEADSPC and gives its own space
        assert sig[0].startswith("mod insheader 0 DKIM-Signature: v=1; a=rsa-sha256;"), sig
        assert "d=example.test; s=sel;" in sig[0], sig
        # the signature verifies over the message as relayd would write it
        import dkim
        txt = dk.dns_txt()
        field = b"DKIM-Signature:" + unescape(sig[0].split("DKIM-Signature:", 1)[1])
        msg = field + b"\r\n" + b"".join(f"{n}:{v}\r\n".encode() for n, v in hdrs)
        msg += b"\r\nhello\r\n"
        assert dkim.verify(msg, dnsfunc=lambda name, timeout=5: txt.encode()), msg


# ---- badmilter ----

@pytest.fixture
def bad():
    dirs, started = [], []

    def make(mode):
        d = tempfile.mkdtemp(prefix="bm", dir="/tmp")
        dirs.append(d)
        m = BadMilter(os.path.join(d, "bad.sock"), mode)
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


FAST = ("-C", "1", "-t", "1", "-T", "1")


@pytest.mark.parametrize("mode, where", [
    ("silent", "open"), ("garbage", "open"), ("slow", "connect"), ("badsize", "connect"),
    ("oversized", "connect"), ("unknown", "connect"), ("midreply", "connect"),
    ("closed", "connect"), ("unnegotiated", "eom"), ("badcode", "mail"),
    ("late", "connect"),
])
def test_broken_milter_fails_and_next_session_works(builddir, bad, mode, where):
    m = bad(mode)
    script = session() + session()
    out, elapsed = miltc(builddir, "unix:" + m.path, script, *FAST, milter=m)
    first, second = out[:out.index("quit") + 1], out[out.index("quit") + 1:]
    failed = [l for l in first if " failed" in l]
    assert failed and failed[0].startswith(where + " failed"), out
    # once failed, every later event of the session reports failed at once
    for l in replies(first):
        if l.split()[0] in ("abort", "quit"):
            continue
        ev = l.split()[0]
        if first.index(l) >= first.index(failed[0]):
            assert " failed" in l, out
    assert not [l for l in first if l.startswith("mod ")], out
    assert elapsed < 8, elapsed
    assert [l.split()[1] for l in replies(second) if l.split()[0] not in ("abort", "quit")] \
        == ["continue"] * 11, out


def test_unreachable_milter_fails(builddir, tmp_path):
    out, elapsed = miltc(builddir, f"unix:{tmp_path}/nothing.sock", session(), *FAST)
    assert out[0].startswith("open failed"), out
    assert all(" failed" in l for l in replies(out) if l not in ("abort", "quit")), out
    assert elapsed < 5


def test_modifications_reported(builddir, bad):
    m = bad("mods")
    out, _ = miltc(builddir, "unix:" + m.path, session(), milter=m)
    mods = [l for l in out if l.startswith("mod ")]
    assert mods == [
        "mod addheader X-Added: one\\r\\n\\ttwo",
        "mod insheader 0 X-Top:  top",
        "mod chgheader 2 Subject: (delete)",
        "mod chgheader 1 From: <new@example.test>",
        "mod chgfrom <bounce@example.test> SIZE=10",
        "mod addrcpt <r1@example.test>",
        "mod addrcpt <r2@example.test> NOTIFY=NEVER",
        "mod delrcpt <bob@example.test>",
        "mod replbody new body\\r\\nsecond chunk\\r\\n",
        "mod quarantine held for review",
    ], out
    assert "eom continue" in out


def test_leading_space_negotiated(builddir, bad):
    m = bad("leadspc")
    out, _ = miltc(builddir, "unix:" + m.path, session(), milter=m)
    assert "mod insheader 0 X-Top: top" in out, out
    hdrs = [d for c, d in m.received[0] if c == "L"]
    assert hdrs[0] == b"From\0 alice@example.test\0", hdrs


def test_headers_sent_without_leading_space_and_lf(builddir, bad):
    m = bad("good")
    hdrs = (("From", " alice@example.test"), ("Subject", " folded\\r\\n\\tline"))
    miltc(builddir, "unix:" + m.path, session(headers=hdrs), milter=m)
    sent = [d for c, d in m.received[0] if c == "L"]
    assert sent == [b"From\0alice@example.test\0", b"Subject\0folded\n\tline\0"], sent


def test_reply_code_multiline_and_percent(builddir, bad):
    m = bad("reply")
    out, _ = miltc(builddir, "unix:" + m.path, session(), milter=m)
    assert "mail reply 550-5.7.1 first line\r\n550 5.7.1 100% sure".replace("\r\n", "\\r\\n") \
        in [l.replace("\r\n", "\\r\\n") for l in out] or \
        any(l.startswith("mail reply 550-5.7.1 first line") for l in out), out
    # a refusal at MAIL holds for the transaction
    assert [l for l in out if l.startswith("rcpt")][0].startswith("rcpt reply 550"), out
    assert [c for c, _ in m.received[0]].count("A") == 1   # aborted


def test_skip_after_body_chunk(builddir, bad):
    m = bad("skip")
    s = session().replace("body hello\\r\\n\n", "bigbody 200000\n")
    out, _ = miltc(builddir, "unix:" + m.path, s, milter=m)
    assert "body skip" in out and "eom continue" in out, out
    assert [c for c, _ in m.received[0]].count("B") == 1, "no chunk after SKIP"


def test_big_body_chunked(builddir, bad):
    m = bad("good")
    s = session().replace("body hello\\r\\n\n", "bigbody 200000\n")
    out, _ = miltc(builddir, "unix:" + m.path, s, milter=m)
    assert "body continue" in out, out
    chunks = [d for c, d in m.received[0] if c == "B"]
    assert [len(d) for d in chunks] == [65535, 65535, 65535, 3395]


def test_progress_resets_timeout(builddir, bad):
    m = bad("progress")
    out, elapsed = miltc(builddir, "unix:" + m.path, session(), "-t", "1", "-T", "1", milter=m)
    assert "eom continue" in out, out
    assert elapsed > 2   # six progress packets 0.4 s apart outlived a 1 s timeout


def test_no_reply_steps(builddir, bad):
    m = bad("noreply")
    out, _ = miltc(builddir, "unix:" + m.path, session() + session(), *FAST, milter=m)
    assert "failed" not in "\n".join(out), out
    assert out.count("eom continue") == 2, out


def test_macros_as_requested(builddir, bad):
    m = bad("macros")
    miltc(builddir, "unix:" + m.path, session(), milter=m)
    macros = {chr(d[0]): d[1:] for c, d in m.received[0] if c == "D"}
    assert macros["C"] == b"j\0" + MAIL_NAME.encode() + b"\0{client_addr}\x00127.0.0.1\0"
    assert macros["M"] == b"{mail_addr}\0alice@example.test\0"
    # default lists for the stages it did not name
    assert b"{rcpt_addr}\0bob@example.test\0" in macros["R"]
    assert macros["E"] == b"i\x004XyZ12\0"


def test_default_macros(builddir, bad):
    m = bad("good")
    miltc(builddir, "unix:" + m.path, session(macros={"{auth_authen}": "alice"}), milter=m)
    macros = {chr(d[0]): d[1:] for c, d in m.received[0] if c == "D"}
    for want in (b"j\0", b"_\0", b"{daemon_name}\0relayd\0", b"{if_addr}\0",
                 b"{client_addr}\0", b"{client_name}\0", b"{client_port}\x004567\0"):
        assert want in macros["C"], macros["C"]
    assert b"{auth_authen}\0alice\0" in macros["M"] and b"i\0" in macros["M"]
    connect = [d for c, d in m.received[0] if c == "C"][0]
    assert connect == b"client.example\x004" + (4567).to_bytes(2, "big") + b"127.0.0.1\0"
    mail = [d for c, d in m.received[0] if c == "M"][0]
    assert mail == b"<alice@example.test>\0BODY=8BITMIME\0"
    assert [c for c, _ in m.received[0]][-1] == "Q"


def test_reject_at_connect_holds(builddir, bad):
    m = bad("rejectconn")
    out, _ = miltc(builddir, "unix:" + m.path, session(), milter=m)
    evs = [l for l in replies(out) if l.split()[0] not in ("open", "abort", "quit")]
    assert all(l.endswith(" reject") for l in evs), out
    assert [c for c, _ in m.received[0]] == ["O", "D", "C", "Q"], m.received[0]


def test_conn_fail(builddir, bad):
    m = bad("connfail")
    out, _ = miltc(builddir, "unix:" + m.path, session() + session(), milter=m)
    first = out[:out.index("quit")]
    assert first[1].startswith("connect connfail"), out
    assert all(" failed" in l for l in replies(first[2:]) if l != "abort"), out
    assert out.count("eom continue") == 1, out


def test_ipv6_and_unix_clients(builddir, bad):
    m = bad("good")
    s = session().replace("connect client.example 4 4567 127.0.0.1",
                          "connect client.example 6 25000 2001:db8::1")
    s += session().replace("connect client.example 4 4567 127.0.0.1",
                           "connect localhost L 0 /run/x.sock")
    s += session().replace("connect client.example 4 4567 127.0.0.1",
                           "connect unknown U 0 -")
    miltc(builddir, "unix:" + m.path, s, milter=m)
    got = [[d for c, d in rec if c == "C"][0] for rec in m.received]
    assert got == [b"client.example\x006" + (25000).to_bytes(2, "big") + b"2001:db8::1\0",
                   b"localhost\0L\0\0/run/x.sock\0",
                   b"unknown\0U"], got


def test_postfix_socket_syntax(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr, kind="inet")
    out, _ = miltc(builddir, fd.postfix, session(ip=GOOD_IP, sender="<alice@sender.test>"))
    assert "eom continue" in out, out
