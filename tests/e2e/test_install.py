"""make install and make distcheck: what a package of spfgate ships.

The shared build tree (SPFGATE_BUILDDIR) is installed into a scratch
DESTDIR, never rebuilt: a tree that is not up to date fails the test.  The
result is checked as a packager would: every program, a manual page for
each that groff formats without a warning and that names every option of
the program's usage line, the sample configuration that every program
accepts and that lists each parameter of common/config.c with its
default, systemd units that systemd-analyze verify accepts (inside a
scratch root, so that no unit of this machine is touched), and the
sysusers.d and tmpfiles.d files applied to a scratch root.  make distcheck
runs from a build tree of its own.
"""
import os
import re
import shutil
import subprocess
import time

import pytest

PROGRAMS = {    # what spfgate's own manual pages document
    "relayd": "8", "filterd": "8", "deliverd": "8",
    "spfgate-queue": "8", "spfgate-policy": "1",
}
DAEMONS = ("relayd", "filterd", "deliverd")
UNITS = ("spfgate-deliverd.service", "spfgate-filterd.service",
         "spfgate-relayd.service", "spfgate.target")
CAPS = {
    "relayd": {"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"},
    "filterd": {"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"},
    "deliverd": {"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE",
                 "CAP_DAC_READ_SEARCH"},
}
EXPOSURE_MAX = 3.0      # systemd-analyze security: "OK" is below 4


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: install the Debian package "
                    "(./quickstart installs it)")
    return path


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 120),
                          **kw)


def make_vars(builddir):
    """The build tree's Makefile variables, fully expanded."""
    raw = {}
    text = (builddir / "Makefile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*) = (.*)$", line)
        if m and m.group(1) not in raw:
            raw[m.group(1)] = m.group(2).strip()

    def expand(v, depth=0):
        assert depth < 20, v
        return re.sub(r"\$[({]([A-Za-z_0-9]+)[)}]",
                      lambda m: expand(raw.get(m.group(1), ""), depth + 1), v)
    return {k: expand(v) for k, v in raw.items()}


def installed_programs(mv):
    """(name, directory) of every program make install puts in bin and sbin."""
    out = []
    for var, d in (("bin_PROGRAMS", mv["bindir"]), ("sbin_PROGRAMS", mv["sbindir"])):
        for p in mv.get(var, "").split():
            out.append((os.path.basename(p), d))
    return out


def under(root, path):
    return root / path.lstrip("/")


def install(builddir, destdir):
    p = run(["make", "-C", str(builddir), "install", f"DESTDIR={destdir}"], timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def mv(builddir):
    if not (builddir / "Makefile").exists():
        pytest.fail(f"{builddir} is not a configured build tree")
    return make_vars(builddir)


@pytest.fixture(scope="module")
def destdir(builddir, mv, tmp_path_factory):
    # The build tree is shared with the other tests: install what is there.
    q = run(["make", "-C", str(builddir), "-q", "all-am"])
    if q.returncode != 0:
        pytest.fail(f"{builddir} is not up to date: run make there first")
    d = tmp_path_factory.mktemp("destdir")
    install(builddir, d)
    return d


def render(page):
    """The page as plain text (hyphenation undone), and groff's warnings."""
    g = run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)])
    env = dict(os.environ, MANWIDTH="1000", LC_ALL="C.UTF-8")
    m = run(["man", "-l", "-P", "cat", str(page)], env=env)
    assert m.returncode == 0, m.stderr
    text = re.sub(r".\x08", "", m.stdout)
    text = text.replace("\u2010\n", "").replace("\u2010", "-").replace("\u2212", "-")
    return text, g.returncode, g.stderr


def test_programs_installed(destdir, mv):
    progs = installed_programs(mv)
    names = {n for n, _ in progs}
    assert set(PROGRAMS) <= names, names
    for name, d in progs:
        f = under(destdir, d) / name
        assert f.is_file() and os.access(f, os.X_OK), f
    for name in DAEMONS:
        assert (under(destdir, mv["sbindir"]) / name).is_file()


def test_man_pages(destdir, mv):
    need("groff")
    need("man")
    mandir = under(destdir, mv["mandir"])
    pages = sorted(p for p in mandir.rglob("*") if p.is_file())
    assert pages, f"no manual pages under {mandir}"
    texts = {}
    for page in pages:
        text, rc, warnings = render(page)
        assert rc == 0 and warnings == "", f"{page.name}: {warnings}"
        assert re.search(r"^NAME$", text, re.M) and "SEE ALSO" in text, page.name
        texts[page.name] = text
    # every installed program has its page
    for name, _ in installed_programs(mv):
        assert any(p.startswith(name + ".") for p in texts), f"no manual page for {name}"
    for name, sec in PROGRAMS.items():
        assert f"{name}.{sec}" in texts, name
    assert "spfgate.conf.5" in texts


