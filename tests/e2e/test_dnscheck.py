"""spfgate-dnscheck against a real DNS server (nsd) on loopback.

The reference site of DESIGN.md ("Seed configuration") on loopback
addresses: mail.thegummibear.com is 127.0.0.1, its smarthost
stumail.cs.utahtech.edu is 127.0.0.2.  Each test serves the site's
zones, whole or broken in one way, and compares the report with
tests/e2e/expected/dnscheck-NAME.txt (SPFGATE_UPDATE_EXPECTED=1 rewrites
those files from the current output instead).
"""
import os
import pathlib
import re
import socket
import subprocess
import time

import pytest

from conftest import free_port, free_port_both
from dnsserver import dns_server  # noqa: F401  (fixture)

EXPECTED = pathlib.Path(__file__).resolve().parent / "expected"

MX = "@ MX 10 mail"
SPF = '@ TXT "v=spf1 mx ip4:127.0.0.1 a:stumail.cs.utahtech.edu ~all"'
MAIL_A = "mail A 127.0.0.1"
MAIL_SPF = 'mail TXT "v=spf1 a a:stumail.cs.utahtech.edu ~all"'
STUMAIL = "stumail A 127.0.0.2"


def zones(mx=MX, spf=SPF, mail_a=MAIL_A, mail_spf=MAIL_SPF, extra=""):
    """The site's zones; each argument replaces one part ("" drops it)."""
    return {
        "thegummibear.com": "\n".join(x for x in (mx, spf, mail_a, mail_spf, extra) if x),
        "cs.utahtech.edu": STUMAIL,
        # other people's mail hosts, for MX records that point away
        "elsewhere.example": "mx A 192.0.2.25\nbackup A 192.0.2.26",
    }


def write_conf(tmp_path, smarthost="stumail.cs.utahtech.edu:587",
               listen="127.0.0.1:2525", timeout=2):
    c = tmp_path / "spfgate.conf"
    c.write_text(
        "[global]\n"
        "mail_name = mail.thegummibear.com\n"
        "local_domains = thegummibear.com, mail.thegummibear.com\n"
        "relay_networks = 127.0.0.0/8\n"
        f"dns_timeout = {timeout}\n"
        "log = stderr\n"
        "[filterd]\nuser =\n"
        f"[relayd]\nlisten = {listen}\nuser =\n"
        f"[deliverd]\nuser =\nsmarthost = {smarthost}\n")
    return c


@pytest.fixture
def conf(tmp_path):
    return write_conf(tmp_path)


def dnscheck(builddir, *args, timeout=60):
    exe = builddir / "filterd" / "spfgate-dnscheck"
    if not exe.exists():
        pytest.fail(f"{exe} is not built")
    return subprocess.run([str(exe), *args], capture_output=True, text=True,
                          timeout=timeout)


def check(builddir, conf, srv, *args):
    return dnscheck(builddir, "-c", str(conf), "--nameserver", srv.addr,
                    "--address", "127.0.0.1", *args)


def expect(name, out):
    path = EXPECTED / f"dnscheck-{name}.txt"
    if os.environ.get("SPFGATE_UPDATE_EXPECTED"):
        path.write_text(out)
    assert path.exists(), f"{path} is missing (SPFGATE_UPDATE_EXPECTED=1 writes it)"
    assert out == path.read_text(), f"output differs from {path}"


def lines(out, status):
    return [ln for ln in out.splitlines() if ln.startswith(status + " ")]


def test_good_site(builddir, conf, dns_server):
    p = check(builddir, conf, dns_server(zones()))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr == ""
    expect("good", p.stdout)


def test_good_site_from_zone_files(builddir, conf, tmp_path):
    files = []
    for origin, text in zones().items():
        f = tmp_path / f"{origin}.zone"
        f.write_text(f"$ORIGIN {origin}.\n$TTL 300\n{text}\n")
        files += ["--zone", str(f)]
    p = dnscheck(builddir, "-c", str(conf), "--address", "127.0.0.1", *files)
    assert p.returncode == 0, p.stdout + p.stderr
    expect("good", p.stdout)


def test_mx_pointing_elsewhere(builddir, conf, dns_server):
    p = check(builddir, conf, dns_server(zones(mx="@ MX 10 mx.elsewhere.example.")))
    assert p.returncode == 1
    expect("mx-elsewhere", p.stdout)


