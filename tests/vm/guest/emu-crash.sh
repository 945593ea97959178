#!/bin/bash
# Crash consistency of drowse-emu's disk against a real kernel: DROWSE_CRASH_RUNS (default 50) times in
# one boot, kill -9 the emulator while the kernel writes to an ext4 filesystem on it (new files made
# durable with fsync, an O_DSYNC append log, and unsynced bulk writes beside them), restart it,
# re-attach, and check that every write the kernel was told is durable is in the image, in order, and
# that the filesystem is consistent after its journal replays (fsck -n -f). Then, with the same
# image, drowse-emu runs under valgrind (a build without sanitizers, when one is there) with real I/O
# and a SIGTERM at the end: no leak, no error.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
img=/tmp/crash.img
mnt=/tmp/mnt-crash
runs=${DROWSE_CRASH_RUNS:-50}
emu_pid=

vm_modprobe vhci-hcd
vm_modprobe usb-storage
vm_modprobe sd_mod
vm_modprobe ext4
# usb-storage waits a second before scanning a new device by default; 50 re-attaches need not.
echo 0 >/sys/module/usb_storage/parameters/delay_use

start_emu() {
        "$emu" --attach --no-listen --disk "$img,size=48M,serial=CRASH001" >>"$DROWSE_OUT/emu.log" 2>&1 3>&- 4<&- &
        emu_pid=$!
}

find_disk() {
        local d
        for d in $(vm_usb_disks); do
                [[ $(readlink -f "/sys/block/$d/device") == */vhci_hcd.* ]] || continue
                [[ -b /dev/$d ]] || continue
                disk=$d
                return 0
        done
        return 1
}
no_disk() { ! find_disk; }
disk=

# The writes and the checks come from one python process started once (interpreters start slowly from
# the 9p root under TCG), driven over two FIFOs. "write RUN" starts three threads, each appending "RUN
# INDEX" to its ack file only after the kernel reported the write durable: new 16 KiB files made durable
# with fsync, 512-byte records appended with O_DSYNC to one log that lives across runs, and unsynced 4 MiB
# bulk writes whose only check is the filesystem's consistency; a thread stops at its first error (the
# disk is gone). "wait" returns once they all stopped. "verify RUN" checks every acknowledged write on the
# re-mounted filesystem, cuts the log back to what was acknowledged (an unacknowledged record may have
# landed too, and record n must stay at offset 512 n), and removes the checked files.
cat >/tmp/crash-agent.py <<'EOF'
import os, sys, threading
mnt = sys.argv[1]
threads = []

def acked(path):
    return [tuple(map(int, l.split())) for l in open(path)] if os.path.exists(path) else []

