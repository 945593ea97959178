#!/bin/bash
# drowse-emu --passthrough against a real kernel. dummy_hcd with a configfs f_mass_storage gadget gives
# the guest a real USB disk; drowse-emu takes it over with libusb (usb-storage detached, the interface
# claimed by usbfs) and exports it to the same kernel's vhci_hcd by local attach, on a root port and
# then behind a virtual hub. The exported disk carries the gadget's serial and size, survives a
# filesystem round trip (checked down to the gadget's backing file) and fio --verify without a single
# reset; stopping drowse-emu gives the gadget back to usb-storage; unplugging the gadget while it is
# exported unplugs the exported disk and leaves drowse-emu running. A gadget that stalls bulk IN after
# short data gets its stalls to the importer and the importer's CLEAR_FEATURE(HALT) to the gadget; a HID
# gadget on a second UDC carries key presses (interrupt IN) and, when usbhid lets go of the exported
# keyboard, the importer's CMD_UNLINK cancels the real transfer and the endpoint stays usable.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
img=/tmp/gadget.img
readonly serial=drowse-pt size_mb=96
gadget=/sys/kernel/config/usb_gadget/pt
emu_pid=

cleanup() {
        [[ -n $emu_pid ]] && kill -TERM "$emu_pid" 2>/dev/null && wait "$emu_pid" || true
}
trap cleanup EXIT

start_emu() {
        "$emu" --log-level debug "$@" >>"$DROWSE_OUT/emu.log" 2>&1 &
        emu_pid=$!
}

stop_emu() {
        [[ -n $emu_pid ]] || return 0
        kill -TERM "$emu_pid" 2>/dev/null || true
        wait "$emu_pid" || vm_fail "drowse-emu exited with an error: $(tail -n 20 "$DROWSE_OUT/emu.log")"
        emu_pid=
}

# disk_on HCD: sets $disk to the sd device with our serial behind that host controller (dummy_hcd or
# vhci_hcd). The gadget and the exported device have the same serial; only the controller tells them
# apart.
disk_on() {
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
no_disk_on() { ! disk_on "$1"; }

# The gadget's USB device as /sys/bus/usb/devices names it ("1-1").
gadget_path() {
        local dev
        for dev in /sys/bus/usb/devices/*; do
                [[ -f $dev/serial && $(<"$dev/serial") == "$serial" ]] || continue
                [[ $(readlink -f "$dev") == */dummy_hcd.* ]] || continue
                echo "${dev##*/}"
                return 0
        done
        return 1
}

driver_of() { # interface sysfs name -> its driver, or "none"
        local l
        l=$(readlink "/sys/bus/usb/devices/$1/driver" 2>/dev/null) || { echo none; return 0; }
        echo "${l##*/}"
}
driver_is() { [[ $(driver_of "$1") == "$2" ]]; }

emu_alive() { kill -0 "$emu_pid" 2>/dev/null; }

check_dmesg() { # no resets, I/O errors or kernel complaints since the last call
        local new
        new=$(dmesg -c)
        echo "$new" >>"$DROWSE_OUT/dmesg-phases.txt"
        echo "===== end of $1" >>"$DROWSE_OUT/dmesg-phases.txt"
        if grep -E "BUG:|WARNING:|Oops|general protection|I/O error|reset high-speed USB device|device descriptor read.*error|usbip.*(error|fail)" <<<"$new" >&2; then
                vm_fail "kernel complaints during $1 (above)"
        fi
}

vm_modprobe dummy_hcd num=2
vm_modprobe usb-storage
vm_modprobe sd_mod
vm_modprobe ext4
vm_modprobe vhci-hcd

truncate -s "${size_mb}M" "$img"
vm_gadget_disk pt "$img"
udc=$(<"$gadget/UDC")
vm_wait_for 60 disk_on dummy_hcd
gdisk=$disk
gpath=$(gadget_path) || vm_fail "no USB device with serial $serial under dummy_hcd"
vm_log "gadget disk /dev/$gdisk at USB $gpath, interface driver $(driver_of "$gpath:1.0")"
driver_is "$gpath:1.0" usb-storage || vm_fail "the gadget's interface is not bound to usb-storage"
dmesg -c >"$DROWSE_OUT/dmesg-setup.txt"

