#!/bin/bash
# Smoke test of the test bed itself: the kernel's own modules load, the usbip tools talk to
# vhci_hcd, and dummy_hcd + a mass-storage gadget give a real USB disk of the expected size.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

vm_log "kernel $DROWSE_KVER ($DROWSE_KERNEL), modules from $DROWSE_MODDIR"
[[ $(uname -r) == "$DROWSE_KVER" ]] || vm_fail "uname -r says $(uname -r), expected $DROWSE_KVER"
[[ -d $DROWSE_MODDIR/lib/modules/$DROWSE_KVER ]] || vm_fail "no module tree for $DROWSE_KVER"
touch "$DROWSE_OUT/smoke-was-here" || vm_fail "out share not writable"

# The bed's contract (docs/testing-vm.md): these are writable, the host root is not.
for d in /tmp /var/tmp /run /var/log /run/lock /dev/shm; do
        : 2>/dev/null >"$d/.smoke" || vm_fail "$d is not writable"
done
if : 2>/dev/null >/etc/.smoke; then vm_fail "/etc is writable: the host root must be read-only"; fi
[[ -f $DROWSE_SRC_DIR/tests/vm/run-guest ]] || vm_fail "source tree not visible at $DROWSE_SRC_DIR"
[[ -z $DROWSE_BUILD_DIR || -d $DROWSE_BUILD_DIR ]] || vm_fail "build dir not visible at $DROWSE_BUILD_DIR"

# usbip side: vhci_hcd and the stock client. `usbip port` keeps state in /var/run/vhci_hcd.
vm_modprobe vhci-hcd
vm_wait_for 10 test -d /sys/devices/platform/vhci_hcd.0
ports=$(usbip port 2>&1) || vm_fail "usbip port failed: $ports"
vm_log "usbip port: $ports"
[[ $ports == *"Imported USB devices"* ]] || vm_fail "usbip port output lacks 'Imported USB devices'"

# A real USB disk: dummy_hcd (UDC + HCD in one) and an f_mass_storage gadget on a 64 MiB image.
readonly size=$((64 * 1024 * 1024))
truncate -s "$size" /tmp/disk.img
vm_modprobe dummy_hcd
vm_modprobe usb-storage
vm_modprobe sd_mod
# Debian's 6.1 has no g_mass_storage (only the configfs function); use it where it exists so
# that both ways of making a gadget disk stay covered.
if modinfo -b "$DROWSE_MODDIR" -k "$DROWSE_KVER" g_mass_storage >/dev/null 2>&1; then
        vm_log "gadget: g_mass_storage"
        vm_modprobe g_mass_storage file=/tmp/disk.img removable=0 stall=0
else
        vm_log "gadget: configfs mass_storage (no g_mass_storage in $DROWSE_KVER)"
        vm_gadget_disk smoke /tmp/disk.img
fi

disk_found() {
        local d
        for d in $(vm_usb_disks); do
                [[ -b /dev/$d && $(cat "/sys/block/$d/size") -eq $((size / 512)) ]] || continue
                disk=$d
                return 0
        done
        return 1
}
disk=
# usb-storage waits delay_use (1 s) before scanning; TCG makes the rest slow too.
vm_wait_for 60 disk_found
disk_found
path=$(readlink -f "/sys/block/$disk/device")
vm_log "USB disk /dev/$disk at $path"
[[ $path == *dummy_hcd* ]] || vm_fail "/dev/$disk is not behind dummy_hcd: $path"
bytes=$(lsblk -bdno SIZE "/dev/$disk")
((bytes == size)) || vm_fail "lsblk says /dev/$disk has $bytes bytes, expected $size"

# The disk must carry I/O both ways.
mkfs.ext4 -q -F "/dev/$disk" || vm_fail "mkfs.ext4 on /dev/$disk failed"
sg_inq "/dev/$disk" >"$DROWSE_OUT/sg_inq.txt" || vm_fail "sg_inq failed"
fio --name=smoke --filename="/dev/$disk" --rw=read --bs=64k --size=4m --direct=1 \
        --output="$DROWSE_OUT/fio.txt" || vm_fail "fio failed"
usbipd --version >/dev/null || vm_fail "usbipd does not run"
vm_log "smoke test passed"
