#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Sends malformed USB/IP input to a real drowse-emu over TCP and checks that each bad peer gets a
clear log line and a closed connection, while a well-behaved client keeps full service.

usage: hostile-client.py /path/to/drowse-emu
"""

import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

VERSION = 0x0111
OP_REQ_DEVLIST, OP_REP_DEVLIST = 0x8005, 0x0005
OP_REQ_IMPORT, OP_REP_IMPORT = 0x8003, 0x0003
CMD_SUBMIT, CMD_UNLINK, RET_SUBMIT, RET_UNLINK = 1, 2, 3, 4


def op_common(code, status=0, version=VERSION):
    return struct.pack(">HHI", version, code, status)


def cmd_submit(seqnum, ep, direction, length, setup=b"\0" * 8, flags=0, npackets=0, start_frame=0,
               interval=0, devid=0x10001):
    return struct.pack(">IIIIIIiiii", CMD_SUBMIT, seqnum, devid, direction, ep, flags, length, start_frame,
                       npackets, interval) + setup


def cmd_unlink(seqnum, victim):
    return struct.pack(">IIIIII", CMD_UNLINK, seqnum, 0x10001, 0, 0, victim) + b"\0" * 24


def get_descriptor_setup(dtype, index, length):
    return struct.pack("<BBHHH", 0x80, 6, (dtype << 8) | index, 0, length)


class Emulator:
    def __init__(self, binary, workdir):
        self.port = free_port()
        self.log_path = os.path.join(workdir, "emu.log")
        self.log = open(self.log_path, "w")
        img = os.path.join(workdir, "disk.img")
        self.proc = subprocess.Popen(
            [binary, "--disk", img + ",size=16M,serial=HOSTILE1", "--listen", "127.0.0.1:%d" % self.port],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("drowse-emu did not start listening:\n" + open(self.log_path).read())

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def log_text(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def stop(self):
        """SIGTERM must be a clean exit: status 0, and no sanitizer or leak report."""
        self.proc.terminate()
        return self.proc.wait(timeout=30)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def closed_by_server(sock, timeout=5.0):
    """True once the server has closed the connection (EOF or reset), reading and dropping any reply."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def import_device(emu, busid=b"1-1"):
    s = emu.connect()
    s.sendall(op_common(OP_REQ_IMPORT) + busid.ljust(32, b"\0"))
    hdr = recv_exact(s, 8)
    version, code, status = struct.unpack(">HHI", hdr)
    assert (version, code, status) == (VERSION, OP_REP_IMPORT, 0), (version, code, status)
    recv_exact(s, 312)
    return s


def good_client_works(emu):
    """A well-behaved client: list, import, read the device descriptor, release."""
    s = emu.connect()
    s.sendall(op_common(OP_REQ_DEVLIST))
    version, code, status = struct.unpack(">HHI", recv_exact(s, 8))
    assert (version, code, status) == (VERSION, OP_REP_DEVLIST, 0)
    (ndev,) = struct.unpack(">I", recv_exact(s, 4))
    assert ndev == 1, ndev
    s.close()

    s = import_device(emu)
    s.sendall(cmd_submit(1, 0, 1, 18, get_descriptor_setup(1, 0, 18)))
    reply = recv_exact(s, 48)
    command, seqnum, _, _, _, status, actual = struct.unpack(">IIIIIiI", reply[:28])
    assert (command, seqnum, status, actual) == (RET_SUBMIT, 1, 0, 18), (command, seqnum, status, actual)
    desc = recv_exact(s, 18)
    assert desc[0] == 18 and desc[1] == 1, desc
    s.close()
    return True


# Each case: (name, bytes to send after connecting or a function(sock), phase, expected log fragment)
def urb_phase(payload):
    def run(emu):
        s = import_device(emu)
        s.sendall(payload)
        return s
    return run


def op_phase(payload):
    def run(emu):
        s = emu.connect()
        s.sendall(payload)
        return s
    return run


def op_phase_then_eof(payload):
    def run(emu):
        s = emu.connect()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return s
    return run


def slowloris(emu):
    s = emu.connect()
    s.sendall(op_common(OP_REQ_IMPORT)[:3])  # and then nothing, ever
    return s


def replayed_seqnum(emu):
    s = import_device(emu)
    # An interrupt-less bulk IN that waits (no CBW yet), then the same seqnum again.
    s.sendall(cmd_submit(1, 0, 1, 18, get_descriptor_setup(1, 0, 18)))
    recv_exact(s, 48 + 18)
    s.sendall(cmd_submit(7, 0, 1, 18, get_descriptor_setup(2, 0, 9)))
    recv_exact(s, 48 + 9)
    # Configure, then park a bulk-IN URB and reuse its seqnum.
    s.sendall(cmd_submit(8, 0, 0, 0, struct.pack("<BBHHH", 0, 9, 1, 0, 0)))
    recv_exact(s, 48)
    s.sendall(cmd_submit(9, 1, 1, 512, flags=0x200))
    s.sendall(cmd_submit(9, 1, 1, 512, flags=0x200))
    return s


