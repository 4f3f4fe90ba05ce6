"""benchutil: what every benchmark script here needs to run processes
and read the machine.

Errors (BenchError, which a script turns into a message and exit 1),
progress on stderr (note) and the report on stdout (say); every process a
script starts is registered in PROCS and stopped by its PID, last first,
however the script ends; CPU time of process trees and of the whole
machine from /proc, to tell our load from other people's; the disks'
writes and flushes; small socket helpers (free loopback ports, waiting
until a server accepts).
"""
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time


class BenchError(Exception):
    pass


def say(*a):
    print(*a, flush=True)


def note(*a):
    """Progress, to stderr so that stdout is the report."""
    print("#", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# processes: every one is remembered and stopped by its PID

class Procs:
    def __init__(self):
        self.stoppers = []          # (name, callable), stopped last first

    def add(self, name, stop):
        self.stoppers.append((name, stop))

    def stop_all(self):
        while self.stoppers:
            name, stop = self.stoppers.pop()
            try:
                stop()
            except Exception as e:      # keep stopping the others
                note(f"stopping {name}: {e}")


PROCS = Procs()


def stop_popen(p, name, timeout=15):
    """SIGTERM, then SIGKILL, to one process we started, by its PID."""
    if p.poll() is not None:
        return
    os.kill(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        note(f"{name} (pid {p.pid}) ignored SIGTERM; SIGKILL")
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def proc_status(pid):
    d = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            d[k] = v.strip()
    return d


def kib(value):
    return int(value.split()[0])


def socket_fds(pid):
    """How many sockets a process holds open (one per milter session,
    plus its listener and DNS sockets)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_connectable(addr, proc, name, timeout=30):
    """Until a stream connection to addr (path or (host, port)) works."""
    deadline = time.monotonic() + timeout
    fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{name} exited with status {proc.returncode}")
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(addr)
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{name} does not accept connections on {addr}")


# ---------------------------------------------------------------------------
# CPU time: of process trees, of the whole machine

def proc_table():
    """{pid: (ppid, CPU seconds of it and of its reaped children)}"""
    tab = {}
    tck = os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        # utime, stime, cutime, cstime
        tab[int(name)] = (int(fields[1]),
                          sum(int(x) for x in fields[11:15]) / tck)
    return tab


def tree_cpu(tab, root):
    """CPU seconds of root and everything below it, reaped or alive."""
    kids = {}
    for pid, (ppid, _) in tab.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [root], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        if p in tab:
            total += tab[p][1]
        todo += kids.get(p, [])
    return total


def machine_busy(irq_only=False):
    """CPU seconds all CPUs spent not idle (or only in interrupts), from
    /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is in user)
    if irq_only:
        return (v[5] + v[6]) / os.sysconf("SC_CLK_TCK")
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait, busy_max=25.0):
    """Wait (at most max_wait seconds) for one second in which the
    machine's CPUs are mostly idle: other people's bursts (a test suite,
    a build) then fall between our runs rather than into them.  Returns
    the seconds waited."""
    t0 = time.monotonic()
    ncpu = os.cpu_count() or 1
    while True:
        b0, w0 = machine_busy(), time.monotonic()
        time.sleep(1)
        busy = 100 * (machine_busy() - b0) / ((time.monotonic() - w0) * ncpu)
        if busy <= busy_max or time.monotonic() - t0 >= max_wait:
            return time.monotonic() - t0


# ---------------------------------------------------------------------------
# the disks

def disk_writes():
    """(completed writes, flushes) of the block devices, /proc/diskstats."""
    w = fl = 0
    try:
        for line in open("/proc/diskstats"):
            f = line.split()
            name = f[2]
            if re.match(r"^(loop|ram|dm-|md)", name) or re.search(r"\d$", name) \
                    and re.match(r"^(sd|vd|xvd|hd)[a-z]+\d+$", name):
                continue            # partitions and virtual devices
            if re.match(r"^nvme\d+n\d+p\d+$", name):
                continue
            w += int(f[7])
            if len(f) > 18:
                fl += int(f[18])
    except OSError:
        pass
    return w, fl


# ---------------------------------------------------------------------------
# SMTP replies, the machine

def smtp_reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise BenchError("SMTP server closed the connection")
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return int(lines[-1][:3]), "\n".join(lines)


def machine():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}"
