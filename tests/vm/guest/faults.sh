#!/bin/bash
# Every fault kind of drowse-emu's catalogue (emulator/fault.h), injected into a real kernel, with what
# the kernel did about it asserted from its own log, sysfs and the I/O that met the fault. Then a
# scenario mixing several faults runs twice with the same seed and must give the same outcome.
#
# Topology: hub0 with disk0 (port 2), kbd (port 3) and disk1 (port 4, the one that gets unplugged and
# over-currented), plus rdisk on a root port of its own. usbcore's dynamic debug is on for hub.c and
# driver.c: the resume and wakeup decisions are only logged at debug level.
#
# FAULT_CASES="case1 case2 ..." runs a subset (development).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
ctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --emu-socket /run/emu.ctl "$@"; }

for m in vhci-hcd usb-storage sd_mod usbhid hid_generic evdev; do vm_modprobe "$m"; done
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
echo 'file drivers/usb/core/hub.c +p; file drivers/usb/core/driver.c +p' \
        >/sys/kernel/debug/dynamic_debug/control || vm_fail "no dynamic debug"

field() { # field DEVICE PYTHON-EXPRESSION-ON-d
        ctl emu show "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"
}
fault_hits() { # fault_hits ID
        ctl emu fault list --json | python3 -c "
import json,sys
print(next(f['hits'] for f in json.load(sys.stdin) if f['id'] == $1))"
}
hits_are() { [[ $(fault_hits "$1") == "$2" ]]; }
field_is() { [[ $(field "$1" "$2") == "$3" ]]; }
keys_above() { [[ $(keys) -gt $1 ]]; }
runtime_is() { [[ $(status_of "$1") == "$2" ]]; }
add_fault() { # add_fault DEVICE SPEC...: prints the id
        local out
        out=$(ctl emu fault add "$@") || vm_fail "fault add $* refused"
        echo "${out##* }"
}
usbdev() { # the usb_device sysfs dir with this serial
        local s
        for s in /sys/bus/usb/devices/*/serial; do
                [[ $(<"$s") == "$1" ]] && { dirname "$s"; return 0; }
        done
        return 1
}
disk_of() { vm_disk_of_serial "$1"; }
no_disk() { ! vm_disk_of_serial "$1"; }
event_node() {
        local e
        for e in /sys/class/input/event*; do
                [[ $(readlink -f "$e/device") == "$(readlink -f "$(usbdev kbd)")"/* ]] && {
                        echo "/dev/input/${e##*/}"; return 0; }
        done
        return 1
}
status_of() { cat "$1/power/runtime_status"; }
is_suspended() { [[ $(status_of "$1") == suspended ]]; }
# autosuspend SERIAL [DELAY_MS]: the whole chain of a disk, or a keyboard, to autosuspend.
autosuspend() {
        local dev disk n
        dev=$(usbdev "$1")
        if disk=$(disk_of "$1" 2>/dev/null); then
                n=$(readlink -f "/sys/block/$disk/device")
                echo "${2:-100}" >"$n/power/autosuspend_delay_ms"
                echo auto >"$n/power/control"
        fi
        echo "${2:-100}" >"$dev/power/autosuspend_delay_ms"
        echo auto >"$dev/power/control"
}
stay_on() { echo on >"$(usbdev "$1")/power/control"; }
wait_suspended() { vm_wait_for "${2:-30}" is_suspended "$(usbdev "$1")"; }
read_block() { # read_block SERIAL LBA: one 512-byte direct read
        dd if="/dev/$(disk_of "$1")" of=/dev/null bs=512 count=1 skip="$2" iflag=direct status=none
}
devnum() { cat "$(usbdev "$1")/devnum"; }

# Each case runs with the kernel log cleared before it; $klog has what the kernel said during it.
# Whatever happens, the emulator and the key reader go with the script.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

