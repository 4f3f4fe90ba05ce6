"""relayd's SMTP server, end to end: protocol, strict input, limits,
STARTTLS, the smuggling probes and the open-relay battery.

relayd hands MAIL/RCPT/DATA to a real deliverd over LMTP (unix socket);
remote recipients there are parked at a dead smarthost, so nothing leaves
the machine.  Clients: raw sockets (exact bytes), Python's smtplib and
swaks.  The relay network is 127.0.0.1/32; "outside" clients connect
from 127.0.0.2.
"""
import smtplib
import socket
import ssl
import subprocess

import pytest

from conftest import free_port, poll
from deliverd import deliverd_factory  # noqa: F401  (fixture)
from relayd import relayd_factory  # noqa: F401  (fixture)

OUTSIDE = "127.0.0.2"


@pytest.fixture
def deliverd(deliverd_factory):
    return deliverd_factory(smarthost=f"127.0.0.1:{free_port()}", smarthost_tls="none")


@pytest.fixture
def mk(deliverd, relayd_factory):
    """relayd in front of deliverd; keyword arguments are config keys."""
    def make(**kw):
        kw.setdefault("lmtp", f"unix:{deliverd.sock}")
        return relayd_factory(**kw)
    return make


def ehlo(c, name="client.test"):
    code, lines = c.cmd(f"EHLO {name}")
    assert code == 250, lines
    return lines


# ------------------------------------------------------------ protocol


def test_greeting_and_ehlo(mk):
    r = mk(tls=True)
    c = r.raw(greeting=False)
    code, lines = c.reply()
    assert code == 220 and lines[0].startswith("220 mx.example.test ESMTP"), lines
    lines = ehlo(c)
    ext = [ln[4:] for ln in lines[1:]]
    assert ext == ["PIPELINING", "SIZE 10240000", "STARTTLS", "8BITMIME",
                   "ENHANCEDSTATUSCODES"], lines
    assert c.cmd("HELO client.test") == (250, ["250 mx.example.test"])
    c.close()


def test_simple_commands(mk):
    r = mk()
    c = r.raw()
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 503      # no HELO yet
    assert c.cmd("HELO")[0] == 501
    ehlo(c)
    assert c.cmd("NOOP") == (250, ["250 2.0.0 Ok"])
    assert c.cmd("VRFY alice")[0] == 252
    code, lines = c.cmd("HELP")
    assert code == 214 and "EHLO" in lines[0]
    assert c.cmd("RSET")[0] == 250
    assert c.cmd("EXPN staff")[0] == 502
    assert c.cmd("FOO")[0] == 500
    assert c.cmd("RCPT TO:<alice@example.test>")[0] == 503      # no MAIL
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("STARTTLS")[0] == 502                          # not configured
    code, lines = c.cmd("QUIT")
    assert code == 221
    assert c.closed()


def test_address_syntax(mk):
    r = mk()
    c = r.raw()
    ehlo(c)
    assert c.cmd("MAIL FROM:a@example.test")[1][0].startswith("501 5.5.4")
    assert c.cmd("MAIL FROM:<a b@example.test>")[1][0].startswith("501 5.1.7")
    assert c.cmd("MAIL FROM:<a@-bad-.test>")[1][0].startswith("501 5.1.7")
    assert c.cmd("MAIL FROM:<a@example.test> FOO=BAR")[1][0].startswith("555 5.5.4")
    assert c.cmd("MAIL FROM:<a@example.test> SIZE=99999999999")[1][0].startswith("552 5.3.4")
    assert c.cmd("MAIL FROM:<> BODY=8BITMIME")[0] == 250
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 503        # nested
    assert c.cmd("RCPT TO:<>")[1][0].startswith("501 5.1.3")
    assert c.cmd("RCPT TO:<a..@@example.test>")[1][0].startswith("501 5.1.3")
    assert c.cmd("RCPT TO:<alice@example.test> NOTIFY=NEVER")[1][0].startswith("555")
    assert c.cmd("RCPT TO:<Postmaster>")[0] in (250, 550)
    c.close()


