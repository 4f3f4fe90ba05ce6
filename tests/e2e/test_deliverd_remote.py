"""deliverd's remote delivery against real peers.

tests/remotew runs remote_deliver() on a message file and prints one
line per recipient ("RCPT STATUS DSN RELAY TEXT").  The peers: nsd
publishing MX, A, AAAA and null MX records; Postfix's smtp-sink on
127.0.0.5-7 as MX hosts (no STARTTLS; options make it refuse RCPT);
private Postfix instances as an MX with per-recipient answers and as a
smarthost with STARTTLS and Cyrus SASL AUTH (tests/e2e/smarthost.py).
"""
import os
import re
import socket
import shutil
import subprocess
import tempfile

import pytest

import postfix as pfmod
from conftest import free_port
from deliverd import deliverd_factory  # noqa: F401 (fixture)
from dnsserver import dns_server  # noqa: F401 (fixture)
from smarthost import Sink, Smarthost

MAIL_NAME = "relay.test"
SINK_ADDRS = ("127.0.0.5", "127.0.0.6", "127.0.0.7")

MSG = ("From: Sender <sender@relay.test>\n"
       "To: someone@example.test\n"
       "Subject: remote test\n"
       "\n"
       "first line\n"
       ".\n"
       "..two dots\n"
       ".one dot\n"
       "caf\u00e9 8-bit\n"
       "last line without newline")


def common_port(addrs=SINK_ADDRS):
    """A TCP port free on every one of addrs (MX hosts share smtp_port)."""
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
def remotew(builddir):
    exe = builddir / "tests" / "remotew"
    if not exe.exists():
        pytest.fail(f"{exe} not built (make check builds it)")
    return exe


@pytest.fixture
def sinks(tmp_path):
    """Factory: sinks(addr, port, *options) -> a started Sink."""
    made = []

    def make(addr, port, *options):
        s = Sink(tmp_path, addr, port, options)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def postfixes(tmp_path):
    """Factory for Postfix/Smarthost instances, stopped at teardown."""
    if not pfmod.available():
        pytest.fail("Postfix is needed (and root): " + pfmod.install_hint())
    made = []

    def make(cls=pfmod.Postfix, **kw):
        port = free_port()
        pf = cls(tmp_path / f"pf{len(made)}", port, **kw)
        made.append(pf)
        pf.start()
        return pf

    yield make
    for pf in made:
        pf.stop()


def write_conf(tmp_path, dns=None, mail_name=MAIL_NAME, nameserver=None, **deliverd):
    ns = nameserver or (dns.addr if dns else "")
    lines = ["[global]", f"mail_name = {mail_name}", f"local_domains = {mail_name}",
             f"nameservers = {ns}", "dns_timeout = 2", "log = stderr", "[deliverd]"]
    lines += [f"{k} = {v}" for k, v in deliverd.items()]
    p = tmp_path / "remote.conf"
    p.write_text("\n".join(lines) + "\n")
    return p


def run(remotew, tmp_path, conf, domain, rcpts, msg=MSG, sender="sender@relay.test",
        rounds=1, wait=0, timeout_cap=10):
    """Run remotew; -> (list of rounds of {rcpt: (status, dsn, relay, text)}, stderr)."""
    mf = tmp_path / "message"
    mf.write_bytes(msg.encode())
    args = [str(remotew), "-c", str(conf), "-f", sender, "-d", domain, "-i", "Q1",
            "-n", str(rounds), "-w", str(wait), str(mf), *rcpts]
    env = dict(os.environ, SPFGATE_TEST_SMTP_TIMEOUT=str(timeout_cap))
    if os.environ.get("SPFGATE_VALGRIND"):
        # SPFGATE_VALGRIND=1 with a build without sanitizers: memcheck
        # every run (leaks included); its verdict is the exit status
        args = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
                "--errors-for-leak-kinds=definite,indirect", *args]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    out = [{}]
    for line in r.stdout.splitlines():
        if line == "--":
            out.append({})
            continue
        rcpt, status, dsn, relay, text = line.split(" ", 4)
        out[-1][rcpt] = (status, dsn, relay, text)
    assert all(len(o) == len(rcpts) for o in out), r.stdout
    return out, r.stderr


def connects(pf):
    """Sessions Postfix has logged, once every one of them has ended."""
    def settled():
        log = pf.log()
        c = len(re.findall(r": connect from ", log))
        return (c,) if c == len(re.findall(r": disconnect from ", log)) else None
    return pfmod._wait(settled, 20, "Postfix sessions to end")[0]