klog=
begin() {
        vm_log "== $1"
        dmesg -c >>"$DROWSE_OUT/dmesg-cases.txt"
        echo "===== case $1" >>"$DROWSE_OUT/dmesg-cases.txt"
}
collect() { klog=$(dmesg); }
kernel_said() { # kernel_said REGEX [WHAT]
        collect
        grep -qE "$1" <<<"$klog" || vm_fail "the kernel did not log /$1/${2:+ ($2)}"
        vm_log "kernel: $(grep -E "$1" <<<"$klog" | tail -n1 | cut -c1-150)"
}
kernel_silent() { # kernel_silent REGEX
        collect
        ! grep -E "$1" <<<"$klog" >&2 || vm_fail "the kernel logged /$1/"
}

"$emu" --attach --no-listen --control /run/emu.ctl --hub hub0,ports=4 \
        --disk /tmp/d0.img,size=16M,serial=FDISK0,hub=hub0,port=2 --keyboard kbd,hub=hub0,port=3 \
        --disk /tmp/d1.img,size=16M,serial=FDISK1,hub=hub0,port=4 \
        --disk /tmp/r.img,size=16M,serial=RDISK,name=rdisk \
        >"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
vm_wait_for 90 disk_of FDISK0
vm_wait_for 60 disk_of FDISK1
vm_wait_for 60 disk_of RDISK
vm_wait_for 60 event_node
ctl emu fault kinds >"$DROWSE_OUT/fault-kinds.txt"
vm_log "topology up: disk0 $(disk_of FDISK0), disk1 $(disk_of FDISK1), rdisk $(disk_of RDISK), kbd $(event_node)"

# usbhid arms remote wakeup only while the input device is open: a reader keeps it open and counts
# KEY_A presses into /tmp/keys.
python3 - "$(event_node)" <<'PY' &
import os, select, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
seen = 0
open("/tmp/keys", "w").write("0")
while True:
    if not select.select([fd], [], [], 1)[0]:
        continue
    data = os.read(fd, 24 * 64)
    for i in range(0, len(data) - 23, 24):
        _, _, typ, code, value = struct.unpack("qqHHi", data[i:i + 24])
        if typ == 1 and code == 30 and value == 1:
            seen += 1
    open("/tmp/keys.new", "w").write(str(seen))
    os.rename("/tmp/keys.new", "/tmp/keys")
PY
reader=$!
keys() { cat /tmp/keys 2>/dev/null || echo 0; }
vm_wait_for 60 test -e /tmp/keys # python starts slowly under TCG with other guests about

# ---------------------------------------------------------------------------------------------
case_resume_stuck() {
        begin "resume-stuck: the port stays suspended, the kernel gives the device up and re-enumerates it"
        autosuspend FDISK0
        wait_suspended FDISK0
        local n0 id
        n0=$(devnum FDISK0)
        id=$(add_fault disk0 resume-stuck)
        read_block FDISK0 0 || true
        kernel_said "status [0-9a-f]{4}\.0?[0-9a-f]*5[0-9a-f]* after resume, -19|can't resume" "resume failed with the port suspended"
        kernel_said "USB disconnect, device number $n0" "logical disconnect"
        vm_wait_for 60 disk_of FDISK0
        [[ $(devnum FDISK0) != "$n0" ]] || vm_fail "same device number: not re-enumerated"
        read_block FDISK0 0 || vm_fail "the re-enumerated disk does not read"
        [[ $(fault_hits "$id") == 1 ]] || vm_fail "fault hits $(fault_hits "$id")"
        vm_log "re-enumerated as device $(devnum FDISK0)"
}

case_resume_slow() {
        begin "resume-slow: 15 ms late is within the kernel's 40 ms; 300 ms late is not"
        autosuspend FDISK0
        wait_suspended FDISK0
        local n0 id
        n0=$(devnum FDISK0)
        id=$(add_fault disk0 resume-slow ms=15)
        read_block FDISK0 0 || vm_fail "read after a 15 ms slow resume failed"
        [[ $(devnum FDISK0) == "$n0" ]] || vm_fail "re-enumerated after a 15 ms slow resume"
        kernel_silent "USB disconnect|after resume, -19"
        [[ $(fault_hits "$id") == 1 ]] || vm_fail "fault 15 ms not hit"
        wait_suspended FDISK0
        id=$(add_fault disk0 resume-slow ms=300)
        read_block FDISK0 0 || true
        kernel_said "after resume, -19|can't resume" "the port was still suspended at the 40 ms check"
        kernel_said "USB disconnect, device number $n0"
        vm_wait_for 60 disk_of FDISK0
        read_block FDISK0 0 || vm_fail "the re-enumerated disk does not read"
}

