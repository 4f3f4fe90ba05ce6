"""A milter written for the tests: well behaved, or broken on purpose.

BadMilter(sockpath, mode) listens on a unix socket in a thread.  The first
connection behaves as `mode` says; every later one is a well-behaved milter
(continue everywhere), so a test can check that the next session works.
Every packet received is recorded in .received (list of (cmd, data) per
connection) for the tests to look at.

Modes: good, silent (never answers OPTNEG), slow (answers OPTNEG, never
CONNECT), garbage (junk instead of the OPTNEG reply), badsize (CONTINUE
with 4 bytes of data), oversized (announces a 1 MiB packet), unknown
(reply 'Z'), midreply (half a reply, then close), unnegotiated (CHGFROM at
EOM without SMFIF_CHGFROM), badcode (SMFIR_REPLYCODE "250 ok"),
closed (accept, then close at once), mods (every modification at EOM),
reply (a multi-line SMFIR_REPLYCODE at MAIL), skip (SMFIR_SKIP after the
first body chunk), progress (SMFIR_PROGRESS for a while before EOM's
answer), macros (asks for its own macro lists), noreply (NR_* steps),
rejectconn (REJECT at CONNECT), leadspc (SMFIP_HDR_LEADSPC), late (REJECT
at CONNECT after 1.5 s), connfail (SMFIR_CONN_FAIL at CONNECT).
"""
import os
import socket
import struct
import threading
import time

ALL_ACTIONS = 0x1FF
SMFIP_NOEOH, SMFIP_NR_HDR, SMFIP_SKIP = 0x40, 0x80, 0x400
SMFIP_NR_CONN, SMFIP_NR_HELO, SMFIP_NR_MAIL, SMFIP_NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
SMFIP_NR_DATA, SMFIP_NR_EOH, SMFIP_NR_BODY = 0x10000, 0x40000, 0x80000
SMFIP_HDR_LEADSPC = 0x100000
NO_REPLY = {"C": SMFIP_NR_CONN, "H": SMFIP_NR_HELO, "M": SMFIP_NR_MAIL,
            "R": SMFIP_NR_RCPT, "T": SMFIP_NR_DATA, "L": SMFIP_NR_HDR,
            "N": SMFIP_NR_EOH, "B": SMFIP_NR_BODY}


def pkt(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd.encode() + data


def z(*strings):
    return b"".join(s.encode() + b"\0" for s in strings)


class BadMilter:
    def __init__(self, path, mode="good"):
        self.path, self.mode = path, mode
        self.received = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.nconn = 0
        self.threads = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=10)
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            mode = self.mode if self.nconn == 0 else "good"
            self.nconn += 1
            rec = []
            self.received.append(rec)
            t = threading.Thread(target=self._conn, args=(c, mode, rec), daemon=True)
            self.threads.append(t)
            t.start()

    def finished(self, timeout=10):
        """Wait until every connection so far has ended (peer closed);
        then .received is complete."""
        deadline = time.monotonic() + timeout
        for t in list(self.threads):
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "milter connection still open"

    @staticmethod
    def _recv(c, n):
        buf = b""
        while len(buf) < n:
            d = c.recv(n - len(buf))
            if not d:
                raise EOFError
            buf += d
        return buf

    def _conn(self, c, mode, rec):
        c.settimeout(15)   # bounds every thread
        try:
            self._talk(c, mode, rec)
        except (EOFError, OSError):
            pass
        finally:
            c.close()

    def _drain(self, c):
        while c.recv(4096):
            pass

    def _talk(self, c, mode, rec):
        proto = 0
        if mode == "noreply":
            proto = sum(NO_REPLY.values())
        elif mode == "skip":
            proto = SMFIP_SKIP
        elif mode == "leadspc":
            proto = SMFIP_HDR_LEADSPC
        actions = 0x1 if mode == "unnegotiated" else ALL_ACTIONS
        while True:
            (n,) = struct.unpack(">I", self._recv(c, 4))
            body = self._recv(c, n)
            cmd, data = chr(body[0]), body[1:]
            rec.append((cmd, data))
            if cmd == "O":
                if mode == "silent":
                    self._drain(c)
                    return
                if mode == "garbage":
                    c.sendall(b"HTTP/1.0 200 OK\r\n\r\ngarbage")
                    self._drain(c)
                    return
                reply = struct.pack(">III", 6, actions, proto)
                if mode == "macros":
                    reply += struct.pack(">I", 0) + z("j {client_addr} {nosuch}")
                    reply += struct.pack(">I", 2) + z("{mail_addr}")
                c.sendall(pkt("O", reply))
                continue
            if cmd in ("D", "A"):
                continue
            if cmd in ("Q", "K"):
                return
            if proto & NO_REPLY.get(cmd, 0):
                continue
            if cmd == "C":
                if mode == "slow":
                    self._drain(c)
                    return
                if mode == "badsize":
                    c.sendall(pkt("c", b"\0\0\0\0"))
                    continue
                if mode == "oversized":
                    c.sendall(struct.pack(">I", 1 << 20) + b"c" + b"x" * 1000)
                    self._drain(c)
                    return
                if mode == "unknown":
                    c.sendall(pkt("Z"))
                    continue
                if mode == "midreply":
                    c.sendall(pkt("y", z("550 5.7.1 no"))[:7])
                    return
                if mode == "closed":
                    return
                if mode == "late":   # answers after the client's 1 s timeout
                    time.sleep(1.5)
                    c.sendall(pkt("r"))
                    self._drain(c)
                    return
                if mode == "connfail":
                    c.sendall(pkt("f"))
                    continue
                if mode == "rejectconn":
                    c.sendall(pkt("r"))
                    continue
            if cmd == "M" and mode == "reply":
                c.sendall(pkt("y", z("550-5.7.1 first line\r\n550 5.7.1 100%% sure")))
                continue
            if cmd == "M" and mode == "badcode":
                c.sendall(pkt("y", z("250 ok")))
                continue
            if cmd == "B" and mode == "skip":
                c.sendall(pkt("s"))
                continue
            if cmd == "E":
                if mode == "unnegotiated":
                    c.sendall(pkt("e", z("<x@example.test>")))
                if mode == "progress":
                    for _ in range(6):   # the milter's own pace, not test sync
                        time.sleep(0.4)
                        c.sendall(pkt("p"))
                if mode in ("mods", "leadspc"):
                    c.sendall(pkt("h", z("X-Added", "one\n\ttwo")))
                    c.sendall(pkt("i", struct.pack(">I", 0) + z("X-Top", " top")))
                    c.sendall(pkt("m", struct.pack(">I", 2) + z("Subject", "")))
                    c.sendall(pkt("m", struct.pack(">I", 1) + z("From", "<new@example.test>")))
                    c.sendall(pkt("e", z("<bounce@example.test>", "SIZE=10")))
                    c.sendall(pkt("+", z("<r1@example.test>")))
                    c.sendall(pkt("2", z("<r2@example.test>", "NOTIFY=NEVER")))
                    c.sendall(pkt("-", z("<bob@example.test>")))
                    c.sendall(pkt("b", b"new body\r\n"))
                    c.sendall(pkt("b", b"second chunk\r\n"))
                    c.sendall(pkt("q", z("held for review")))
            c.sendall(pkt("c"))
