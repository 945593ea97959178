#!/bin/bash
# The shipped units under a real systemd (PID 1 of the guest, run-guest --systemd), with all their
# sandboxing: drowse-emu.service creates its image under its StateDirectory and attaches the disk to
# vhci_hcd through /sys; drowsed.service takes org.drowse1 on the system bus, writes the disk chain's
# power/ attributes through ProtectKernelTunables= + ReadWritePaths=, and the chain suspends; the D-Bus
# mutating methods refuse a non-root caller; reload, stop and restart behave, data written through
# the disk survives a restart of the emulator; the journal holds no sandbox denial; passthrough of a
# real device (a gadget on dummy_hcd) is refused by the sandbox as shipped and works with the shipped
# drop-in (systemd/drowse-emu-passthrough.conf); and `systemd-analyze security` rates both units live.
#
# The units are the .in files as shipped with only @sbindir@ and @sysconfdir@ filled in (binaries of
# the build without sanitizers: seccomp forbids LeakSanitizer's ptrace, and these are what ships).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

plain=${DROWSE_UNITS_BUILD_DIR:-${DROWSE_BUILD_DIR%/}-valgrind}
for b in emulator/drowse-emu daemon/drowsed daemon/drowsectl; do
        [[ -x $plain/$b ]] || vm_fail "no $plain/$b (meson setup ${DROWSE_BUILD_DIR%/}-valgrind -Dvm_tests=false -Dman=disabled; meson compile -C it)"
done
ctl() { "$plain/daemon/drowsectl" --socket /run/drowse/control --emu-socket /run/drowse-emu/control "$@"; }

save_logs() {
        journalctl -b --no-pager -o short-monotonic -u drowse-emu.service >"$DROWSE_OUT/journal-drowse-emu.txt" 2>&1 || true
        journalctl -b --no-pager -o short-monotonic -u drowsed.service >"$DROWSE_OUT/journal-drowsed.txt" 2>&1 || true
        journalctl -b --no-pager -o short-monotonic -u dbus.service >"$DROWSE_OUT/journal-dbus.txt" 2>&1 || true
}
trap save_logs EXIT

[[ $(</proc/1/comm) == systemd ]] || vm_fail "PID 1 is $(</proc/1/comm), not systemd (run-guest --systemd)"
vm_log "systemd $(systemctl --version | head -1 | cut -d' ' -f2) is PID 1; system state: $(systemctl is-system-running || true)"

vm_modprobe vhci-hcd
vm_modprobe usb-storage
vm_modprobe sd_mod

etc=/run/drowse-test/etc
mkdir -p "$etc/drowse"
for unit in drowse-emu.service drowsed.service; do
        sed -e "s|@sbindir@/drowse-emu|$plain/emulator/drowse-emu|" -e "s|@sbindir@/drowsed|$plain/daemon/drowsed|" \
                -e "s|@sysconfdir@|$etc|g" "$DROWSE_SRC_DIR/systemd/$unit.in" >"/run/systemd/system/$unit"
        grep -qE "@[a-z_]+@" "/run/systemd/system/$unit" && vm_fail "$unit still has an unsubstituted @...@"
done
cat >"$etc/drowse/emu.conf" <<EOF
[emulator]
attach = yes
vhci-controller = 0

[disk units]
image = /var/lib/drowse-emu/units.img
size = 32M
serial = UNITS001
EOF
printf '[defaults]\ndelay-ms = 1000\ndisk-delay-ms = 1000\n' >"$etc/drowse/drowse.conf"

# org.drowse1's policy goes where dbus-daemon looks; /etc is the host's, read-only, so over a copy.
mkdir -p /run/drowse-test/system.d
cp -a /etc/dbus-1/system.d/. /run/drowse-test/system.d/ 2>/dev/null || true
cp "$DROWSE_SRC_DIR/systemd/org.drowse1.conf" /run/drowse-test/system.d/
mount --bind /run/drowse-test/system.d /etc/dbus-1/system.d
systemctl daemon-reload
systemctl start dbus.service
systemctl reload dbus.service

# Every property the checks read, as systemd reports it.
prop() { systemctl show -P "$2" "$1"; }
active() { [[ $(systemctl is-active "$1") == active ]]; }

vm_log "== drowse-emu.service: the image in its StateDirectory, the disk attached to vhci_hcd"
systemctl start drowse-emu.service || vm_fail "drowse-emu.service did not start: $(systemctl status drowse-emu.service --no-pager 2>&1 | tail -20)"
active drowse-emu.service || vm_fail "drowse-emu.service is $(systemctl is-active drowse-emu.service)"
vm_wait_for 60 vm_disk_of_serial UNITS001
disk=$(vm_disk_of_serial UNITS001)
[[ -f /var/lib/drowse-emu/units.img ]] || vm_fail "no image in /var/lib/drowse-emu"
[[ $(stat -c %a /var/lib/drowse-emu) == 700 ]] || vm_fail "/var/lib/drowse-emu has mode $(stat -c %a /var/lib/drowse-emu), not 700"
[[ $(stat -c %a /var/lib/drowse-emu/units.img) == 600 ]] || vm_fail "the image has mode $(stat -c %a /var/lib/drowse-emu/units.img), not 600 (UMask=0077)"
ctl emu list >&2 || vm_fail "drowsectl emu does not reach drowse-emu's control socket"
vm_log "disk $disk attached by the sandboxed service (main pid $(prop drowse-emu.service MainPID))"