case_resume_reset() {
        begin "resume-reset: the device forgot its address; the kernel reset-resumes the same device"
        autosuspend FDISK0
        wait_suspended FDISK0
        local n0 disk0
        n0=$(devnum FDISK0)
        disk0=$(disk_of FDISK0)
        add_fault disk0 resume-reset >/dev/null
        read_block FDISK0 8 || vm_fail "read after reset-resume failed"
        kernel_said "reset high-speed USB device number $n0" "reset-resume"
        kernel_silent "USB disconnect"
        [[ $(disk_of FDISK0) == "$disk0" && $(devnum FDISK0) == "$n0" ]] || vm_fail "not the same device after reset-resume"
}

case_resume_status_stall() {
        begin "resume-status-stall on a root port: GET_STATUS after resume stalls, the kernel retries with a reset-resume"
        autosuspend RDISK
        wait_suspended RDISK
        local n0
        n0=$(devnum RDISK)
        add_fault rdisk resume-status-stall >/dev/null
        read_block RDISK 8 || vm_fail "read failed"
        kernel_said "retry with reset-resume|reset high-speed USB device number $n0" "reset-resume after the stalled GET_STATUS"
        kernel_said "reset high-speed USB device number $n0"
        [[ $(devnum RDISK) == "$n0" ]] || vm_fail "re-enumerated instead of reset-resumed"
        stay_on RDISK
}

case_resume_status_timeout() {
        begin "resume-status-timeout: GET_STATUS after resume unanswered: 5 s timeout, unlink, reset-resume"
        autosuspend FDISK0
        wait_suspended FDISK0
        local n0 t0 t1 unlinks0
        n0=$(devnum FDISK0)
        unlinks0=$(field disk0 'd["stats"]["unlinks_pending"] + d["stats"]["unlinks_late"]')
        add_fault disk0 resume-status-timeout >/dev/null
        t0=$EPOCHREALTIME
        read_block FDISK0 8 || vm_fail "read failed"
        t1=$EPOCHREALTIME
        python3 -c "import sys; sys.exit(0 if $t1 - $t0 >= 4.5 else 1)" || vm_fail "the read took $(python3 -c "print(round($t1 - $t0, 2))") s, not the 5 s timeout"
        kernel_said "reset high-speed USB device number $n0"
        [[ $(devnum FDISK0) == "$n0" ]] || vm_fail "re-enumerated"
        vm_log "the read waited $(python3 -c "print(round($t1 - $t0, 2))") s for the kernel's control timeout"
}

case_wakeup_spurious() {
        begin "wakeup-spurious: the keyboard wakes for nothing 300 ms after suspending; the kernel resumes it"
        autosuspend kbd 200
        wait_suspended kbd
        local id
        id=$(add_fault kbd wakeup-spurious delay=300)
        vm_wait_for 10 hits_are "$id" 1
        kernel_said "usb wakeup-resume" "remote wakeup handled"
        wait_suspended kbd
        [[ $(keys) == 0 ]] || vm_fail "a key arrived from a spurious wakeup"
}

case_wakeup_storm() {
        begin "wakeup-storm: 6 wakeups 150 ms after each suspend; the kernel resumes 6 times"
        autosuspend kbd 200
        wait_suspended kbd
        local id w0 n
        w0=$(field hub0 'd["hub_stats"]["remote_wakeups"]')
        id=$(add_fault kbd wakeup-storm n=6 interval=150)
        spent() { [[ $(fault_hits "$id") == 6 ]]; }
        vm_wait_for 60 spent
        wait_suspended kbd
        collect
        n=$(grep -c "usb wakeup-resume" <<<"$klog" || true)
        [[ $n -ge 6 ]] || vm_fail "the kernel handled $n wakeups, not 6"
        [[ $(field hub0 "d['hub_stats']['remote_wakeups'] - $w0") == 6 ]] || vm_fail "hub carried $(field hub0 "d['hub_stats']['remote_wakeups'] - $w0")"
        vm_log "$n wakeup-resumes in the kernel log"
}

