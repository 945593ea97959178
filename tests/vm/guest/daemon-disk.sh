#!/bin/bash
# drowsed against real USB disks (dummy_hcd + configfs f_mass_storage): it coldplugs a disk that is
# already there and then a hotplugged, removable one; within the delay plus slack the whole runtime-PM
# chain (scsi_device, target, host, interface, USB device) of each reaches "suspended"; I/O resumes it;
# drowsectl list/why/status (text and --json) tell the truth; a bad config on SIGHUP or reload is
# refused and the last good one kept.
#
# No udevd runs in the guest: drowsed listens to the kernel's own uevents (--monitor kernel). That
# loses only udev properties (hwdb ID_AUTOSUSPEND...), which this test does not need.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

drowsed=$DROWSE_BUILD_DIR/daemon/drowsed
ctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --socket /run/drowse/control "$@"; }
readonly delay_ms=1000 disk_delay_ms=1000
# TCG is slow and the host may be busy: the kernel's timers are not, our polling and execs are.
readonly slack_s=15
drowsed_pid=

cleanup() {
        [[ -n $drowsed_pid ]] && kill -TERM "$drowsed_pid" 2>/dev/null && wait "$drowsed_pid" || true
}
trap cleanup EXIT


# The chain above a disk, bottom up: scsi_device target host interface usb_device.
chain_of() {
        local sdev
        sdev=$(readlink -f "/sys/block/$1/device")
        echo "$sdev ${sdev%/*} ${sdev%/*/*} ${sdev%/*/*/*} ${sdev%/*/*/*/*}"
}

chain_suspended() {
        local n
        for n in $(chain_of "$1"); do
                [[ $(<"$n/power/runtime_status") == suspended ]] || return 1
        done
}

show_chain() {
        local n
        for n in $(chain_of "$1"); do
                vm_log "  ${n##*/}: control=$(cat "$n/power/control" 2>/dev/null || echo -)" \
                        "delay=$(cat "$n/power/autosuspend_delay_ms" 2>/dev/null || echo -)" \
                        "status=$(<"$n/power/runtime_status")"
        done
}

state_is() { # sysname state
        ctl list --json | grep -q "\"sysname\":\"$1\",[^}]*\"state\":\"$2\""
}

# Waits for the whole chain of disk $1 to suspend; prints how long it took.
wait_suspended() {
        local t0=${EPOCHREALTIME/[.,]/} t
        if ! vm_wait_for_quiet $((delay_ms / 1000 + disk_delay_ms / 1000 + slack_s)) chain_suspended "$1"; then
                show_chain "$1"
                ctl why "$1" >&2 || true
                vm_fail "the runtime-PM chain of $1 did not suspend"
        fi
        t=$(((${EPOCHREALTIME/[.,]/} - t0) / 1000))
        vm_log "chain of $1 suspended after ${t} ms"
        echo "$1 $t" >>"$DROWSE_OUT/suspend-times.txt"
}

vm_wait_for_quiet() {
        local timeout=$1 deadline
        shift
        deadline=$((EPOCHSECONDS + timeout))
        until "$@" >/dev/null 2>&1; do
                ((EPOCHSECONDS < deadline)) || return 1
                sleep 0.1
        done
}