def content(r, i):
    return ("run %06d file %06d\n" % (r, i)).encode() * (16384 // 23)

def record(r, i):
    return ("run %04d record %06d" % (r, i)).encode().ljust(512, b"\0")

def files(run):
    with open("/tmp/acked-files", "a", buffering=1) as ack:
        i = 0
        while True:
            fd = os.open("%s/f.%d.%d" % (mnt, run, i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, content(run, i))
                os.fsync(fd)
            finally:
                os.close(fd)
            ack.write("%d %d\n" % (run, i))
            i += 1

def log(run):
    with open("/tmp/acked-log", "a", buffering=1) as ack:
        fd = os.open(mnt + "/dsync.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_DSYNC, 0o644)
        try:
            i = 0
            while True:
                os.write(fd, record(run, i))
                ack.write("%d %d\n" % (run, i))
                i += 1
        finally:
            os.close(fd)

def bulk(run):
    while True:
        with open(mnt + "/bulk", "wb") as f:
            f.write(b"\0" * (4 << 20))
        os.unlink(mnt + "/bulk")

def guarded(f, run):
    try:
        f(run)
    except OSError:
        pass

def verify(run):
    files_ = acked("/tmp/acked-files")
    for r, i in files_:
        path = "%s/f.%d.%d" % (mnt, r, i)
        if not os.path.exists(path) or open(path, "rb").read() != content(r, i):
            return "fail fsynced file f.%d.%d lost or wrong" % (r, i)
    records = acked("/tmp/acked-log")
    data = open(mnt + "/dsync.log", "rb").read() if os.path.exists(mnt + "/dsync.log") else b""
    for n, (r, i) in enumerate(records):
        if data[n * 512:(n + 1) * 512] != record(r, i):
            return "fail O_DSYNC record %d (run %d, %d) lost: %r" % (n, r, i, data[n * 512:n * 512 + 30])
    if records:
        os.truncate(mnt + "/dsync.log", len(records) * 512)
    for name in os.listdir(mnt):
        if name.startswith("f.") or name == "bulk":
            os.unlink(os.path.join(mnt, name))
    open("/tmp/acked-files", "w").close()
    return "ok %d %d" % (len(files_), len(records))

for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "write":
        threads = [threading.Thread(target=guarded, args=(f, int(args[0]))) for f in (files, log, bulk)]
        for t in threads:
            t.start()
        reply = "started"
    elif cmd == "wait":
        for t in threads:
            t.join()
        reply = "stopped"
    else:
        reply = verify(int(args[0]))
    print(reply, flush=True)
EOF
rm -f /tmp/agent.in /tmp/agent.out
mkfifo /tmp/agent.in /tmp/agent.out
python3 /tmp/crash-agent.py "$mnt" </tmp/agent.in >/tmp/agent.out &
agent=$!
exec 3>/tmp/agent.in 4</tmp/agent.out
agent() { # agent COMMAND...: its one-line reply
        echo "$*" >&3
        read -r -t 120 reply <&4 || vm_fail "the writer/checker process did not answer '$*'"
        echo "$reply"
}

# After re-attach: mount (the journal replays), check every acknowledged write, unmount, fsck.
verify() {
        local reply
        local a=$EPOCHREALTIME
        mount "/dev/$disk" "$mnt" || vm_fail "run $1: mount after kill -9 failed"
        local b=$EPOCHREALTIME
        reply=$(agent verify "$1")
        local c=$EPOCHREALTIME
        [[ $reply == ok* ]] || vm_fail "run $1: ${reply#fail }"
        read -r _ f r <<<"$reply"
        checked_files=$((checked_files + f))
        checked_records=$r
        umount "$mnt"
        local d=$EPOCHREALTIME
        fsck.ext4 -n -f "/dev/$disk" >"$DROWSE_OUT/fsck.txt" 2>&1 ||
                { cat "$DROWSE_OUT/fsck.txt" >&2; vm_fail "run $1: fsck -n found problems"; }
        echo "verify $1: mount $(awk "BEGIN { print $b - $a }") s, check $(awk "BEGIN { print $c - $b }") s, umount $(awk "BEGIN { print $d - $c }") s, fsck $(awk "BEGIN { print $EPOCHREALTIME - $d }") s" >>"$DROWSE_OUT/phases.txt"
}

mkdir -p "$mnt"
rm -f "$img" /tmp/acked-files /tmp/acked-log
start_emu
vm_wait_for 60 find_disk
# No lazy initialisation: the kernel would zero inode tables in the background of every mount.
mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 "/dev/$disk" >/dev/null
vm_log "ext4 on /dev/$disk; $runs kill -9 runs follow"

checked_files=0
checked_records=0
kills=0
start=$EPOCHSECONDS
for ((run = 1; run <= runs; run++)); do
        mount "/dev/$disk" "$mnt" || vm_fail "run $run: mount failed"
        [[ $(agent write "$run") == started ]] || vm_fail "run $run: the writers did not start"
        # Somewhere from just after the writes start to 2 s into them.
        sleep "$((RANDOM % 2)).$((RANDOM % 10))"
        t0=$EPOCHREALTIME
        kill -9 "$emu_pid"
        wait "$emu_pid" 2>/dev/null || true
        kills=$((kills + 1))
        vm_wait_for 30 no_disk
        [[ $(agent wait) == stopped ]] || vm_fail "run $run: the writers did not stop"
        umount -l "$mnt" 2>/dev/null || true
        t1=$EPOCHREALTIME
        start_emu
        vm_wait_for 60 find_disk
        t2=$EPOCHREALTIME
        verify "$run"
        echo "run $run: gone+unmounted $(awk "BEGIN { print $t1 - $t0 }") s, re-attached $(awk "BEGIN { print $t2 - $t1 }") s, verified $(awk "BEGIN { print $EPOCHREALTIME - $t2 }") s" >>"$DROWSE_OUT/phases.txt"
        vm_log "run $run: kill -9 survived; $checked_records O_DSYNC records and $checked_files fsynced files checked so far"
done
elapsed=$((EPOCHSECONDS - start))
vm_log "crash: $kills kill -9 runs in ${elapsed}s; $checked_files fsynced files and $checked_records O_DSYNC records verified; fsck clean after every run"
echo "runs=$kills seconds=$elapsed files=$checked_files records=$checked_records" >"$DROWSE_OUT/crash-summary.txt"

exec 3>&- 4<&-
kill "$agent" 2>/dev/null || true
wait "$agent" 2>/dev/null || true
kill -TERM "$emu_pid"
wait "$emu_pid" || vm_fail "drowse-emu did not exit cleanly on SIGTERM"
emu_pid=
vm_wait_for 30 no_disk
if grep -E "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$DROWSE_OUT/emu.log"; then
        vm_fail "sanitizer report in the emulator log"
fi

# valgrind needs a build without sanitizers: DROWSE_VALGRIND_BUILD_DIR, else <build dir>-valgrind.
plain=${DROWSE_VALGRIND_BUILD_DIR:-${DROWSE_BUILD_DIR%/}-valgrind}/emulator/drowse-emu
if [[ -x $plain ]] && command -v valgrind >/dev/null; then
        vm_log "== valgrind: local attach, real I/O, SIGTERM"
        valgrind --leak-check=full --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
                --error-exitcode=99 --track-fds=no --log-file="$DROWSE_OUT/valgrind.txt" \
                "$plain" --attach --no-listen --disk "$img,serial=CRASH001" >>"$DROWSE_OUT/emu-valgrind.log" 2>&1 &
        emu_pid=$!
        vm_wait_for 180 find_disk
        mount "/dev/$disk" "$mnt"
        dd if=/dev/urandom of="$mnt/vg" bs=64k count=64 conv=fsync status=none
        sum=$(sha256sum <"$mnt/vg")
        umount "$mnt"
        mount "/dev/$disk" "$mnt"
        echo 3 >/proc/sys/vm/drop_caches
        [[ $(sha256sum <"$mnt/vg") == "$sum" ]] || vm_fail "valgrind run: data read back differs"
        umount "$mnt"
        kill -TERM "$emu_pid"
        rc=0
        wait "$emu_pid" || rc=$?
        emu_pid=
        grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|All heap blocks" "$DROWSE_OUT/valgrind.txt" >&2 || true
        ((rc == 0)) || vm_fail "drowse-emu under valgrind exited with $rc (99: valgrind found errors or leaks)"
        grep -q "ERROR SUMMARY: 0 errors" "$DROWSE_OUT/valgrind.txt" || vm_fail "valgrind reported errors"
        vm_log "valgrind: no errors, no leaks"
else
        vm_log "valgrind: skipped (no build without sanitizers at $plain)"
fi
vm_log "emu-crash: all checks passed"