vm_log "== refusals: a missing device and a hub are refused with a reason"
if "$emu" --passthrough 0525:ffff --attach --no-listen >"$DROWSE_OUT/refuse-missing.log" 2>&1; then
        vm_fail "drowse-emu started with a passthrough device that does not exist"
fi
grep -q "no USB device 0525:ffff" "$DROWSE_OUT/refuse-missing.log" || vm_fail "no reason given for a missing device"
if "$emu" --passthrough "$gpath.9" --no-listen --attach >"$DROWSE_OUT/refuse-path.log" 2>&1; then
        vm_fail "drowse-emu started with a path nothing is plugged into"
fi
grep -q "no USB device at $gpath.9" "$DROWSE_OUT/refuse-path.log" || vm_fail "no reason given for an empty path"

vm_log "== root port: the gadget exported through passthrough to vhci"
start_emu --passthrough "0525:a4a5:$serial,name=gadget" --attach --no-listen
vm_wait_for 60 disk_on vhci_hcd
vdisk=$disk
vm_log "exported disk /dev/$vdisk; gadget interface driver now $(driver_of "$gpath:1.0")"
driver_is "$gpath:1.0" usbfs || vm_fail "the gadget's interface is not claimed by usbfs while exported"
vm_wait_for 30 no_disk_on dummy_hcd
[[ $(<"/sys/block/$vdisk/size") -eq $((size_mb * 2048)) ]] ||
        vm_fail "exported disk has $(<"/sys/block/$vdisk/size") sectors, the gadget $((size_mb * 2048))"

vm_log "== filesystem round trip on the exported disk"
# The file system takes the first 48 MiB; fio below writes behind it, so the hub phase can read the
# payload back.
mkfs.ext4 -q -F "/dev/$vdisk" 48M
mkdir -p /tmp/mnt
mount "/dev/$vdisk" /tmp/mnt
head -c $((16 * 1024 * 1024)) /dev/urandom >/tmp/payload
sum=$(sha256sum </tmp/payload)
cp /tmp/payload /tmp/mnt/payload
sync
umount /tmp/mnt
echo 3 >/proc/sys/vm/drop_caches
mount "/dev/$vdisk" /tmp/mnt
[[ $(sha256sum </tmp/mnt/payload) == "$sum" ]] || vm_fail "checksum differs after remount"
umount /tmp/mnt
fsck.ext4 -n -f "/dev/$vdisk" >&2 || vm_fail "fsck reported problems"
# What the gadget stored: the same file, read from its backing image without any USB in between.
[[ $(debugfs -R "cat /payload" "$img" 2>/dev/null | sha256sum) == "$sum" ]] ||
        vm_fail "the gadget's backing file does not hold the payload"
vm_log "checksum matches on the exported disk and in the gadget's backing file"

vm_log "== fio with verification on the exported disk"
fio --name=verify --filename="/dev/$vdisk" --direct=1 --ioengine=libaio --rw=randrw --bs=4k,64k \
        --size=16M --offset=64M --iodepth=4 --numjobs=1 --verify=crc32c --verify_fatal=1 --do_verify=1 \
        --output="$DROWSE_OUT/fio.txt" || vm_fail "fio failed: $(tail -n 20 "$DROWSE_OUT/fio.txt")"
grep -q "err= 0" "$DROWSE_OUT/fio.txt" || vm_fail "fio reported errors"
check_dmesg "root-port I/O"

vm_log "== stop: the gadget goes back to usb-storage"
stop_emu
vm_wait_for 30 no_disk_on vhci_hcd
vm_wait_for 30 driver_is "$gpath:1.0" usb-storage
vm_wait_for 60 disk_on dummy_hcd
vm_log "gadget disk back as /dev/$disk, interface driver $(driver_of "$gpath:1.0")"
grep -q "kernel drivers re-attached to 1 interface" "$DROWSE_OUT/emu.log" || vm_fail "no give-back in the log"
check_dmesg "give-back"

