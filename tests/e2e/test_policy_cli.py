"""spfgate-policy against a real DNS server (nsd) on loopback.

These run the same policy code filterd runs, through the command line
harness, with SPF records served over the network, and check what an
administrator would see: the verdict, the reply, the headers.
"""
import re
import socket
import subprocess

import pytest

from dnsserver import dns_server  # noqa: F401  (fixture)

ZONE = r'''
@          TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a:mx.sender.test exp=why.sender.test -all"
mx         A   198.51.100.25
why        TXT "%{i} is not one of %{d}'s designated mail servers."
soft       TXT "v=spf1 ~all"
neutral    TXT "v=spf1 ?all"
broken     TXT "v=spf1 ip4:192.0.2.0/33 -all"
helo       TXT "v=spf1 a -all"
helo       A   203.0.113.5
loop       TXT "v=spf1 include:loop.sender.test -all"
many       TXT "v=spf1 a:a1.sender.test a:a2.sender.test a:a3.sender.test a:a4.sender.test a:a5.sender.test a:a6.sender.test a:a7.sender.test a:a8.sender.test a:a9.sender.test a:a10.sender.test a:a11.sender.test -all"
voids      TXT "v=spf1 a:n1.sender.test a:n2.sender.test a:n3.sender.test -all"
macro      TXT "v=spf1 exists:%{ir}.%{l}.%{o}.%{d}.%{h}.%{v}.x.sender.test -all"
long       TXT "v=spf1 ip4:10.0.0.1 ip4:10.0.0.2 ip4:10.0.0.3 ip4:10.0.0.4 ip4:10.0.0.5 ip4:10.0.0.6 ip4:10.0.0.7 ip4:10.0.0.8 ip4:10.0.0.9 ip4:10.0.0.10 ip4:10.0.0.11 " "ip4:10.0.0.12 ip4:10.0.0.13 ip4:10.0.0.14 ip4:10.0.0.15 ip4:10.0.0.16 ip4:10.0.0.17 ip4:10.0.0.18 ip4:10.0.0.19 ip4:10.0.0.20 ip4:10.0.0.21 ip4:10.0.0.22 ip4:10.0.0.23 " "ip4:10.0.0.24 ip4:10.0.0.25 ip4:10.0.0.26 ip4:10.0.0.27 ip4:10.0.0.28 ip4:10.0.0.29 ip4:10.0.0.30 ip4:192.0.2.77 -all"
a1         A   198.51.100.101
a2         A   198.51.100.102
a3         A   198.51.100.103
a4         A   198.51.100.104
a5         A   198.51.100.105
a6         A   198.51.100.106
a7         A   198.51.100.107
a8         A   198.51.100.108
a9         A   198.51.100.109
a10         A   198.51.100.110
a11         A   198.51.100.111
two        TXT "v=spf1 +all"
two        TXT "v=spf1 -all"
'''

RESULTS = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}


@pytest.fixture
def dns(dns_server):
    return dns_server({"sender.test": ZONE})


def run(builddir, *args, timeout=60):
    p = subprocess.run([str(builddir / "filterd" / "spfgate-policy"), *args],
                       capture_output=True, text=True, timeout=timeout)
    return p


def policy(builddir, conf, dns, *args):
    p = run(builddir, "-c", str(conf), "--nameserver", dns.addr, *args)
    assert p.returncode == 0, p.stderr
    out = {}
    headers = []
    for line in p.stdout.splitlines():
        k, _, v = line.partition(": ")
        if k == "header":
            headers.append(v)
        else:
            out[k] = v
    out["headers"] = headers
    return out


@pytest.fixture
def conf(tmp_path):
    c = tmp_path / "spfgate.conf"
    c.write_text("[global]\nmail_name = mail.example.test\n"
                 "local_domains = example.test\nrelay_networks = 192.168.0.0/16\n"
                 "dns_timeout = 3\n")
    return c


def result(out, key="spf-mailfrom"):
    return out[key].split(" ", 1)[0]


def test_pass_over_the_network(builddir, conf, dns):
    out = policy(builddir, conf, dns, "--ip", "192.0.2.10", "--helo", "mx.sender.test",
                 "--from", "alice@sender.test", "--rcpt", "bob@example.test")
    assert result(out) == "pass"
    assert out["action"] == "accept"
    assert out["rcpt"] == "bob@example.test accept"
    assert out["headers"][0].startswith(
        "Received-SPF: pass (mail.example.test: domain of sender.test designates 192.0.2.10 as permitted sender)")
    assert "client-ip=192.0.2.10; envelope-from=alice@sender.test; helo=mx.sender.test" in out["headers"][0]
    assert out["headers"][1] == ("Authentication-Results: mail.example.test; "
                                 "spf=pass smtp.mailfrom=alice@sender.test")


