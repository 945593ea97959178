# shellcheck shell=bash
# Helpers for guest scripts run by tests/vm/run-guest. Source it first thing:
#
#       set -euo pipefail
#       . "$DROWSE_VM_LIB"
#
# Environment (set by run-guest): DROWSE_KERNEL (6.1|6.12), DROWSE_KVER (uname -r),
# DROWSE_MODDIR (module tree root for modprobe -d), DROWSE_BUILD_DIR, DROWSE_SRC_DIR (host
# paths, read-only in the guest), DROWSE_OUT (writable, ends up in the host's log dir).

# Builtins only for time keeping: every exec costs ~50-100 ms under TCG.
_vm_t0=${EPOCHREALTIME/[.,]/}

# vm_log MSG...: a line on stderr, prefixed with seconds since the script started.
vm_log() {
        local us=$((${EPOCHREALTIME/[.,]/} - _vm_t0))
        printf '[%4d.%03d] %s\n' $((us / 1000000)) $((us / 1000 % 1000)) "$*" >&2
}

# vm_fail MSG...: log the reason, save dmesg, exit 1.
vm_fail() {
        vm_log "FAIL: $*"
        vm_dmesg_save "dmesg-fail.txt" || true
        exit 1
}

# vm_modprobe NAME [PARAM=VALUE...]: load a module (and its dependencies) from the kernel's
# own module tree; the host's /lib/modules belongs to another kernel.
vm_modprobe() {
        modprobe -d "$DROWSE_MODDIR" "$@" || vm_fail "modprobe $* failed"
}

# vm_wait_for TIMEOUT_S CMD [ARGS...]: poll CMD (every 50 ms) until it succeeds; vm_fail when
# it has not after TIMEOUT_S seconds. Returns at once if CMD already succeeds.
vm_wait_for() {
        local timeout=$1 deadline
        shift
        deadline=$((EPOCHSECONDS + timeout))
        until "$@" >/dev/null 2>&1; do
                ((EPOCHSECONDS < deadline)) || vm_fail "timed out after ${timeout}s waiting for: $*"
                sleep 0.05
        done
}

# vm_dmesg_save [NAME]: copy the kernel log to $DROWSE_OUT/NAME (default dmesg-<seconds>.txt).
# The init also saves dmesg.txt after the script; this is for snapshots mid-test.
vm_dmesg_save() {
        local name=${1:-dmesg-$EPOCHSECONDS.txt}
        dmesg >"$DROWSE_OUT/$name"
}

# vm_mount_configfs: make /sys/kernel/config available (configfs is a module in Debian).
vm_mount_configfs() {
        vm_modprobe configfs
        mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config ||
                vm_fail "cannot mount configfs"
}

# vm_gadget_disk NAME IMAGE [UDC] [REMOVABLE]: create a USB mass-storage gadget NAME (configfs,
# f_mass_storage, VID:PID 0525:a4a5 like g_mass_storage, serial drowse-NAME) backed by IMAGE and
# bind it to UDC (default: the first one in /sys/class/udc); REMOVABLE is 0 (default) or 1. Debian's
# 6.1 kernel has no g_mass_storage module, only the configfs function, so this works the same on both
# kernels. Load dummy_hcd first.
vm_gadget_disk() {
        local name=$1 image=$2 udc=${3:-} removable=${4:-0} g
        vm_modprobe libcomposite
        vm_modprobe usb_f_mass_storage
        vm_mount_configfs
        if [[ -z $udc ]]; then
                udc=$(find /sys/class/udc -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
                udc=${udc%%$'\n'*}
                [[ -n $udc ]] || vm_fail "no UDC in /sys/class/udc (modprobe dummy_hcd first)"
        fi
        g=/sys/kernel/config/usb_gadget/$name
        mkdir "$g"
        echo 0x0525 >"$g/idVendor"
        echo 0xa4a5 >"$g/idProduct"
        mkdir "$g/strings/0x409"
        echo "drowse-$name" >"$g/strings/0x409/serialnumber"
        echo drowse >"$g/strings/0x409/manufacturer"
        echo "drowse test disk" >"$g/strings/0x409/product"
        mkdir "$g/configs/c.1"
        mkdir "$g/functions/mass_storage.0"
        echo 0 >"$g/functions/mass_storage.0/stall"
        echo "$removable" >"$g/functions/mass_storage.0/lun.0/removable"
        echo "$image" >"$g/functions/mass_storage.0/lun.0/file"
        ln -s "$g/functions/mass_storage.0" "$g/configs/c.1/"
        echo "$udc" >"$g/UDC"
}

# vm_usb_disks: print the sd block devices (sda ...) that sit behind USB.
vm_usb_disks() {
        local b
        for b in /sys/block/sd*; do
                [[ -e $b ]] || continue
                [[ $(readlink -f "$b/device") == */usb[0-9]*/* ]] && echo "${b##*/}"
        done
        return 0
}

# vm_chain_suspended DISK: true when the disk's whole runtime-PM chain (the SCSI device, target,
# host, USB interface and USB device, from /sys/block/DISK/device up) reads runtime_status suspended.
vm_chain_suspended() {
        local sdev n
        sdev=$(readlink -f "/sys/block/$1/device")
        for n in "$sdev" "${sdev%/*}" "${sdev%/*/*}" "${sdev%/*/*/*}" "${sdev%/*/*/*/*}"; do
                [[ $(<"$n/power/runtime_status") == suspended ]] || return 1
        done
}

# vm_disk_of_serial SERIAL: print the sd block device (sda ...) of the USB device with this serial.
vm_disk_of_serial() {
        local d p
        for d in $(vm_usb_disks); do
                p=$(readlink -f "/sys/block/$d/device")
                while [[ $p != / && ! -f $p/serial ]]; do p=${p%/*}; done
                [[ -f $p/serial && $(<"$p/serial") == "$1" && -b /dev/$d ]] || continue
                echo "$d"
                return 0
        done
        return 1
}