case_wakeup_lost() {
        begin "wakeup-lost: a key press signals wakeup, the hub never reports it; the key waits until the host resumes"
        autosuspend kbd 200
        wait_suspended kbd
        local k0 id
        k0=$(keys)
        id=$(add_fault kbd wakeup-lost)
        ctl emu type kbd a >/dev/null
        sleep 2
        [[ $(keys) == "$k0" ]] || vm_fail "the key arrived although the wakeup was lost"
        is_suspended "$(usbdev kbd)" || vm_fail "the keyboard resumed although the wakeup was lost"
        kernel_silent "usb wakeup-resume"
        [[ $(fault_hits "$id") == 1 ]] || vm_fail "fault not hit"
        stay_on kbd
        vm_wait_for 10 keys_above "$k0"
        vm_log "the key arrived once the host resumed the keyboard itself"
}

case_wakeup_unarmed() {
        begin "wakeup-unarmed: the disk (usb-storage never arms remote wakeup) signals anyway; the kernel obeys"
        autosuspend FDISK0
        wait_suspended FDISK0
        [[ $(field disk0 'd["remote_wakeup"]') == False ]] || vm_fail "remote wakeup is armed on the disk"
        local id
        id=$(add_fault disk0 wakeup-unarmed delay=200)
        vm_wait_for 10 hits_are "$id" 1
        kernel_said "usb wakeup-resume" "the kernel resumed a device that was not armed for wakeup"
        wait_suspended FDISK0
}

case_remote_wakeup_stall() {
        begin "remote-wakeup-stall: the keyboard cannot be armed, so usbhid's autosuspend keeps failing"
        stay_on kbd
        vm_wait_for 10 runtime_is "$(usbdev kbd)" active
        local id t0
        id=$(add_fault kbd remote-wakeup-stall)
        autosuspend kbd 100
        for _ in 1 2 3 4 5 6; do # the kernel retries every delay; it never gets there
                sleep 0.5
                [[ $(status_of "$(usbdev kbd)") != suspended ]] || vm_fail "suspended without remote wakeup armed"
        done
        [[ $(fault_hits "$id") -ge 2 ]] || vm_fail "only $(fault_hits "$id") attempts to arm"
        kernel_said "won't remote wakeup, status -32|can't set remote wakeup|status -32" "the failed SET_FEATURE"
        vm_log "$(fault_hits "$id") refused attempts in 3 s"
        ctl emu fault clear "$id" >/dev/null
        wait_suspended kbd
}

case_not_ready() {
        begin "not-ready: NOT READY (becoming ready) after resume: the midlayer retries and the read succeeds"
        autosuspend FDISK0
        wait_suspended FDISK0
        local id
        id=$(add_fault disk0 not-ready)
        read_block FDISK0 16 || vm_fail "the read failed"
        [[ $(fault_hits "$id") == 1 ]] || vm_fail "fault not hit"
        kernel_silent "I/O error"
        begin "not-ready 2/04/03 (manual intervention required): the read fails with an I/O error"
        stay_on FDISK0
        id=$(add_fault disk0 not-ready sense=2/04/03 after-resume=no count=1)
        ! read_block FDISK0 16 2>/dev/null || vm_fail "the read succeeded"
        kernel_said "manual intervention required" "the sense decoded"
        kernel_said "I/O error" "the request failed"
        read_block FDISK0 16 || vm_fail "the next read failed"
}

case_media_error() {
        begin "media-error: LBA 2048-2055 unreadable and unwritable, its neighbours fine"
        local id disk
        disk=$(disk_of RDISK)
        id=$(add_fault rdisk media-error lba=2048-2055)
        ! read_block RDISK 2050 2>/dev/null || vm_fail "read of a bad block succeeded"
        kernel_said "Unrecovered read error" "the sense decoded"
        kernel_said "(critical medium error|I/O error).*sector 20[45][0-9]" "the failed request"
        read_block RDISK 2056 || vm_fail "the next block failed"
        read_block RDISK 2047 || vm_fail "the previous block failed"
        ! dd if=/dev/zero of="/dev/$disk" bs=512 count=1 seek=2049 oflag=direct status=none 2>/dev/null ||
                vm_fail "write to a bad block succeeded"
        kernel_said "Write error" "the write's sense decoded"
        ctl emu fault clear "$id" >/dev/null
        read_block RDISK 2050 || vm_fail "still failing after clear"
}