def test_another_host_preferred_is_a_warning_a_backup_is_fine(builddir, conf, dns_server):
    srv = dns_server(zones(mx="@ MX 10 mail\n@ MX 5 mx.elsewhere.example."))
    p = check(builddir, conf, srv)
    assert p.returncode == 0, p.stdout
    assert lines(p.stdout, "WARN") == [
        "WARN thegummibear.com MX: 10 mail.thegummibear.com, "
        "but 5 mx.elsewhere.example is preferred"]
    srv.reload(zones(mx="@ MX 10 mail\n@ MX 10 mx.elsewhere.example."))
    p = check(builddir, conf, srv)
    assert p.returncode == 0, p.stdout
    assert lines(p.stdout, "WARN") == [
        "WARN thegummibear.com MX: 10 mail.thegummibear.com, "
        "but 10 mx.elsewhere.example is as preferred"]
    srv.reload(zones(mx="@ MX 10 mail\n@ MX 20 backup.elsewhere.example."))
    p = check(builddir, conf, srv)
    assert p.returncode == 0, p.stdout
    assert lines(p.stdout, "WARN") == []
    assert ("OK   thegummibear.com MX: 10 mail.thegummibear.com "
            "(backup: 20 backup.elsewhere.example)") in p.stdout.splitlines()


def test_null_mx(builddir, conf, dns_server):
    p = check(builddir, conf, dns_server(zones(mx="@ MX 0 .")))
    assert p.returncode == 1
    expect("null-mx", p.stdout)


def test_no_mx(builddir, conf, dns_server):
    p = check(builddir, conf, dns_server(zones(mx="")))
    assert p.returncode == 1
    assert lines(p.stdout, "FAIL") == ["FAIL thegummibear.com MX: no MX record"]
    assert p.stdout.endswith("; thegummibear.com: MX to mail.thegummibear.com\n"
                             "thegummibear.com. 3600 IN MX 10 mail.thegummibear.com.\n")


def test_mail_name_without_address(builddir, conf, dns_server):
    p = check(builddir, conf, dns_server(zones(mail_a="")))
    assert p.returncode == 1
    expect("no-address", p.stdout)


def test_mail_name_at_another_host(builddir, conf, dns_server):
    srv = dns_server(zones(mail_a="mail A 192.0.2.9"))
    p = check(builddir, conf, srv)
    assert p.returncode == 1
    assert lines(p.stdout, "FAIL") == [
        "FAIL mail.thegummibear.com address: 192.0.2.9: not this host's"]
    assert ("; mail.thegummibear.com: this host's address (instead of 192.0.2.9)\n"
            "mail.thegummibear.com. 3600 IN A 127.0.0.1\n") in p.stdout
    # one address ours, one not: mail reaches the other host part of the time
    srv.reload(zones(mail_a="mail A 127.0.0.1\nmail A 192.0.2.9"))
    p = check(builddir, conf, srv)
    assert p.returncode == 0, p.stdout
    assert lines(p.stdout, "WARN") == [
        "WARN mail.thegummibear.com address: 127.0.0.1, 192.0.2.9: 192.0.2.9 not this host's"]


def test_spf_missing(builddir, conf, dns_server):
    p = check(builddir, conf, dns_server(zones(spf="")))
    assert p.returncode == 1
    expect("spf-missing", p.stdout)


def test_spf_not_covering_the_smarthost(builddir, conf, dns_server):
    p = check(builddir, conf, dns_server(zones(spf='@ TXT "v=spf1 mx ip4:127.0.0.1 -all"')))
    assert p.returncode == 1
    expect("spf-smarthost", p.stdout)


def test_two_spf_records(builddir, conf, dns_server):
    srv = dns_server(zones(extra='@ TXT "v=spf1 a:stumail.cs.utahtech.edu -all"'))
    p = check(builddir, conf, srv)
    assert p.returncode == 1
    expect("spf-two", p.stdout)


def test_spf_in_error_gets_no_record(builddir, conf, dns_server):
    p = check(builddir, conf, dns_server(zones(spf='@ TXT "v=spf1 ip4:127.0.0.0/33 ~all"')))
    assert p.returncode == 1
    assert "FAIL thegummibear.com SPF for 127.0.0.2 (smarthost): permerror" in p.stdout
    assert p.stdout.endswith(
        "; thegummibear.com: its SPF record is in error (permerror): fix it\n")


def test_direct_delivery_needs_every_address_of_this_host(builddir, tmp_path, dns_server):
    """Without a smarthost, mail leaves from this host's own addresses."""
    conf = write_conf(tmp_path, smarthost="")
    srv = dns_server(zones(spf='@ TXT "v=spf1 mx ~all"', mail_spf='mail TXT "v=spf1 a ~all"'))
    p = dnscheck(builddir, "-c", str(conf), "--nameserver", srv.addr,
                 "--address", "127.0.0.1", "--address", "127.0.0.3")
    assert p.returncode == 1
    expect("direct", p.stdout)


