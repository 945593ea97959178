#!/bin/bash
# drowse-emu's disk against a real kernel: stock `usbip attach` over TCP and local attach, identity
# (size, vendor, serial), a filesystem round trip across detach/re-attach, fio with verification,
# runtime PM over the vhci root port, and kill -9 during synced writes.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
img=/tmp/emu.img
readonly size_mb=192 serial=DRW00001
emu_pid=

# The guest boots without networking; usbip over TCP needs loopback.
ip link set lo up
vm_modprobe vhci-hcd
vm_modprobe usb-storage
vm_modprobe sd_mod
vm_modprobe ext4

start_emu() {
        "$emu" --disk "$img,size=${size_mb}M,serial=$serial,vendor=DROWSE,product=TestDisk" "$@" \
                >>"$DROWSE_OUT/emu.log" 2>&1 &
        emu_pid=$!
}

stop_emu() {
        [[ -n $emu_pid ]] || return 0
        kill -TERM "$emu_pid" 2>/dev/null || true
        wait "$emu_pid" || true
        emu_pid=
}

# The emulated disk: an sd device behind vhci with our serial.
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

usb_device_of() { # the usb_device sysfs dir above the disk
        local p
        p=$(readlink -f "/sys/block/$disk/device")
        while [[ $p != / ]]; do
                [[ -f $p/idVendor ]] && { echo "$p"; return 0; }
                p=${p%/*}
        done
        return 1
}

disk=

vm_log "== TCP: usbip list / attach against drowse-emu"
start_emu --listen 127.0.0.1:3240
vm_wait_for 20 usbip list -r 127.0.0.1
list=$(usbip list -r 127.0.0.1)
vm_log "$list"
[[ $list == *"1-1"*"1209:0001"* ]] || vm_fail "usbip list -r does not show 1-1 (1209:0001)"
usbip attach -r 127.0.0.1 -b 1-1 || vm_fail "usbip attach failed"
vm_wait_for 60 find_disk
find_disk
vm_log "attached as /dev/$disk"
usbip port | tee -a "$DROWSE_OUT/usbip-port.txt" >&2

[[ $(cat "/sys/block/$disk/size") -eq $((size_mb * 2048)) ]] || vm_fail "size $(cat /sys/block/$disk/size) sectors"
udev_dir=$(usb_device_of)
[[ $(cat "$udev_dir/serial") == "$serial" ]] || vm_fail "USB serial is $(cat "$udev_dir/serial")"
[[ $(cat "$udev_dir/idVendor"):$(cat "$udev_dir/idProduct") == 1209:0001 ]] || vm_fail "wrong ids"
inq=$(sg_inq "/dev/$disk")
[[ $inq == *"Vendor identification: DROWSE"* && $inq == *"Product identification: TestDisk"* ]] ||
        vm_fail "sg_inq: $inq"
vpd=$(sg_inq -p 0x80 "/dev/$disk")
[[ $vpd == *"$serial"* ]] || vm_fail "VPD 0x80 lacks the serial: $vpd"
cap=$(sg_readcap -l "/dev/$disk")
[[ $cap == *"Last LBA=$((size_mb * 2048 - 1))"* && $cap == *"Logical block length=512 bytes"* ]] ||
        vm_fail "sg_readcap: $cap"
lsusb -v -d 1209:0001 >"$DROWSE_OUT/lsusb-v.txt" 2>&1 || vm_fail "lsusb -v failed"
grep -q "iSerial .*$serial" "$DROWSE_OUT/lsusb-v.txt" || vm_fail "lsusb -v does not show the serial"

vm_log "== filesystem round trip: mkfs, 64 MiB of random data, fsck, detach, re-attach"
mkfs.ext4 -q -F "/dev/$disk"
mkdir -p /tmp/mnt-emu
mount "/dev/$disk" /tmp/mnt-emu
head -c $((64 * 1024 * 1024)) /dev/urandom >/tmp/payload
cp /tmp/payload /tmp/mnt-emu/payload
sync
sum=$(sha256sum </tmp/payload)
umount /tmp/mnt-emu
fsck.ext4 -n -f "/dev/$disk" >&2 || vm_fail "fsck reported problems"

port=$(usbip port | sed -n 's/^Port \([0-9]*\): <Port in Use>.*/\1/p' | head -n1)
[[ -n $port ]] || vm_fail "no imported port in usbip port"
usbip detach -p "$port" || vm_fail "usbip detach failed"
vm_wait_for 30 no_disk
usbip attach -r 127.0.0.1 -b 1-1 || vm_fail "second usbip attach failed"
vm_wait_for 60 find_disk
mount "/dev/$disk" /tmp/mnt-emu
[[ $(sha256sum </tmp/mnt-emu/payload) == "$sum" ]] || vm_fail "checksum differs after re-attach"
umount /tmp/mnt-emu
vm_log "checksum matches after detach and re-attach"

vm_log "== fio with verification"
fio --name=verify --filename="/dev/$disk" --direct=1 --ioengine=libaio --rw=randrw --bs=4k,64k \
        --size=32M --offset=128M --iodepth=8 --numjobs=1 --verify=crc32c --verify_fatal=1 --do_verify=1 \
        --output="$DROWSE_OUT/fio-qd8.txt" || vm_fail "fio (qd8) failed: $(tail -n 20 "$DROWSE_OUT/fio-qd8.txt")"
fio --name=verify1 --filename="/dev/$disk" --direct=1 --ioengine=psync --rw=randwrite --bs=16k \
        --size=8M --offset=160M --verify=md5 --verify_fatal=1 --do_verify=1 \
        --output="$DROWSE_OUT/fio-qd1.txt" || vm_fail "fio (qd1) failed"
grep -q "err= 0" "$DROWSE_OUT/fio-qd8.txt" || vm_fail "fio reported errors"

vm_log "== runtime PM over the vhci root port"
sdev=$(readlink -f "/sys/block/$disk/device")
udev_dir=$(usb_device_of)
echo 500 >"$sdev/power/autosuspend_delay_ms"
echo auto >"$sdev/power/control"
echo 500 >"$udev_dir/power/autosuspend_delay_ms"
echo auto >"$udev_dir/power/control"
suspended() { [[ $(cat "$sdev/power/runtime_status") == suspended && $(cat "$udev_dir/power/runtime_status") == suspended ]]; }
vm_wait_for 30 suspended
vm_log "disk and USB device runtime-suspended"
grep -c . "$DROWSE_OUT/emu.log" >/dev/null
before=$(grep -c "the host resumed the device" "$DROWSE_OUT/emu.log" || true)
dd if="/dev/$disk" of=/dev/null bs=4k count=1 iflag=direct skip=1000 2>/dev/null || vm_fail "read after suspend failed"
[[ $(cat "$udev_dir/power/runtime_status") == active ]] || vm_fail "USB device not active after I/O"
vm_wait_for 10 test "$(grep -c "the host resumed the device" "$DROWSE_OUT/emu.log")" -gt "$before"
vm_log "emulator saw the resume: $(grep "the host resumed the device" "$DROWSE_OUT/emu.log" | tail -n1)"
echo on >"$udev_dir/power/control"

port=$(usbip port | sed -n 's/^Port \([0-9]*\): <Port in Use>.*/\1/p' | head -n1)
usbip detach -p "$port"
vm_wait_for 30 no_disk
stop_emu

vm_log "== local attach (socketpair to vhci_hcd, no TCP)"
start_emu --attach --no-listen
vm_wait_for 60 find_disk
mount "/dev/$disk" /tmp/mnt-emu
[[ $(sha256sum </tmp/mnt-emu/payload) == "$sum" ]] || vm_fail "checksum differs over local attach"
umount /tmp/mnt-emu
grep -q "attached to vhci port" "$DROWSE_OUT/emu.log" || vm_fail "no attach line in the log"
stop_emu
vm_wait_for 30 no_disk
vm_log "SIGTERM detached the disk"

vm_log "== kill -9 during synced writes"
start_emu --attach --no-listen
vm_wait_for 60 find_disk
# Records of 64 KiB at increasing offsets, each written O_DIRECT|O_DSYNC: once dd returns, the
# kernel has the device's word that the data is stored.
acked=0
(
        i=0
        while :; do
                printf 'drowse-record-%08d\n' "$i" | dd of="/dev/$disk" bs=64k seek=$((2048 + i)) conv=sync,notrunc,nocreat \
                        oflag=direct,dsync status=none 2>/dev/null || exit 0
                echo "$i" >/tmp/acked
                i=$((i + 1))
        done
) &
writer=$!
vm_wait_for 60 test -s /tmp/acked
sleep 2
kill -9 "$emu_pid"
wait "$emu_pid" 2>/dev/null || true
emu_pid=
# nocreat: once the disk is gone, dd must fail instead of writing a plain file under /dev.
vm_wait_for 30 no_disk
kill "$writer" 2>/dev/null || true
wait "$writer" || true
acked=$(cat /tmp/acked)
vm_log "emulator killed after record $acked was acknowledged"
vm_wait_for 30 no_disk
start_emu --attach --no-listen
vm_wait_for 60 find_disk
for ((i = 0; i <= acked; i++)); do
        got=$(dd if="/dev/$disk" bs=64k skip=$((2048 + i)) count=1 iflag=direct status=none | head -c 23)
        [[ $got == "$(printf 'drowse-record-%08d' "$i")" ]] || vm_fail "record $i of $acked lost after kill -9: '$got'"
done
vm_log "all $((acked + 1)) acknowledged records survived kill -9"
stop_emu

if grep -E "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$DROWSE_OUT/emu.log"; then
        vm_fail "sanitizer report in the emulator log"
fi
vm_log "emu-disk: all checks passed"