def test_a_mechanism_and_ipv6(builddir, conf, dns):
    assert result(policy(builddir, conf, dns, "--ip", "198.51.100.25",
                         "--from", "a@sender.test")) == "pass"
    assert result(policy(builddir, conf, dns, "--ip", "2001:db8::25",
                         "--from", "a@sender.test")) == "pass"
    assert result(policy(builddir, conf, dns, "--ip", "2001:db9::25",
                         "--from", "a@sender.test")) == "fail"
    # IPv4-mapped IPv6 is the IPv4 client
    assert result(policy(builddir, conf, dns, "--ip", "::ffff:192.0.2.10",
                         "--from", "a@sender.test")) == "pass"


def test_fail_rejected_with_the_domains_explanation(builddir, conf, dns):
    out = policy(builddir, conf, dns, "--ip", "203.0.113.9", "--helo", "x.test",
                 "--from", "alice@sender.test")
    assert result(out) == "fail"
    assert out["explanation"] == "203.0.113.9 is not one of sender.test's designated mail servers."
    assert out["action"] == "reject"
    assert out["reply"] == "550 5.7.23 203.0.113.9 is not one of sender.test's designated mail servers."
    assert out["headers"] == []


def test_loopback_is_not_trusted_by_spf(builddir, conf, dns):
    out = policy(builddir, conf, dns, "--ip", "127.0.0.1", "--from", "a@sender.test")
    assert result(out) == "fail"
    out = policy(builddir, conf, dns, "--ip", "::1", "--from", "a@sender.test")
    assert result(out) == "fail"


def test_other_results_are_tagged(builddir, conf, dns):
    for sender, want in [("a@soft.sender.test", "softfail"),
                         ("a@neutral.sender.test", "neutral"),
                         ("a@nothing.sender.test", "none"),
                         ("a@broken.sender.test", "permerror"),
                         ("a@two.sender.test", "permerror")]:
        out = policy(builddir, conf, dns, "--ip", "203.0.113.9", "--from", sender)
        assert result(out) == want, sender
        assert out["action"] == "accept", sender
        assert out["headers"][0].startswith(f"Received-SPF: {want} "), sender
        assert f"spf={want} smtp.mailfrom={sender}" in out["headers"][1]


def test_null_sender_checks_helo_identity(builddir, conf, dns):
    out = policy(builddir, conf, dns, "--ip", "203.0.113.5", "--helo", "helo.sender.test",
                 "--from", "")
    assert result(out) == "pass"
    assert "identity=helo" in out["headers"][0]
    assert out["headers"][1].endswith("spf=pass smtp.helo=helo.sender.test")
    out = policy(builddir, conf, dns, "--ip", "203.0.113.6", "--helo", "helo.sender.test",
                 "--from", "")
    assert result(out) == "fail" and out["action"] == "reject"
    assert out["reply"].startswith("550 5.7.23 ")


def test_relay_policy(builddir, conf, dns):
    out = policy(builddir, conf, dns, "--ip", "192.0.2.10", "--from", "a@sender.test",
                 "--rcpt", "u@other.test")
    assert out["action"] == "reject"
    assert out["reply"] == "554 5.7.1 u@other.test: Relay access denied"
    out = policy(builddir, conf, dns, "--ip", "192.168.1.1", "--from", "a@sender.test",
                 "--rcpt", "u@other.test")
    assert out["action"] == "accept"
    assert out["spf-mailfrom"].startswith("skipped (client 192.168.1.1 is in relay_networks)")
    assert "SPF not checked" in out["headers"][0]
    out = policy(builddir, conf, dns, "--ip", "203.0.113.9", "--from", "a@sender.test",
                 "--auth", "alice", "--rcpt", "u@other.test")
    assert out["action"] == "accept"
    assert "auth=pass smtp.auth=alice" in out["headers"][1]


