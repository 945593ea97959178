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
vm_wait_for 20 vm_chain_suspended "$disk_a"
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
vm_chain_suspended "$disk_a" || vm_fail "a woke up"
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

# AC/battery on a real kernel power_supply: sbs-battery (a Smart Battery driver) on i2c-stub, whose
# registers the test writes. There is no adapter supply in the guest, so the battery's status decides:
# "Not charging" (the registers' zeroes) is external power, "Discharging" is the battery profile.
# Battery status changes reach drowsed as change uevents, as an ACPI battery's notify would send.
printf '[defaults]\nautosuspend = no\ndelay-ms = 1000\ndisk-delay-ms = 1000\n[profile battery]\ndelay-ms = 300\ndisk-delay-ms = 250\n' \
        >/tmp/etc/drowse.conf
ctl reload >&2 || vm_fail "reload with a battery profile failed"
power_is() { ctl status --json | grep -q "\"power\":\"$1\""; }
delays_are() {
        [[ $(<"/sys/bus/usb/devices/$usb_a/power/autosuspend_delay_ms") == "$1" &&
                $(<"/sys/block/$disk_a/device/power/autosuspend_delay_ms") == "$2" ]]
}
power_is ac || vm_fail "not on AC before any battery: $(ctl status --json)"
vm_modprobe i2c-stub chip_addr=0x0b
vm_modprobe i2c-dev
vm_modprobe sbs-battery
i2c_bus=
for a in /sys/bus/i2c/devices/i2c-*; do
        [[ $(<"$a/name") == *"SMBus stub"* ]] && i2c_bus=${a##*-}
done
[[ -n $i2c_bus ]] || vm_fail "no i2c-stub adapter"
echo sbs-battery 0x0b >"/sys/bus/i2c/devices/i2c-$i2c_bus/new_device"
battery=/sys/class/power_supply/sbs-$i2c_bus-000b
vm_wait_for 20 test -e "$battery/status"
vm_log "battery $(<"$battery/type") ${battery##*/}: $(<"$battery/status")"
power_is ac || vm_fail "a battery that is not charging, no adapter: not AC: $(ctl status --json)"

# Unplugged: BatteryStatus DISCHARGING (0x40), Current -500 mA. (-f: sbs-battery owns the address; the
# stub's registers are what both of us read and write.)
i2cset -f -y "$i2c_bus" 0x0b 0x0a 0xfe0c w
i2cset -f -y "$i2c_bus" 0x0b 0x16 0x0040 w
[[ $(<"$battery/status") == Discharging ]] || vm_fail "battery status: $(<"$battery/status")"
echo change >"$battery/uevent"
vm_wait_for 20 power_is battery
vm_wait_for 20 delays_are 300 250
vm_log "on battery: delays $(<"/sys/bus/usb/devices/$usb_a/power/autosuspend_delay_ms")/$(<"/sys/block/$disk_a/device/power/autosuspend_delay_ms") ms"
grep -q "Power source: battery (no supply online, running on ${battery##*/})" "$DROWSE_OUT/drowsed.log" ||
        vm_fail "no battery switch in drowsed's log"

# Charging again, then the battery removed: AC both times, the defaults back.
i2cset -f -y "$i2c_bus" 0x0b 0x0a 0x01f4 w
i2cset -f -y "$i2c_bus" 0x0b 0x16 0x0000 w
echo change >"$battery/uevent"
vm_wait_for 20 power_is ac
vm_wait_for 20 delays_are 1000 1000
i2cset -f -y "$i2c_bus" 0x0b 0x0a 0xfe0c w
i2cset -f -y "$i2c_bus" 0x0b 0x16 0x0040 w
echo change >"$battery/uevent"
vm_wait_for 20 power_is battery
echo 0x0b >"/sys/bus/i2c/devices/i2c-$i2c_bus/delete_device"
vm_wait_for 20 power_is ac
vm_wait_for 20 delays_are 1000 1000
vm_wait_for 20 vm_chain_suspended "$disk_a"
vm_log "AC/battery profiles follow a real power_supply: add, change, remove"