vm_log "== data through the disk"
dd if=/dev/urandom of=/tmp/pattern bs=64k count=16 status=none
dd if=/tmp/pattern of="/dev/$disk" bs=64k oflag=direct conv=fsync status=none || vm_fail "write to $disk failed"

vm_log "== drowsed.service: org.drowse1 on the system bus, the chain's policy written, the chain suspends"
systemctl start drowsed.service || vm_fail "drowsed.service did not start: $(systemctl status drowsed.service --no-pager 2>&1 | tail -20)"
active drowsed.service || vm_fail "drowsed.service is $(systemctl is-active drowsed.service)"
vm_wait_for 30 vm_chain_suspended "$disk"
sdev=$(readlink -f "/sys/block/$disk/device")
[[ $(<"$sdev/power/control") == auto && $(<"$sdev/power/autosuspend_delay_ms") == 1000 ]] ||
        vm_fail "the LUN's power/ is $(<"$sdev/power/control") / $(<"$sdev/power/autosuspend_delay_ms"), not auto / 1000"
vm_log "the chain of $disk is suspended, as drowsed.service wrote it"
ctl status >&2 || vm_fail "drowsectl cannot reach drowsed's control socket"

busctl --system call org.drowse1 /org/drowse1 org.drowse.Manager1 ListDevices >"$DROWSE_OUT/bus-list.txt" ||
        vm_fail "ListDevices over the system bus failed"
grep -q "$(basename "$(readlink -f "${sdev%/*/*/*/*}")")" "$DROWSE_OUT/bus-list.txt" ||
        vm_fail "ListDevices does not list the disk's USB device: $(cat "$DROWSE_OUT/bus-list.txt")"
busctl --system call org.drowse1 /org/drowse1 org.drowse.Manager1 Reload || vm_fail "root's Reload was refused"
# dbus-send shows the error's name and message (busctl only the errno it maps to): the refusal must be
# drowsed's own check, which the sandbox (ProtectProc=invisible, no capabilities) must not disturb.
nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
for call in Reload "Release string:1-1"; do
        # shellcheck disable=SC2086 # the method and its argument
        if out=$(nobody dbus-send --system --print-reply --dest=org.drowse1 /org/drowse1 org.drowse.Manager1.$call 2>&1); then
                vm_fail "an unprivileged caller could ${call%% *}"
        fi
        [[ $out == "Error org.freedesktop.DBus.Error.AccessDenied: ${call%% *} needs root" ]] ||
                vm_fail "unprivileged ${call%% *} failed, but not with drowsed's refusal: $out"
done
nobody busctl --system call org.drowse1 /org/drowse1 org.drowse.Manager1 ListDevices >/dev/null ||
        vm_fail "an unprivileged caller cannot read ListDevices"
vm_log "D-Bus: root may Reload; nobody may read, and Reload and Release tell nobody they need root"

vm_log "== reload and I/O while both run"
systemctl reload drowsed.service || vm_fail "systemctl reload drowsed failed"
active drowsed.service || vm_fail "drowsed.service is $(systemctl is-active drowsed.service) after reload"
cmp -n $((64 * 1024 * 16)) /tmp/pattern <(dd if="/dev/$disk" bs=64k count=16 iflag=direct status=none) ||
        vm_fail "read-back through the resumed disk differs"
vm_wait_for 30 vm_chain_suspended "$disk"

vm_log "== restart of drowse-emu: the disk goes away, comes back, the data is still there"
systemctl stop drowse-emu.service
[[ $(systemctl is-active drowse-emu.service) == inactive ]] || vm_fail "drowse-emu.service is $(systemctl is-active drowse-emu.service) after stop"
vm_wait_for 30 bash -c "! grep -qs UNITS001 /sys/bus/usb/devices/*/serial"
systemctl start drowse-emu.service
vm_wait_for 60 vm_disk_of_serial UNITS001
disk=$(vm_disk_of_serial UNITS001)
cmp -n $((64 * 1024 * 16)) /tmp/pattern <(dd if="/dev/$disk" bs=64k count=16 iflag=direct status=none) ||
        vm_fail "the data written before the restart is not on the disk after it"
vm_wait_for 30 vm_chain_suspended "$disk"
vm_log "the re-attached $disk holds the data and drowsed suspended its chain again"

