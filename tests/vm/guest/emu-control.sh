#!/bin/bash
# drowse-emu while it runs, driven through drowsectl: disks added at run time (a SuperSpeed disk with
# two LUNs, a read-only disk), attached, seen by the kernel, detached and removed; then a topology file.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
ctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --emu-socket /run/drowse-emu.ctl "$@"; }
emu_pid=

vm_modprobe vhci-hcd
vm_modprobe usb-storage
vm_modprobe sd_mod

stop_emu() {
        [[ -n $emu_pid ]] || return 0
        kill -TERM "$emu_pid" 2>/dev/null || true
        wait "$emu_pid" || true
        emu_pid=
}

# sd devices whose USB device has this serial, sorted by LUN.
disks_of() {
        local d p
        for d in $(vm_usb_disks); do
                p=$(readlink -f "/sys/block/$d/device")
                while [[ $p != / && ! -f $p/serial ]]; do p=${p%/*}; done
                [[ -f $p/serial && $(cat "$p/serial") == "$1" ]] || continue
                echo "$(basename "$(readlink -f "/sys/block/$d/device")") $d"
        done | sort | awk '{print $2}'
}
count_disks() { [[ $(disks_of "$1" | wc -l) -eq $2 ]]; }
usb_dir_of() {
        local p
        p=$(readlink -f "/sys/block/$1/device")
        while [[ $p != / && ! -f $p/idVendor ]]; do p=${p%/*}; done
        echo "$p"
}

vm_log "== drowse-emu with only a control socket; devices come later"
"$emu" --no-listen --control /run/drowse-emu.ctl >"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
vm_wait_for 20 test -S /run/drowse-emu.ctl
ctl emu list >&2

vm_log "== add a SuperSpeed disk with two LUNs and attach it"
ctl emu add-disk /tmp/ss0.img,lun=/tmp/ss1.img,size=48M,speed=super,serial=SS0001,name=ss >/dev/null
ctl emu attach ss >&2
vm_wait_for 60 count_disks SS0001 2
mapfile -t ss < <(disks_of SS0001)
udev=$(usb_dir_of "${ss[0]}")
speed=$(cat "$udev/speed")
[[ $speed -ge 5000 ]] || vm_fail "SuperSpeed disk enumerated at $speed Mb/s"
[[ $(cat "$(readlink -f "$udev/..")/speed") -ge 5000 ]] || vm_fail "not on the SuperSpeed root hub"
vm_log "SuperSpeed ($speed Mb/s) disk with LUNs /dev/${ss[0]} and /dev/${ss[1]}"
for d in "${ss[@]}"; do
        [[ $(cat "/sys/block/$d/size") -eq $((48 * 2048)) ]] || vm_fail "/dev/$d has the wrong size"
done
# Each LUN has its own data and its own unit serial number.
printf 'lun-zero' | dd of="/dev/${ss[0]}" bs=512 conv=sync oflag=direct status=none
printf 'lun-one!' | dd of="/dev/${ss[1]}" bs=512 conv=sync oflag=direct status=none
[[ $(dd if="/dev/${ss[0]}" bs=512 count=1 iflag=direct status=none | head -c 8) == lun-zero ]] || vm_fail "LUN 0 data"
[[ $(dd if="/dev/${ss[1]}" bs=512 count=1 iflag=direct status=none | head -c 8) == lun-one! ]] || vm_fail "LUN 1 data"
[[ $(sg_inq -p 0x80 "/dev/${ss[1]}") == *SS0001-1* ]] || vm_fail "LUN 1 has no serial of its own"
[[ $(head -c 8 /tmp/ss1.img) == lun-one! ]] || vm_fail "LUN 1 data is not in its image"
dd if="/dev/${ss[0]}" of=/dev/null bs=1M count=32 iflag=direct status=none || vm_fail "SuperSpeed bulk read"

vm_log "== add a read-only disk while the first one is busy"
head -c $((8 << 20)) /dev/urandom >/tmp/ro.img
sum=$(sha256sum </tmp/ro.img)
ctl emu add-disk /tmp/ro.img,ro,serial=RO0001,name=ro >/dev/null
ctl emu attach ro --controller 1 >&2
vm_wait_for 60 count_disks RO0001 1
ro=$(disks_of RO0001)
[[ $(blockdev --getro "/dev/$ro") == 1 ]] || vm_fail "read-only disk is writable"
if dd if=/dev/zero of="/dev/$ro" bs=4k count=1 oflag=direct status=none 2>/dev/null; then
        vm_fail "a write to the read-only disk succeeded"
fi
[[ $(sha256sum </tmp/ro.img) == "$sum" ]] || vm_fail "read-only image changed"
[[ $(dd if="/dev/$ro" bs=1M iflag=direct status=none | sha256sum) == "$sum" ]] || vm_fail "read-only disk reads wrong data"

ctl emu list | tee "$DROWSE_OUT/list.txt" >&2
json=$(ctl emu list --json)
echo "$json" >"$DROWSE_OUT/list.json"
python3 - "$DROWSE_OUT/list.json" <<'PY' || vm_fail "list --json is not what the kernel saw"
import json, sys
devices = {d["name"]: d for d in json.load(open(sys.argv[1]))}
ss, ro = devices["ss"], devices["ro"]
assert ss["speed"] == "super" and ss["state"] == "configured" and ss["vhci_port"] >= 0, ss
assert len(ss["luns"]) == 2 and ss["luns"][1]["writes"] >= 1 and ss["stats"]["urbs"] > 0, ss
assert ro["luns"][0]["read_only"] is True and ro["luns"][0]["writes"] == 0, ro
PY

vm_log "== detach and remove at run time"
ctl emu detach ss >&2
vm_wait_for 30 count_disks SS0001 0
ctl emu remove ss
ctl emu remove ro
vm_wait_for 30 count_disks RO0001 0
[[ $(ctl emu list | wc -l) -eq 1 ]] || vm_fail "devices left after remove: $(ctl emu list)"
if ctl emu show ss 2>/dev/null; then vm_fail "removed device still shown"; fi
# Errors are clear and do not hurt the emulator.
out=$(ctl emu attach nosuch 2>&1) && vm_fail "attach of an unknown device succeeded"
[[ $out == *"no device 'nosuch'"* ]] || vm_fail "unclear error: $out"
kill -0 "$emu_pid" || vm_fail "drowse-emu died"
stop_emu

vm_log "== a topology file"
cat >/tmp/emu.conf <<'INI'
[emulator]
listen = 127.0.0.1:3242
attach = yes
vhci-controller = 2

[disk conf]
image = /tmp/conf.img
size = 16M
serial = CONF0001
product = ConfDisk
INI
"$emu" --config /tmp/emu.conf >>"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
vm_wait_for 60 count_disks CONF0001 1
conf=$(disks_of CONF0001)
[[ $(readlink -f "/sys/block/$conf/device") == */vhci_hcd.2/* ]] || vm_fail "vhci-controller = 2 not honoured"
[[ $(sg_inq "/dev/$conf") == *ConfDisk* ]] || vm_fail "product from the topology file not used"
stop_emu
vm_wait_for 30 count_disks CONF0001 0

vm_log "== a bad topology file names its line"
printf '[emulator]\nattach = yes\n[disk x]\nimage = /tmp/x.img\nsize = 12 apples\n' >/tmp/bad.conf
if out=$("$emu" --config /tmp/bad.conf 2>&1); then vm_fail "bad config accepted"; fi
[[ $out == *"/tmp/bad.conf:5:"* ]] || vm_fail "error does not name the line: $out"
vm_log "bad config: $out"

if grep -E "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$DROWSE_OUT/emu.log"; then
        vm_fail "sanitizer report in the emulator log"
fi
vm_log "emu-control: all checks passed"
