#!/bin/bash
# Passthrough power management against a real kernel: dummy_hcd gadgets exported by drowse-emu behind a
# virtual hub, to the same kernel's vhci_hcd. The importing kernel's autosuspend of the exported disk
# suspends the hub port, and the REAL device (the gadget on dummy_hcd) then autosuspends under its own
# runtime PM; I/O to the exported disk resumes the real device before any URB reaches it. A HID gadget
# the importer armed for remote wakeup (usbhid, event node open) signals wakeup on dummy_hcd while both
# are suspended: the exported keyboard resumes through the hub without I/O from the importer. A real
# device with power/control=on stays awake, with one notice; stopping drowse-emu while the real device
# sleeps neither hangs nor keeps the device. A resume-stuck fault injected while both sleep makes the
# importer give the device up and enumerate it again; and the real device imports over TCP with the
# stock usbip tools too.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
img=/tmp/gadget.img
readonly serial=drowse-pt size_mb=64
gadget=/sys/kernel/config/usb_gadget/pt
emu_pid=

cleanup() {
        [[ -n $emu_pid ]] && kill -TERM "$emu_pid" 2>/dev/null && wait "$emu_pid" || true
}
trap cleanup EXIT

ctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --emu-socket /run/emu.ctl "$@"; }
field() { # field DEVICE PYTHON-EXPRESSION-ON-d
        ctl emu show "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"
}

start_emu() { # LOG ARGS...
        local log=$DROWSE_OUT/$1
        shift
        "$emu" --log-level debug --control /run/emu.ctl "$@" >>"$log" 2>&1 &
        emu_pid=$!
}

stop_emu() { # must not hang, whatever the real device is doing
        [[ -n $emu_pid ]] || return 0
        kill -TERM "$emu_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 300; i++)); do
                kill -0 "$emu_pid" 2>/dev/null || break
                sleep 0.1
        done
        kill -0 "$emu_pid" 2>/dev/null && vm_fail "drowse-emu did not exit within 30 s of SIGTERM"
        wait "$emu_pid" || vm_fail "drowse-emu exited with an error"
        emu_pid=
}

usb_dev_of_serial() { # SERIAL HCD: the USB device directory with that serial under that controller
        local dev
        for dev in /sys/bus/usb/devices/*; do
                [[ -f $dev/serial && $(<"$dev/serial") == "$1" ]] || continue
                [[ $(readlink -f "$dev") == */"$2".* ]] || continue
                readlink -f "$dev"
                return 0
        done
        return 1
}