def one(results, rcpt):
    return results[0][rcpt]


MX_ZONE = ("@ MX 10 mx1\n@ MX 20 mx2\n"
           "mx1 A 127.0.0.5\nmx2 A 127.0.0.6\n"
           "plain A 127.0.0.7\n"
           "null MX 0 .\n"
           "loop MX 10 relay.test.\n"
           "backup MX 10 mx1\nbackup MX 20 relay.test.\n")


# --- MX routing --------------------------------------------------------------

def test_mx_preference_and_message_intact(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    mx1 = sinks("127.0.0.5", port)
    mx2 = sinks("127.0.0.6", port)
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, err = run(remotew, tmp_path, conf, "example.test",
                   ["a@example.test", "b@example.test"])
    for r in ("a@example.test", "b@example.test"):
        status, dsn, relay, text = one(res, r)
        assert (status, dsn) == ("done", "2.0.0"), res
        assert relay == f"mx1.example.test[127.0.0.5]:{port}"
        assert text.startswith("250")
    msgs = mx1.messages()
    assert len(msgs) == 1 and mx2.messages() == []
    m = msgs[0]
    # one transaction, both recipients, 8BITMIME declared (smtp-sink
    # offers no SIZE: none is sent)
    assert "X-Rcpt-Args: <a@example.test>" in m and "X-Rcpt-Args: <b@example.test>" in m
    mail_args = re.search(r"X-Mail-Args: (.*)", m).group(1)
    assert mail_args == "<sender@relay.test> BODY=8BITMIME"
    # the message arrives line for line (dots un-stuffed by the sink)
    assert "\n.\n..two dots\n.one dot\ncaf\u00e9 8-bit\nlast line without newline\n" in m
    assert "X-Helo-Args: relay.test" in m


def test_fallback_to_second_mx(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    mx2 = sinks("127.0.0.6", port)          # mx1 is down
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, err = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    status, dsn, relay, text = one(res, "a@example.test")
    assert status == "done", res
    assert relay == f"mx2.example.test[127.0.0.6]:{port}"
    assert len(mx2.messages()) == 1
    assert re.search(r"id=Q1 relay=mx1\.example\.test\[127\.0\.0\.5\]:\d+ session=failed "
                     r"reason=.*Connection refused", err), err


def test_all_mx_down_defers(remotew, tmp_path, dns_server):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, err = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    status, dsn, relay, text = one(res, "a@example.test")
    assert (status, dsn, relay) == ("defer", "4.4.1", "none"), res
    assert "Connection refused" in text and "127.0.0.6" in text   # the last error


def test_implicit_mx(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    s = sinks("127.0.0.7", port)
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, _ = run(remotew, tmp_path, conf, "plain.example.test", ["x@plain.example.test"])
    status, dsn, relay, text = one(res, "x@plain.example.test")
    assert status == "done", res
    assert relay == f"plain.example.test[127.0.0.7]:{port}"
    assert len(s.messages()) == 1


@pytest.mark.parametrize("domain,dsn,words", [
    ("null.example.test", "5.1.10", "null MX"),
    ("nosuch.example.test", "5.1.2", "does not exist"),
    ("loop.example.test", "5.4.6", "loops back to myself"),
])
def test_permanent_routing_failures(remotew, tmp_path, dns_server, domain, dsn, words):
    dns = dns_server({"example.test": MX_ZONE})
    conf = write_conf(tmp_path, dns, smtp_port=common_port())
    res, _ = run(remotew, tmp_path, conf, domain, [f"u@{domain}", f"v@{domain}"])
    for r in res[0].values():
        assert r[:3] == ("fail", dsn, "none"), res
        assert words in r[3]


def test_backup_mx_skips_self(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    s = sinks("127.0.0.5", port)
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, _ = run(remotew, tmp_path, conf, "backup.example.test", ["u@backup.example.test"])
    assert one(res, "u@backup.example.test")[0] == "done"
    assert len(s.messages()) == 1


def test_address_literal_domain(remotew, tmp_path, sinks):
    port = common_port()
    s = sinks("127.0.0.5", port)
    conf = write_conf(tmp_path, nameserver="127.0.0.1:1", smtp_port=port)
    res, _ = run(remotew, tmp_path, conf, "[127.0.0.5]", ["u@[127.0.0.5]"])
    status, dsn, relay, text = one(res, "u@[127.0.0.5]")
    assert status == "done", res
    assert relay == f"127.0.0.5[127.0.0.5]:{port}"
    assert "X-Rcpt-Args: <u@[127.0.0.5]>" in s.messages()[0]


def test_dns_down_defers(remotew, tmp_path):
    # nothing answers on this port: every query times out
    conf = write_conf(tmp_path, nameserver=f"127.0.0.1:{free_port(kind=socket.SOCK_DGRAM)}",
                      smtp_port=common_port())
    res, _ = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    status, dsn, relay, text = one(res, "a@example.test")
    assert (status, dsn) == ("defer", "4.4.3"), res


def test_ipv6_mx(remotew, tmp_path, dns_server, sinks):
    port = free_port("::1")
    dns = dns_server({"example.test": "@ MX 10 mx6\nmx6 AAAA ::1\n"})
    s = sinks("[::1]", port)
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, _ = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    status, dsn, relay, text = one(res, "a@example.test")
    assert status == "done", res
    assert relay == f"mx6.example.test[::1]:{port}"
    assert len(s.messages()) == 1


def test_silent_server_times_out_to_next_mx(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    sinks("127.0.0.5", port, "-W", "CONNECT:60")   # greets after a minute
    mx2 = sinks("127.0.0.6", port)
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, err = run(remotew, tmp_path, conf, "example.test", ["a@example.test"],
                   timeout_cap=2)
    assert one(res, "a@example.test")[0] == "done", res
    assert len(mx2.messages()) == 1
    assert "timed out reading the reply" in err, err


def test_helo_fallback(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    s = sinks("127.0.0.5", port, "-e")             # no ESMTP
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, _ = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    assert one(res, "a@example.test")[0] == "done", res
    m = s.messages()[0]
    assert "X-Client-Proto: SMTP" in m and "X-Helo-Args: relay.test" in m
    assert "X-Mail-Args: <sender@relay.test>\n" in m   # no ESMTP parameters


# --- replies ----------------------------------------------------------------

def test_rcpt_refused_permanently(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    s = sinks("127.0.0.5", port, "-f", "RCPT")
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, _ = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    status, dsn, relay, text = one(res, "a@example.test")
    assert (status, dsn) == ("fail", "5.3.0"), res
    assert text.startswith("500 5.3.0") and "127.0.0.5" in relay
    assert s.messages() == []


def test_rcpt_refused_temporarily(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    sinks("127.0.0.5", port, "-r", "RCPT")
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, _ = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    status, dsn, relay, text = one(res, "a@example.test")
    assert (status, dsn) == ("defer", "4.3.0"), res
    assert text.startswith("450 4.3.0")


def test_data_refused_and_421(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    sinks("127.0.0.5", port, "-f", ".")
    conf = write_conf(tmp_path, dns, smtp_port=port)
    res, _ = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    assert one(res, "a@example.test")[:2] == ("fail", "5.3.0"), res
    # a server that hangs up with 421 at MAIL: deferred
    port = common_port()
    sinks("127.0.0.6", port, "-Q", "MAIL")
    conf = write_conf(tmp_path, dns_server({"example.test": "@ MX 10 mx2\nmx2 A 127.0.0.6\n"}),
                      smtp_port=port)
    res, _ = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    assert one(res, "a@example.test")[0] == "defer", res


@pytest.fixture
def public_dir():
    """A directory Postfix's unprivileged daemons can read."""
    d = tempfile.mkdtemp(prefix="rmt", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_per_recipient_results(remotew, tmp_path, dns_server, postfixes, public_dir):
    later = os.path.join(public_dir, "access")
    with open(later, "w") as f:
        f.write("later@example.test 450 4.2.1 come back later\n")
    pf = postfixes(mailboxes={"bob@example.test", "carol@example.test"},
                   extra={"smtpd_recipient_restrictions":
                          f"check_recipient_access texthash:{later}"})
    dns = dns_server({"example.test": "@ MX 10 mx\nmx A 127.0.0.1\n"})
    conf = write_conf(tmp_path, dns, smtp_port=pf.port)
    big = MSG + "\n" + "".join(f"line {i} .{'x' * 70}\n.\n" for i in range(5000))
    res, _ = run(remotew, tmp_path, conf, "example.test",
                 ["bob@example.test", "nosuch@example.test", "later@example.test",
                  "carol@example.test"], msg=big)
    r = res[0]
    assert r["bob@example.test"][:2] == ("done", "2.0.0"), r
    assert r["carol@example.test"][:2] == ("done", "2.0.0"), r
    assert r["nosuch@example.test"][:2] == ("fail", "5.1.1"), r
    assert r["nosuch@example.test"][3].startswith("550 5.1.1 <nosuch@example.test>")
    assert r["later@example.test"][:2] == ("defer", "4.2.1"), r
    assert "come back later" in r["later@example.test"][3]
    # virtual(8) may still be writing the mailbox: wait for its last line
    text = pfmod._wait(lambda: (lambda t: t if f"line 4999 .{'x' * 70}\n.\n" in t else None)(
        pf.read_mailbox("bob@example.test")), 30, "all of the message in bob's mailbox")
    body = text.split("\n\n", 1)[1]
    # what arrived is what was sent (Postfix's mbox quoting aside)
    assert "first line\n.\n..two dots\n.one dot\ncaf\u00e9 8-bit\nlast line without newline\n" in body
    assert body.count("\n.\n") == 5001
    assert pf.wait_for_mail("carol@example.test")


def test_size_limit_of_the_server(remotew, tmp_path, dns_server, postfixes):
    pf = postfixes(mailboxes={"bob@example.test"}, extra={"message_size_limit": "200"})
    dns = dns_server({"example.test": "@ MX 10 mx\nmx A 127.0.0.1\n"})
    conf = write_conf(tmp_path, dns, smtp_port=pf.port)
    # SIZE= is the size as sent, CRLF line ends: 212 bytes + 42 CRs
    msg = "Subject: x\n\n" + "line\n" * 40
    res, _ = run(remotew, tmp_path, conf, "example.test", ["bob@example.test"], msg=msg)
    status, dsn, relay, text = one(res, "bob@example.test")
    assert (status, dsn) == ("fail", "5.3.4"), res
    assert "(254 bytes, limit 200)" in text
    assert pf.read_mailbox("bob@example.test") == ""


def test_connection_reuse(remotew, tmp_path, dns_server, postfixes):
    pf = postfixes(mailboxes={"bob@example.test"})
    dns = dns_server({"example.test": "@ MX 10 mx\nmx A 127.0.0.1\n"})
    conf = write_conf(tmp_path, dns, smtp_port=pf.port)
    before = connects(pf)
    res, _ = run(remotew, tmp_path, conf, "example.test", ["bob@example.test"], rounds=3)
    assert [r["bob@example.test"][0] for r in res] == ["done"] * 3, res
    pf.wait_for_mail("bob@example.test", count=3)
    assert connects(pf) - before == 1, pf.log()


def test_idle_connection_expires(remotew, tmp_path, dns_server, postfixes):
    pf = postfixes(mailboxes={"bob@example.test"})
    dns = dns_server({"example.test": "@ MX 10 mx\nmx A 127.0.0.1\n"})
    conf = write_conf(tmp_path, dns, smtp_port=pf.port)
    before = connects(pf)
    # REMOTE_IDLE_SECS is 5: after 6 s remote_expire() has closed it
    res, _ = run(remotew, tmp_path, conf, "example.test", ["bob@example.test"],
                 rounds=2, wait=6)
    assert [r["bob@example.test"][0] for r in res] == ["done"] * 2, res
    pf.wait_for_mail("bob@example.test", count=2)
    assert connects(pf) - before == 2, pf.log()


# --- TLS ----------------------------------------------------------------------

def test_mx_without_starttls_goes_plaintext(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"example.test": MX_ZONE})
    sinks("127.0.0.5", port)
    conf = write_conf(tmp_path, dns, smtp_port=port, smtp_tls="opportunistic")
    res, err = run(remotew, tmp_path, conf, "example.test", ["a@example.test"])
    assert one(res, "a@example.test")[0] == "done", res
    assert "tls=" not in err


def test_mx_opportunistic_tls(remotew, tmp_path, dns_server, postfixes):
    pf = postfixes(cls=Smarthost, mailboxes={"bob@example.test"})
    dns = dns_server({"example.test": "@ MX 10 mx\nmx A 127.0.0.1\n"})
    conf = write_conf(tmp_path, dns, smtp_port=pf.port)
    res, err = run(remotew, tmp_path, conf, "example.test", ["bob@example.test"])
    assert one(res, "bob@example.test")[0] == "done", res
    assert re.search(r'relay=mx\.example\.test\[127\.0\.0\.1\]:\d+ tls="TLSv1\.[23] ', err), err
    text = pf.wait_for_mail("bob@example.test")
    assert "(using TLSv1." in text        # Postfix's Received: header says so


BAD_TLS = {"smtpd_tls_protocols": "TLSv1", "smtpd_tls_mandatory_protocols": "TLSv1"}


def test_failed_handshake_retries_in_plaintext(remotew, tmp_path, dns_server, postfixes):
    # the server offers STARTTLS but only TLS 1.0, which we refuse
    pf = postfixes(cls=Smarthost, mailboxes={"bob@example.test"}, extra=BAD_TLS)
    dns = dns_server({"example.test": "@ MX 10 mx\nmx A 127.0.0.1\n"})
    conf = write_conf(tmp_path, dns, smtp_port=pf.port)
    res, err = run(remotew, tmp_path, conf, "example.test", ["bob@example.test"])
    assert one(res, "bob@example.test")[0] == "done", (res, err)
    assert "tls=failed" in err and "action=retry-plaintext" in err, err
    assert "(using TLS" not in pf.wait_for_mail("bob@example.test")


def test_required_tls_handshake_failure_defers(remotew, tmp_path, postfixes):
    pf = postfixes(cls=Smarthost, mailboxes={"bob@example.test"}, extra=BAD_TLS)
    conf = write_conf(tmp_path, smarthost=f"[127.0.0.1]:{pf.port}", smarthost_tls="required")
    res, err = run(remotew, tmp_path, conf, "example.test", ["bob@example.test"])
    status, dsn, relay, text = one(res, "bob@example.test")
    assert (status, dsn) == ("defer", "4.7.5"), res
    assert "TLS" in text and "handshake" in text, text


# --- smarthost ----------------------------------------------------------------

def auth_file(tmp_path, text, mode=0o600):
    p = tmp_path / "smarthost.auth"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_smarthost_tls_and_auth(remotew, tmp_path, postfixes):
    pf = postfixes(cls=Smarthost, users={"alice": "s3cret pw"},
                   mailboxes={"bob@example.test"})
    conf = write_conf(tmp_path, smarthost=f"[127.0.0.1]:{pf.port}",
                      smarthost_tls="required",
                      smarthost_auth_file=auth_file(tmp_path, "alice s3cret pw\n"))
    # carol@far.test is relayed only for an authenticated client
    res, err = run(remotew, tmp_path, conf, "far.test", ["carol@far.test"])
    status, dsn, relay, text = one(res, "carol@far.test")
    assert status == "done", (res, err)
    assert relay == f"127.0.0.1[127.0.0.1]:{pf.port}"
    assert "auth=ok user=alice" in err and 'tls="TLSv1.' in err
    assert "s3cret" not in err
    log = pf.log()
    assert re.search(r"sasl_method=PLAIN, sasl_username=alice\b", log), log
    # and a recipient of the smarthost's own domain arrives
    res, _ = run(remotew, tmp_path, conf, "example.test", ["bob@example.test"])
    assert one(res, "bob@example.test")[0] == "done"
    assert "(using TLSv1." in pf.wait_for_mail("bob@example.test")


def test_smarthost_wrong_password_defers(remotew, tmp_path, postfixes):
    pf = postfixes(cls=Smarthost, users={"alice": "s3cret"},
                   mailboxes={"bob@example.test"})
    conf = write_conf(tmp_path, smarthost=f"[127.0.0.1]:{pf.port}",
                      smarthost_auth_file=auth_file(tmp_path, "alice:wrong\n"))
    res, err = run(remotew, tmp_path, conf, "far.test", ["carol@far.test", "dan@far.test"])
    for r in res[0].values():
        assert r[:2] == ("defer", "4.7.8"), res
        assert "535" in r[3] and "authentication" in r[3]
    assert "auth=failed" in err and "wrong" not in err


def test_smarthost_auth_file_readable_by_others(remotew, tmp_path, postfixes):
    pf = postfixes(cls=Smarthost, users={"alice": "s3cret"})
    before = connects(pf)
    conf = write_conf(tmp_path, smarthost=f"[127.0.0.1]:{pf.port}",
                      smarthost_auth_file=auth_file(tmp_path, "alice s3cret\n", 0o644))
    res, err = run(remotew, tmp_path, conf, "far.test", ["carol@far.test"])
    status, dsn, relay, text = one(res, "carol@far.test")
    assert (status, dsn, relay) == ("defer", "4.7.0", "none"), res
    assert "group or others" in text
    assert "group or others" in err          # a clear log line for the admin
    assert connects(pf) == before            # nothing was sent


def test_smarthost_required_tls_without_starttls(remotew, tmp_path, sinks):
    port = common_port()
    s = sinks("127.0.0.5", port)
    conf = write_conf(tmp_path, smarthost=f"[127.0.0.5]:{port}", smarthost_tls="required")
    res, _ = run(remotew, tmp_path, conf, "far.test", ["carol@far.test"])
    status, dsn, relay, text = one(res, "carol@far.test")
    assert (status, dsn) == ("defer", "4.7.5"), res
    assert "does not offer STARTTLS" in text
    assert s.messages() == []


def test_smarthost_credentials_never_in_plaintext(remotew, tmp_path, sinks):
    port = common_port()
    s = sinks("127.0.0.5", port)           # offers AUTH, no STARTTLS
    conf = write_conf(tmp_path, smarthost=f"[127.0.0.5]:{port}",
                      smarthost_tls="opportunistic",
                      smarthost_auth_file=auth_file(tmp_path, "alice s3cret\n"))
    res, _ = run(remotew, tmp_path, conf, "far.test", ["carol@far.test"])
    status, dsn, relay, text = one(res, "carol@far.test")
    assert (status, dsn) == ("defer", "4.7.5"), res
    assert "without TLS" in text
    assert s.messages() == []


def test_smarthost_by_mx_lookup(remotew, tmp_path, dns_server, sinks):
    port = common_port()
    dns = dns_server({"isp.test": "relay MX 10 out1\nout1 A 127.0.0.6\n"})
    s = sinks("127.0.0.6", port)
    conf = write_conf(tmp_path, dns, smarthost=f"relay.isp.test:{port}",
                      smarthost_tls="opportunistic")
    res, _ = run(remotew, tmp_path, conf, "far.test", ["carol@far.test"])
    status, dsn, relay, text = one(res, "carol@far.test")
    assert status == "done", res
    assert relay == f"out1.isp.test[127.0.0.6]:{port}"
    assert len(s.messages()) == 1
    # a smarthost name that does not resolve defers: a config error, not
    # the mail's fault
    conf = write_conf(tmp_path, dns, smarthost=f"nosuch.isp.test:{port}")
    res, _ = run(remotew, tmp_path, conf, "far.test", ["carol@far.test"])
    assert one(res, "carol@far.test")[:2] == ("defer", "4.1.2"), res


# --- the whole path: LMTP in, deliverd's queue, SMTP out to the MX -----------

FULL_MSG = ("From: alice@example.test\nTo: carol@remote.test\nSubject: full path\n\n"
            "through deliverd\n.\n..dots\nend\n")


def test_full_path_lmtp_to_mx(deliverd_factory, dns_server, sinks):
    port = common_port()
    dns = dns_server({"remote.test": "@ MX 10 mx1\nmx1 A 127.0.0.5\n"})
    mx = sinks("127.0.0.5", port)
    d = deliverd_factory(nameserver=dns.addr, smtp_port=port, retry_min="1s")
    r = d.send("alice@example.test", ["carol@remote.test", "dave@remote.test",
                                      "bob@example.test"], FULL_MSG)
    assert all(code == 250 for code, _ in r.values()), r
    msgs = pfmod._wait(lambda: mx.messages(), 20, "the message at the MX")
    d.wait_mailbox("bob", count=1)
    d.wait_queue_empty()
    assert len(msgs) == 1
    m = msgs[0]
    assert "X-Rcpt-Args: <carol@remote.test>" in m and "X-Rcpt-Args: <dave@remote.test>" in m
    assert "X-Mail-Args: <alice@example.test>" in m
    assert "Subject: full path\n" in m and "through deliverd\n.\n..dots\nend\n" in m
    assert re.search(r"mx1\.remote\.test\[127\.0\.0\.5\]:%d" % port, d.log()), d.log()


def test_full_path_deferred_then_delivered(deliverd_factory, dns_server, tmp_path):
    port = common_port()
    dns = dns_server({"remote.test": "@ MX 10 mx1\nmx1 A 127.0.0.5\n"})
    d = deliverd_factory(nameserver=dns.addr, smtp_port=port, retry_min="1s")
    r = d.send("alice@example.test", ["carol@remote.test"], FULL_MSG)
    assert r["carol@remote.test"][0] == 250, r
    d.wait_log(r"Connection refused")          # the MX is down: deferred
    assert d.queue_ids()
    mx = Sink(tmp_path, "127.0.0.5", port).start()
    try:
        d.flush()
        pfmod._wait(lambda: mx.messages(), 30, "the retried message at the MX")
        d.wait_queue_empty()
        assert len(mx.messages()) == 1
    finally:
        mx.stop()