def test_unknown_user_refused_by_deliverd_at_rcpt(mk):
    r = mk()
    c = r.raw(source=OUTSIDE)
    ehlo(c)
    assert c.cmd("MAIL FROM:<someone@remote.test>")[0] == 250
    code, lines = c.cmd("RCPT TO:<nosuchuser@example.test>")
    assert code == 550 and "5.1.1" in lines[0], lines
    assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
    c.close()


def test_deliverd_unreachable(relayd_factory, tmp_path):
    r = relayd_factory(lmtp=f"unix:{tmp_path}/nobody.sock")
    c = r.raw()
    ehlo(c)
    code, lines = c.cmd("MAIL FROM:<a@example.test>")
    assert code == 451 and "4.3.0" in lines[0], lines
    c.close()
    r2 = relayd_factory(lmtp=f"inet:{free_port()}@127.0.0.1")
    c = r2.raw()
    ehlo(c)
    code, lines = c.cmd("MAIL FROM:<a@example.test>")
    assert code == 451 and "4.3.0" in lines[0], lines
    c.close()


# --------------------------------------------------------- strict input


def test_long_line(mk):
    r = mk()
    c = r.raw()
    ehlo(c)
    code, lines = c.cmd("NOOP " + "x" * 5000)
    assert code == 500 and "5.5.2" in lines[0], lines
    assert c.cmd("NOOP")[0] == 250          # in step again
    # an over-long line arriving in pieces, its CR and LF apart
    c.send(b"NOOP " + b"y" * 3000)
    assert c.reply()[0] == 500
    c.send(b"y" * 3000 + b"\r")
    c.send(b"\nNOOP\r\n")
    assert c.reply() == (250, ["250 2.0.0 Ok"])
    c.close()


@pytest.mark.parametrize("junk", [b"NOOP\nQUIT\r\n", b"NOOP\rQUIT\r\n", b"NO\0OP\r\n",
                                  b"RSET\nMAIL FROM:<x@example.test>\r\n"])
def test_bare_lf_cr_nul_in_command(mk, junk):
    r = mk()
    c = r.raw()
    ehlo(c)
    c.send(junk)
    code, lines = c.reply()
    assert code == 500 and "5.5.2" in lines[0], lines
    # one refusal for the whole line: nothing after the bare LF/CR ran
    code, lines = c.cmd("NOOP")
    assert (code, lines) == (250, ["250 2.0.0 Ok"])
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 250   # no transaction was open
    c.close()


def start_data(c, rcpt="alice@example.test"):
    ehlo(c)
    assert c.cmd("MAIL FROM:<sender@example.test>")[0] == 250
    assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
    assert c.cmd("DATA")[0] == 354


SMUGGLE = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"]


