#!/bin/bash
# The live demo (tools/demo): drowse-emu's disks on a real kernel, step by step, readable.
# Runs inside the VM (default) or on the host kernel (tools/demo --host).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
work=$(mktemp -d /tmp/drowse-demo.XXXXXX)
emu_pid=

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

cleanup() {
        [[ -n $emu_pid ]] && kill -TERM "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null
        for p in $(usbip port 2>/dev/null | sed -n 's/^Port \([0-9]*\): <Port in Use>.*/\1/p'); do
                usbip detach -p "$p" >/dev/null 2>&1 || true
        done
        rm -rf "$work"
}
trap cleanup EXIT

disk_of_serial() { # prints sdX of the USB disk with this serial
        local d p
        for d in $(vm_usb_disks); do
                p=$(readlink -f "/sys/block/$d/device")
                while [[ $p != / && ! -f $p/serial ]]; do p=${p%/*}; done
                [[ -f $p/serial && $(cat "$p/serial") == "$1" ]] && { echo "$d"; return 0; }
        done
        return 1
}
usb_dir_of() {
        local p
        p=$(readlink -f "/sys/block/$1/device")
        while [[ $p != / && ! -f $p/idVendor ]]; do p=${p%/*}; done
        echo "$p"
}
chain_of() { # the runtime-PM chain from the disk up to the USB device, one sysfs dir per line
        local p stop
        p=$(readlink -f "/sys/block/$1/device")
        stop=$(usb_dir_of "$1")
        while :; do
                [[ -d $p/power ]] && echo "$p"
                [[ $p == "$stop" ]] && break
                p=${p%/*}
        done
}
show_chain() {
        local n
        # A pipe, not <(...): the guest's devtmpfs has no /dev/fd.
        chain_of "$1" | while read -r n; do
                # Interfaces have no control file: they follow their driver.
                printf '   %-10s %-5s %s\n' "$(cat "$n/power/runtime_status")" \
                        "$(cat "$n/power/control" 2>/dev/null || echo -)" "${n#/sys/devices/}"
        done
}

ip link set lo up 2>/dev/null || true
vm_modprobe vhci-hcd
vm_modprobe usb-storage
vm_modprobe sd_mod
vm_modprobe ext4

bold "1. drowse-emu exports two emulated USB disks"
"$emu" --disk "$work/local.img,size=128M,serial=DEMO-LOCAL,vendor=DROWSE,product=LocalDisk" \
        --disk "$work/tcp.img,size=64M,serial=DEMO-TCP,vendor=DROWSE,product=TcpDisk" \
        --listen 127.0.0.1:3240 >"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
vm_wait_for 20 usbip list -r 127.0.0.1
usbip list -r 127.0.0.1 | sed 's/^/   /'

bold "2. the stock usbip client attaches disk 1-2 over TCP"
usbip attach -r 127.0.0.1 -b 1-2
vm_wait_for 60 disk_of_serial DEMO-TCP
tcp_disk=$(disk_of_serial DEMO-TCP)
usbip port | sed 's/^/   /'
say "kernel sees /dev/$tcp_disk: $(sg_inq "/dev/$tcp_disk" | sed -n 's/ *Product identification: //p'), $(($(cat "/sys/block/$tcp_disk/size") / 2048)) MiB"

bold "3. a filesystem and data on it"
mkfs.ext4 -q -F "/dev/$tcp_disk"
mkdir -p "$work/mnt"
mount "/dev/$tcp_disk" "$work/mnt"
head -c $((16 << 20)) /dev/urandom >"$work/mnt/data"
sync
sum=$(sha256sum <"$work/mnt/data" | cut -c1-16)
umount "$work/mnt"
say "wrote 16 MiB (sha256 $sum...), synced, unmounted"

bold "4. runtime PM on the whole chain: disk -> target -> host -> interface -> USB device"
say "(what drowsed does for USB disks: power/control=auto and a delay on the scsi_device and the USB device)"
sdev=$(readlink -f "/sys/block/$tcp_disk/device")
udev=$(usb_dir_of "$tcp_disk")
for n in "$sdev" "$udev"; do
        echo 1000 >"$n/power/autosuspend_delay_ms"
        echo auto >"$n/power/control"
done
show_chain "$tcp_disk"
t0=${EPOCHREALTIME/[.,]/}
suspended() { [[ $(cat "$udev/power/runtime_status") == suspended && $(cat "$sdev/power/runtime_status") == suspended ]]; }
vm_wait_for 30 suspended
t1=${EPOCHREALTIME/[.,]/}
say "... suspended after $(((t1 - t0) / 1000)) ms idle:"
show_chain "$tcp_disk"

bold "5. I/O resumes it; the emulator sees the resume on the wire"
dd if="/dev/$tcp_disk" of=/dev/null bs=4k count=1 iflag=direct status=none
show_chain "$tcp_disk"
vm_wait_for 10 grep -q "the host resumed the device" "$DROWSE_OUT/emu.log"
say "drowse-emu: $(grep "the host resumed the device" "$DROWSE_OUT/emu.log" | tail -n1)"
vm_wait_for 30 suspended
say "and after the delay it is suspended again: $(cat "$udev/power/runtime_status")"
tcp_times="$(cat "$udev/power/runtime_active_time") $(cat "$udev/power/runtime_suspended_time")"

bold "6. local attach: disk 1-1 handed to vhci_hcd over a socketpair, no TCP"
kill -TERM "$emu_pid"; wait "$emu_pid" || true; emu_pid=
"$emu" --disk "$work/local.img,size=128M,serial=DEMO-LOCAL,vendor=DROWSE,product=LocalDisk" \
        --attach --no-listen >>"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
vm_wait_for 60 disk_of_serial DEMO-LOCAL
local_disk=$(disk_of_serial DEMO-LOCAL)
say "$(grep "attached to vhci port" "$DROWSE_OUT/emu.log" | tail -n1)"
lsblk -o NAME,SIZE,VENDOR,MODEL,TRAN "/dev/$local_disk" | sed 's/^/   /'

bold "7. summary (time in each runtime PM state, from sysfs)"
printf '   %-22s %10s %14s\n' device "active ms" "suspended ms"
read -r active suspended <<<"$tcp_times"
printf '   %-22s %10s %14s\n' "TcpDisk (usbip, TCP)" "$active" "$suspended"
ldev=$(usb_dir_of "$local_disk")
printf '   %-22s %10s %14s\n' "LocalDisk (local)" "$(cat "$ldev/power/runtime_active_time")" \
        "$(cat "$ldev/power/runtime_suspended_time")"
say "emulator log: emu.log in this run's log directory"
say "demo finished: drowse-emu served real kernel I/O over TCP and local attach, and runtime suspend/resume"