vm_log "== behind a virtual hub: the gadget on hub port 2"
start_emu --hub h,ports=2 --passthrough "$gpath,name=gadget,hub=h,port=2" --attach --no-listen
vm_wait_for 60 disk_on vhci_hcd
vdisk=$disk
p=$(readlink -f "/sys/block/$vdisk/device")
[[ $p == */vhci_hcd.*/usb*/*-*/*-*.2/* ]] || vm_fail "exported disk is not behind the hub's port 2: $p"
mount -o ro "/dev/$vdisk" /tmp/mnt
[[ $(sha256sum </tmp/mnt/payload) == "$sum" ]] || vm_fail "checksum differs behind the hub"
umount /tmp/mnt
check_dmesg "hub I/O"
vm_log "payload reads back behind the hub"

vm_log "== unplug: the gadget leaves while exported, so does the exported disk"
echo "" >"$gadget/UDC"
vm_wait_for 30 no_disk_on vhci_hcd
vm_wait_for 30 grep -q "is gone" "$DROWSE_OUT/emu.log"
emu_alive || vm_fail "drowse-emu died when the real device went away"
grep -q "unplugged from its hub port" "$DROWSE_OUT/emu.log" || vm_fail "the exported device was not unplugged from its hub port"
stop_emu
new=$(dmesg -c)
echo "$new" >>"$DROWSE_OUT/dmesg-phases.txt"
grep -E "BUG:|WARNING:|Oops|general protection" <<<"$new" >&2 && vm_fail "kernel complaints during the unplug"

echo "$udc" >"$gadget/UDC"
vm_wait_for 60 disk_on dummy_hcd
vm_log "the gadget enumerates again after drowse-emu is gone"

vm_log "== stalls: the gadget halts bulk IN after short data, the importer clears the halt"
# f_mass_storage only takes the stall setting while it is in no configuration.
echo "" >"$gadget/UDC"
rm "$gadget/configs/c.1/mass_storage.0"
echo 1 >"$gadget/functions/mass_storage.0/stall"
ln -s "$gadget/functions/mass_storage.0" "$gadget/configs/c.1/"
echo "$udc" >"$gadget/UDC"
vm_wait_for 60 disk_on dummy_hcd
dmesg -c >>"$DROWSE_OUT/dmesg-phases.txt"
: >"$DROWSE_OUT/emu-stall.log"
"$emu" --log-level debug --passthrough "0525:a4a5:$serial" --attach --no-listen >>"$DROWSE_OUT/emu-stall.log" 2>&1 &
emu_pid=$!
vm_wait_for 60 disk_on vhci_hcd
vdisk=$disk
mount -o ro "/dev/$vdisk" /tmp/mnt
[[ $(sha256sum </tmp/mnt/payload) == "$sum" ]] || vm_fail "checksum differs with a stalling gadget"
umount /tmp/mnt
grep -q "stalled" "$DROWSE_OUT/emu-stall.log" || vm_fail "the gadget never stalled (nothing to check)"
grep -q "clearing the halt of endpoint" "$DROWSE_OUT/emu-stall.log" || vm_fail "no CLEAR_FEATURE(HALT) reached the gadget"
check_dmesg "stalling gadget I/O"
vm_log "$(grep -c stalled "$DROWSE_OUT/emu-stall.log") stall(s) forwarded and cleared, payload intact"
stop_emu
vm_wait_for 30 driver_is "$gpath:1.0" usb-storage

vm_log "== HID gadget: interrupt IN through passthrough, CMD_UNLINK cancels the real transfer"
if ! modprobe -d "$DROWSE_MODDIR" usb_f_hid 2>/dev/null; then
        vm_fail "no usb_f_hid module in this kernel"
fi
vm_modprobe usbhid
vm_modprobe hid_generic
vm_modprobe evdev
kg=/sys/kernel/config/usb_gadget/kbd
udc2=$(find /sys/class/udc -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | sed -n 2p)
[[ -n $udc2 && $udc2 != "$udc" ]] || vm_fail "no second UDC"
mkdir "$kg"
echo 0x1d6b >"$kg/idVendor"
echo 0x0104 >"$kg/idProduct"
mkdir "$kg/strings/0x409"
echo drowse-kbd >"$kg/strings/0x409/serialnumber"
echo drowse >"$kg/strings/0x409/manufacturer"
echo "drowse test keyboard" >"$kg/strings/0x409/product"
mkdir "$kg/configs/c.1"
mkdir "$kg/functions/hid.usb0"
echo 1 >"$kg/functions/hid.usb0/protocol"
echo 1 >"$kg/functions/hid.usb0/subclass"
echo 8 >"$kg/functions/hid.usb0/report_length"
# The boot keyboard report descriptor (HID 1.11 appendix B.1).
printf '\x05\x01\x09\x06\xa1\x01\x05\x07\x19\xe0\x29\xe7\x15\x00\x25\x01\x75\x01\x95\x08\x81\x02\x95\x01\x75\x08\x81\x01\x95\x05\x75\x01\x05\x08\x19\x01\x29\x05\x91\x02\x95\x01\x75\x03\x91\x01\x95\x06\x75\x08\x15\x00\x25\x65\x05\x07\x19\x00\x29\x65\x81\x00\xc0' \
        >"$kg/functions/hid.usb0/report_desc"
ln -s "$kg/functions/hid.usb0" "$kg/configs/c.1/"
echo "$udc2" >"$kg/UDC"

kbd_path() { # the keyboard gadget's USB device under dummy_hcd
        local dev
        for dev in /sys/bus/usb/devices/*; do
                [[ -f $dev/serial && $(<"$dev/serial") == drowse-kbd && $(readlink -f "$dev") == */dummy_hcd.* ]] || continue
                echo "${dev##*/}"
                return 0
        done
        return 1
}
vm_wait_for 60 kbd_path
kpath=$(kbd_path)
vm_wait_for 30 driver_is "$kpath:1.0" usbhid
vm_wait_for 10 test -c /dev/hidg0