def test_smarthost_given_as_an_address(builddir, tmp_path, dns_server):
    conf = write_conf(tmp_path, smarthost="[127.0.0.2]:587")
    p = check(builddir, conf, dns_server(zones(spf="", mail_spf="")))
    assert p.returncode == 1
    out = p.stdout.splitlines()
    assert "OK   127.0.0.2 smarthost address: 127.0.0.2" in out
    assert 'thegummibear.com. 3600 IN TXT "v=spf1 mx ip4:127.0.0.2 ~all"' in out
    assert 'mail.thegummibear.com. 3600 IN TXT "v=spf1 a ip4:127.0.0.2 ~all"' in out


def test_this_hosts_addresses_from_relayd_listen(builddir, tmp_path, dns_server):
    conf = write_conf(tmp_path, listen=f"127.0.0.1:{free_port()}")
    p = dnscheck(builddir, "-c", str(conf), "--nameserver", dns_server(zones()).addr)
    assert p.returncode == 0, p.stdout
    assert p.stdout.splitlines()[0] == (
        "INFO mail.thegummibear.com this host: 127.0.0.1 (from relayd listen addresses)")


def test_wildcard_listen_uses_the_interfaces(builddir, tmp_path, dns_server):
    conf = write_conf(tmp_path, listen="0.0.0.0:25")
    p = dnscheck(builddir, "-c", str(conf), "--nameserver", dns_server(zones()).addr)
    first = p.stdout.splitlines()[0]
    m = re.fullmatch(r"INFO mail\.thegummibear\.com this host: (.*) "
                     r"\(from relayd listen addresses and interfaces\)", first)
    assert m, first
    addrs = m.group(1).split(", ")
    assert all(":" not in a for a in addrs), addrs     # 0.0.0.0: IPv4 only
    loop = [a for a in addrs if a.startswith("127.")]
    # loopback only when the host has nothing else
    assert loop == [] or loop == addrs, addrs


