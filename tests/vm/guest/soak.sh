#!/bin/bash
# Soak (issue #8): DROWSE_SOAK_CYCLES (default 1000) suspend/resume cycles of an emulated hub tree on a
# real kernel, with seeded random faults, drowsed applying its policy under valgrind and drowse-emu under
# ASan+UBSan (LeakSanitizer on). Each cycle: wait until the chosen disk behind the hub has runtime-suspended
# and drowse-emu saw its hub port suspended (PORT_SUSPEND), maybe inject a fault (drowsectl emu fault add,
# kind chosen by the seeded generator), maybe resume the keyboard by a key press (remote wakeup through the
# hub), then resume the disk by I/O: write a 4 KiB record with its SHA-256 (O_DIRECT, fsync) and read it
# back. Faults that make the kernel re-enumerate the disk (or unplug it) are recovered from by re-finding
# the disk by serial (and plugging it back); the write is retried until it is acknowledged. Every cycle has
# a time bound (no hang). At the end: every acknowledged record reads back intact, drowsed still answers
# (status, list --json), drowse-emu's counters agree with what the soak saw, both exit cleanly on SIGTERM,
# valgrind finds no error and no definite/indirect leak in drowsed, LeakSanitizer nothing in drowse-emu,
# and the kernel logged no oops, BUG or WARNING.
#
# Topology: hub0 (4 ports) with disk0 (port 2), kbd (port 3) and disk1 (port 4).
#
# Environment (run-guest --env):
#   DROWSE_SOAK_CYCLES       cycles (default 1000)
#   DROWSE_SOAK_SEED         seed of every random choice (default 8008)
#   DROWSE_SOAK_FAULT_P      probability of a fault before a cycle (default 0.3)
#   DROWSE_SOAK_KEY_P        probability of a key press (wakeup resume) in a cycle (default 0.5)
#   DROWSE_SOAK_CYCLE_LIMIT  seconds a cycle may take before the soak fails as hung (default 120)
#   DROWSE_SOAK_MAX_SECONDS  stop cycling after this long, then run every end check (default 0: no limit);
#                            the summary then says how many of the cycles ran
#   DROWSE_SOAK_DEADLINE     the same as a wall-clock time (seconds since the epoch; the guest's clock is
#                            the host's), for a run that must end by a given time. A file STOP in the log
#                            directory ($DROWSE_OUT/STOP) does the same at once.
#   DROWSE_VALGRIND_BUILD_DIR  a build without sanitizers with daemon/drowsed (default <build dir>-valgrind)
#   DROWSE_SOAK_VALGRIND     0: run drowsed from the main build, without valgrind (development only)
#
# Outputs in $DROWSE_OUT: soak-summary.txt (the one-line result), soak-cycles.tsv (one line per cycle),
# soak-result.json, valgrind-drowsed.txt, drowsed.log, emu.log, dmesg.txt.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

cycles=${DROWSE_SOAK_CYCLES:-1000}
seed=${DROWSE_SOAK_SEED:-8008}
use_valgrind=${DROWSE_SOAK_VALGRIND:-1}
plain=${DROWSE_VALGRIND_BUILD_DIR:-${DROWSE_BUILD_DIR%/}-valgrind}
emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
drowsectl=$DROWSE_BUILD_DIR/daemon/drowsectl
[[ -x $plain/daemon/drowsectl ]] && drowsectl=$plain/daemon/drowsectl # starts faster than the ASan one
if ((use_valgrind)); then
        drowsed=$plain/daemon/drowsed
        [[ -x $drowsed ]] || vm_fail "no drowsed without sanitizers at $drowsed (meson setup <build>-valgrind -Dman=disabled; or DROWSE_VALGRIND_BUILD_DIR)"
        command -v valgrind >/dev/null || vm_fail "valgrind is not installed"
else
        drowsed=$DROWSE_BUILD_DIR/daemon/drowsed
fi
work=/tmp/soak
esock=/run/soak-emu.ctl
dsock=/run/soak-drowsed.ctl
emu_pid='' drowsed_pid='' agent_pid=''
mkdir -p "$work/state"