vm_modprobe dummy_hcd num=2
vm_modprobe usb-storage
vm_modprobe sd_mod
vm_modprobe libcomposite
vm_modprobe usb_f_mass_storage
vm_mount_configfs
mapfile -t udcs < <(find /sys/class/udc -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
((${#udcs[@]} >= 2)) || vm_fail "dummy_hcd num=2 gave ${#udcs[@]} UDCs"

truncate -s 32M /tmp/a.img /tmp/b.img
vm_gadget_disk a /tmp/a.img "${udcs[0]}" 0
vm_wait_for 60 vm_disk_of_serial drowse-a
disk_a=$(vm_disk_of_serial drowse-a)
usb_a=$(chain_of "$disk_a" | awk '{print $5}')
usb_a=${usb_a##*/}
vm_log "disk a: /dev/$disk_a on USB device $usb_a, before drowsed:"
show_chain "$disk_a"
[[ $(<"/sys/block/$disk_a/device/power/control") == on ]] || vm_fail "the kernel's scsi_device default is not on"

mkdir -p /tmp/etc
cat >/tmp/etc/drowse.conf <<EOC
[defaults]
delay-ms = $delay_ms
disk-delay-ms = $disk_delay_ms
EOC

vm_log "== coldplug"
"$drowsed" --config /tmp/etc/drowse.conf --monitor kernel --log-level debug >>"$DROWSE_OUT/drowsed.log" 2>&1 &
drowsed_pid=$!
vm_wait_for 20 state_is "$usb_a" autosuspend
[[ $(<"/sys/block/$disk_a/device/power/control") == auto ]] || vm_fail "scsi_device control not auto"
[[ $(<"/sys/block/$disk_a/device/power/autosuspend_delay_ms") == "$disk_delay_ms" ]] ||
        vm_fail "scsi_device delay not $disk_delay_ms"
[[ $(<"/sys/bus/usb/devices/$usb_a/power/autosuspend_delay_ms") == "$delay_ms" ]] || vm_fail "USB delay"
wait_suspended "$disk_a"
show_chain "$disk_a"

vm_log "== hotplug of a removable disk"
vm_gadget_disk b /tmp/b.img "${udcs[1]}" 1
vm_wait_for 60 vm_disk_of_serial drowse-b
disk_b=$(vm_disk_of_serial drowse-b)
usb_b=$(chain_of "$disk_b" | awk '{print $5}')
usb_b=${usb_b##*/}
vm_log "disk b: /dev/$disk_b on USB device $usb_b (events: '$(<"/sys/block/$disk_b/events")')"
vm_wait_for 30 state_is "$usb_b" autosuspend
if [[ -n $(<"/sys/block/$disk_b/events") ]]; then
        [[ $(<"/sys/block/$disk_b/events_poll_msecs") == 0 ]] ||
                vm_fail "events_poll_msecs of removable $disk_b is $(<"/sys/block/$disk_b/events_poll_msecs")"
fi
wait_suspended "$disk_b"
chain_suspended "$disk_a" || vm_fail "disk a woke up when b arrived"

vm_log "== I/O resumes the chain, and it suspends again"
usb_dir=/sys/bus/usb/devices/$usb_a
before=$(<"$usb_dir/power/runtime_active_time")
dd if="/dev/$disk_a" of=/dev/null bs=64k count=16 iflag=direct status=none || vm_fail "read from $disk_a failed"
status=$(<"$usb_dir/power/runtime_status")
after=$(<"$usb_dir/power/runtime_active_time")
vm_log "after the read: USB device $status, active time $before -> $after ms"
[[ $status == active || $after -gt $before ]] || vm_fail "the read did not resume $usb_a"
wait_suspended "$disk_a"

vm_log "== usbfs: an open /dev/bus/usb node keeps the device resumed, and why names the holder"
printf -v node '/dev/bus/usb/%03d/%03d' "$(<"$usb_dir/busnum")" "$(<"$usb_dir/devnum")"
exec 3<"$node"
vm_wait_for 10 grep -qx active "$usb_dir/power/runtime_status"
ctl why --json "$disk_a" 3<&- >"$DROWSE_OUT/why-usbfs.json"
grep -qF "$node is open by PID $$ (" "$DROWSE_OUT/why-usbfs.json" ||
        vm_fail "why does not name the usbfs holder: $(<"$DROWSE_OUT/why-usbfs.json")"
ctl why "$disk_a" 3<&- >&2
exec 3<&-
wait_suspended "$disk_a"

vm_log "== drowsectl"
ctl status | tee "$DROWSE_OUT/status.txt" >&2
ctl status --json >"$DROWSE_OUT/status.json"
grep -q '"monitor":"kernel"' "$DROWSE_OUT/status.json" || vm_fail "status --json: $(<"$DROWSE_OUT/status.json")"
ctl list | tee "$DROWSE_OUT/list.txt" >&2
ctl list --json >"$DROWSE_OUT/list.json"
for u in "$usb_a" "$usb_b"; do
        grep -q "\"sysname\":\"$u\",[^}]*\"id\":\"0525:a4a5\",\"serial\":\"drowse-[ab]\",\"state\":\"autosuspend\"" \
                "$DROWSE_OUT/list.json" || vm_fail "list --json lacks $u: $(<"$DROWSE_OUT/list.json")"
done
grep -q '"luns":1' "$DROWSE_OUT/list.json" || vm_fail "list --json: no LUN count"
ctl why "$disk_a" | tee "$DROWSE_OUT/why-a.txt" >&2
ctl why --json "$disk_a" >"$DROWSE_OUT/why-a.json"
grep -q '"blockers":\[\]' "$DROWSE_OUT/why-a.json" || vm_fail "why --json names blockers of a suspended disk"
grep -q '"kind":"scsi_device","control":"auto","runtime_status":"suspended","autosuspend_delay_ms":1000' \
        "$DROWSE_OUT/why-a.json" || vm_fail "why --json: $(<"$DROWSE_OUT/why-a.json")"
ctl show "$usb_b" | grep -q '"state":"autosuspend"' || vm_fail "show $usb_b"
if ctl why nonexistent 2>/dev/null; then vm_fail "why of an unknown device succeeded"; fi

vm_log "== blockers: someone else sets the scsi_device back to on"
echo on >"/sys/block/$disk_b/device/power/control"
ctl why --json "$disk_b" >"$DROWSE_OUT/why-b.json"
grep -q 'power/control=on (not set by drowsed: changed by someone else)' "$DROWSE_OUT/why-b.json" ||
        vm_fail "why does not name control=on: $(<"$DROWSE_OUT/why-b.json")"
grep -q "child [^\"]* is active" "$DROWSE_OUT/why-b.json" || vm_fail "why does not name the active child"
ctl why "$disk_b" >&2

vm_log "== reload: a bad config is refused and the last good one kept"
echo "delay-ms = soon" >>/tmp/etc/drowse.conf
if ctl reload 2>"$DROWSE_OUT/reload.err"; then vm_fail "reload of a bad config succeeded"; fi
grep -q 'drowse.conf:4: unknown key\|drowse.conf:4: delay-ms' "$DROWSE_OUT/reload.err" ||
        vm_fail "reload error does not name file:line: $(<"$DROWSE_OUT/reload.err")"
kill -HUP "$drowsed_pid"
vm_wait_for 10 grep -q 'Reload failed, keeping' "$DROWSE_OUT/drowsed.log"
ctl status --json | grep -q '"config_error":".*drowse.conf:4' || vm_fail "status does not show the reload error"
printf '[defaults]\ndelay-ms = %d\ndisk-delay-ms = %d\n' "$delay_ms" "$disk_delay_ms" >/tmp/etc/drowse.conf
ctl reload || vm_fail "reload of a good config failed"
# The reload re-applies policy: b's scsi_device is drowsed's again.
vm_wait_for 10 grep -qx auto "/sys/block/$disk_b/device/power/control"
wait_suspended "$disk_b"
kill -0 "$drowsed_pid" || vm_fail "drowsed died"
vm_log "drowsed test passed"