def test_man_pages_name_every_option(destdir, mv):
    """Each option of a program's usage line is in its manual page."""
    mandir = under(destdir, mv["mandir"])
    for name, sec in PROGRAMS.items():
        d = mv["sbindir"] if name in DAEMONS else mv["bindir"]
        p = run([str(under(destdir, d) / name), "-h"])
        assert p.returncode == 2 and "usage:" in p.stderr, (name, p.stderr)
        opts = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", p.stderr.split("usage:", 1)[1]))
        assert opts, (name, p.stderr)
        text, _, _ = render(mandir / f"man{sec}" / f"{name}.{sec}")
        missing = sorted(o for o in opts if not re.search(rf"(?<![\w-]){re.escape(o)}\b", text))
        assert not missing, f"{name}.{sec} does not mention {missing}"
        for word in re.findall(r"\b(list|flush|delete|hold|release)\b", p.stderr):
            assert re.search(rf"\b{word}\b", text), (name, word)


def config_params(srcdir, mv):
    """(section, name, default or None) of params[] in common/config.c, the
    directory macros replaced by the configured directories."""
    src = (srcdir / "common" / "config.c").read_text()
    start = src.index("params[] = {")
    table = src[start:src.index("\n};", start)]
    dirs = {"RUNSTATEDIR": mv["runstatedir"], "LOCALSTATEDIR": mv["localstatedir"],
            "SYSCONFDIR": mv["sysconfdir"]}
    out = []
    for sec, name, dflt in re.findall(
            r'\{\s*"(\w+)",\s*"(\w+)",\s*\w+,\s*OFF\([^)]*\),\s*(.*?)\s*\}', table, re.S):
        if dflt == "NULL":
            out.append((sec, name, None))
            continue
        parts = re.findall(r'"([^"]*)"|([A-Z]+)', dflt)
        out.append((sec, name, "".join(lit if not ident else dirs[ident]
                                       for lit, ident in parts)))
    assert len(out) > 50, "cannot read params[] of common/config.c"
    return out


