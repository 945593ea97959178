#!/bin/bash
# The live demo (tools/demo): drowse-emu's default topology on a real kernel, step by step, with drowsed
# applying its policy. A hub with a disk and a keyboard behind it, and a disk on a root port of its own
# controller. Runs inside the VM (default) or on the host kernel (tools/demo --host).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
work=$(mktemp -d /tmp/drowse-demo.XXXXXX)
sock=$work/emu.ctl
emu_pid=
drowsed_pid=
reader=

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
ctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --emu-socket "$sock" "$@"; }
dctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --socket "$work/drowsed.ctl" "$@"; }
field() { ctl emu show "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"; }

cleanup() {
        [[ -n $reader ]] && kill "$reader" 2>/dev/null
        [[ -n $emu_pid ]] && kill -TERM "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null
        [[ -n $drowsed_pid ]] && kill -TERM "$drowsed_pid" 2>/dev/null && wait "$drowsed_pid" 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT

dev_by_serial() {
        local s
        for s in /sys/bus/usb/devices/*/serial; do
                [[ $(cat "$s") == "$1" ]] && { dirname "$s"; return 0; }
        done
        return 1
}
disk_of() {
        local d u
        u=$(readlink -f "$(dev_by_serial "$1")") || return 1
        for d in $(vm_usb_disks); do
                [[ $(readlink -f "/sys/block/$d/device") == "$u"/* ]] && { echo "$d"; return 0; }
        done
        return 1
}
event_of() {
        local e u
        u=$(readlink -f "$(dev_by_serial "$1")") || return 1
        for e in /sys/class/input/event*; do
                [[ $(readlink -f "$e/device") == "$u"/* ]] && { echo "/dev/input/${e##*/}"; return 0; }
        done
        return 1
}
chain_of() { # the runtime-PM chain from the disk up to the USB device
        local p stop
        p=$(readlink -f "/sys/block/$1/device")
        stop=$(readlink -f "$(dev_by_serial "$2")")
        while :; do
                [[ -d $p/power ]] && echo "$p"
                [[ $p == "$stop" ]] && break
                p=${p%/*}
        done
}
show_chain() {
        local n
        chain_of "$1" "$2" | while read -r n; do
                printf '   %-10s %s\n' "$(cat "$n/power/runtime_status")" "${n#/sys/devices/platform/}"
        done
}
suspended() { [[ $(cat "$1/power/runtime_status") == suspended ]]; }

for m in vhci-hcd usb-storage sd_mod ext4 usbhid hid_generic evdev; do vm_modprobe "$m"; done

bold "0. drowsed starts with its policy: disks after 500 ms idle, and a rule for our keyboard"
cat >"$work/drowse.conf" <<'CONF'
[defaults]
delay-ms = 500
disk-delay-ms = 500

# HID devices are left alone by default; this keyboard wakes reliably through its hub.
[rule emulated-keyboard]
match-id = 1209:0003
autosuspend = yes
delay-ms = 500
CONF
sed 's/^/   /' "$work/drowse.conf"
# No udevd in the guest: drowsed listens to the kernel's own uevents.
"$DROWSE_BUILD_DIR/daemon/drowsed" --config "$work/drowse.conf" --monitor kernel --no-bus \
        --control "$work/drowsed.ctl" >"$DROWSE_OUT/drowsed.log" 2>&1 &
drowsed_pid=$!
vm_wait_for 20 test -S "$work/drowsed.ctl"

bold "1. drowse-emu: a hub with a disk and a keyboard, and a disk on its own vhci controller"
"$emu" --attach --no-listen --control "$sock" --hub hub0,ports=4 \
        --disk "$work/data.img,size=128M,serial=DATA0001,product=DataDisk,name=data,hub=hub0,port=2" \
        --keyboard kbd,hub=hub0,port=3 \
        --disk "$work/solo.img,size=64M,serial=SOLO0001,product=SoloDisk,name=solo" \
        >"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
vm_wait_for 60 disk_of DATA0001
vm_wait_for 60 disk_of SOLO0001
vm_wait_for 60 event_of kbd
data=$(disk_of DATA0001) solo=$(disk_of SOLO0001) ev=$(event_of kbd)
lsusb -t | grep -B1 -A3 "Class=Hub" | sed 's/^/   /'
say "data disk /dev/$data behind the hub, keyboard $ev, solo disk /dev/$solo on vhci_hcd.1"
ctl emu list | sed 's/^/   /'

bold "2. a filesystem and data on the disk behind the hub"
mkfs.ext4 -q -F "/dev/$data"
mkdir -p "$work/mnt"
mount "/dev/$data" "$work/mnt"
head -c $((16 << 20)) /dev/urandom >"$work/mnt/data"
sync
sum=$(sha256sum <"$work/mnt/data" | cut -c1-16)
umount "$work/mnt"
say "wrote 16 MiB (sha256 $sum...), synced, unmounted"

bold "3. drowsed's decisions; the disk chain autosuspends and the hub suspends its port"
datadev=$(dev_by_serial DATA0001)
vm_wait_for 30 suspended "$datadev"
dctl list | sed 's/^/   /'
show_chain "$data" DATA0001
say "drowse-emu: $(grep "port 2 suspended" "$DROWSE_OUT/emu.log" | tail -n1)"

bold "4. I/O resumes it through the hub"
mount "/dev/$data" "$work/mnt"
say "sha256 $(sha256sum <"$work/mnt/data" | cut -c1-16)... (same data)"
umount "$work/mnt"
say "drowse-emu: $(grep "port 2 resumed by the host" "$DROWSE_OUT/emu.log" | tail -n1)"
vm_wait_for 30 suspended "$datadev"
say "idle again: $(cat "$datadev/power/runtime_status")"

bold "5. a key press wakes the suspended keyboard through the hub"
kbddev=$(dev_by_serial kbd)
python3 - "$ev" >"$work/keys" <<'PY' &
import os, select, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)   # open: usbhid arms remote wakeup
names = {32: "d", 19: "r", 24: "o", 17: "w", 31: "s", 18: "e"}
typed, deadline = "", time.monotonic() + 60
while len(typed) < 6 and time.monotonic() < deadline:
    if select.select([fd], [], [], 1)[0]:
        data = os.read(fd, 24 * 64)
        for i in range(0, len(data) - 23, 24):
            _, _, typ, code, value = struct.unpack("qqHHi", data[i:i + 24])
            if typ == 1 and value == 1:
                typed += names.get(code, "?")
print(typed, flush=True)
PY
reader=$!
vm_wait_for 30 suspended "$kbddev"
say "keyboard: $(cat "$kbddev/power/runtime_status"), remote wakeup armed by usbhid: $(field kbd 'd["remote_wakeup"]')"
ctl emu type kbd drowse >/dev/null
wait "$reader" || true
reader=
say "the input device received: \"$(cat "$work/keys")\""
say "drowse-emu: $(grep "signals remote wakeup" "$DROWSE_OUT/emu.log" | tail -n1)"
[[ $(cat "$work/keys") == drowse ]] || vm_fail "the typed keys did not arrive"

bold "6. the solo disk on its own controller: root-port suspend, which vhci keeps to itself"
solodev=$(dev_by_serial SOLO0001)
vm_wait_for 30 suspended "$solodev"
dd if="/dev/$solo" of=/dev/null bs=4k count=1 iflag=direct status=none
vm_wait_for 10 grep -q "solo: GET_STATUS after" "$DROWSE_OUT/emu.log"
say "drowse-emu inferred: $(grep "solo: GET_STATUS after" "$DROWSE_OUT/emu.log" | tail -n1)"

bold "7. why won't it suspend? a process holds the solo disk's usbfs node open"
exec 3<"/dev/bus/usb/$(printf %03d "$(cat "$solodev/busnum")")/$(printf %03d "$(cat "$solodev/devnum")")"
dctl why "$solo" | sed 's/^/   /'
exec 3<&-
vm_wait_for 30 suspended "$solodev"
say "closed again: $(cat "$solodev/power/runtime_status")"

bold "8. summary"
ctl emu list --json >"$DROWSE_OUT/summary.json"
python3 - "$DROWSE_OUT/summary.json" <<'PY'
import json, sys
devices = json.load(open(sys.argv[1]))
print("   %-6s %-12s %-10s %9s %8s %8s %8s" % ("device", "where", "link", "suspends", "resumes", "wakeups", "URBs"))
for d in devices:
    if d["name"].endswith("-carrier"):
        continue
    where = "%s port %s" % (d["hub"], d["hub_port"]) if d["hub"] else "vhci port %d" % d["vhci_port"]
    resumes = d["resumes"] if d["hub"] else d["stats"]["resumes_inferred"]
    print("   %-6s %-12s %-10s %9d %8d %8d %8d" % (d["name"], where, d["link"], d["suspends"], resumes,
                                                 d["wakeups_signalled"], d["stats"]["urbs"]))
PY
say "state of every device: summary.json in this run's log directory"
say "demo finished: a hub over stock vhci_hcd, its ports suspended and resumed by the kernel, and a key press"
say "that woke the host through the hub"