@pytest.mark.parametrize("end", SMUGGLE, ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.LF", "CRLF.CR"])
def test_smuggling_probe(mk, deliverd, end):
    r = mk()
    c = r.raw()
    start_data(c)
    c.send(b"Subject: outer\r\n\r\nhello" + end
           + b"MAIL FROM:<smuggled@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
           + b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
    # exactly one reply: the message was refused as a whole at the real end
    code, lines = c.reply()
    assert code == 554 and "5.6.0" in lines[0] and "bare" in lines[0], lines
    assert c.cmd("NOOP") == (250, ["250 2.0.0 Ok"])       # nothing else was queued
    c.cmd("QUIT")
    c.close()
    assert deliverd.messages("alice") == [] and deliverd.messages("bob") == []
    assert "smuggled" not in r.log() or "from=<smuggled" not in r.log()


def test_nul_in_data(mk, deliverd):
    r = mk()
    c = r.raw()
    start_data(c)
    c.send(b"Subject: x\r\n\r\na\0b\r\n.\r\n")
    code, lines = c.reply()
    assert code == 554 and "NUL" in lines[0], lines
    c.close()


def test_message_size_limit(mk):
    r = mk(message_size_limit=2000)
    c = r.raw()
    ehlo(c)
    assert c.cmd("MAIL FROM:<a@example.test> SIZE=3000")[1][0].startswith("552 5.3.4")
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 100 + b".\r\n")
    code, lines = c.reply()
    assert code == 552 and "5.3.4" in lines[0], lines
    assert c.cmd("NOOP")[0] == 250
    c.close()


def test_recipient_limit(mk):
    r = mk(recipient_limit=2)
    c = r.raw()
    ehlo(c)
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
    code, lines = c.cmd("RCPT TO:<alice@example.test>")
    assert code == 452 and "4.5.3" in lines[0], lines
    c.close()


def test_max_errors(mk):
    r = mk(max_errors=3)
    c = r.raw()
    for _ in range(2):
        assert c.cmd("BOGUS")[0] == 500
    c.send(b"BOGUS\r\n")
    assert c.reply()[0] == 500
    code, lines = c.reply()
    assert code == 421, lines
    assert c.closed()


def test_command_timeout(mk):
    r = mk(command_timeout="1s")
    c = r.raw(timeout=15)
    code, lines = c.reply()             # blocks until relayd gives up
    assert code == 421 and "4.4.2" in lines[0], lines
    assert c.closed()


def test_data_timeout(mk):
    r = mk(data_timeout="1s")
    c = r.raw(timeout=15)
    start_data(c)
    c.send(b"Subject: slow\r\n")
    code, lines = c.reply()
    assert code == 421 and "4.4.2" in lines[0], lines
    assert c.closed()


def test_max_sessions(mk):
    r = mk(max_sessions=2, max_sessions_per_client=10)
    a, b = r.raw(), r.raw()
    c = r.raw(greeting=False)
    code, lines = c.reply()
    assert code == 421 and "4.7.0" in lines[0], lines
    assert c.closed()
    a.cmd("QUIT")
    assert a.closed()
    b.close()


def test_max_sessions_per_client(mk):
    r = mk(max_sessions_per_client=1)
    a = r.raw()
    b = r.raw(greeting=False)
    code, lines = b.reply()
    assert code == 421, lines
    other = r.raw(source=OUTSIDE)       # another client is still welcome
    assert other.cmd("NOOP")[0] == 250
    a.close()
    other.close()


def test_received_loop(mk, deliverd):
    r = mk(max_received_headers=3)
    c = r.raw()
    start_data(c)
    c.send(b"Received: from a by b; x\r\n" * 3 + b"Subject: loop\r\n\r\nbody\r\n.\r\n")
    code, lines = c.reply()
    assert code == 554 and "5.4.6" in lines[0], lines
    start = c.cmd("MAIL FROM:<a@example.test>")
    assert start[0] == 250
    assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Received: from a by b; x\r\n" * 2 + b"Subject: fine\r\n\r\nbody\r\n.\r\n")
    assert c.reply()[0] == 250
    c.close()


# ------------------------------------------------------------ STARTTLS


def test_starttls_discards_pipelined(mk):
    r = mk(tls=True)
    c = r.raw()
    ehlo(c)
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n")
    code, lines = c.reply()
    assert code == 220, lines
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(c.sock, server_hostname="mx.example.test")
    t.settimeout(10)
    c.sock = t
    # the injected MAIL did not run: a MAIL now is not "nested", and EHLO
    # is needed again (RFC 3207 forgets the state)
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 503
    lines = ehlo(c)
    assert "250-STARTTLS" not in lines
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 250
    assert c.cmd("STARTTLS")[0] == 503
    c.close()


def test_swaks_starttls_and_pipelining(mk, deliverd):
    r = mk(tls=True)
    p = subprocess.run(["swaks", "--server", f"127.0.0.1:{r.port}", "--tls",
                        "--pipeline", "--from", "carol@example.test",
                        "--to", "alice@example.test", "--header", "Subject: swaks-tls",
                        "--body", "via swaks"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    msgs = deliverd.wait_mailbox("alice")
    m = [m for m in msgs if m["Subject"] == "swaks-tls"][0]
    recv = [h for h in m.get_all("Received") if "spfgate relayd" in h][0]
    assert "with ESMTPS id" in recv and "using TLS" in recv, recv


def test_swaks_pipeline_plain(mk, deliverd):
    r = mk()
    p = subprocess.run(["swaks", "--server", f"127.0.0.1:{r.port}", "--pipeline",
                        "--from", "carol@example.test", "--to", "bob@example.test",
                        "--header", "Subject: swaks-plain"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert deliverd.wait_mailbox("bob")[0]["Subject"] == "swaks-plain"


# ------------------------------------------------------------ relaying


RELAY_PROBES = [
    "victim@remote.test",
    "victim%remote.test@example.test",
    "remote.test!victim@example.test",
    "@example.test:victim@remote.test",
    "@example.test,@mx.example.test:victim@remote.test",
    '"victim@remote.test"@example.test',
    '"victim%remote.test"@example.test',
    "victim@[192.0.2.1]",
    "victim@[127.0.0.1]",
    "victim@REMOTE.TEST",
    "victim@remote.test.",
    "victim@Remote.Test.",
    "victim@example.test.remote.test",
    "victim@remote.test@example.test",
    "victim%remote.test%example.test@mx.example.test",
]


def test_open_relay_battery(mk):
    r = mk(max_errors=1000)
    c = r.raw(source=OUTSIDE)
    ehlo(c)
    assert c.cmd("MAIL FROM:<probe@remote.test>")[0] == 250
    for probe in RELAY_PROBES:
        code, lines = c.cmd(f"RCPT TO:<{probe}>")
        assert 500 <= code < 600, (probe, lines)
    # and through smtplib too, from outside: never accepted
    s = r.smtp(source=OUTSIDE)
    s.ehlo("probe.test")
    s.mail("probe@remote.test")
    for probe in RELAY_PROBES:
        code, _ = s.docmd(f"RCPT TO:<{probe}>")
        assert 500 <= code < 600, probe
    s.quit()
    c.close()


def test_relay_network_may_relay(mk, deliverd):
    r = mk()
    s = r.smtp()        # 127.0.0.1 is in relay_networks
    s.ehlo("inside.test")
    s.mail("alice@example.test")
    assert s.rcpt("someone@remote.test")[0] == 250
    s.rset()
    s.quit()
    s = r.smtp(source=OUTSIDE)
    s.ehlo("outside.test")
    s.mail("x@remote.test")
    code, text = s.rcpt("someone@remote.test")
    assert code == 554 and b"5.7.1" in text and b"Relay access denied" in text
    assert s.rcpt("alice@EXAMPLE.TEST.")[0] == 250
    s.quit()


def test_ipv6_listener(deliverd, relayd_factory):
    port = free_port()
    try:
        with socket.socket(socket.AF_INET6) as t:
            t.bind(("::1", port))
    except OSError:
        pytest.skip("no IPv6 loopback")
    r = relayd_factory(lmtp=f"unix:{deliverd.sock}", port=port,
                       listen=f"127.0.0.1:{port}, [::1]:{port}")
    s = smtplib.SMTP("::1", port, timeout=20)
    code, _ = s.ehlo("v6.test")
    assert code == 250
    s.quit()
    assert "client=[IPv6:::1]" in r.log()


def test_ehlo_mid_transaction_resets_deliverd_too(mk, deliverd):
    r = mk()
    c = r.raw()
    ehlo(c)
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
    ehlo(c)                             # ends the transaction (RFC 5321 4.1.4)
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("MAIL FROM:<b@example.test>")[0] == 250   # not "nested" at deliverd
    assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: after reset\r\n\r\nx\r\n.\r\n")
    assert c.reply()[0] == 250
    c.close()
    assert deliverd.wait_mailbox("bob")[0]["Return-Path"] in (None, "<b@example.test>")
    assert deliverd.messages("alice") == []


def test_half_close_gets_every_reply(mk, deliverd):
    r = mk()
    c = r.raw()
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@example.test>\r\n"
           b"RCPT TO:<alice@example.test>\r\nRCPT TO:<ghost@example.test>\r\nQUIT\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    codes = [c.reply()[0] for _ in range(5)]
    assert codes == [250, 250, 250, 550, 221]
    assert c.closed()


def test_abrupt_clients(mk, deliverd):
    """Clients that vanish at every step, some while relayd waits for
    deliverd; relayd carries on (and the fixture finds no sanitizer report)."""
    r = mk()
    steps = [b"EHLO c\r\n", b"MAIL FROM:<a@example.test>\r\n", b"RCPT TO:<alice@example.test>\r\n",
             b"DATA\r\n", b"Subject: cut\r\n\r\nhalf a mess", b"age\r\n.\r\n"]
    for n in range(1, len(steps) + 1):
        for linger in (False, True):
            c = r.raw()
            c.send(b"".join(steps[:n]))
            if linger:      # RST instead of FIN
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                  b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()
    c = r.raw()
    ehlo(c)
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: after the storm\r\n\r\nok\r\n.\r\n")
    assert c.reply()[0] == 250
    c.close()
    assert deliverd.wait_mailbox("bob")[0]["Subject"] == "after the storm"
    # every session went away
    def all_gone():
        log = r.log()
        return log.count("relayd: connect sid=") == log.count("relayd: disconnect sid=")
    poll(all_gone, 10, "a disconnect for every connect")


def test_client_that_never_reads(mk):
    """Thousands of pipelined NOOPs from a client that reads nothing: relayd
    stops running commands when its replies pile up, and carries on once
    they are read."""
    r = mk()
    c = r.raw()
    ehlo(c)
    n = 20000
    c.sock.setblocking(False)
    data = b"NOOP\r\n" * n
    sent = 0
    for _ in range(1000):               # bounded: stops when the kernel pushes back
        try:
            sent += c.sock.send(data[sent:])
        except BlockingIOError:
            break
        if sent == len(data):
            break
    c.sock.setblocking(True)
    c.sock.settimeout(30)
    assert sent > 0
    got = 0
    while got < sent // 6:
        assert c.reply() == (250, ["250 2.0.0 Ok"])
        got += 1
    other = r.raw()                     # the loop was never stuck
    assert other.cmd("NOOP")[0] == 250
    other.close()
    c.close()


def test_listen_queue_is_relayds_own(mk):
    """A burst of connections waits in a queue of 1024, not libevent's
    default of 128 (ss shows a listening socket's queue size as Send-Q)."""
    r = mk()
    out = subprocess.run(["ss", "-ltnH", f"sport = :{r.port}"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "LISTEN" and out[2] == "1024", out


def test_out_of_descriptors_is_a_clean_421(mk, deliverd):
    """Under a small RLIMIT_NOFILE, relayd refuses new clients with 421
    while it can still serve the open ones (it keeps descriptors for their
    transactions), and takes new ones again when some leave."""
    r = mk(start=False)
    r.prefix = ["prlimit", "--nofile=100:100"]
    r.start()
    r.wait_log(r"max_sessions 10000: RLIMIT_NOFILE 100 holds about 36 sessions")
    opened, refused = [], None
    for _ in range(100):                       # bounded: the limit is far below
        c = r.raw(greeting=False)
        code, lines = c.reply()
        if code != 220:
            refused = (code, lines)
            c.close()
            break
        opened.append(c)
    assert refused and refused[0] == 421 and "4.3.2" in refused[1][-1], refused
    assert 10 <= len(opened) <= 36, len(opened)
    r.wait_log(r"refuse client=\[127\.0\.0\.1\]: out of descriptors")
    # an open session still gets its message through (LMTP needs one more)
    c = opened[0]
    ehlo(c)
    assert c.cmd("MAIL FROM:<a@example.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: at the limit\r\n\r\nstill served\r\n.\r\n")
    assert c.reply()[0] == 250
    deliverd.wait_mailbox("bob")
    for c in opened:
        c.close()

    def room():     # relayd sees the closes a moment later
        c = r.raw(greeting=False)
        code, _ = c.reply()
        c.close()
        return code == 220
    poll(room, 10, "room for a new session")