def test_dead_name_server(builddir, conf):
    """A server that never answers costs one dns_timeout, not one per check."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{hole.getsockname()[1]}"
        t0 = time.monotonic()
        p = dnscheck(builddir, "-c", str(conf), "--nameserver", addr,
                     "--address", "127.0.0.1", timeout=30)
        took = time.monotonic() - t0
    assert p.returncode == 1
    assert took < 2 + 1.5, took
    assert p.stderr == f"spfgate-dnscheck: {addr} did not answer within 2s\n"
    expect("dead", p.stdout.replace(addr, "NAMESERVER"))


def test_refusing_name_server(builddir, conf):
    addr = f"127.0.0.1:{free_port_both()}"      # nothing listens there
    t0 = time.monotonic()
    p = dnscheck(builddir, "-c", str(conf), "--nameserver", addr,
                 "--address", "127.0.0.1", timeout=30)
    assert p.returncode == 1
    assert time.monotonic() - t0 < 2 + 1.5
    assert (f"FAIL DNS name servers: {addr} answered no query (refused or unreachable)"
            in p.stdout.splitlines())
    assert lines(p.stdout, "OK") == []


def absolute(zone_texts):
    """[(owner, type, rdata)] from the relative zone texts."""
    rrs = []
    for origin, text in zone_texts.items():
        for line in text.splitlines():
            name, rtype, rdata = line.split(None, 2)
            owner = origin if name == "@" else f"{name}.{origin}"
            rrs.append((owner + ".", rtype, rdata))
    return rrs


BROKEN = {
    "mx-elsewhere": zones(mx="@ MX 10 mx.elsewhere.example."),
    "null-mx": zones(mx="@ MX 0 ."),
    "no-mx": zones(mx=""),
    "no-address": zones(mail_a=""),
    "mail-elsewhere": zones(mail_a="mail A 192.0.2.9"),
    "spf-missing": zones(spf="", mail_spf=""),
    "spf-smarthost": zones(spf='@ TXT "v=spf1 mx ip4:127.0.0.1 -all"'),
    "spf-two": zones(extra='@ TXT "v=spf1 a:stumail.cs.utahtech.edu -all"'),
}


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_publishing_the_advice_fixes_the_site(builddir, conf, tmp_path, variant):
    """Every record printed, published in place of the RRset it names,
    makes the check pass (zone backend: the same records, no server)."""
    rrs = absolute(BROKEN[variant])
    zone = tmp_path / "site.zone"
    zone.write_text("".join(f"{o} IN {t} {d}\n" for o, t, d in rrs))
    args = ["-c", str(conf), "--zone", str(zone), "--address", "127.0.0.1"]
    p = dnscheck(builddir, *args)
    assert p.returncode == 1, p.stdout
    advice = p.stdout.split("\n; DNS records to publish\n", 1)[1]
    new = []
    for line in advice.splitlines():
        if line.startswith(";"):
            continue
        owner, ttl, cls, rtype, rdata = line.split(None, 4)
        assert (ttl, cls) == ("3600", "IN"), line
        new.append((owner, rtype, rdata))
    assert new, advice
    replaced = {(o, t) for o, t, _ in new}
    rrs = [rr for rr in rrs if (rr[0], rr[1]) not in replaced] + new
    zone.write_text("".join(f"{o} IN {t} {d}\n" for o, t, d in rrs))
    p = dnscheck(builddir, *args)
    assert p.returncode == 0, p.stdout
    assert lines(p.stdout, "FAIL") == []
    assert "DNS records to publish" not in p.stdout


def test_long_record_split_at_spaces(builddir, conf, tmp_path):
    many = " ".join(f"ip4:10.0.0.{i}" for i in range(1, 41))
    zone = tmp_path / "site.zone"
    zone.write_text(
        "thegummibear.com. IN MX 10 mail.thegummibear.com.\n"
        f'thegummibear.com. IN TXT "v=spf1 {many[:200]}" "{many[200:400]}" '
        f'"{many[400:]} ~all"\n'
        "mail.thegummibear.com. IN A 127.0.0.1\n"
        'mail.thegummibear.com. IN TXT "v=spf1 a:stumail.cs.utahtech.edu -all"\n'
        "stumail.cs.utahtech.edu. IN A 127.0.0.2\n")
    p = dnscheck(builddir, "-c", str(conf), "--zone", str(zone), "--address", "127.0.0.1")
    assert p.returncode == 1
    rec = p.stdout.splitlines()[-1]
    strings = re.findall(r'"([^"]*)"', rec)
    assert len(strings) == 3 and all(len(s) <= 255 for s in strings), rec
    assert all(s.endswith(" ") for s in strings[:-1]), rec
    assert "".join(strings) == f"v=spf1 {many} a:stumail.cs.utahtech.edu ~all"


def test_usage_and_configuration_errors(builddir, conf, tmp_path):
    for args in (["--address", "mail.example"], ["--bogus"], ["extra"],
                 ["--dns-timeout", "0"]):
        p = dnscheck(builddir, "-c", str(conf), *args)
        assert p.returncode == 2, args
        assert p.stdout == "", args
    p = dnscheck(builddir, "-c", str(conf), "-t")
    assert (p.returncode, p.stdout) == (0, f"{conf}: configuration OK\n")
    bad = tmp_path / "bad.conf"
    bad.write_text("[global]\nmail_name = mail.thegummibear.com\nno_such_key = 1\n")
    for extra in ([], ["-t"]):
        p = dnscheck(builddir, "-c", str(bad), *extra)
        assert p.returncode == 2
        assert p.stderr.startswith(f"spfgate-dnscheck: {bad}:3: ")
    p = dnscheck(builddir, "-c", str(tmp_path / "missing.conf"))
    assert p.returncode == 2
    zone = tmp_path / "broken.zone"
    zone.write_text("thegummibear.com. IN MX ten mail.thegummibear.com.\n")
    p = dnscheck(builddir, "-c", str(conf), "--zone", str(zone))
    assert p.returncode == 2
    assert str(zone) in p.stderr


def test_adapted_record_keeps_its_redirect_last(builddir, conf, tmp_path):
    """The zone backend: checking records before they are published."""
    zone = tmp_path / "site.zone"
    zone.write_text(
        "thegummibear.com. IN MX 10 mail.thegummibear.com.\n"
        'thegummibear.com. IN TXT "v=spf1 mx redirect=_spf.thegummibear.com"\n'
        '_spf.thegummibear.com. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
        "mail.thegummibear.com. IN A 127.0.0.1\n"
        'mail.thegummibear.com. IN TXT "v=spf1 a:stumail.cs.utahtech.edu -all"\n'
        "stumail.cs.utahtech.edu. IN A 127.0.0.2\n")
    p = dnscheck(builddir, "-c", str(conf), "--zone", str(zone), "--address", "127.0.0.1")
    assert p.returncode == 1
    assert lines(p.stdout, "FAIL") == [
        "FAIL thegummibear.com SPF for 127.0.0.2 (smarthost): "
        "fail (mechanism -all matched)"]
    assert p.stdout.endswith(
        'thegummibear.com. 3600 IN TXT '
        '"v=spf1 mx a:stumail.cs.utahtech.edu redirect=_spf.thegummibear.com"\n')
