#!/bin/bash
# drowsed and vhci_hcd: two drowse-emu disks on root ports of the same vhci_hcd controller. vhci has
# one resume timer per root hub, so two root-port devices resuming together lose one; drowsed lets
# only one of them autosuspend (vhci-root-ports = 1, the default) and records why for the other.
# When the holder goes away, the other one takes its place.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
drowsed=$DROWSE_BUILD_DIR/daemon/drowsed
ctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --socket /run/drowse/control --emu-socket /run/drowse-emu.ctl "$@"; }
drowsed_pid= emu_pid=

cleanup() {
        [[ -n $drowsed_pid ]] && kill -TERM "$drowsed_pid" 2>/dev/null && wait "$drowsed_pid" || true
        [[ -n $emu_pid ]] && kill -TERM "$emu_pid" 2>/dev/null && wait "$emu_pid" || true
}
trap cleanup EXIT

usb_of() { local p; p=$(readlink -f "/sys/block/$1/device"); p=${p%/*/*/*/*}; echo "${p##*/}"; }
state_is() { ctl list --json | grep -q "\"sysname\":\"$1\",[^}]*\"state\":\"$2\""; }

vm_modprobe vhci-hcd
vm_modprobe usb-storage
vm_modprobe sd_mod

"$emu" --attach --no-listen --vhci-controller 0 --control /run/drowse-emu.ctl \
        --disk "/tmp/a.img,size=32M,serial=DRWA,name=a" --disk "/tmp/b.img,size=32M,serial=DRWB,name=b" \
        >>"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
vm_wait_for 60 vm_disk_of_serial DRWA
vm_wait_for 60 vm_disk_of_serial DRWB
disk_a=$(vm_disk_of_serial DRWA) disk_b=$(vm_disk_of_serial DRWB)
usb_a=$(usb_of "$disk_a") usb_b=$(usb_of "$disk_b")
vm_log "a: $disk_a on $usb_a, b: $disk_b on $usb_b ($(readlink -f "/sys/bus/usb/devices/$usb_a" | grep -o 'vhci_hcd\.[0-9]*'))"

mkdir -p /tmp/etc
printf '[defaults]\ndelay-ms = 1000\ndisk-delay-ms = 1000\n' >/tmp/etc/drowse.conf
"$drowsed" --config /tmp/etc/drowse.conf --monitor kernel --log-level debug >>"$DROWSE_OUT/drowsed.log" 2>&1 &
drowsed_pid=$!
vm_wait_for 20 state_is "$usb_a" autosuspend
vm_wait_for 20 state_is "$usb_b" refused
ctl list | tee "$DROWSE_OUT/list.txt" >&2
ctl list --json | grep -q "\"sysname\":\"$usb_b\",[^}]*vhci_hcd.0 root port: $usb_a already autosuspends there" ||
        vm_fail "b's refusal does not name the vhci reason: $(ctl list --json)"
[[ $(<"/sys/bus/usb/devices/$usb_b/power/control") == on ]] || vm_fail "refused b's USB device is not on"
vm_wait_for 30 vm_chain_suspended "$disk_a"
vm_log "a's whole chain suspended over vhci"
dd if="/dev/$disk_a" of=/dev/null bs=64k count=16 iflag=direct status=none || vm_fail "read from $disk_a failed"
vm_wait_for 30 vm_chain_suspended "$disk_a"
vm_log "a resumed for I/O and suspended again"

vm_log "== the holder leaves: b takes the slot"
ctl emu detach a || vm_fail "drowsectl emu detach a failed"
vm_wait_for 30 state_is "$usb_b" autosuspend
vm_wait_for 30 vm_chain_suspended "$disk_b"
ctl list >&2
vm_log "drowsed on vhci passed"
