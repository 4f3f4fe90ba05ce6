#!/usr/bin/python3
"""RFC 7208 conformance: every case of the openspf.org suite, through the
spfgate-policy harness (the very code filterd runs), as TAP.

For each scenario the zonedata becomes a master zone file:
  - TXT strings are written byte-exact with \\DDD escapes, several strings
    per RR where the suite gives a list, an empty list as one empty string;
  - as the suite's header asks of drivers, a name's SPF (type 99) records
    are duplicated to TXT unless the name lists TXT records itself
    ("TXT: NONE" lists none and suppresses the copy);
  - TIMEOUT becomes the zone backend's timeout mark (TYPE65280, see
    common/dns.h), which makes every query for the name time out.  The
    suite's own driver only times out queries for types not listed before
    TIMEOUT; the one name where that matters (a TXT record listed before
    TIMEOUT) is written without the mark, since TXT is all an RFC 7208
    checker asks there.
The suite file lives outside the repository: $SPFGATE_SPF_SUITE (set by
make check from configure --with-spf-suite, so that distcheck's copy of the
tree finds it too), else $SPFGATE_SRCDIR/../shared/...; none found is a
"Bail out!", never a pass.
"""
import os
import subprocess
import sys
import tempfile

import yaml

SUITE_REL = "../shared/conformance/rfc7208-tests.yml"
SUITE_FALLBACK = "/work/shared/conformance/rfc7208-tests.yml"


def suite_path():
    given = os.environ.get("SPFGATE_SPF_SUITE")
    if given and os.path.exists(given):
        return given
    src = os.environ.get("SPFGATE_SRCDIR")
    if src:
        p = os.path.join(src, SUITE_REL)
        if os.path.exists(p):
            return p
    return SUITE_FALLBACK


def harness_path():
    build = os.environ.get("SPFGATE_BUILDDIR")
    if not build:
        build = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    return os.path.join(build, "filterd", "spfgate-policy")


def to_bytes(s):
    """YAML "\\xEF" escapes are code points; the suite means bytes."""
    if isinstance(s, bytes):
        return s
    s = str(s)
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


SAFE_NAME = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/%*+=")


def zname(name):
    """A domain name in master-file form, absolute."""
    b = to_bytes(name)
    if b in (b"", b"."):
        return "."
    out = []
    for c in b:
        out.append(chr(c) if c in SAFE_NAME else "\\%03d" % c)
    s = "".join(out)
    return s if s.endswith(".") else s + "."


def ztxt(strings):
    """TXT rdata: one or more character-strings, 255 bytes at most each."""
    if isinstance(strings, (str, bytes)):
        strings = [strings]
    parts = []
    for s in strings:
        b = to_bytes(s)
        chunks = [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
        for ch in chunks:
            esc = "".join(chr(c) if 0x20 <= c <= 0x7e and c not in b'"\\' else "\\%03d" % c
                          for c in ch)
            parts.append('"%s"' % esc)
    return " ".join(parts) if parts else '""'


def zone_lines(zonedata):
    lines = ["$TTL 300"]
    for name, entries in (zonedata or {}).items():
        entries = entries or []
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        txt_before_timeout = False
        seen_txt = False
        for e in entries:
            if e == "TIMEOUT":
                txt_before_timeout = seen_txt
                break
            if isinstance(e, dict) and "TXT" in e and e["TXT"] != "NONE":
                seen_txt = True
        owner = zname(name)
        for e in entries:
            if e == "TIMEOUT":
                if not txt_before_timeout:
                    lines.append("%s IN TYPE65280 \\# 0" % owner)
                continue
            for rtype, val in e.items():
                if rtype in ("SPF", "TXT"):
                    if val == "NONE":
                        continue
                    lines.append("%s IN %s %s" % (owner, rtype, ztxt(val)))
                    if rtype == "SPF" and not has_txt:
                        lines.append("%s IN TXT %s" % (owner, ztxt(val)))
                elif rtype in ("A", "AAAA"):
                    lines.append("%s IN %s %s" % (owner, rtype, val))
                elif rtype == "MX":
                    pref, host = val
                    lines.append("%s IN MX %d %s" % (owner, int(pref), zname(host)))
                elif rtype in ("PTR", "CNAME"):
                    lines.append("%s IN %s %s" % (owner, rtype, zname(val)))
                else:
                    raise ValueError("unknown record type %s" % rtype)
    return lines


def run_case(tmp, zonefile, conf, case):
    cmd = [harness_path(), "-c", conf, "--zone", zonefile,
           "--ip", str(case["host"]), "--helo", str(case.get("helo", "")),
           "--from", str(case.get("mailfrom", ""))]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    out = p.stdout.decode("utf-8", "replace")
    result, reason, expl = None, "", None
    for line in out.splitlines():
        if line.startswith("spf-mailfrom: "):
            v = line[len("spf-mailfrom: "):]
            result = v.split(" ", 1)[0]
            reason = v[len(result):].strip()
        elif line.startswith("explanation: "):
            expl = line[len("explanation: "):]
    if result is None:
        err = p.stderr.decode("utf-8", "replace").strip().replace("\n", " | ")
        reason = "no spf-mailfrom line (exit %d): %s" % (p.returncode, err[:200])
    return result, reason, expl


def main():
    if not os.path.exists(suite_path()):
        print("Bail out! RFC 7208 suite not found (SPFGATE_SPF_SUITE=%s, %s)"
              % (os.environ.get("SPFGATE_SPF_SUITE", ""), SUITE_FALLBACK))
        return 1
    with open(suite_path(), "rb") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    cases = []
    for doc in docs:
        for cname, case in doc["tests"].items():
            cases.append((doc, cname, case))
    print("1..%d" % len(cases))
    sys.stdout.flush()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="spfgate-rfc7208-") as tmp:
        conf = os.path.join(tmp, "spfgate.conf")
        with open(conf, "w") as f:
            f.write("[global]\nmail_name = receiver.example.org\nrelay_networks =\n")
        zones = {}
        for k, (doc, cname, case) in enumerate(cases, 1):
            key = id(doc)
            if key not in zones:
                zf = os.path.join(tmp, "zone%d" % len(zones))
                with open(zf, "w", encoding="latin-1") as f:
                    f.write("\n".join(zone_lines(doc.get("zonedata"))) + "\n")
                zones[key] = zf
            want = case["result"]
            want = [want] if isinstance(want, str) else list(want)
            scen = doc["description"].replace(" ", "-").lower()
            label = "%s/%s" % (scen, cname)
            try:
                got, reason, expl = run_case(tmp, zones[key], conf, case)
            except Exception as e:  # a hung or crashed harness is a failure
                got, reason, expl = None, "harness: %s" % e, None
            ok = got in want
            why = ""
            if ok and "explanation" in case:
                wexp = case["explanation"]
                if wexp == "DEFAULT":
                    ok = expl is None
                    why = "explanation %r, want the default" % expl
                else:
                    ok = expl == wexp
                    why = "explanation %r, want %r" % (expl, wexp)
            if ok:
                print("ok %d - %s" % (k, label))
            else:
                failures += 1
                if not why:
                    why = "got %s %s want %s" % (got, reason, "|".join(want))
                print("not ok %d - %s # %s" % (k, label, why.replace("#", "\\#")))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