vhci_event() { # sets $ev to the event node of the keyboard behind vhci
        local e
        for e in /sys/class/input/event*; do
                [[ $(readlink -f "$e/device") == */vhci_hcd.* ]] || continue
                ev=${e##*/}
                return 0
        done
        return 1
}
vhci_hid_intf() { # sets $hintf to the exported keyboard's interface as usbhid knows it
        local i
        for i in /sys/bus/usb/drivers/usbhid/*:*; do
                [[ -e $i && $(readlink -f "$i") == */vhci_hcd.* ]] || continue
                hintf=${i##*/}
                return 0
        done
        return 1
}
key_seen() { od -An -tx1 -v -w24 /tmp/ev.bin | grep -q " 01 00 1e 00 01 00 00 00$"; }

type_a() { # press and release "a" on the gadget; the host must poll for it to go through
        timeout 10 bash -c "printf '\\x00\\x00\\x04\\x00\\x00\\x00\\x00\\x00' >/dev/hidg0 &&
                printf '\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00' >/dev/hidg0" || vm_fail "the key report was not taken"
}

# Reads the keyboard's next events into /tmp/ev.bin and checks "a" came through.
expect_key() {
        local reader
        : >/tmp/ev.bin
        dd if="/dev/input/$ev" of=/tmp/ev.bin bs=24 count=6 status=none &
        reader=$!
        sleep 0.5
        type_a
        vm_wait_for 20 key_seen
        kill "$reader" 2>/dev/null || true
        wait "$reader" 2>/dev/null || true
}

: >"$DROWSE_OUT/emu-kbd.log"
"$emu" --log-level debug --passthrough "1d6b:0104:drowse-kbd,name=kbd" --attach --no-listen \
        >>"$DROWSE_OUT/emu-kbd.log" 2>&1 &
emu_pid=$!
vm_wait_for 60 vhci_event
vm_wait_for 30 vhci_hid_intf
driver_is "$kpath:1.0" usbfs || vm_fail "the keyboard gadget is not claimed by usbfs while exported"
expect_key
vm_log "key press came through the exported keyboard ($ev)"

# usbhid kills its interrupt URB when it lets go: vhci sends CMD_UNLINK for a transfer that is
# waiting on the real device.
echo "$hintf" >/sys/bus/usb/drivers/usbhid/unbind
vm_wait_for 20 grep -q "left before it completed: its transfer is cancelled" "$DROWSE_OUT/emu-kbd.log"
vm_log "CMD_UNLINK cancelled the real interrupt transfer"
echo "$hintf" >/sys/bus/usb/drivers/usbhid/bind
vm_wait_for 30 vhci_event
expect_key
vm_log "the endpoint works after the cancel: key press came through again"
check_dmesg "HID passthrough"
stop_emu
vm_wait_for 30 driver_is "$kpath:1.0" usbhid
vm_log "the keyboard gadget is back with usbhid"

if grep -E "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$DROWSE_OUT/emu.log" "$DROWSE_OUT/emu-stall.log" \
        "$DROWSE_OUT/emu-kbd.log"; then
        vm_fail "sanitizer report in the emulator log"
fi
vm_log "passthrough: all checks passed"
