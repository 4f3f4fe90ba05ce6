"""filterd against miltertest, the MTA side of the milter protocol.

A real DNS server (nsd) publishes the SPF records below; filterd runs
from the build tree; each case runs a Lua script from tests/miltertest
and asserts its exit status (every check inside a script is fatal).  The
header fields a script expects are what spfgate-policy, the same policy
code without a daemon, says for the same client and sender: the scripts
check that filterd inserts exactly those, at the top, and the tests pin
their content where an administrator would look.  miltertest sees only
the letter of a custom reply at MAIL and RCPT, not its text: the reply
text is checked in filterd's decision log line (and, through Postfix, in
test_filterd_postfix.py).
"""
import concurrent.futures
import os
import shutil
import signal
import subprocess

import pytest

from dnsserver import DnsServer
from filterd import MAIL_NAME, Filterd, filterd_factory, write_config  # noqa: F401

MILTERTEST = shutil.which("miltertest") or "/usr/bin/miltertest"
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "miltertest")

ZONE = r'''
@          TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 exp=why.sender.test -all"
why        TXT "%{i} may not send mail for %{d}"
mail       TXT "v=spf1 ip4:192.0.2.0/24 -all"
mail       A   192.0.2.10
soft       TXT "v=spf1 ip4:192.0.2.0/24 ~all"
neutral    TXT "v=spf1 ?all"
broken     TXT "v=spf1 ip4:192.0.2.0/33 -all"
nospf      A   192.0.2.20
'''

GOOD_IP, BAD_IP = "192.0.2.10", "203.0.113.9"

@pytest.fixture(autouse=True)
def _need_miltertest():
    # A missing peer is a failure, never a silent skip.
    if not os.path.exists(MILTERTEST):
        pytest.fail("miltertest is not installed (apt-get install -y miltertest)")


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    srv = DnsServer(tmp_path_factory.mktemp("nsd"), {"sender.test": ZONE})
    srv.start()
    yield srv
    srv.stop()


