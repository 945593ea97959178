#!/bin/bash
# drowsed on a private dbus-daemon that runs with the system bus's rules and our policy file
# (systemd/org.drowse1.conf): the API's shape, the read methods for an unprivileged caller, and Reload
# for root only (with a bad config refused and named by file:line). Needs root (to drop to nobody).
set -euo pipefail
build=$1 src=$2
[[ $(id -u) == 0 ]] || { echo "needs root"; exit 77; }
command -v dbus-daemon >/dev/null && command -v busctl >/dev/null && command -v setpriv >/dev/null || exit 77

dir=$(mktemp -d /tmp/test-drowsed-bus.XXXXXX)
chmod 755 "$dir"
bus_pid= drowsed_pid=
cleanup() {
        [[ -n $drowsed_pid ]] && kill "$drowsed_pid" 2>/dev/null && wait "$drowsed_pid" 2>/dev/null || true
        [[ -n $bus_pid ]] && kill "$bus_pid" 2>/dev/null && wait "$bus_pid" 2>/dev/null || true
        rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat >"$dir/bus.conf" <<EOC
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$dir/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="*"/>
  </policy>
  <include>$src/systemd/org.drowse1.conf</include>
</busconfig>
EOC
dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile 2>"$dir/bus.log" &
bus_pid=$!
for _ in $(seq 50); do [[ -S $dir/bus ]] && break; sleep 0.1; done
chmod 777 "$dir/bus" 2>/dev/null || true

printf '[defaults]\ndelay-ms = 1000\n' >"$dir/drowse.conf"
DBUS_SYSTEM_BUS_ADDRESS=unix:path=$dir/bus "$build/daemon/drowsed" -c "$dir/drowse.conf" --control "$dir/control" \
        --state-dir "$dir/state" --monitor kernel >"$dir/drowsed.log" 2>&1 &
drowsed_pid=$!
call() { busctl --address="unix:path=$dir/bus" "$@"; }
for _ in $(seq 50); do call status org.drowse1 >/dev/null 2>&1 && break; sleep 0.1; done
grep -q 'On D-Bus as org.drowse1' "$dir/drowsed.log" || fail "drowsed not on the bus: $(cat "$dir/drowsed.log")"

out=$(call introspect org.drowse1 /org/drowse1 org.drowse.Manager1)
for m in .ListDevices .GetDevice .Why .Reload .GetStatistics .Release .Version .NDevices .ConfigFile; do
        [[ $out == *"$m "* ]] || fail "introspection lacks $m: $out"
done
[[ $(call get-property org.drowse1 /org/drowse1 org.drowse.Manager1 ConfigFile) == "s \"$dir/drowse.conf\"" ]] ||
        fail "ConfigFile"
nobody() { setpriv --reuid 65534 --regid 65534 --clear-groups busctl --address="unix:path=$dir/bus" "$@"; }
[[ $(nobody call org.drowse1 /org/drowse1 org.drowse.Manager1 ListDevices) == "a(sssss) 0" ]] ||
        fail "ListDevices as nobody"
err=$(nobody call org.drowse1 /org/drowse1 org.drowse.Manager1 GetDevice s 9-9 2>&1) && fail "GetDevice 9-9 worked"
[[ $err == *"No USB device '9-9' known to drowsed"* ]] || fail "GetDevice error: $err"
err=$(nobody call org.drowse1 /org/drowse1 org.drowse.Manager1 Reload 2>&1) && fail "Reload worked for nobody"
# busctl shows org.freedesktop.DBus.Error.AccessDenied as "Access denied", whatever the message.
[[ $err == *"Access denied"* ]] || fail "Reload as nobody: $err"
! grep -q reloaded "$dir/drowsed.log" || fail "nobody made drowsed reload"
# Statistics for anyone, Release for root only (checked before the device is looked up).
err=$(nobody call org.drowse1 /org/drowse1 org.drowse.Manager1 GetStatistics s 9-9 2>&1) &&
        fail "GetStatistics 9-9 worked"
[[ $err == *"No USB device '9-9' known to drowsed"* ]] || fail "GetStatistics error: $err"
err=$(nobody call org.drowse1 /org/drowse1 org.drowse.Manager1 Release s 9-9 2>&1) && fail "Release worked for nobody"
[[ $err == *"Access denied"* ]] || fail "Release as nobody: $err"
err=$(call call org.drowse1 /org/drowse1 org.drowse.Manager1 Release s 9-9 2>&1) && fail "Release 9-9 worked"
[[ $err == *"No USB device '9-9' known to drowsed"* ]] || fail "Release as root: $err"
[[ $(call introspect org.drowse1 /org/drowse1 org.drowse.Manager1 | grep -F .GetStatistics) == *ssssbsuttttt* ]] ||
        fail "GetStatistics signature"
call call org.drowse1 /org/drowse1 org.drowse.Manager1 Reload || fail "Reload as root"
echo "delay-ms = later" >>"$dir/drowse.conf"
err=$(call call org.drowse1 /org/drowse1 org.drowse.Manager1 Reload 2>&1) && fail "bad Reload worked"
[[ $err == *"drowse.conf:3: delay-ms expects"*"kept the previous configuration"* ]] || fail "bad Reload: $err"
grep -q 'drowse.conf:3: delay-ms expects' "$dir/drowsed.log" || fail "the bad reload is not logged"
echo ok