disk_on() { # HCD: sets $disk to our gadget's sd device behind that controller
        local d p
        for d in $(vm_usb_disks); do
                p=$(readlink -f "/sys/block/$d/device")
                [[ $p == */"$1".* && -b /dev/$d ]] || continue
                while [[ $p != / && ! -f $p/serial ]]; do p=${p%/*}; done
                [[ -f $p/serial && $(<"$p/serial") == "$serial" ]] || continue
                disk=$d
                return 0
        done
        return 1
}

status_is() { [[ $(<"$1/power/runtime_status") == "$2" ]]; }
driver_of() { local l; l=$(readlink "/sys/bus/usb/devices/$1/driver" 2>/dev/null) || { echo none; return 0; }; echo "${l##*/}"; }
driver_is() { [[ $(driver_of "$1") == "$2" ]]; }

check_dmesg() { # no resets, I/O errors or kernel complaints since the last call
        local new
        new=$(dmesg -c)
        echo "$new" >>"$DROWSE_OUT/dmesg-phases.txt"
        echo "===== end of $1" >>"$DROWSE_OUT/dmesg-phases.txt"
        if grep -E "BUG:|WARNING:|Oops|general protection|I/O error|reset high-speed USB device|reset full-speed USB device|device descriptor read.*error|usbip.*(error|fail)" <<<"$new" >&2; then
                vm_fail "kernel complaints during $1 (above)"
        fi
}

autosuspend() { # DIR DELAY_MS: let the kernel autosuspend that device
        echo "$2" >"$1/power/autosuspend_delay_ms"
        echo auto >"$1/power/control"
}

# The log dir is reused from run to run (meson's is): the checks count lines in these.
rm -f "$DROWSE_OUT"/emu-*.log "$DROWSE_OUT/dmesg-phases.txt"

vm_modprobe dummy_hcd num=2
vm_modprobe usb-storage
vm_modprobe sd_mod
vm_modprobe vhci-hcd

truncate -s "${size_mb}M" "$img"
head -c $((4 * 1024 * 1024)) /dev/urandom >/tmp/payload
dd if=/tmp/payload of="$img" bs=1M conv=notrunc status=none
sum=$(sha256sum </tmp/payload)
vm_gadget_disk pt "$img"
vm_wait_for 60 disk_on dummy_hcd
real=$(usb_dev_of_serial "$serial" dummy_hcd) || vm_fail "no gadget under dummy_hcd"
rname=${real##*/}
vm_log "real device: $rname ($(<"$real/power/runtime_status"), power/control $(<"$real/power/control"))"
dmesg -c >"$DROWSE_OUT/dmesg-setup.txt"

vm_log "== power/control=on on the real device: it stays awake, and drowse-emu says so once"
echo on >"$real/power/control"
start_emu emu-on.log --hub h,ports=2 --passthrough "$rname,name=gadget,hub=h,port=2" --attach --no-listen
vm_wait_for 60 disk_on vhci_hcd
vm_wait_for 10 grep -q "power/control=on: it stays awake" "$DROWSE_OUT/emu-on.log"
[[ $(grep -c "power/control=on" "$DROWSE_OUT/emu-on.log") -eq 1 ]] || vm_fail "the power/control notice is not logged once"
exported=$(usb_dev_of_serial "$serial" vhci_hcd) || vm_fail "no exported device under vhci_hcd"
autosuspend "$(readlink -f "/sys/block/$disk/device")" 100
autosuspend "$exported" 100
vm_wait_for 30 status_is "$exported" suspended
[[ $(field gadget 'd["link"]') == suspended ]] || vm_fail "the hub port is not suspended"
sleep 2
status_is "$real" active || vm_fail "the real device suspended though its power/control is on"
vm_log "exported device suspended, real device stays $(<"$real/power/runtime_status") with power/control=on"
stop_emu
vm_wait_for 30 driver_is "$rname:1.0" usb-storage
check_dmesg "power/control=on"

vm_log "== the importer's autosuspend lets the real device autosuspend"
autosuspend "$real" 100
start_emu emu-disk.log --hub h,ports=2 --passthrough "$rname,name=gadget,hub=h,port=2" --attach --no-listen
vm_wait_for 60 disk_on vhci_hcd
vdisk=$disk
exported=$(usb_dev_of_serial "$serial" vhci_hcd) || vm_fail "no exported device under vhci_hcd"
[[ $exported == */vhci_hcd.*/usb*/*-*/*-*.2 ]] || vm_fail "the exported device is not behind hub port 2: $exported"
driver_is "$rname:1.0" usbfs || vm_fail "the real device is not claimed by usbfs"
[[ $(field gadget 'd["pm"]') == True ]] || vm_fail "usbfs runtime PM is not in use"
status_is "$real" active || vm_fail "the real device is $(<"$real/power/runtime_status") while exported and in use"
autosuspend "$(readlink -f "/sys/block/$vdisk/device")" 100
autosuspend "$exported" 100
vm_wait_for 30 status_is "$exported" suspended
[[ $(field gadget 'd["link"]') == suspended ]] || vm_fail "the hub port is not suspended"
vm_wait_for 30 status_is "$real" suspended
vm_log "exported device suspended, hub port suspended, real device $rname $(<"$real/power/runtime_status")"

vm_log "== I/O to the exported disk resumes the real device first"
resumes=$(field gadget 'd["real_resumes"]')
[[ $(dd if="/dev/$vdisk" bs=1M count=4 iflag=direct status=none | sha256sum) == "$sum" ]] ||
        vm_fail "data read through the resumed devices differs"
# drowse-emu resumes the real device (FORBID_SUSPEND) when the port resumes, before the first URB
# after it; it notes whether sysfs said suspended just before.
[[ $(field gadget 'd["real_resumes"]') -gt $resumes ]] || vm_fail "the suspended real device was not resumed on the port's resume"
grep -q "$rname awake again after .* (it was suspended)" "$DROWSE_OUT/emu-disk.log" || vm_fail "no resume of the real device in the log"
vm_log "payload read back; $(grep "awake again after" "$DROWSE_OUT/emu-disk.log" | tail -n 1 | sed 's/.*: //')"
check_dmesg "resume by I/O"
vm_log "== a failed resume injected in the middle: the importer gives the device up and enumerates it again"
# resume-stuck keeps the virtual hub port suspended when the importer resumes it: the kernel must
# report the failed resume, disconnect the device and enumerate it again, through passthrough, on a
# real device that drowse-emu woke (the port's resume) and that never went away.
vm_wait_for 30 status_is "$exported" suspended
vm_wait_for 30 status_is "$real" suspended
# The kernel says why it gave the device up only at debug level.
echo 'file drivers/usb/core/hub.c +p' >/sys/kernel/debug/dynamic_debug/control || vm_fail "no dynamic debug"
dmesg -c >>"$DROWSE_OUT/dmesg-phases.txt"
n0=$(<"$exported/devnum")
out=$(ctl emu fault add gadget resume-stuck) || vm_fail "fault add gadget resume-stuck refused"
fid=${out##* }
dd if="/dev/$vdisk" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null || true
said() { dmesg | grep -Eq "$1"; }
vm_wait_for 60 said "can't resume|after resume, -19"
vm_wait_for 60 said "USB disconnect, device number $n0"
vm_wait_for 60 disk_on vhci_hcd
vdisk=$disk
exported=$(usb_dev_of_serial "$serial" vhci_hcd) || vm_fail "no exported device after the re-enumeration"
[[ $(<"$exported/devnum") != "$n0" ]] || vm_fail "same device number: not re-enumerated"
[[ $(ctl emu fault list --json | python3 -c "import json,sys; print([f['hits'] for f in json.load(sys.stdin) if f['id'] == $fid][0])") == 1 ]] ||
        vm_fail "the resume-stuck fault was not hit exactly once"
[[ $(dd if="/dev/$vdisk" bs=1M count=4 iflag=direct status=none | sha256sum) == "$sum" ]] ||
        vm_fail "data read through the re-enumerated device differs"
driver_is "$rname:1.0" usbfs || vm_fail "the real device left usbfs during the re-enumeration"
vm_log "$(dmesg | grep -Eo "can't resume.*|after resume, -19.*" | head -1); re-enumerated as device $(<"$exported/devnum") ($vdisk), payload intact, real device still exported"
echo 'file drivers/usb/core/hub.c -p' >/sys/kernel/debug/dynamic_debug/control
dmesg -c >>"$DROWSE_OUT/dmesg-phases.txt"
autosuspend "$(readlink -f "/sys/block/$vdisk/device")" 100
autosuspend "$exported" 100

vm_log "== and they both suspend again; then drowse-emu stops while the real device sleeps"
vm_wait_for 30 status_is "$exported" suspended
vm_wait_for 30 status_is "$real" suspended
[[ $(field gadget 'd["idles"]') -ge 2 ]] || vm_fail "the real device was let idle only once"
start=$(date +%s%N)
stop_emu
vm_log "drowse-emu stopped in $((($(date +%s%N) - start) / 1000000)) ms with the real device suspended"
vm_wait_for 30 driver_is "$rname:1.0" usb-storage
vm_wait_for 60 disk_on dummy_hcd
check_dmesg "stop while suspended"

vm_log "== the same real device imported over TCP with the stock usbip tools"
ip link set lo up
start_emu emu-tcp.log --passthrough "$rname,name=gadget" --listen 127.0.0.1:3241
vm_wait_for 20 usbip --tcp-port 3241 list -r 127.0.0.1
list=$(usbip --tcp-port 3241 list -r 127.0.0.1)
busid=$(sed -n 's/^ *\([0-9]*-[0-9.]*\): .*(0525:a4a5)$/\1/p' <<<"$list" | head -n1)
[[ -n $busid ]] || vm_fail "usbip list -r does not show the passthrough device (0525:a4a5): $list"
driver_is "$rname:1.0" usbfs || vm_fail "the real device is not claimed by usbfs while exported over TCP"
usbip --tcp-port 3241 attach -r 127.0.0.1 -b "$busid" || vm_fail "usbip attach -b $busid failed"
vm_wait_for 60 disk_on vhci_hcd
[[ $(dd if="/dev/$disk" bs=1M count=4 iflag=direct status=none | sha256sum) == "$sum" ]] ||
        vm_fail "data read over TCP through passthrough differs"
port=$(usbip port | sed -n 's/^Port \([0-9]*\): <Port in Use>.*/\1/p' | head -n1)
[[ -n $port ]] || vm_fail "no imported port in usbip port"
usbip detach -p "$port" || vm_fail "usbip detach -p $port failed"
gone_from_vhci() { ! usb_dev_of_serial "$serial" vhci_hcd >/dev/null; }
vm_wait_for 30 gone_from_vhci
stop_emu
vm_wait_for 30 driver_is "$rname:1.0" usb-storage
vm_log "imported over TCP as $busid (payload intact), detached with usbip, the real device is back with usb-storage"
check_dmesg "TCP import"

vm_log "== remote wakeup: a HID gadget the importer armed wakes the exported keyboard through the hub"
vm_modprobe usbhid
vm_modprobe hid_generic
vm_modprobe evdev
modprobe -d "$DROWSE_MODDIR" usb_f_hid 2>/dev/null || vm_fail "no usb_f_hid module in this kernel"
udc2=$(find /sys/class/udc -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | sed -n 2p)
[[ -n $udc2 && -e /sys/class/udc/$udc2/srp ]] || vm_fail "no second UDC with an srp (wakeup) attribute"
kg=/sys/kernel/config/usb_gadget/kbd
mkdir "$kg"
echo 0x1d6b >"$kg/idVendor"
echo 0x0104 >"$kg/idProduct"
mkdir "$kg/strings/0x409"
echo drowse-kbd >"$kg/strings/0x409/serialnumber"
echo drowse >"$kg/strings/0x409/manufacturer"
echo "drowse test keyboard" >"$kg/strings/0x409/product"
mkdir "$kg/configs/c.1"
echo 0xa0 >"$kg/configs/c.1/bmAttributes" # bus powered, remote wakeup
mkdir "$kg/functions/hid.usb0"
echo 1 >"$kg/functions/hid.usb0/protocol"
echo 1 >"$kg/functions/hid.usb0/subclass"
echo 8 >"$kg/functions/hid.usb0/report_length"
# The boot keyboard report descriptor (HID 1.11 appendix B.1).
printf '\x05\x01\x09\x06\xa1\x01\x05\x07\x19\xe0\x29\xe7\x15\x00\x25\x01\x75\x01\x95\x08\x81\x02\x95\x01\x75\x08\x81\x01\x95\x05\x75\x01\x05\x08\x19\x01\x29\x05\x91\x02\x95\x01\x75\x03\x91\x01\x95\x06\x75\x08\x15\x00\x25\x65\x05\x07\x19\x00\x29\x65\x81\x00\xc0' \
        >"$kg/functions/hid.usb0/report_desc"
ln -s "$kg/functions/hid.usb0" "$kg/configs/c.1/"
echo "$udc2" >"$kg/UDC"
vm_wait_for 60 usb_dev_of_serial drowse-kbd dummy_hcd
kreal=$(usb_dev_of_serial drowse-kbd dummy_hcd)
kname=${kreal##*/}
vm_wait_for 30 driver_is "$kname:1.0" usbhid
autosuspend "$kreal" 100

start_emu emu-kbd.log --hub h,ports=2 --passthrough "$kname,name=kbd,hub=h,port=2" --attach --no-listen
vm_wait_for 60 usb_dev_of_serial drowse-kbd vhci_hcd
kexp=$(usb_dev_of_serial drowse-kbd vhci_hcd)
vhci_event() { # sets $ev to the event node of the keyboard behind vhci
        local e
        for e in /sys/class/input/event*; do
                [[ $(readlink -f "$e/device") == */vhci_hcd.* ]] || continue
                ev=/dev/input/${e##*/}
                return 0
        done
        return 1
}
vm_wait_for 60 vhci_event
vm_wait_for 10 test -c "$ev"
# usbhid asks for remote wakeup (needs_remote_wakeup) while the event node is open.
sleep 600 <"$ev" &
holder=$!
autosuspend "$kexp" 100
vm_wait_for 30 status_is "$kexp" suspended
[[ $(field kbd 'd["remote_wakeup"]') == True ]] || vm_fail "the importer did not arm remote wakeup"
[[ $(field kbd 'd["link"]') == suspended ]] || vm_fail "the keyboard's hub port is not suspended"
vm_wait_for 30 status_is "$kreal" suspended
vm_log "exported keyboard suspended with remote wakeup armed, real keyboard $kname $(<"$kreal/power/runtime_status")"
resumes_before=$(<"$kexp/power/runtime_active_time")
echo 1 >"/sys/class/udc/$udc2/srp"
vm_wait_for 30 grep -q "woke up on its own: remote wakeup signalled through the hub" "$DROWSE_OUT/emu-kbd.log"
[[ $(field h 'd["hub_stats"]["remote_wakeups"] >= 1') == True ]] || vm_fail "the hub carried no remote wakeup"
[[ $(field kbd 'd["wakeups_forwarded"]') -ge 1 ]] || vm_fail "no wakeup forwarded"
# The exported keyboard resumed (runtime_active_time grows only while active) with nothing but the
# wakeup to resume it: the event node was idle all along.
woke() { [[ $(<"$kexp/power/runtime_active_time") -gt $resumes_before ]]; }
vm_wait_for 30 woke
vm_log "the real keyboard's remote wakeup resumed the exported keyboard through the hub"
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
check_dmesg "remote wakeup"
stop_emu
vm_wait_for 30 driver_is "$kname:1.0" usbhid

if grep -E "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$DROWSE_OUT"/emu-*.log; then
        vm_fail "sanitizer report in the emulator log"
fi
vm_log "passthrough-pm: all checks passed"