def miltertest(script, **params):
    args = [MILTERTEST, "-s", os.path.join(SCRIPTS, script),
            "-D", f"LIB={os.path.join(SCRIPTS, 'lib.lua')}", "-D", f"MAIL_NAME={MAIL_NAME}"]
    for k, v in params.items():
        if v is not None:
            args += ["-D", f"{k}={v}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def run_ok(fd, script, **params):
    p = miltertest(script, SOCK=fd.miltertest, **params)
    assert p.returncode == 0, (f"{script} failed:\n{p.stdout}{p.stderr}\n"
                               f"--- filterd log ---\n{fd.log()}")
    assert fd.alive(), fd.log()
    return p


def policy_headers(builddir, fd, ip, helo, sender, auth=None):
    """What spfgate-policy says filterd must add: [(name, value), ...]."""
    args = [str(builddir / "filterd" / "spfgate-policy"), "-c", str(fd.conf),
            "--ip", ip, "--helo", helo, "--from", sender]
    if auth:
        args += ["--auth", auth]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    hdrs = []
    for line in p.stdout.splitlines():
        if line.startswith("header: "):
            name, _, value = line[len("header: "):].partition(": ")
            hdrs.append((name, value))
    return hdrs


def transaction(builddir, fd, ip, helo, sender, rcpts, expect_mail, expect_rcpts,
                auth=None, forged=False, hdrs=None):
    """Run transaction.lua; return the header fields it verified."""
    if hdrs is not None:
        hdrs = list(hdrs.items())
    elif expect_mail == "c" and "c" in expect_rcpts:
        hdrs = policy_headers(builddir, fd, ip, helo, sender.strip("<>"), auth)
        assert [h[0] for h in hdrs] == ["Received-SPF", "Authentication-Results"], hdrs
    else:
        hdrs = []
    params = dict(IP=ip, HELO=helo, FROM=sender, AUTH=auth, RCPTS=" ".join(rcpts),
                  EXPECT_MAIL=expect_mail, EXPECT_RCPTS=expect_rcpts,
                  FORGED="1" if forged else None)
    for i, (name, value) in enumerate(hdrs, 1):
        params[f"HDR{i}_NAME"] = name
        params[f"HDR{i}_VALUE"] = value
    run_ok(fd, "transaction.lua", **params)
    return dict(hdrs)


@pytest.fixture(params=["unix", "inet"])
def kind(request):
    return request.param


def test_negotiates_only_what_it_needs(filterd_factory, dns, kind):
    fd = filterd_factory(nameserver=dns.addr, kind=kind)
    run_ok(fd, "negotiate.lua")


def test_pass_is_tagged_and_forged_results_removed(builddir, filterd_factory, dns, kind):
    fd = filterd_factory(nameserver=dns.addr, kind=kind)
    h = transaction(builddir, fd, GOOD_IP, "mail.sender.test", "<alice@sender.test>",
                    ["<bob@example.test>"], "c", "c", forged=True)
    assert h["Authentication-Results"] == \
        f"{MAIL_NAME}; spf=pass smtp.mailfrom=alice@sender.test"
    assert h["Received-SPF"].startswith("pass ")
    assert f"client-ip={GOOD_IP};" in h["Received-SPF"]
    assert "envelope-from=alice@sender.test;" in h["Received-SPF"]
    assert "helo=mail.sender.test;" in h["Received-SPF"]
    assert f"receiver={MAIL_NAME};" in h["Received-SPF"]
    line = fd.wait_log(r"^filterd: eom:")
    assert f"client={GOOD_IP}" in line and "from=<alice@sender.test>" in line
    assert "rcpts=<bob@example.test>" in line
    assert "spf=pass" in line and "action=accept" in line


def test_fail_is_rejected_with_the_domains_explanation(filterd_factory, builddir, dns, kind):
    fd = filterd_factory(nameserver=dns.addr, kind=kind)
    transaction(builddir, fd, BAD_IP, "mail.example.net", "<alice@sender.test>",
                [], "y", "")
    line = fd.wait_log(r"^filterd: mail:.*action=reject")
    assert f"client={BAD_IP}" in line and "spf=fail" in line
    assert f'reply="550 5.7.23 {BAD_IP} may not send mail for sender.test"' in line


@pytest.mark.parametrize("sender,result", [
    ("soft.sender.test", "softfail"),
    ("neutral.sender.test", "neutral"),
    ("nospf.sender.test", "none"),
    ("broken.sender.test", "permerror"),
])
def test_other_results_are_tagged_by_default(builddir, filterd_factory, dns, sender, result):
    fd = filterd_factory(nameserver=dns.addr)
    h = transaction(builddir, fd, BAD_IP, "mail.example.net", f"<alice@{sender}>",
                    ["<bob@example.test>"], "c", "c")
    assert h["Authentication-Results"] == \
        f"{MAIL_NAME}; spf={result} smtp.mailfrom=alice@{sender}"
    assert h["Received-SPF"].startswith(f"{result} ")
    assert f"spf={result}" in fd.wait_log(r"^filterd: eom:")


def test_temperror_is_a_tempfail(builddir, filterd_factory, dns):
    # example.net is not served by the test DNS server: it refuses, and a
    # refusal is a temporary DNS error
    fd = filterd_factory(nameserver=dns.addr)
    transaction(builddir, fd, BAD_IP, "mail.example.net", "<alice@temp.example.net>",
                [], "y", "")
    line = fd.wait_log(r"^filterd: mail:")
    assert "action=tempfail" in line and "spf=temperror" in line
    assert 'reply="451 4.7.24 ' in line


def test_permerror_rejected_when_configured(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr, on_permerror="reject")
    transaction(builddir, fd, BAD_IP, "mail.example.net", "<alice@broken.sender.test>",
                [], "y", "")
    line = fd.wait_log(r"^filterd: mail:")
    assert "action=reject" in line and "spf=permerror" in line
    assert 'reply="550 5.7.24 ' in line


def test_dry_run_only_tags(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr, dry_run="on")
    h = transaction(builddir, fd, BAD_IP, "mail.example.net", "<alice@sender.test>",
                    ["<bob@example.test>"], "c", "c")
    assert h["Authentication-Results"] == f"{MAIL_NAME}; spf=fail smtp.mailfrom=alice@sender.test"
    line = fd.wait_log(r"^filterd: eom:")
    assert "action=accept" in line and "dry_run=reject" in line


def test_null_sender_checks_the_helo_identity(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr)
    h = transaction(builddir, fd, GOOD_IP, "mail.sender.test", "<>",
                    ["<bob@example.test>"], "c", "c")
    assert h["Authentication-Results"] == f"{MAIL_NAME}; spf=pass smtp.helo=mail.sender.test"
    assert "identity=helo" in h["Received-SPF"]
    transaction(builddir, fd, BAD_IP, "mail.sender.test", "<>", [], "y", "")
    assert "spf=fail" in fd.wait_log(r"^filterd: mail:.*action=reject")


def test_relay_denied_for_a_foreign_client(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr)
    transaction(builddir, fd, GOOD_IP, "mail.sender.test", "<alice@sender.test>",
                ["<bob@example.test>", "<carol@elsewhere.example>",
                 "<carol%elsewhere.example@example.test>", "<postmaster@MX.EXAMPLE.TEST>"],
                "c", "cyyc")
    line = fd.wait_log(r"^filterd: rcpt:.*carol@elsewhere")
    assert "action=reject" in line
    assert 'reply="554 5.7.1 <carol@elsewhere.example>: Relay access denied"' in line
    line = fd.wait_log(r"^filterd: eom:")
    assert "rcpts=<bob@example.test>,<postmaster@MX.EXAMPLE.TEST>" in line


def test_relay_allowed_from_relay_networks(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr)
    h = transaction(builddir, fd, "127.0.0.1", "localhost", "<alice@sender.test>",
                    ["<carol@elsewhere.example>"], "c", "c")
    assert "not checked" in h["Authentication-Results"]
    assert h["Received-SPF"].startswith("none ")


def test_relay_allowed_when_authenticated(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr)
    # BAD_IP would fail SPF: authenticated senders are not checked
    h = transaction(builddir, fd, BAD_IP, "laptop", "<alice@sender.test>",
                    ["<carol@elsewhere.example>"], "c", "c", auth="alice")
    assert "auth=pass smtp.auth=alice" in h["Authentication-Results"]
    assert "auth=alice" in fd.wait_log(r"^filterd: eom:")


def test_forged_authentication_results_variants(filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr)
    run_ok(fd, "forged_ar.lua")


def test_odd_input_never_breaks_it(filterd_factory, dns, kind):
    fd = filterd_factory(nameserver=dns.addr, kind=kind)
    run_ok(fd, "odd_input.lua")
    assert "no client IP address" in fd.wait_log(r"^filterd: eom: .*client=unknown")


def test_many_sessions_at_once(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr, kind="inet")
    hdrs = policy_headers(builddir, fd, GOOD_IP, "mail.sender.test", "alice@sender.test")
    params = dict(SOCK=fd.miltertest, IP=GOOD_IP, HELO="mail.sender.test",
                  FROM="<alice@sender.test>", RCPTS="<bob@example.test>",
                  EXPECT_MAIL="c", EXPECT_RCPTS="c",
                  HDR1_NAME=hdrs[0][0], HDR1_VALUE=hdrs[0][1],
                  HDR2_NAME=hdrs[1][0], HDR2_VALUE=hdrs[1][1])
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        runs = list(pool.map(lambda _: miltertest("transaction.lua", **params), range(40)))
    failed = [p.stdout + p.stderr for p in runs if p.returncode != 0]
    assert not failed, failed[0]
    assert fd.log().count("filterd: eom:") == 40


def test_check_mode(builddir, tmp_path):
    binary = str(builddir / "filterd" / "filterd")
    good = write_config(tmp_path / "good.conf", "unix:/tmp/x.sock")
    p = subprocess.run([binary, "-t", "-c", str(good)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text(good.read_text() + "on_fail = bounce\n")
    p = subprocess.run([binary, "-t", "-c", str(bad)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    nlines = len(bad.read_text().splitlines())
    assert p.stderr.startswith(f"{bad}:{nlines}: "), p.stderr
    p = subprocess.run([binary, "-x"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "usage" in p.stderr


def test_stale_socket_replaced_live_one_kept(builddir, tmp_path, dns):
    first = Filterd(builddir, tmp_path / "a", nameserver=dns.addr).start()
    try:
        # a second filterd on the same socket must not steal it
        second = Filterd(builddir, tmp_path / "b", nameserver=dns.addr)
        write_config(second.conf, first.listen, nameserver=dns.addr)
        p = subprocess.run([str(second.binary), "-d", "-c", str(second.conf)],
                           capture_output=True, text=True, timeout=30)
        second.stop()
        assert p.returncode != 0 and "in use" in p.stderr
        assert first.alive()
        run_ok(first, "negotiate.lua")
        # SIGKILL leaves the socket file behind; a new filterd takes it over
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        assert os.path.exists(first.path)
        third = Filterd(builddir, tmp_path / "c", nameserver=dns.addr)
        write_config(third.conf, first.listen, nameserver=dns.addr)
        third.path, third.listen, third.miltertest = first.path, first.listen, first.listen
        third.start()
        run_ok(third, "negotiate.lua")
        assert third.stop() == 0
        assert "stop" in third.log()
    finally:
        first.stop()


def test_sighup_reloads_the_configuration(builddir, filterd_factory, dns):
    fd = filterd_factory(nameserver=dns.addr)
    soft = (BAD_IP, "mail.example.net", "<alice@soft.sender.test>")
    h = transaction(builddir, fd, *soft, ["<bob@example.test>"], "c", "c")
    # a broken file is refused and the running configuration kept
    good = fd.conf.read_text()
    fd.conf.write_text(good + "on_softfail = sometimes\n")
    os.kill(fd.proc.pid, signal.SIGHUP)
    assert "keeping the running configuration" in fd.wait_log(r"reload: .*on_softfail")
    transaction(builddir, fd, *soft, ["<bob@example.test>"], "c", "c", hdrs=h)
    # a good one applies to the next decision, without a restart
    fd.conf.write_text(good + "on_softfail = reject\n")
    os.kill(fd.proc.pid, signal.SIGHUP)
    fd.wait_log(r"^filterd: reload: config=")
    transaction(builddir, fd, *soft, [], "y", "")
    assert "spf=softfail" in fd.wait_log(r"^filterd: mail: .*action=reject")
    assert fd.stop() == 0