def test_sample_config_lists_every_parameter(destdir, mv, srcdir):
    conf = under(destdir, mv["sysconfdir"]) / "spfgate" / "spfgate.conf"
    sample = conf.with_name("spfgate.conf.sample")
    assert conf.read_text() == sample.read_text()
    lines = sample.read_text().splitlines()
    found, section = {}, None
    for i, line in enumerate(lines):
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^(#?)(\w+) =(.*)$", line)
        if m and section:
            found.setdefault((section, m.group(2)), []).append(
                (m.group(1) == "#", m.group(3).strip(), i))
    for sec, name, dflt in config_params(srcdir, mv):
        where = found.get((sec, name))
        assert where and len(where) == 1, f"[{sec}] {name}: {where}"
        commented, value, i = where[0]
        block = []
        for j in range(i - 1, -1, -1):
            if not lines[j].startswith("#") or re.match(r"^#\w+ =", lines[j]):
                break
            block.insert(0, lines[j])
        assert any(b.startswith("# ") for b in block), f"[{sec}] {name}: no explanation"
        if commented:
            assert value == dflt, f"[{sec}] {name}: sample says {value!r}, default {dflt!r}"
        elif dflt is not None:
            assert f"Default: {dflt or 'none'}" in " ".join(block), \
                f"[{sec}] {name}: set to {value!r} without its default {dflt!r}"


def test_sample_config_passes_every_check(destdir, mv):
    conf = under(destdir, mv["sysconfdir"]) / "spfgate" / "spfgate.conf"
    sbin, bin_ = under(destdir, mv["sbindir"]), under(destdir, mv["bindir"])
    for prog in [sbin / d for d in DAEMONS] + [bin_ / "spfgate-queue", bin_ / "spfgate-policy"]:
        p = run([str(prog), "-t", "-c", str(conf)])
        assert p.returncode == 0, f"{prog.name}: {p.stderr}"


def test_reinstall_keeps_the_configuration(builddir, mv, tmp_path):
    d = tmp_path / "destdir"
    install(builddir, d)
    conf = under(d, mv["sysconfdir"]) / "spfgate" / "spfgate.conf"
    sample = conf.with_name("spfgate.conf.sample")
    edited = conf.read_text().replace("#dry_run = off", "dry_run = on")
    assert edited != sample.read_text()
    conf.write_text(edited)
    install(builddir, d)
    assert conf.read_text() == edited
    assert sample.exists()
    # uninstall takes everything but the administrator's file
    p = run(["make", "-C", str(builddir), "uninstall", f"DESTDIR={d}"])
    assert p.returncode == 0, p.stderr
    left = [f for f in d.rglob("*") if f.is_file()]
    assert left == [conf], left


def unit_root(destdir, tmp_path):
    """A root for systemd-analyze: this machine's units (for sysinit.target
    and the like), the installed tree over them, /bin/kill for ExecReload."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system",
                    symlinks=True)
    shutil.copytree(destdir, root, symlinks=True, dirs_exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2(shutil.which("kill", path="/bin:/usr/bin"), root / "bin" / "kill")
    return root


def test_units_verify(destdir, mv, tmp_path):
    need("systemd-analyze")
    unitdir = under(destdir, mv["systemdsystemunitdir"])
    for u in UNITS:
        assert (unitdir / u).is_file(), u
    root = unit_root(destdir, tmp_path)
    env = dict(os.environ, MANPATH=str(under(root, mv["mandir"])))
    for u in UNITS:
        p = run(["systemd-analyze", "verify", f"--root={root}", u], env=env)
        assert p.returncode == 0 and p.stdout == "" and p.stderr == "", \
            f"{u}: {p.stdout}{p.stderr}"


def unit_settings(path):
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(\w+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def test_units_content(destdir, mv):
    unitdir = under(destdir, mv["systemdsystemunitdir"])
    for d in DAEMONS:
        s = unit_settings(unitdir / f"spfgate-{d}.service")
        assert s["ExecStart"] == [f"{mv['sbindir']}/{d}"], s["ExecStart"]
        assert s["ExecReload"][-1] == "+/bin/kill -HUP $MAINPID"
        assert set(s["CapabilityBoundingSet"][0].split()) == CAPS[d], d
        assert s["Type"] == ["exec"] and "User" not in s      # it drops root itself
        assert s["RuntimeDirectory"] == ["spfgate"]
        assert s["RuntimeDirectoryPreserve"] == ["yes"]       # shared by all three
        assert s["PartOf"] == ["spfgate.target"]
        for key in ("NoNewPrivileges", "PrivateTmp", "ProtectKernelTunables",
                    "ProtectControlGroups", "LockPersonality", "MemoryDenyWriteExecute"):
            assert s[key] == ["yes"], (d, key)
        assert s["ProtectSystem"] == ["strict"]
        assert s["SystemCallFilter"][0] == "@system-service"
    deliverd = unit_settings(unitdir / "spfgate-deliverd.service")
    assert deliverd["ReadWritePaths"] == [
        f"{mv['localstatedir']}/spool/spfgate -{mv['localstatedir']}/mail"]
    relayd = unit_settings(unitdir / "spfgate-relayd.service")
    for dep in ("spfgate-deliverd.service", "spfgate-filterd.service"):
        assert dep in relayd["Wants"][0].split() and dep in relayd["After"][0].split()
    target = unit_settings(unitdir / "spfgate.target")
    assert set(target["Wants"][0].split()) == set(UNITS[:3])


def test_units_exposure(destdir, mv, tmp_path):
    need("systemd-analyze")
    root = unit_root(destdir, tmp_path)
    for u in UNITS[:3]:
        p = run(["systemd-analyze", "security", "--offline=true", f"--root={root}", u])
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout)
        assert m, p.stdout + p.stderr
        print(f"{u}: exposure {m.group(1)}")
        assert float(m.group(1)) <= EXPOSURE_MAX, p.stdout


def test_sysusers_and_tmpfiles(destdir, mv, tmp_path):
    need("systemd-sysusers")
    need("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "group").write_text("root:x:0:\nmail:x:8:\n")    # as on Debian
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    for var in ("sysusersdir", "tmpfilesdir"):
        src = under(destdir, mv[var]) / "spfgate.conf"
        assert src.is_file(), src
        dst = under(root, mv[var]) / "spfgate.conf"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)

    p = run(["systemd-sysusers", f"--root={root}"])
    assert p.returncode == 0 and "Failed" not in p.stderr, p.stderr
    passwd = {f[0]: f for f in (l.split(":") for l in (root / "etc/passwd").read_text().splitlines())}
    group = {f[0]: f for f in (l.split(":") for l in (root / "etc/group").read_text().splitlines())}
    gid = group["spfgate"][2]
    for u in ("spfgate-relayd", "spfgate-filterd", "spfgate-deliverd"):
        assert passwd[u][3] == gid, passwd[u]          # primary group spfgate
        assert passwd[u][6] == "/usr/sbin/nologin"
    assert group["mail"][2] == "8"
    assert group["mail"][3].split(",") == ["spfgate-deliverd"]

    p = run(["systemd-tmpfiles", "--create", f"--root={root}"])
    assert p.returncode == 0 and p.stderr == "", p.stderr
    spool = under(root, mv["localstatedir"]) / "spool" / "spfgate"
    st = spool.stat()
    assert oct(st.st_mode & 0o7777) == "0o700"
    assert str(st.st_uid) == passwd["spfgate-deliverd"][2] and str(st.st_gid) == gid


def test_distcheck(srcdir, tmp_path):
    """The tarball builds, passes make check and installs, from a build
    tree of its own (a few minutes at most: two cores)."""
    if not (srcdir / "configure").exists():
        pytest.fail(f"{srcdir}/configure is missing: run autoreconf -fi")
    build = tmp_path / "build"
    build.mkdir()
    t0 = time.monotonic()
    p = run([str(srcdir / "configure"), "--enable-werror"], cwd=build, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    p = run(["make", "-j2", "distcheck"], cwd=build, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "archives ready for distribution" in out, out[-5000:]
    assert re.search(r"^PASS: tests/conformance/rfc7208\.py", out, re.M), \
        "the conformance suite did not run under distcheck"
    print(f"make distcheck: {time.monotonic() - t0:.0f} s")
