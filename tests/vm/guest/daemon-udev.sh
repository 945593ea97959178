#!/bin/bash
# drowsed in its default mode, behind a real systemd-udevd: events come from udevd's monitor group, and
# udev properties reach the policy. A udev rule marks disk a ID_AUTOSUSPEND=1 (as hwdb would); with
# "autosuspend = no" in [defaults], drowsed autosuspends a (coldplugged) whole chain on hwdb's word and
# leaves the hotplugged disk b alone. drowsed is on a private dbus-daemon run with the system bus's
# rules and our policy file, and its D-Bus API agrees with drowsectl.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

drowsed=$DROWSE_BUILD_DIR/daemon/drowsed
ctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --socket /run/drowse/control "$@"; }
drowsed_pid=

cleanup() {
        [[ -n $drowsed_pid ]] && kill -TERM "$drowsed_pid" 2>/dev/null && wait "$drowsed_pid" || true
        udevadm control --exit 2>/dev/null || true
        [[ -n $bus_pid ]] && kill "$bus_pid" 2>/dev/null || true
}
bus_pid=
trap cleanup EXIT

usb_of() { local p; p=$(readlink -f "/sys/block/$1/device"); p=${p%/*/*/*/*}; echo "${p##*/}"; }
chain_suspended() {
        local sdev n
        sdev=$(readlink -f "/sys/block/$1/device")
        for n in "$sdev" "${sdev%/*}" "${sdev%/*/*}" "${sdev%/*/*/*}" "${sdev%/*/*/*/*}"; do
                [[ $(<"$n/power/runtime_status") == suspended ]] || return 1
        done
}
state_is() { ctl list --json | grep -q "\"sysname\":\"$1\",[^}]*\"state\":\"$2\""; }

vm_modprobe dummy_hcd num=2
vm_modprobe usb-storage
vm_modprobe sd_mod

mkdir -p /run/udev/rules.d
cat >/run/udev/rules.d/59-drowse-test.rules <<'EOR'
SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{serial}=="drowse-a", ENV{ID_AUTOSUSPEND}="1"
EOR
/lib/systemd/systemd-udevd --daemon --resolve-names=never || vm_fail "systemd-udevd does not start"
udevadm trigger --action=add --subsystem-match=usb --subsystem-match=scsi --subsystem-match=block
udevadm settle -t 60 || vm_fail "udevadm settle timed out"
vm_log "udevd running"

truncate -s 32M /tmp/a.img /tmp/b.img
mapfile -t udcs < <(find /sys/class/udc -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
vm_gadget_disk a /tmp/a.img "${udcs[0]}"
vm_wait_for 60 vm_disk_of_serial drowse-a
udevadm settle -t 60
disk_a=$(vm_disk_of_serial drowse-a)
usb_a=$(usb_of "$disk_a")
[[ $(udevadm info -q property "/sys/bus/usb/devices/$usb_a") == *ID_AUTOSUSPEND=1* ]] ||
        vm_fail "the test rule did not set ID_AUTOSUSPEND on $usb_a"

cat >/tmp/bus.conf <<EOC
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/drowse-bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow send_type="signal"/>
    <allow receive_type="*"/>
  </policy>
  <include>$DROWSE_SRC_DIR/systemd/org.drowse1.conf</include>
</busconfig>
EOC
dbus-daemon --config-file=/tmp/bus.conf --nofork --nopidfile >>"$DROWSE_OUT/dbus.log" 2>&1 &
bus_pid=$!
vm_wait_for 20 test -S /run/drowse-bus
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/drowse-bus

mkdir -p /tmp/etc
printf '[defaults]\nautosuspend = no\ndelay-ms = 1000\ndisk-delay-ms = 1000\n' >/tmp/etc/drowse.conf
"$drowsed" --config /tmp/etc/drowse.conf --log-level debug >>"$DROWSE_OUT/drowsed.log" 2>&1 &
drowsed_pid=$!
vm_wait_for 20 state_is "$usb_a" autosuspend
ctl list --json | grep -q "\"sysname\":\"$usb_a\",[^}]*allowed by hwdb (ID_AUTOSUSPEND=1)" ||
        vm_fail "a is not allowed by hwdb: $(ctl list --json)"
vm_wait_for 20 chain_suspended "$disk_a"
vm_log "disk a ($usb_a) suspended, whole chain"

# Hotplug through udevd's monitor group.
# vm_gadget_disk names the function mass_storage.0 in its own gadget dir; a second gadget is fine.
vm_gadget_disk b /tmp/b.img "${udcs[1]}"
vm_wait_for 60 vm_disk_of_serial drowse-b
disk_b=$(vm_disk_of_serial drowse-b)
usb_b=$(usb_of "$disk_b")
vm_wait_for 20 state_is "$usb_b" excluded
[[ $(<"/sys/block/$disk_b/device/power/control") == on ]] || vm_fail "excluded b's scsi_device was touched"
ctl why "$disk_b" | tee "$DROWSE_OUT/why-b.txt" >&2
grep -q 'policy excluded: disabled by default' "$DROWSE_OUT/why-b.txt" || vm_fail "why b: $(<"$DROWSE_OUT/why-b.txt")"
ctl status --json | grep -q '"monitor":"udev"' || vm_fail "not on the udev monitor"
chain_suspended "$disk_a" || vm_fail "a woke up"
ctl list >&2
busctl() { command busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" "$@"; }
devices=$(busctl call org.drowse1 /org/drowse1 org.drowse.Manager1 ListDevices)
vm_log "ListDevices: $devices"
[[ $devices == "a(sssss) 2 "*"\"$usb_a\" \"0525:a4a5\" \"autosuspend\""*"\"$usb_b\" \"0525:a4a5\" \"excluded\""* ]] ||
        vm_fail "ListDevices: $devices"
dev=$(busctl call org.drowse1 /org/drowse1 org.drowse.Manager1 GetDevice s "$disk_a")
# false: udev's own 60-autosuspend.rules had already set the USB device's control=auto for
# ID_AUTOSUSPEND=1, so drowsed found it so and did not write it (it did write the LUN's).
[[ $dev == *'"autosuspend" "allowed by hwdb (ID_AUTOSUSPEND=1)" "" 1000 1000 1 false' ]] || vm_fail "GetDevice: $dev"
why=$(busctl call org.drowse1 /org/drowse1 org.drowse.Manager1 Why s "$usb_a")
[[ $why == *'\"blockers\":[]'* ]] || vm_fail "Why over D-Bus: $why"
vm_log "drowsed behind udevd passed"
