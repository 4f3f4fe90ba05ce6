"""Debian's opendkim as a signing milter for the tests.

    with opendkim_milter(tmp_path) as dk:
        dk.sock          # its unix socket (local:), to give a milter client
        dk.dns_txt()     # the public key record, for dkim.verify's dnsfunc

It signs for example.test with selector "sel" (relaxed/simple), a key
made with opendkim-genkey in the directory given; stopped by its PID
group when the block ends.
"""
import contextlib
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import poll


class OpenDKIM:
    def __init__(self, directory, sock):
        self.dir, self.sock = directory, sock

    def dns_txt(self):
        """The TXT record opendkim-genkey wrote, as one string."""
        return "".join(re.findall(r'"([^"]*)"', (self.dir / "sel.txt").read_text()))


@contextlib.contextmanager
def opendkim_milter(directory):
    opendkim = shutil.which("opendkim") or "/usr/sbin/opendkim"
    genkey = shutil.which("opendkim-genkey") or "/usr/sbin/opendkim-genkey"
    if not (os.path.exists(opendkim) and os.path.exists(genkey)):
        pytest.fail("opendkim is not installed (apt-get install -y opendkim opendkim-tools)")
    subprocess.run([genkey, "-D", str(directory), "-d", "example.test", "-s", "sel"],
                   check=True, timeout=60)
    sockdir = tempfile.mkdtemp(prefix="dk", dir="/tmp")
    sock = os.path.join(sockdir, "dkim.sock")
    conf = directory / "opendkim.conf"
    conf.write_text(f"""Domain example.test
Selector sel
KeyFile {directory}/sel.private
Socket local:{sock}
Mode s
RequireSafeKeys false
Canonicalization relaxed/simple
InternalHosts 127.0.0.1
Background no
Syslog no
PidFile {directory}/opendkim.pid
UserID root
""")
    proc = subprocess.Popen([opendkim, "-f", "-x", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def listening():
            assert proc.poll() is None, proc.stdout.read().decode()
            return os.path.exists(sock)
        poll(listening, 15, "opendkim's socket")
        yield OpenDKIM(directory, sock)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
        shutil.rmtree(sockdir, ignore_errors=True)
