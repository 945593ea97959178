#!/bin/bash
# drowsed against a remote-wakeup storm on a real kernel: an emulated keyboard behind an emulated hub
# is made to signal remote wakeup over and over (drowsectl emu wakeup kbd force). drowsed must see the
# resumes in runtime_active_time/runtime_suspended_time, back the delay off (x4), then quarantine the
# keyboard (power/control=on), keep the quarantine across a restart of drowsed, and lift it on
# release; its statistics must show the resumes and the time suspended, and the plot must be valid SVG.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
drowsed=$DROWSE_BUILD_DIR/daemon/drowsed
ctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --socket /run/drowse/control --emu-socket /run/emu.ctl "$@"; }
drowsed_pid= emu_pid= storm_pid=

cleanup() {
        [[ -n $storm_pid ]] && kill "$storm_pid" 2>/dev/null && wait "$storm_pid" 2>/dev/null || true
        [[ -n $drowsed_pid ]] && kill -TERM "$drowsed_pid" 2>/dev/null && wait "$drowsed_pid" || true
        [[ -n $emu_pid ]] && kill -TERM "$emu_pid" 2>/dev/null && wait "$emu_pid" || true
}
trap cleanup EXIT

dev_by_serial() {
        local s
        for s in /sys/bus/usb/devices/*/serial; do
                [[ $(cat "$s") == "$1" ]] && { dirname "$s"; return 0; }
        done
        return 1
}
state_is() { ctl list --json | grep -q "\"sysname\":\"$1\",[^}]*\"state\":\"$2\""; }
attr_is() { [[ $(<"$kbddev/power/$1") == "$2" ]]; }
# stat_of EXPR: a Python expression on d, drowsed's statistics of the keyboard.
stat_of() {
        ctl stats --json "$kbd" | python3 -c "import json,sys; d=json.load(sys.stdin)['devices'][0]; print($1)"
}
start_drowsed() {
        "$drowsed" --config /tmp/etc/drowse.conf --monitor kernel --no-bus --state-dir /tmp/state \
                --log-level debug >>"$DROWSE_OUT/drowsed.log" 2>&1 &
        drowsed_pid=$!
        vm_wait_for 20 test -S /run/drowse/control
}

for m in vhci-hcd usbhid hid_generic; do vm_modprobe "$m"; done

"$emu" --attach --no-listen --control /run/emu.ctl --hub hub0,ports=4 --keyboard kbd,hub=hub0,port=3 \
        >"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
vm_wait_for 60 dev_by_serial kbd
kbddev=$(dev_by_serial kbd)
kbd=${kbddev##*/}
vm_log "keyboard $kbd behind hub $(basename "$(dev_by_serial hub0)")"

# HID is excluded by default: a rule lets the keyboard autosuspend, with a short delay. The storm
# limit is low so that the test does not take minutes under TCG.
mkdir -p /tmp/etc /tmp/state
cat >/tmp/etc/drowse.conf <<EOC
[rule keyboard]
match-serial = kbd
autosuspend = yes
delay-ms = 200

[protect]
storm-resumes-per-minute = 10
storm-backoff = 4
quarantine-after = 2
sample-min-ms = 500
sample-max-ms = 4000
EOC
start_drowsed
vm_wait_for 20 state_is "$kbd" autosuspend
vm_wait_for 30 attr_is runtime_status suspended
[[ $(<"$kbddev/power/autosuspend_delay_ms") == 200 ]] || vm_fail "delay not 200"
vm_log "keyboard autosuspended by drowsed"

vm_log "== the storm: remote wakeup again and again"
storm() {
        while :; do
                ctl emu wakeup kbd force >/dev/null 2>&1 || true
                sleep 0.2
        done
}
storm &
storm_pid=$!
vm_wait_for 120 grep -q "backoff: resume storm" "$DROWSE_OUT/drowsed.log"
vm_log "$(grep -m1 "backoff: resume storm" "$DROWSE_OUT/drowsed.log")"
vm_wait_for 20 attr_is autosuspend_delay_ms 800
vm_log "backed off: the keyboard's delay is 800 ms"
vm_wait_for 180 state_is "$kbd" quarantined
vm_log "$(grep -m1 ": quarantine: " "$DROWSE_OUT/drowsed.log")"
kill "$storm_pid"
wait "$storm_pid" 2>/dev/null || true
storm_pid=
vm_wait_for 10 attr_is control on
vm_log "quarantined: power/control=on"
ctl stats >&2
resumes=$(stat_of 'd["resumes"]') suspended=$(stat_of 'd["suspended_ms"]') wakeups=$(stat_of 'd["wakeups"]')
decisions=$(stat_of 'd["decisions"]')
vm_log "statistics: $resumes resumes, ${suspended} ms suspended, $(stat_of 'd["active_ms"]') ms active, $wakeups wakeups, $decisions decisions"
[[ $resumes -ge 10 ]] || vm_fail "only $resumes resumes counted in a storm that tripped the limit twice"
[[ $suspended -gt 0 ]] || vm_fail "no time suspended"
[[ $decisions -ge 2 ]] || vm_fail "$decisions decisions (backoff and quarantine expected)"
[[ $(stat_of 'd["quarantined"]') == True ]] || vm_fail "stats does not say quarantined"
# The emulator agrees that the host resumed the keyboard (it counts the wakeups it signalled).
vm_log "emulator: $(ctl emu show kbd | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["wakeups_signalled"], "wakeups signalled")')"

vm_log "== the quarantine is saved and survives a restart"
grep -lq "^quarantined=1" /tmp/state/*.state || vm_fail "no state file says quarantined: $(ls -l /tmp/state)"
kill -TERM "$drowsed_pid"
wait "$drowsed_pid" || vm_fail "drowsed did not exit cleanly"
drowsed_pid=
# Someone turns it back to auto while drowsed is down: the restart must put it back on.
echo auto >"$kbddev/power/control"
start_drowsed
vm_wait_for 20 state_is "$kbd" quarantined
vm_wait_for 10 attr_is control on
[[ $(stat_of 'd["resumes"]') -ge $resumes ]] || vm_fail "the statistics did not survive the restart"
vm_log "still quarantined after the restart, statistics kept: $(stat_of 'd["resumes"]') resumes"

vm_log "== plot"
ctl plot "$DROWSE_OUT/storm.svg"
grep -q "<svg" "$DROWSE_OUT/storm.svg" || vm_fail "no SVG"
if command -v xmllint >/dev/null; then
        xmllint --noout "$DROWSE_OUT/storm.svg" || vm_fail "the plot is not well-formed XML"
fi
grep -q "quarantine: resume storm" "$DROWSE_OUT/storm.svg" || vm_fail "the plot lacks the quarantine marker"

vm_log "== release"
ctl release "$kbd"
vm_wait_for 20 state_is "$kbd" autosuspend
vm_wait_for 10 attr_is control auto
vm_wait_for 10 attr_is autosuspend_delay_ms 200
[[ $(stat_of 'd["quarantined"]') == False ]] || vm_fail "still quarantined after release"
grep -q "^quarantined=0" /tmp/state/*.state || vm_fail "the release was not saved"
vm_wait_for 30 attr_is runtime_status suspended
ctl stats >&2
vm_log "released: autosuspends again at 200 ms"

if grep -E "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$DROWSE_OUT/drowsed.log"; then
        vm_fail "sanitizer report"
fi
vm_log "daemon-storm passed"