case_io_latency() {
        begin "io-latency: every command's status 300 ms late"
        local id t0 t1
        id=$(add_fault rdisk io-latency ms=300)
        t0=$EPOCHREALTIME
        read_block RDISK 100 || vm_fail "read failed"
        t1=$EPOCHREALTIME
        python3 -c "import sys; sys.exit(0 if $t1 - $t0 >= 0.3 else 1)" || vm_fail "read took only $(python3 -c "print($t1 - $t0)") s"
        vm_log "a 512-byte read took $(python3 -c "print(round($t1 - $t0, 3))") s"
        ctl emu fault clear "$id" >/dev/null
}

case_phase_error() {
        begin "phase-error: CSW status 2; usb-storage resets the device and the command is retried"
        local n0
        n0=$(devnum RDISK)
        add_fault rdisk phase-error >/dev/null
        read_block RDISK 200 || vm_fail "read failed"
        kernel_said "reset high-speed USB device number $n0" "usb-storage's reset after the phase error"
        [[ $(devnum RDISK) == "$n0" ]] || vm_fail "re-enumerated"
}

case_delay_completion() {
        begin "delay-completion: RET_SUBMIT 400 ms late on bulk IN"
        local id t0 t1
        id=$(add_fault rdisk delay-completion ms=400 ep=0x81)
        t0=$EPOCHREALTIME
        read_block RDISK 300 || vm_fail "read failed"
        t1=$EPOCHREALTIME
        python3 -c "import sys; sys.exit(0 if $t1 - $t0 >= 0.8 else 1)" || vm_fail "read took only $(python3 -c "print($t1 - $t0)") s (data and status each 400 ms late)"
        ctl emu fault clear "$id" >/dev/null
}

case_drop_completion() {
        begin "drop-completion: one bulk-IN RET_SUBMIT never sent: SCSI timeout, abort (unlink), reset, retry"
        local n0 disk t0 t1 id
        n0=$(devnum RDISK)
        disk=$(disk_of RDISK)
        echo 3 >"/sys/block/$disk/device/timeout"
        id=$(add_fault rdisk drop-completion ep=0x81)
        t0=$EPOCHREALTIME
        read_block RDISK 400 || vm_fail "read failed"
        t1=$EPOCHREALTIME
        python3 -c "import sys; sys.exit(0 if $t1 - $t0 >= 2.5 else 1)" || vm_fail "read took only $(python3 -c "print($t1 - $t0)") s"
        kernel_said "reset high-speed USB device number $n0" "usb-storage's reset after the abort"
        [[ $(fault_hits "$id") == 1 ]] || vm_fail "fault not hit"
        vm_log "recovered after $(python3 -c "print(round($t1 - $t0, 2))") s"
        echo 30 >"/sys/block/$disk/device/timeout"
}

