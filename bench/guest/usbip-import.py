#!/usr/bin/env python3
"""Import USB/IP devices from one server with N clients at once, the way `usbip attach` does it.

Each client thread opens its own TCP connection, sends OP_REQ_IMPORT for its bus ID, reads the
OP_REP_IMPORT and hands the socket to vhci_hcd's attach file, exactly like usbip attach. The one
difference: the free port is looked up and claimed under a lock, with a fresh read of vhci's status
on every try. Stock `usbip attach` (tools/usb/usbip/src/usbip_attach.c, import_device()) retries an
EBUSY attach with the port list it read once, so two concurrent attaches that pick the same port
leave one spinning forever; this client only exists to measure the server under concurrent
clients without that tool bug.

usage: usbip-import.py HOST PORT BUSID...    prints one line per bus ID: busid port seconds
"""
import fcntl
import glob
import socket
import struct
import sys
import threading
import time

VHCI = "/sys/devices/platform/vhci_hcd.0"
USBIP_VERSION = 0x0111
OP_REQ_IMPORT, OP_REP_IMPORT = 0x8003, 0x0003
USB_SPEED_SUPER = 5
REPLY_SIZE = 8 + 256 + 32 + 3 * 4 + 3 * 2 + 6  # op_common + struct usbip_usb_device


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"server closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def free_port(speed):
    hub = "ss" if speed >= USB_SPEED_SUPER else "hs"
    for path in sorted(glob.glob(VHCI + "/status*")):
        for line in open(path).read().splitlines()[1:]:
            f = line.split()
            if len(f) >= 3 and f[0] == hub and int(f[2]) == 4:  # VDEV_ST_NULL
                return int(f[1])
    raise RuntimeError(f"no free {hub} port on vhci_hcd")


lock_fd = open("/tmp/usbip-import.lock", "w")


def attach(sock, devid, speed):
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        for _ in range(100):
            port = free_port(speed)
            try:
                with open(VHCI + "/attach", "w") as f:
                    f.write(f"{port} {sock.fileno()} {devid} {speed}")
                return port
            except OSError as e:
                if e.errno != 16:  # EBUSY: taken meanwhile by someone not using this lock
                    raise
        raise RuntimeError("vhci_hcd stayed busy")
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)


def import_one(host, port, busid, start, results):
    start.wait()
    t0 = time.monotonic()
    with socket.create_connection((host, port)) as s:
        s.sendall(struct.pack(">HHI", USBIP_VERSION, OP_REQ_IMPORT, 0) + busid.encode().ljust(32, b"\0"))
        reply = recv_exact(s, REPLY_SIZE)
        _, code, status = struct.unpack_from(">HHI", reply, 0)
        if code != OP_REP_IMPORT or status != 0:
            raise RuntimeError(f"{busid}: import refused (code {code:#x}, status {status})")
        busnum, devnum, speed = struct.unpack_from(">III", reply, 8 + 256 + 32)
        vport = attach(s, (busnum << 16) | devnum, speed)
    results[busid] = (vport, time.monotonic() - t0)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    host, port, busids = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    start, results, errors = threading.Barrier(len(busids)), {}, []

    def run(b):
        try:
            import_one(host, port, b, start, results)
        except Exception as e:  # reported below, and the exit code says so
            errors.append(f"{b}: {e}")

    threads = [threading.Thread(target=run, args=(b,)) for b in busids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for b in busids:
        if b in results:
            print(f"{b} {results[b][0]} {results[b][1]:.3f}")
    for e in errors:
        print(f"usbip-import: {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