vm_log "== stop drowsed: a clean exit, its state in its StateDirectory"
systemctl stop drowsed.service
[[ $(systemctl is-active drowsed.service) == inactive ]] || vm_fail "drowsed.service is $(systemctl is-active drowsed.service) after stop"
[[ $(prop drowsed.service Result) == success ]] || vm_fail "drowsed.service result: $(prop drowsed.service Result)"
ls -la /var/lib/drowse >&2
[[ -n $(ls -A /var/lib/drowse) ]] || vm_fail "drowsed left no state in /var/lib/drowse"
for u in drowse-emu.service drowsed.service; do
        [[ $(prop "$u" NRestarts) == 0 ]] || vm_fail "$u restarted $(prop "$u" NRestarts) times (watchdog or crash)"
done

vm_log "== the journal: no sandbox denial"
save_logs
if grep -E 'Operation not permitted|Permission denied|Read-only file system|SECCOMP|Bad system call' \
        "$DROWSE_OUT/journal-drowse-emu.txt" "$DROWSE_OUT/journal-drowsed.txt" >&2; then
        vm_fail "the units' journal shows a denial (above)"
fi

vm_log "== passthrough under drowse-emu.service, with the shipped drop-in: a gadget on dummy_hcd behind a virtual hub"
systemctl stop drowse-emu.service
vm_wait_for 30 bash -c "! grep -qs UNITS001 /sys/bus/usb/devices/*/serial"
vm_modprobe dummy_hcd
truncate -s 16M /tmp/pt.img
printf 'drowse passthrough under systemd\n' | dd of=/tmp/pt.img conv=notrunc status=none
vm_gadget_disk pt /tmp/pt.img
vm_wait_for 60 vm_disk_of_serial drowse-pt
cat >"$etc/drowse/emu.conf" <<EOF
[emulator]
attach = yes
vhci-controller = 0

[hub h]
ports = 2

[passthrough gadget]
device = 0525:a4a5:drowse-pt
hub = h
port = 2
EOF
pt_on() { local d; d=$(vm_disk_of_serial drowse-pt) && [[ $(readlink -f "/sys/block/$d/device") == */"$1".* ]]; }
systemctl start drowse-emu.service && vm_fail "drowse-emu.service passed a device through without the drop-in"
systemctl stop drowse-emu.service
systemctl reset-failed drowse-emu.service 2>/dev/null || true
journalctl -b -u drowse-emu.service --no-pager -o cat >"$DROWSE_OUT/journal-passthrough-refused.txt"
grep -q "cannot initialize libusb: .*passthrough drop-in" "$DROWSE_OUT/journal-passthrough-refused.txt" ||
        vm_fail "the refusal does not point at the drop-in: $(grep -m1 gadget "$DROWSE_OUT/journal-passthrough-refused.txt")"
vm_log "without the drop-in: $(grep -m1 -o "gadget: cannot initialize libusb.*" "$DROWSE_OUT/journal-passthrough-refused.txt")"
mkdir -p /run/systemd/system/drowse-emu.service.d
cp "$DROWSE_SRC_DIR/systemd/drowse-emu-passthrough.conf" /run/systemd/system/drowse-emu.service.d/passthrough.conf
systemctl daemon-reload
systemctl start drowse-emu.service || vm_fail "drowse-emu.service with the passthrough drop-in did not start: $(systemctl status drowse-emu.service --no-pager 2>&1 | tail -20)"
vm_wait_for 60 pt_on vhci_hcd
pdisk=$(vm_disk_of_serial drowse-pt)
[[ $(dd if="/dev/$pdisk" bs=512 count=1 iflag=direct status=none | head -c 32) == "drowse passthrough under systemd" ]] ||
        vm_fail "the passed-through disk does not read back what the gadget's image holds"
systemctl stop drowse-emu.service
vm_wait_for 30 pt_on dummy_hcd
vm_log "drowse-emu.service passed the gadget through (as $pdisk behind the virtual hub) with the drop-in, and gave it back"
rm -r /run/systemd/system/drowse-emu.service.d
systemctl daemon-reload

vm_log "== systemd-analyze security, live"
systemctl start drowsed.service
for u in drowsed.service drowse-emu.service; do
        systemd-analyze security --no-pager "$u" >"$DROWSE_OUT/security-$u.txt" 2>&1 || true
        score=$(grep -o 'Overall exposure level for [^:]*: [0-9.]*' "$DROWSE_OUT/security-$u.txt" | grep -o '[0-9.]*$' || true)
        [[ -n $score ]] || vm_fail "no exposure level for $u: $(tail -3 "$DROWSE_OUT/security-$u.txt")"
        vm_log "$u: exposure $score"
        [[ $u != drowsed.service ]] || awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || vm_fail "drowsed.service exposure $score > 2.0"
done
systemctl stop drowsed.service drowse-emu.service
vm_log "units under systemd passed"