case_start_stop_fail() {
        begin "start-stop-fail: the disk refuses START STOP UNIT when sd stops it for runtime suspend"
        local disk sdev attr id
        disk=$(disk_of FDISK1)
        sdev=$(readlink -f "/sys/block/$disk/device")
        attr=$sdev/scsi_disk/*/manage_runtime_start_stop
        # shellcheck disable=SC2086
        if ! ls $attr >/dev/null 2>&1; then attr=$sdev/scsi_disk/*/manage_start_stop; fi
        # shellcheck disable=SC2086
        echo 1 >$attr
        # HARDWARE ERROR (the default sense): usb-storage sets retry_hwerror, so the midlayer requeues
        # the STOP again and again instead of failing it.
        id=$(add_fault disk1 start-stop-fail always)
        autosuspend FDISK1
        hit_once() { [[ $(fault_hits "$id") -ge 1 ]]; }
        vm_wait_for 15 hit_once
        sleep 3
        local hw
        hw=$(fault_hits "$id")
        [[ $hw -ge 10 ]] || vm_fail "only $hw STOP attempts with HARDWARE ERROR in 3 s"
        [[ $(status_of "$(usbdev FDISK1)") != suspended ]] || vm_fail "suspended under a disk that did not stop"
        vm_log "HARDWARE ERROR: the kernel sent START STOP UNIT $hw times in ~3 s and keeps going"
        ctl emu fault clear "$id" >/dev/null
        wait_suspended FDISK1
        # ILLEGAL REQUEST fails the STOP at once: sd reports it and the runtime suspend fails.
        # A delay long enough that the fault is in place before sd stops the disk again.
        autosuspend FDISK1 4000
        read_block FDISK1 0 || vm_fail "read after resume failed"
        id=$(add_fault disk1 start-stop-fail sense=5/24/00 always)
        stop_failed() { dmesg | grep -q "Start/Stop Unit failed"; }
        vm_wait_for 20 stop_failed
        kernel_said "Start/Stop Unit failed" "sd's stop failed"
        sleep 1
        vm_log "scsi_device runtime_status after the failed stop: $(status_of "$sdev"), usb device: $(status_of "$(usbdev FDISK1)")"
        [[ $(status_of "$(usbdev FDISK1)") != suspended ]] || vm_fail "the USB device suspended under a disk that did not stop"
        ctl emu fault clear "$id" >/dev/null
        # shellcheck disable=SC2086
        echo 0 >$attr
}

case_over_current() {
        begin "over-current on hub port 4: the kernel counts it, powers the port again and re-enumerates"
        local port n0 id
        port=$(readlink -f "$(usbdev hub0)/$(basename "$(usbdev hub0)"):1.0/$(basename "$(usbdev hub0)")-port4")
        n0=$(devnum FDISK1)
        id=$(add_fault disk1 over-current)
        vm_wait_for 10 hits_are "$id" 1
        oc_is_1() { [[ $(cat "$port/over_current_count") == 1 ]]; }
        vm_wait_for 10 oc_is_1
        kernel_said "over-current change #1" "the port's over-current change"
        kernel_said "USB disconnect, device number $n0"
        vm_wait_for 60 disk_of FDISK1
        read_block FDISK1 0 || vm_fail "the disk does not read after power came back"
        vm_log "over_current_count $(cat "$port/over_current_count"), re-enumerated as device $(devnum FDISK1)"
}

case_unplug_suspended() {
        begin "unplug-suspended: the disk leaves 200 ms after it suspends"
        local n0
        autosuspend FDISK1
        wait_suspended FDISK1
        n0=$(devnum FDISK1)
        add_fault disk1 unplug-suspended >/dev/null
        vm_wait_for 10 field_is disk1 'd["link"]' unplugged
        kernel_said "USB disconnect, device number $n0"
        vm_wait_for 10 no_disk FDISK1
        ctl emu plug disk1 >/dev/null
        vm_wait_for 60 disk_of FDISK1
}

case_unplug_resume() {
        begin "unplug-resume: the disk leaves as the host resumes it; the I/O that resumed it fails"
        local n0
        autosuspend FDISK1
        wait_suspended FDISK1
        n0=$(devnum FDISK1)
        add_fault disk1 unplug-resume >/dev/null
        ! read_block FDISK1 0 2>/dev/null || vm_fail "read succeeded from an unplugged disk"
        kernel_said "USB disconnect, device number $n0"
        [[ $(field disk1 'd["link"]') == unplugged ]] || vm_fail "emulator still has it plugged"
        ctl emu plug disk1 >/dev/null
        vm_wait_for 60 disk_of FDISK1
        read_block FDISK1 0 || vm_fail "the re-plugged disk does not read"
}

case_carrier_close() {
        begin "carrier-close: disk1's carrier connection closes; vhci drops that root port, the child is unreachable"
        local n0 root
        n0=$(devnum FDISK1)
        add_fault disk1 carrier-close >/dev/null
        vm_wait_for 10 field_is disk1 'd["importer"]' None
        read_block FDISK1 0 2>/dev/null || true
        collect
        echo "$klog" >"$DROWSE_OUT/carrier-close-dmesg.txt"
        kernel_said "USB disconnect" "vhci disconnected the carrier's root port"
        vm_wait_for 60 no_disk FDISK1
        kernel_said "enqueue for inactive port" "the child's URBs have no connection left"
        kernel_said "logical disconnect|USB disconnect, device number $n0" "the child given up"
        vm_log "disk1 gone from the kernel"
}