def test_dead_dns_server_is_a_temperror(builddir, conf):
    # A UDP socket that never answers: every query times out.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        p = run(builddir, "-c", str(conf), "--nameserver", f"127.0.0.1:{port}",
                "--dns-timeout", "1", "--ip", "203.0.113.9", "--from", "a@sender.test")
    assert p.returncode == 0, p.stderr
    assert "spf-mailfrom: temperror" in p.stdout
    assert "action: tempfail" in p.stdout
    assert re.search(r"^reply: 451 4\.7\.24 ", p.stdout, re.M)


def test_helo_check_shares_one_dns_budget(builddir, tmp_path):
    # Two identities to check, a server that never answers: the MAIL
    # decision still ends within one dns_timeout (not one per identity).
    import time
    c = tmp_path / "helo.conf"
    c.write_text("[global]\nmail_name = mail.example.test\nrelay_networks =\n"
                 "dns_timeout = 2\n[filterd]\nhelo_check = on\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        t0 = time.monotonic()
        p = run(builddir, "-c", str(c), "--nameserver", f"127.0.0.1:{port}",
                "--ip", "203.0.113.9", "--helo", "mx.other.test", "--from", "a@sender.test")
        elapsed = time.monotonic() - t0
    assert "spf-mailfrom: temperror" in p.stdout
    assert "spf-helo: temperror" in p.stdout
    assert elapsed < 3.5, f"took {elapsed:.1f}s for dns_timeout = 2"


HOSTILE = [
    ("a@loop.sender.test", {"permerror"}),
    ("a@many.sender.test", {"permerror"}),
    ("a@voids.sender.test", {"permerror"}),
    ("a@macro.sender.test", {"fail"}),
    ("a@long.sender.test", {"pass"}),
]


@pytest.mark.parametrize("sender,want", HOSTILE)
def test_hostile_records_get_a_defined_result(builddir, conf, dns, sender, want):
    out = policy(builddir, conf, dns, "--ip", "192.0.2.77", "--helo", "h.test", "--from", sender)
    assert result(out) in want, out


@pytest.mark.parametrize("helo", [
    "evil\r\nX-Injected: yes", 'a"b;c=d', "x; spf=pass smtp.mailfrom=a@b", "[IPv6:2001:db8::1]",
    "(comment) \\", "é.test",
])
def test_hostile_helo_stays_inside_its_field(builddir, conf, dns, helo):
    out = policy(builddir, conf, dns, "--ip", "203.0.113.9", "--helo", helo,
                 "--from", "a@soft.sender.test")
    assert result(out) == "softfail"
    rs = out["headers"][0]
    assert "\r" not in rs and "\n" not in rs
    # exactly one helo= key, whose value is a quoted string or a dot-atom
    m = re.search(r'; helo=("(?:[^"\\]|\\.)*"|[^;\s]*); receiver=mail\.example\.test; identity=mailfrom', rs)
    assert m, rs
    assert rs.count("; receiver=") == 1


@pytest.mark.parametrize("sender", ["<a@b@c.test>", "a@", "@", "a@[192.0.2.1]", "a@-x-.test",
                                    "a@" + "x" * 70 + ".test", "\"q\\\"x\"@sender.test"])
def test_odd_senders_get_a_result(builddir, conf, dns, sender):
    out = policy(builddir, conf, dns, "--ip", "203.0.113.9", "--from", sender)
    assert result(out) in RESULTS, out


def test_check_mode_and_usage_errors(builddir, conf, tmp_path):
    p = run(builddir, "-c", str(conf), "-t")
    assert p.returncode == 0
    bad = tmp_path / "bad.conf"
    bad.write_text("[global]\nmail_name = ok.test\n[filterd]\non_fail = maybe\n")
    p = run(builddir, "-c", str(bad), "-t")
    assert p.returncode == 2
    assert f"{bad}:4: on_fail: expected reject, tempfail or tag" in p.stderr
    assert run(builddir, "-c", str(conf)).returncode == 2            # no --ip
    assert run(builddir, "--ip", "not-an-ip").returncode == 2
    assert run(builddir, "--ip", "192.0.2.1", "--bogus").returncode == 2


def test_shipped_configurations_are_valid(builddir, srcdir, tmp_path):
    # The sample every administrator starts from, and the quick start's.
    p = run(builddir, "-c", str(srcdir / "contrib" / "spfgate.conf"), "-t")
    assert p.returncode == 0, p.stderr
    qs = tmp_path / "qs.conf"
    qs.write_text((srcdir / "contrib" / "quickstart.conf").read_text()
                  .replace("@STATE@", str(tmp_path)))
    p = run(builddir, "-c", str(qs), "-t")
    assert p.returncode == 0, p.stderr