CASES = [
    ("truncated management header", op_phase_then_eof(op_common(OP_REQ_DEVLIST)[:5]), "middle of a PDU"),
    ("wrong protocol version", op_phase(op_common(OP_REQ_DEVLIST, version=0x0106)), "bad management request"),
    ("unknown management code", op_phase(op_common(0x8099)), "bad management request"),
    ("import of unknown busid", op_phase(op_common(OP_REQ_IMPORT) + b"9-9".ljust(32, b"\0")), "unknown device"),
    ("unterminated busid", op_phase(op_common(OP_REQ_IMPORT) + b"A" * 32), "bad import request"),
    ("unknown URB command", urb_phase(struct.pack(">IIIII", 9, 1, 0, 0, 0) + b"\0" * 28), "malformed USB/IP header"),
    ("RET_SUBMIT from a client", urb_phase(struct.pack(">IIIII", RET_SUBMIT, 1, 0, 0, 0) + b"\0" * 28),
     "only a server sends that"),
    ("huge transfer length", urb_phase(cmd_submit(1, 1, 0, 0x7fffffff)), "malformed USB/IP header"),
    ("negative transfer length", urb_phase(cmd_submit(1, 1, 0, -1)), "malformed USB/IP header"),
    ("direction out of range", urb_phase(cmd_submit(1, 0, 7, 0)), "malformed USB/IP header"),
    ("endpoint out of range", urb_phase(cmd_submit(1, 99, 1, 0)), "malformed USB/IP header"),
    ("ISO packet count out of range", urb_phase(cmd_submit(1, 1, 1, 64, npackets=5000)), "malformed USB/IP header"),
    ("ISO transfer to a bulk endpoint", urb_phase(cmd_submit(1, 1, 1, 64, npackets=2, flags=0x200) + b"\0" * 32),
     "isochronous"),
    ("truncated URB header then close", urb_phase(cmd_submit(1, 0, 1, 18)[:20]), "middle of a PDU"),
    ("replayed seqnum", replayed_seqnum, "reuses seqnum"),
    ("slowloris management request", slowloris, "no complete management request"),
]


def main():
    binary = sys.argv[1]
    failures = 0
    with tempfile.TemporaryDirectory() as workdir:
        emu = Emulator(binary, workdir)
        try:
            good_client_works(emu)
            rss_before = emu.rss_kib()
            for name, run, fragment in CASES:
                before = emu.log_text()
                sock = run(emu)
                if name == "truncated URB header then close":
                    sock.close()
                    time.sleep(0.2)
                    closed = True
                else:
                    closed = closed_by_server(sock, timeout=15 if "slowloris" in name else 5)
                    sock.close()
                new_log = emu.log_text()[len(before):]
                ok = closed and fragment in new_log and emu.alive()
                # The good client must keep full service after every bad one.
                ok = ok and good_client_works(emu)
                print("%-34s %s" % (name, "ok" if ok else "FAILED"))
                if not ok:
                    failures += 1
                    print("  closed=%s alive=%s log since case:\n%s" % (closed, emu.alive(), new_log))

            # 200 idle connections at once: a good client is still served.
            socks = [emu.connect() for _ in range(200)]
            ok = good_client_works(emu)
            # Past the limit of 256 connections, new ones are refused with a log line.
            before = emu.log_text()
            extra = [emu.connect() for _ in range(80)]
            ok = ok and all(closed_by_server(s, timeout=5) for s in extra[-20:])
            ok = ok and "already 256 connections" in emu.log_text()[len(before):]
            for s in socks + extra:
                s.close()
            time.sleep(0.5)
            ok = ok and good_client_works(emu)
            print("%-34s %s" % ("connection limit", "ok" if ok else "FAILED"))
            failures += 0 if ok else 1

            rss_after = emu.rss_kib()
            print("RSS before the hostile cases %d KiB, after %d KiB" % (rss_before, rss_after))
            if rss_after > rss_before + 16 * 1024:
                print("memory grew by more than 16 MiB")
                failures += 1
        finally:
            alive = emu.alive()
            rc = emu.stop()
            log = emu.log_text()
            if not alive:
                print("drowse-emu died:\n" + log)
                failures += 1
            elif rc != 0 or "Sanitizer" in log or "runtime error" in log:
                print("drowse-emu did not exit cleanly on SIGTERM (status %d):\n%s" % (rc, log[-4000:]))
                failures += 1
    total = len(CASES) + 1
    print("%d passed, %d failed" % (total - failures, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