run_scenario() { # run_scenario N: runs the mixed scenario, prints its outcome
        local f=/tmp/mixed.scenario
        cat >"$f" <<'EOF'
# Five faults, one seed: the outcome must not depend on the run.
seed 4242
fault clear all
fault add disk0 resume-reset
fault add disk0 not-ready
fault add rdisk media-error lba=5000 count=2
fault add kbd wakeup-storm n=4 interval=100ms
fault add disk0 io-latency ms=50 probability=0.5
wait kbd faults-spent 60s
wait kbd suspended 30s
EOF
        ctl emu scenario run "$f" >/dev/null
        done_() { ctl emu scenario status | grep -qE "^(done|failed)"; }
        ( # the host side of the experiment: I/O that meets the faults
                for i in 1 2 3; do
                        wait_suspended FDISK0 30 || exit 1
                        dd if="/dev/$(disk_of FDISK0)" of=/dev/null bs=4k count=8 skip=$((i * 100)) iflag=direct status=none || exit 2
                done
                read_block RDISK 5000 2>/dev/null && exit 3
                read_block RDISK 5000 2>/dev/null && exit 3
                read_block RDISK 5000 || exit 4
        ) || vm_fail "scenario I/O: step failed ($?)"
        vm_wait_for 90 done_
        ctl emu scenario status | grep -q "^done" || vm_fail "scenario: $(ctl emu scenario status)"
        ctl emu fault list --json | python3 -c "
import json, sys
print(' '.join('%s:%s/%s' % (f['kind'], f['hits'], f['opportunities']) for f in json.load(sys.stdin)))"
}

case_scenario() {
        begin "a scenario file with five faults runs twice with the same seed: same outcome"
        autosuspend FDISK0
        autosuspend kbd 200
        local a b
        a=$(run_scenario 1)
        vm_log "run 1: $a"
        collect
        local ka kb
        ka=$(grep -cE "usb wakeup-resume" <<<"$klog" || true)
        begin "scenario, run 2"
        b=$(run_scenario 2)
        vm_log "run 2: $b"
        collect
        kb=$(grep -cE "usb wakeup-resume" <<<"$klog" || true)
        # Hits are the kernel-visible outcome: each is a request the kernel sent and got the fault for.
        # The latency fault's opportunities depend on how the kernel splits I/O, so only the others
        # are compared exactly.
        strip() { sed -E 's/io-latency:[0-9]+\/[0-9]+//' <<<"$1"; }
        [[ $(strip "$a") == "$(strip "$b")" ]] || vm_fail "the scenario's outcome differs: '$a' vs '$b'"
        [[ $ka == "$kb" && $ka -ge 4 ]] || vm_fail "wakeup-resumes differ or too few: $ka vs $kb"
        vm_log "same outcome twice ($ka wakeup-resumes each)"
}

all_cases="resume_stuck resume_slow resume_reset resume_status_stall resume_status_timeout wakeup_spurious
wakeup_storm wakeup_lost wakeup_unarmed remote_wakeup_stall not_ready media_error io_latency phase_error
delay_completion drop_completion scenario start_stop_fail over_current unplug_suspended unplug_resume
carrier_close"
for c in ${FAULT_CASES:-$all_cases}; do
        "case_$c"
        ctl emu fault clear all >/dev/null
done
dmesg -c >>"$DROWSE_OUT/dmesg-cases.txt"
ctl emu fault list >"$DROWSE_OUT/faults-final.txt"

kill "$reader" 2>/dev/null || true
kill -TERM "$emu_pid"
wait "$emu_pid" || vm_fail "drowse-emu did not exit cleanly"
if grep -E "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$DROWSE_OUT/emu.log"; then
        vm_fail "sanitizer report"
fi
grep -c "fault [0-9]* .* hit" "$DROWSE_OUT/emu.log" >&2 || true
vm_log "faults: all checks passed"
