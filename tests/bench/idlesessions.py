"""idlesessions: many idle SMTP sessions held open by one process.

    h = IdleSessions(("127.0.0.1", port), sources)
    h.open(10000, timeout=300)   # connect, read the 220 greeting, stay idle
    h.opened, h.failures         # sessions greeted; Counter of what failed
    h.quit(timeout=120)          # QUIT on every one; -> how many said 221
    h.close()

Connections are spread round-robin over the loopback source addresses
given (so that a per-client session limit can stay a real limit) and are
made non-blocking, at most `inflight` at a time awaiting their greeting,
watched with epoll through selectors: select() cannot watch a descriptor
above 1023.  Nothing is retried: a connection that fails is counted under
its reason (the errno name, "closed before the greeting", or the first
line of a non-220 reply) and the next one is tried.

raise_fd_limit(n) raises this process's RLIMIT_NOFILE (soft and hard) to
at least n where the system allows it, for it and for every process it
starts afterwards.
"""
import collections
import errno
import resource
import selectors
import socket
import time

# Linux: bind() takes the address only and leaves the port to connect(),
# so that ports are unique per 4-tuple, not per source address
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def raise_fd_limit(n):
    """Soft and hard RLIMIT_NOFILE to at least n if allowed (raising the
    hard limit takes CAP_SYS_RESOURCE, and n <= fs.nr_open); otherwise the
    soft limit to the hard one.  Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return soft
    with open("/proc/sys/fs/nr_open") as f:
        ceiling = int(f.read())
    want = min(max(n, hard), ceiling)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def sources_for(n, per_source):
    """Loopback source addresses 127.0.1.1, 127.0.1.2, ... enough for n
    sessions at most per_source each."""
    k = -(-n // per_source)
    if k > 250 * 250:
        raise ValueError("too many source addresses")
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(k)]


def _reply_done(buf):
    """(code, first line) once buf holds a whole reply, else None."""
    lines = buf.split(b"\r\n")
    for ln in lines[:-1]:
        if len(ln) < 4 or ln[3:4] != b"-":
            try:
                code = int(ln[:3])
            except ValueError:
                code = 0
            return code, lines[0].decode("latin-1")[:80]
    return None


class IdleSessions:
    def __init__(self, addr, sources, inflight=256):
        self.addr = addr
        self.sources = sources
        self.inflight = inflight
        self.idle = []                      # greeted sockets, unregistered
        self.failures = collections.Counter()
        self.greet_ms = []                  # connect -> 220, per session
        self.open_s = None

    @property
    def opened(self):
        return len(self.idle)

    def _fail(self, sel, s, why):
        self.failures[why] += 1
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()

    def open(self, n, timeout=300):
        """Until n connections were tried and each was greeted or failed,
        or timeout seconds passed (the rest count as 'no greeting in
        time')."""
        sel = selectors.DefaultSelector()
        pending = {}                        # socket -> [buffer, started]
        tried = 0
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            while (tried < n or pending) and time.monotonic() < deadline:
                while tried < n and len(pending) < self.inflight:
                    src = self.sources[tried % len(self.sources)]
                    tried += 1
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    try:
                        s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                        s.bind((src, 0))
                        s.setblocking(False)
                        rc = s.connect_ex(self.addr)
                    except OSError as e:
                        self.failures[errno.errorcode.get(e.errno, str(e))] += 1
                        s.close()
                        continue
                    if rc not in (0, errno.EINPROGRESS):
                        self.failures[errno.errorcode.get(rc, str(rc))] += 1
                        s.close()
                        continue
                    sel.register(s, selectors.EVENT_READ)
                    pending[s] = [b"", time.monotonic()]
                for key, _ in sel.select(timeout=0.2):
                    s = key.fileobj
                    entry = pending[s]
                    try:
                        data = s.recv(1024)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        del pending[s]
                        self._fail(sel, s, errno.errorcode.get(e.errno, str(e)))
                        continue
                    if not data:
                        del pending[s]
                        self._fail(sel, s, "closed before the greeting")
                        continue
                    entry[0] += data
                    done = _reply_done(entry[0])
                    if done is None:
                        continue
                    del pending[s]
                    if done[0] != 220:
                        self._fail(sel, s, done[1])
                        continue
                    sel.unregister(s)
                    self.idle.append(s)
                    self.greet_ms.append(1000 * (time.monotonic() - entry[1]))
        finally:
            for s in list(pending):
                self._fail(sel, s, "no greeting in time")
            if tried < n:
                self.failures["not tried: out of time"] += n - tried
            sel.close()
        self.open_s = time.monotonic() - t0
        return self.opened

    def quit(self, timeout=120):
        """QUIT on every idle session; the number that answered 221."""
        sel = selectors.DefaultSelector()
        bufs = {}
        ok = 0
        for s in self.idle:
            try:
                s.send(b"QUIT\r\n")
            except OSError:
                continue
            sel.register(s, selectors.EVENT_READ)
            bufs[s] = b""
        deadline = time.monotonic() + timeout
        try:
            while bufs and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.2):
                    s = key.fileobj
                    try:
                        data = s.recv(1024)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    bufs[s] += data
                    done = _reply_done(bufs[s])
                    if done is None and data:
                        continue
                    if done is not None and done[0] == 221:
                        ok += 1
                    sel.unregister(s)
                    del bufs[s]
        finally:
            sel.close()
        return ok

    def close(self):
        for s in self.idle:
            s.close()
        self.idle = []
