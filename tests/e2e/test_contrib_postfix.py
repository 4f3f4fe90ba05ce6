"""contrib/postfix-main.cf, as an administrator would paste it.

Every active line of the file goes into a private Postfix's main.cf; only
the socket path is this test's (the file's own paths assume Debian's
chroot).  With filterd behind it, a forged sender is refused at MAIL
with 550 5.7.23, a permitted one gets filterd's headers, and with filterd
stopped the file's milter_default_action makes Postfix answer 4xx.
"""
import os
import re
import shutil
import smtplib
import tempfile

import pytest

import postfix
from conftest import free_port
from dnsserver import DnsServer
from filterd import MAIL_NAME, Filterd

ZONE = '@ TXT "v=spf1 ip4:127.0.0.2 -all"\n'


def smtp(pf, source):
    return smtplib.SMTP("127.0.0.1", pf.port, timeout=30, source_address=(source, 0))


def contrib_settings(srcdir):
    """{key: value} of the file's active lines (continuations joined)."""
    out, key = {}, None
    for line in (srcdir / "contrib" / "postfix-main.cf").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and key:
            out[key] += " " + line.strip()
            continue
        m = re.match(r"(\w+)\s*=\s*(.*)$", line)
        assert m, f"not a main.cf line: {line!r}"
        key = m.group(1)
        out[key] = m.group(2).strip()
    return out


@pytest.fixture
def world(builddir, srcdir, tmp_path):
    if not postfix.available():
        pytest.fail(postfix.install_hint())
    dns = DnsServer(tmp_path / "nsd", {"sender.test": ZONE})
    dns.start()
    sockdir = tempfile.mkdtemp(prefix="fd", dir="/tmp")
    os.chmod(sockdir, 0o755)
    sock = os.path.join(sockdir, "filterd.sock")
    settings = contrib_settings(srcdir)
    assert settings["smtpd_milters"].startswith("unix:"), settings
    settings["smtpd_milters"] = f"unix:{sock}"
    pf = postfix.Postfix(tmp_path / "pf", free_port(), milters=f"unix:{sock}",
                         mailboxes=["bob@example.test"], hostname=MAIL_NAME,
                         extra=settings)
    fd = Filterd(builddir, tmp_path / "filterd", nameserver=dns.addr, address=sock)
    try:
        pf.start()
        fd.start()
        yield pf, fd, settings
    finally:
        fd.stop()
        pf.stop()
        dns.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def test_contrib_lines_make_postfix_use_filterd(world):
    pf, fd, settings = world
    assert settings["milter_protocol"] == "6"
    assert settings["non_smtpd_milters"] == "$smtpd_milters"
    with smtp(pf, "127.0.0.3") as s:
        s.ehlo("forger.example")
        code, text = s.mail("alice@sender.test")
    assert (code, text[:6]) == (550, b"5.7.23"), (code, text)

    with smtp(pf, "127.0.0.2") as s:
        s.ehlo("client.example")
        assert s.sendmail("alice@sender.test", ["bob@example.test"],
                          "Subject: via contrib\r\n\r\nhi\r\n") == {}
    text = pf.wait_for_mail("bob@example.test")
    assert "Received-SPF: pass" in text and "spf=pass smtp.mailfrom=alice@sender.test" in text

    fd.stop()       # filterd down: the file's milter_default_action = tempfail
    with smtp(pf, "127.0.0.2") as s:
        s.ehlo("client.example")
        code, _ = s.mail("alice@sender.test")
    assert 400 <= code < 500, code