cleanup() {
        [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null
        [[ -n $emu_pid ]] && kill -TERM "$emu_pid" 2>/dev/null
        [[ -n $drowsed_pid ]] && kill -TERM "$drowsed_pid" 2>/dev/null
        # shellcheck disable=SC2046
        kill $(jobs -p) 2>/dev/null
        return 0
}
trap cleanup EXIT

ctl() { "$drowsectl" --socket "$dsock" --emu-socket "$esock" "$@"; }

for m in vhci-hcd usb-storage sd_mod usbhid hid_generic evdev; do vm_modprobe "$m"; done
# usb-storage waits a second before scanning a new device by default; re-enumerations need not.
echo 0 >/sys/module/usb_storage/parameters/delay_use
# The kernel's ring buffer wraps long before 1,000 cycles are over: follow it into a file.
dmesg -w >"$work/kmsg.txt" 2>&1 &

# drowsed: short delays everywhere (the keyboard by a rule: HID is excluded by default), resume storms only
# far beyond what the soak does (the estimate is bounded by active time / delay, 600 a minute at 100 ms),
# but re-enumeration strikes as shipped: faults that make the kernel re-enumerate a suspended disk back it
# off, and the third quarantines it; the soak then releases it with drowsectl release.
cat >"$work/drowse.conf" <<'EOF'
[defaults]
delay-ms = 100
disk-delay-ms = 100

[rule keyboard]
match-serial = kbd
autosuspend = yes
delay-ms = 100

[protect]
storm-resumes-per-minute = 1000
storm-backoff = 2
quarantine-after = 3
re-enumerate-window = 5
sample-min-ms = 250
sample-max-ms = 2000
EOF
drowsed_cmd=("$drowsed" --config "$work/drowse.conf" --monitor kernel --no-bus --state-dir "$work/state"
        --control "$dsock")
if ((use_valgrind)); then
        valgrind --leak-check=full --show-leak-kinds=definite,indirect,possible \
                --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --track-fds=no \
                --log-file="$DROWSE_OUT/valgrind-drowsed.txt" "${drowsed_cmd[@]}" >"$DROWSE_OUT/drowsed.log" 2>&1 &
else
        "${drowsed_cmd[@]}" >"$DROWSE_OUT/drowsed.log" 2>&1 &
fi
drowsed_pid=$!
vm_wait_for 300 test -S "$dsock"
vm_log "drowsed up$( ((use_valgrind)) && echo " under valgrind") (pid $drowsed_pid)"

ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=16 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$emu" --attach --no-listen --control "$esock" --hub hub0,ports=4 \
        --disk "$work/d0.img,size=64M,serial=SOAK0,name=disk0,hub=hub0,port=2" \
        --keyboard kbd,hub=hub0,port=3 \
        --disk "$work/d1.img,size=64M,serial=SOAK1,name=disk1,hub=hub0,port=4" \
        >"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
kbd_node() {
        local s e u
        for s in /sys/bus/usb/devices/*/serial; do
                [[ $(<"$s") == kbd ]] && u=$(readlink -f "${s%/serial}")
        done
        [[ -n ${u:-} ]] || return 1
        for e in /sys/class/input/event*; do
                [[ $(readlink -f "$e/device") == "$u"/* ]] && return 0
        done
        return 1
}
vm_wait_for 120 vm_disk_of_serial SOAK0
vm_wait_for 60 vm_disk_of_serial SOAK1
vm_wait_for 60 kbd_node
ctl emu fault seed "$seed" >/dev/null
vm_log "topology up: disk0 $(vm_disk_of_serial SOAK0), disk1 $(vm_disk_of_serial SOAK1); $cycles cycles, seed $seed"

cat >"$work/soak.py" <<'EOF'
import hashlib, json, mmap, os, random, select, socket, struct, subprocess, sys, threading, time

env = os.environ
CYCLES = int(env.get("DROWSE_SOAK_CYCLES", "1000"))
SEED = int(env.get("DROWSE_SOAK_SEED", "8008"))
FAULT_P = float(env.get("DROWSE_SOAK_FAULT_P", "0.3"))
KEY_P = float(env.get("DROWSE_SOAK_KEY_P", "0.5"))
CYCLE_LIMIT = float(env.get("DROWSE_SOAK_CYCLE_LIMIT", "120"))
MAX_SECONDS = float(env.get("DROWSE_SOAK_MAX_SECONDS", "0"))
DEADLINE = float(env.get("DROWSE_SOAK_DEADLINE", "0"))
OUT = env["DROWSE_OUT"]
ESOCK, DSOCK, DROWSECTL = sys.argv[1], sys.argv[2], sys.argv[3]
DISKS = [("disk0", "SOAK0"), ("disk1", "SOAK1")]
REC = 4096
BASE = 1 << 20          # records from 1 MiB on: record i of a disk at BASE + i * REC

# (label, kind, target, parameters, phase, hits expected). Phases: "pre" strikes while the target is
# suspended, without the host doing anything (wait for it before resuming); "resume" at the next resume;
# "io" on the next commands; "key" needs a key press; "post" after the key press, at the keyboard's next
# suspend. Every kind here is one the kernel recovers from, if need be by re-enumerating the disk.
FAULTS = [
    ("resume-slow-15", "resume-slow", "disk", "ms=15", "resume", 1),
    ("resume-slow-300", "resume-slow", "disk", "ms=300", "resume", 1),
    ("resume-stuck", "resume-stuck", "disk", "", "resume", 1),
    ("resume-reset", "resume-reset", "disk", "", "resume", 1),
    ("resume-status-stall", "resume-status-stall", "disk", "", "resume", 1),
    ("resume-status-timeout", "resume-status-timeout", "disk", "", "resume", 1),
    ("not-ready", "not-ready", "disk", "", "resume", 1),
    ("unplug-resume", "unplug-resume", "disk", "", "resume", 1),
    ("io-latency", "io-latency", "disk", "ms=50 count=3", "io", 1),
    ("delay-completion", "delay-completion", "disk", "ms=100 count=4", "io", 1),
    ("phase-error", "phase-error", "disk", "", "io", 1),
    ("drop-completion", "drop-completion", "disk", "ep=0x81", "io", 1),
    ("wakeup-unarmed", "wakeup-unarmed", "disk", "delay=200", "pre", 1),
    ("unplug-suspended", "unplug-suspended", "disk", "", "pre", 1),
    ("over-current", "over-current", "disk", "", "pre", 1),
    ("wakeup-spurious", "wakeup-spurious", "kbd", "delay=300", "pre", 1),
    ("wakeup-storm", "wakeup-storm", "kbd", "n=3 interval=150", "pre", 3),
    ("wakeup-lost", "wakeup-lost", "kbd", "", "key", 1),
    ("remote-wakeup-stall", "remote-wakeup-stall", "kbd", "count=2", "post", 2),
]

t_start = time.monotonic()
def log(msg):
    print("[soak %7.1f] %s" % (time.monotonic() - t_start, msg), file=sys.stderr, flush=True)

class SoakFailure(Exception):
    pass

def fail(msg):
    raise SoakFailure(msg)

# --- control sockets (drowse-emu and drowsed speak the same request/answer shape) ---------------------
def req(path, text, timeout=60):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.send(text.encode())
        reply = s.recv(1 << 20).decode()
    finally:
        s.close()
    if not reply.startswith("ok\n"):
        fail("%s: request '%s' refused: %s" % (path, text, reply.strip()))
    return reply[3:]

def emu(text):
    return req(ESOCK, text)

def emu_show(name):
    return json.loads(emu("show " + name))

def drowsectl(*args):
    p = subprocess.run([DROWSECTL, "--socket", DSOCK, "--emu-socket", ESOCK, *args], capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        fail("drowsectl %s: exit %d: %s" % (" ".join(args), p.returncode, p.stderr.strip()))
    return p.stdout

# --- sysfs -------------------------------------------------------------------------------------------
def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None

usb_cache = {}
def usbdev(serial):
    p = usb_cache.get(serial)
    if p and read(p + "/serial") == serial:
        return p
    base = "/sys/bus/usb/devices"
    for d in os.listdir(base):
        if read("%s/%s/serial" % (base, d)) == serial:
            usb_cache[serial] = os.path.realpath("%s/%s" % (base, d))
            return usb_cache[serial]
    return None

def disk_of(serial):
    u = usbdev(serial)
    if not u:
        return None
    for b in os.listdir("/sys/block"):
        if not b.startswith("sd"):
            continue
        dev = os.path.realpath("/sys/block/%s/device" % b)
        if dev.startswith(u + "/") and os.path.exists("/dev/" + b) and read(dev + "/state") == "running" \
                and (read("/sys/block/%s/size" % b) or "0") != "0":
            return b
    return None

def runtime_status(serial):
    u = usbdev(serial)
    return read(u + "/power/runtime_status") if u else None

# --- the keyboard: a reader keeps its input device open (usbhid then arms remote wakeup) --------------
class Keys(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.count = 0
        self.reopened = -1
    def node(self):
        u = usbdev("kbd")
        if not u:
            return None
        for e in os.listdir("/sys/class/input"):
            if e.startswith("event") and os.path.realpath("/sys/class/input/%s/device" % e).startswith(u + "/"):
                return "/dev/input/" + e
        return None
    def run(self):
        fd = None
        while True:
            if fd is None:
                n = self.node()
                try:
                    fd = os.open(n, os.O_RDONLY) if n else None
                except OSError:
                    fd = None
                if fd is None:
                    time.sleep(0.2)
                    continue
                self.reopened += 1
            if not select.select([fd], [], [], 1)[0]:
                continue
            try:
                data = os.read(fd, 24 * 64)
            except OSError:
                data = b""
            if not data:
                os.close(fd)
                fd = None
                continue
            for i in range(0, len(data) - 23, 24):
                _, _, typ, code, value = struct.unpack("qqHHi", data[i:i + 24])
                if typ == 1 and code == 30 and value == 1:   # KEY_A pressed
                    self.count += 1

keys = Keys()
keys.start()
log("guest clock %s%s" % (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                          ", cycling until %s" % time.strftime("%H:%M:%S UTC", time.gmtime(DEADLINE)) if DEADLINE else ""))

# --- records -------------------------------------------------------------------------------------------
buf = mmap.mmap(-1, REC)     # page-aligned, for O_DIRECT
written = {}                 # (disk, index) -> record bytes, only once acknowledged (write + fsync)
next_index = {name: 0 for name, _ in DISKS}

def record(name, i, cycle):
    head = ("drowse-soak seed=%d disk=%s record=%d cycle=%d\n" % (SEED, name, i, cycle)).encode()
    body = head + random.Random("%d/%s/%d" % (SEED, name, i)).randbytes(REC - 32 - len(head))
    return body + hashlib.sha256(body).digest()

def intact(data):
    return hashlib.sha256(data[:-32]).digest() == data[-32:]

unplugged_since = {}
def plug_if_unplugged(name, notes):
    """Plug NAME back once the emulator has had it unplugged for 1.5 s (an unplug fault; over-current is
    the kernel's to recover from)."""
    if emu_show(name)["link"] != "unplugged":
        unplugged_since.pop(name, None)
        return
    t = unplugged_since.setdefault(name, time.monotonic())
    if time.monotonic() - t < 1.5:
        return
    try:
        emu("plug " + name)
        notes.append("plugged")
        stats["plugs"] += 1
    except SoakFailure as e:
        notes.append("plug: %s" % e)
    unplugged_since.pop(name, None)

def find_disk(name, serial, deadline, notes):
    """The disk's sdX, waiting for it (and plugging it back if the emulator has it unplugged)."""
    while True:
        d = disk_of(serial)
        if d:
            # drop-completion waits for the SCSI command timeout (30 s by default): 8 s is plenty. Read
            # it each time: a re-enumerated disk starts at 30 s again, often at the very same sysfs path
            # (SCSI host numbers are reused), so remembering paths missed most of them.
            t = "/sys/block/%s/device/timeout" % d
            try:
                if read(t) != "8":
                    with open(t, "w") as f:
                        f.write("8")
            except OSError:
                pass
            return d
        plug_if_unplugged(name, notes)
        if time.monotonic() > deadline:
            fail("%s (%s) did not come back: emu %s" % (name, serial, emu_show(name)))
        time.sleep(0.1)

def disk_io(name, serial, off, data, notes, deadline):
    """Write DATA at OFF (when DATA is not None) and read it back: returns what was read. Retries through
    re-enumeration and unplugs until it works or DEADLINE passes."""
    attempt = 0
    while True:
        attempt += 1
        d = find_disk(name, serial, deadline, notes)
        try:
            fd = os.open("/dev/" + d, os.O_RDWR | os.O_DIRECT)
            try:
                if data is not None:
                    buf[:] = data
                    if os.pwrite(fd, buf, off) != REC:
                        raise OSError(5, "short write")
                    os.fsync(fd)
                buf[:] = b"\0" * REC
                if os.preadv(fd, [buf], off) != REC:
                    raise OSError(5, "short read")
                return bytes(buf)
            finally:
                os.close(fd)
        except OSError as e:
            notes.append("%s:%s" % ("write" if data is not None else "read", e.strerror or e))
            if time.monotonic() > deadline:
                fail("%s: I/O still failing after %d attempts: %s" % (name, attempt, e))
            time.sleep(0.3)

# --- waiting for suspend, with quarantine handling ----------------------------------------------------
stats = {"releases": 0, "quarantines_seen": [], "plugs": 0, "suspends_seen": 0, "key_wakeups": 0,
         "daemon_queries": 0, "daemon_query_max_s": 0.0}

def release_quarantined(notes):
    t = time.monotonic()
    lst = json.loads(req(DSOCK, "list-json"))
    dt = time.monotonic() - t
    stats["daemon_queries"] += 1
    stats["daemon_query_max_s"] = max(stats["daemon_query_max_s"], dt)
    for d in lst["devices"]:
        if d["serial"] in ("SOAK0", "SOAK1", "kbd") and d["quarantined"]:
            stats["quarantines_seen"].append("%s:%s" % (d["serial"], d["reason"][:80]))
            drowsectl("release", d["sysname"])
            stats["releases"] += 1
            notes.append("released %s (%s)" % (d["serial"], d["state"]))

def wait_suspended(name, serial, notes, deadline, need_armed=False):
    t0 = time.monotonic()
    last = t0
    while True:
        if runtime_status(serial) == "suspended":
            info = emu_show(name)
            if info["link"] == "suspended" and (info["remote_wakeup"] or not need_armed):
                return info
        now = time.monotonic()
        if now - t0 > 2 and now - last > 1:
            last = now
            plug_if_unplugged(name, notes)
            release_quarantined(notes)
        if now > deadline:
            u = usbdev(serial)
            fail("%s did not suspend: runtime_status %s, power/control %s, emu %s" % (
                name, runtime_status(serial), read(u + "/power/control") if u else None, emu_show(name)))
        time.sleep(0.02)

def fault_of(fid):
    for f in json.loads(emu("fault list-json")):
        if f["id"] == fid:
            return f
    return None

def wait_hits(fid, n, deadline, what):
    while True:
        f = fault_of(fid)
        if f and f["hits"] >= n:
            return f["hits"]
        if time.monotonic() > deadline:
            fail("fault %d (%s) hit %s times, not %d" % (fid, what, f and f["hits"], n))
        time.sleep(0.05)

def key_press(notes, deadline, lost=False):
    k0 = keys.count
    emu("type kbd a")
    if lost:
        time.sleep(1.0)
        if keys.count != k0:
            notes.append("lost wakeup delivered anyway")
        emu("type kbd a")     # this wakeup gets through; the first key waited for it
    while keys.count <= k0:
        if time.monotonic() > deadline:
            fail("the key press did not arrive (keyboard %s, emu %s)" % (runtime_status("kbd"), emu_show("kbd")))
        time.sleep(0.02)
    stats["key_wakeups"] += 1
    return keys.count - k0

# --- the cycles -----------------------------------------------------------------------------------------
rng = random.Random(SEED)
current = {"cycle": -1, "start": time.monotonic(), "step": "setup", "step_start": time.monotonic()}

def watchdog():
    while True:
        time.sleep(1)
        c = current
        if c["cycle"] >= 0 and time.monotonic() - c["start"] > CYCLE_LIMIT + 30:
            msg = "HANG: cycle %d has been at step '%s' for %.0f s" % (c["cycle"], c["step"], time.monotonic() - c["start"])
            log(msg)
            with open(os.path.join(OUT, "soak-result.json"), "w") as f:
                json.dump({"ok": False, "error": msg, "cycles": done, "faults_added": added}, f)
            os._exit(3)
threading.Thread(target=watchdog, daemon=True).start()

def step(name, notes):
    """Enter the next step of the cycle; a step that took over 3 s is noted with its duration."""
    now = time.monotonic()
    if now - current["step_start"] > 3:
        notes.append("%s: %.1f s" % (current["step"], now - current["step_start"]))
    current.update(step=name, step_start=now)

tsv = open(os.path.join(OUT, "soak-cycles.tsv"), "w", buffering=1)
tsv.write("cycle\tdisk\tkey\tfault\thits\tseconds\tnotes\n")
added, hit = {}, {}
times = []
done = 0
stop_reason = "all cycles"
result = {"ok": False}
try:
    for cycle in range(CYCLES):
        if MAX_SECONDS and time.monotonic() - t_start > MAX_SECONDS:
            stop_reason = "time limit %d s" % MAX_SECONDS
            break
        if os.path.exists(os.path.join(OUT, "STOP")):
            stop_reason = "stopped by the STOP file"
            break
        if DEADLINE and time.time() > DEADLINE:
            stop_reason = "deadline %s" % time.strftime("%H:%M:%S UTC", time.gmtime(DEADLINE))
            break
        t0 = time.monotonic()
        deadline = t0 + CYCLE_LIMIT
        notes = []
        current.update(cycle=cycle, start=t0, step="choose", step_start=t0)
        name, serial = DISKS[rng.randrange(len(DISKS))]
        fault = FAULTS[rng.randrange(len(FAULTS))] if rng.random() < FAULT_P else None
        press = rng.random() < KEY_P or (fault is not None and fault[4] in ("key", "post"))
        label = fault[0] if fault else "-"

        step("wait for %s to suspend" % name, notes)
        info = wait_suspended(name, serial, notes, deadline)
        stats["suspends_seen"] += 1
        if press or (fault and fault[2] == "kbd"):
            step("wait for kbd to suspend", notes)
            wait_suspended("kbd", "kbd", notes, deadline, need_armed=True)

        fid = None
        if fault:
            step("fault add " + label, notes)
            target = name if fault[2] == "disk" else "kbd"
            out = drowsectl("emu", "fault", "add", target, fault[1], *fault[3].split())
            fid = int(out.split()[-1])
            added[label] = added.get(label, 0) + 1
            if fault[4] == "pre":
                step("wait for %s to strike" % label, notes)
                wait_hits(fid, fault[5], deadline, label)
        if press:
            step("wait for kbd to suspend before the key press", notes)
            wait_suspended("kbd", "kbd", notes, deadline, need_armed=True)
            step("key press", notes)
            n = key_press(notes, deadline, lost=fault is not None and fault[4] == "key")
            if n > 1:
                notes.append("%d keys" % n)
        if fault and fault[4] == "post":
            step("wait for %s to strike" % label, notes)
            wait_hits(fid, fault[5], deadline, label)
            wait_suspended("kbd", "kbd", notes, deadline, need_armed=True)

        step("write record to " + name, notes)
        i = next_index[name]
        data = record(name, i, cycle)
        back = disk_io(name, serial, BASE + i * REC, data, notes, deadline)
        written[(name, i)] = data
        next_index[name] = i + 1
        if back != data:
            fail("cycle %d: %s record %d read back wrong (intact checksum: %s)" % (cycle, name, i, intact(back)))

        step("cycle end", notes)
        hits = ""
        if fault:
            step("fault bookkeeping", notes)
            f = fault_of(fid)
            hits = "%d/%d" % (f["hits"], f["opportunities"]) if f else "?"
            if f and f["hits"]:
                hit[label] = hit.get(label, 0) + 1
            emu("fault clear all")
        if cycle % 25 == 24:
            step("drowsed status", notes)
            t = time.monotonic()
            json.loads(req(DSOCK, "status-json"))
            release_quarantined(notes)
            stats["daemon_query_max_s"] = max(stats["daemon_query_max_s"], time.monotonic() - t)
        dt = time.monotonic() - t0
        if dt > CYCLE_LIMIT:
            fail("cycle %d took %.1f s (limit %.0f s)" % (cycle, dt, CYCLE_LIMIT))
        times.append(dt)
        done += 1
        tsv.write("%d\t%s\t%s\t%s\t%s\t%.2f\t%s\n" % (cycle, name, "key" if press else "-", label, hits, dt,
                                                   "; ".join(notes)))
        if cycle % 50 == 49:
            log("%d cycles, %.0f s, max cycle %.2f s, %d faults, %d releases" % (
                done, time.monotonic() - t_start, max(times), sum(added.values()), stats["releases"]))

    # --- every acknowledged record reads back intact --------------------------------------------------
    current.update(cycle=-1, step="verify")
    bad = []
    for (name, i), data in sorted(written.items()):
        serial = dict(DISKS)[name]
        back = disk_io(name, serial, BASE + i * REC, None, [], time.monotonic() + 120)
        if back != data:
            bad.append("%s record %d (checksum %s)" % (name, i, "intact" if intact(back) else "broken"))
    if bad:
        fail("%d records lost or wrong: %s" % (len(bad), ", ".join(bad[:10])))
    result = {"ok": True}
except Exception as e:
    import traceback
    traceback.print_exc()
    log("FAIL: %s" % e)
    result = {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "failed_cycle": current["cycle"],
              "step": current["step"]}

elapsed = time.monotonic() - t_start
times_sorted = sorted(times)
result.update({
    "cycles_requested": CYCLES, "cycles": done, "stop": stop_reason, "seed": SEED, "fault_p": FAULT_P,
    "seconds": round(elapsed, 1),
    "max_cycle_s": round(max(times), 2) if times else None,
    "mean_cycle_s": round(sum(times) / len(times), 2) if times else None,
    "p99_cycle_s": round(times_sorted[int(len(times) * 0.99) - 1], 2) if len(times) >= 100 else None,
    "faults_added": added, "faults_hit": hit, "faults_total": sum(added.values()),
    "records_verified": len(written), "key_wakeups": stats["key_wakeups"],
    "suspends_seen": stats["suspends_seen"], "releases": stats["releases"], "plugs": stats["plugs"],
    "quarantines": stats["quarantines_seen"], "daemon_queries": stats["daemon_queries"],
    "daemon_query_max_s": round(stats["daemon_query_max_s"], 3), "keyboard_reopened": keys.reopened,
})
with open(os.path.join(OUT, "soak-result.json"), "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
log("result: %s" % json.dumps(result, sort_keys=True))
sys.exit(0 if result["ok"] else 1)
EOF

vm_log "== soak"
DROWSE_SOAK_CYCLES=$cycles DROWSE_SOAK_SEED=$seed /usr/bin/python3 "$work/soak.py" "$esock" "$dsock" "$drowsectl" &
agent_pid=$!
rc=0
wait "$agent_pid" || rc=$?
agent_pid=
if ((rc != 0)); then
        echo w >/proc/sysrq-trigger 2>/dev/null || true
        vm_fail "the soak failed (exit $rc; 3: a cycle hung); see soak-result.json, soak-cycles.tsv"
fi

vm_log "== end checks"
res() { /usr/bin/python3 -c "import json,sys; r=json.load(open('$DROWSE_OUT/soak-result.json')); print($1)"; }

# drowsed still serving: status and list from drowsectl itself.
ctl status >"$DROWSE_OUT/drowsed-status.txt" || vm_fail "drowsectl status does not answer"
ctl list --json >"$DROWSE_OUT/drowsed-list.json" || vm_fail "drowsectl list --json does not answer"
ctl stats --json >"$DROWSE_OUT/drowsed-stats.json" || vm_fail "drowsectl stats --json does not answer"
cat "$DROWSE_OUT/drowsed-status.txt" >&2

# drowse-emu's counters: the hub carried at least the port suspends the soak saw, the keyboard signalled
# at least the wakeups that brought keys.
ctl emu list --json >"$DROWSE_OUT/emu-list.json" || vm_fail "drowsectl emu list does not answer"
/usr/bin/python3 - "$DROWSE_OUT/emu-list.json" "$DROWSE_OUT/soak-result.json" <<'EOF' || vm_fail "drowse-emu's counters do not match the soak"
import json, sys
devs = {d["name"]: d for d in json.load(open(sys.argv[1]))}
r = json.load(open(sys.argv[2]))
hub, kbd = devs["hub0"], devs["kbd"]
disk_suspends = devs["disk0"]["suspends"] + devs["disk1"]["suspends"]
print("emu: hub port_suspends %d, remote_wakeups %d; disk suspends %d+%d; kbd suspends %d, wakeups signalled %d"
      % (hub["hub_stats"]["port_suspends"], hub["hub_stats"]["remote_wakeups"], devs["disk0"]["suspends"],
         devs["disk1"]["suspends"], kbd["suspends"], kbd["wakeups_signalled"]), file=sys.stderr)
bad = []
if disk_suspends < r["suspends_seen"]:
    bad.append("disks suspended %d times, the soak saw %d" % (disk_suspends, r["suspends_seen"]))
if hub["hub_stats"]["port_suspends"] < disk_suspends:
    bad.append("hub port suspends %d < disk suspends %d" % (hub["hub_stats"]["port_suspends"], disk_suspends))
# A key typed in the moment the keyboard resumed for another reason needs no wakeup: allow a few.
if kbd["wakeups_signalled"] < r["key_wakeups"] * 0.9:
    bad.append("keyboard signalled %d wakeups, %d key presses woke it" % (kbd["wakeups_signalled"], r["key_wakeups"]))
for n in ("disk0", "disk1", "kbd"):
    if devs[n]["link"] == "unplugged" or devs[n]["importer"] is None:
        bad.append("%s is %s, importer %s" % (n, devs[n]["link"], devs[n]["importer"]))
for b in bad:
    print("FAIL: " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

# Disconnects during the soak (re-enumerations, unplugs, over-current), before shutdown adds its own.
reenum=$(grep -c "USB disconnect" "$work/kmsg.txt" || true)

# drowse-emu first (drowsed then handles the devices going away), then drowsed.
kill -TERM "$emu_pid"
emu_rc=0
wait "$emu_pid" || emu_rc=$?
emu_pid=
((emu_rc == 0)) || vm_fail "drowse-emu exited with $emu_rc on SIGTERM (23: LeakSanitizer)"
if grep -E "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$DROWSE_OUT/emu.log" >&2; then
        vm_fail "sanitizer report in emu.log"
fi
emu_result="LSan/ASan/UBSan clean"
vm_wait_for 60 eval '! vm_disk_of_serial SOAK0 && ! vm_disk_of_serial SOAK1'
sleep 2
ctl status >/dev/null || vm_fail "drowsed stopped answering after the devices went away"
kill -TERM "$drowsed_pid"
d_rc=0
wait "$drowsed_pid" || d_rc=$?
drowsed_pid=
if ((use_valgrind)); then
        grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable|All heap blocks|total heap usage" \
                "$DROWSE_OUT/valgrind-drowsed.txt" >&2 || true
        ((d_rc == 0)) || vm_fail "drowsed under valgrind exited with $d_rc (99: valgrind found errors or leaks)"
        grep -q "ERROR SUMMARY: 0 errors" "$DROWSE_OUT/valgrind-drowsed.txt" || vm_fail "valgrind reported errors in drowsed"
        heap=$(grep -oE "total heap usage: [0-9,]+ allocs, [0-9,]+ frees" "$DROWSE_OUT/valgrind-drowsed.txt" | tail -n1 || true)
        leaks=$(grep -oE "definitely lost: [0-9,]+ bytes" "$DROWSE_OUT/valgrind-drowsed.txt" | tail -n1 || true)
        grep -q "All heap blocks were freed" "$DROWSE_OUT/valgrind-drowsed.txt" && leaks="no leaks possible"
        vg_result="valgrind: 0 errors, ${leaks:-no leak summary}, ${heap#total heap usage: }"
else
        ((d_rc == 0)) || vm_fail "drowsed exited with $d_rc"
        vg_result="valgrind: not run"
fi

# The kernel: faults are expected to log disconnects, resets and I/O errors, never an oops or a warning.
cp "$work/kmsg.txt" "$DROWSE_OUT/kmsg.txt"
if grep -E "WARNING:|Oops|BUG:|kernel BUG|general protection|Call Trace|blocked for more than|hung_task|RIP:" \
        "$DROWSE_OUT/kmsg.txt" >&2; then
        vm_fail "the kernel logged an oops, BUG or WARNING (kmsg.txt)"
fi

summary="soak: kernel $DROWSE_KVER, $(res '"%d/%d cycles (%s), seed %d" % (r["cycles"], r["cycles_requested"], r["stop"], r["seed"])'),"
summary+=" $(res '"%.0f s, cycle mean %.2f s, max %.2f s, p99 %s s" % (r["seconds"], r["mean_cycle_s"], r["max_cycle_s"], r["p99_cycle_s"])');"
summary+=" $(res '"%d faults (%s)" % (r["faults_total"], ", ".join("%s %d/%d hit" % (k, r["faults_hit"].get(k, 0), v) for k, v in sorted(r["faults_added"].items())))');"
summary+=" $(res '"%d records verified, %d key wakeups, %d suspends seen, %d quarantine/backoff releases" % (r["records_verified"], r["key_wakeups"], r["suspends_seen"], r["releases"])'),"
summary+=" $reenum USB disconnects in the kernel log during the soak, no oops/BUG/WARNING; drowsed $vg_result; drowse-emu $emu_result"
echo "$summary" >"$DROWSE_OUT/soak-summary.txt"
echo "$summary"
vm_log "soak: all checks passed"
