#!/bin/bash
# Reproducer for the vhci_hcd resume race (docs/kernel-findings.md, finding 2; kernel-deep-dive §2.6):
# vhci_hcd keeps one `resuming` flag and one `re_timeout` per root hub, so when two root ports resume at
# once, one of them still reports SUSPEND at usb_port_resume()'s check and the kernel logically
# disconnects it: the disk vanishes and the read that woke it fails.
#
# Two emulated disks on root ports of the same vhci controller autosuspend, then are read at the same
# moment, for up to VHCI_RACE_ROUNDS rounds (default 15). The test PASSES WHEN THE BUG REPRODUCES (a
# fixed kernel makes it fail, which is how we will notice the fix) and reports the rounds it took.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
rounds=${VHCI_RACE_ROUNDS:-15}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

for m in vhci-hcd usb-storage sd_mod; do vm_modprobe "$m"; done
# usb_port_resume's verdict ("status ... after resume, -19") is a debug message.
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
echo 'file drivers/usb/core/hub.c +p' >/sys/kernel/debug/dynamic_debug/control || vm_fail "no dynamic debug"
"$emu" --attach --vhci-controller 0 --no-listen \
        --disk /tmp/a.img,size=8M,serial=RACE-A --disk /tmp/b.img,size=8M,serial=RACE-B \
        >"$DROWSE_OUT/emu.log" 2>&1 &

usbdev() {
        local s
        for s in /sys/bus/usb/devices/*/serial; do
                [[ $(<"$s") == "$1" ]] && { dirname "$s"; return 0; }
        done
        return 1
}
both_there() { vm_disk_of_serial RACE-A >/dev/null && vm_disk_of_serial RACE-B >/dev/null; }
suspended() { [[ $(cat "$(usbdev "$1")/power/runtime_status") == suspended ]]; }
both_suspended() { suspended RACE-A && suspended RACE-B; }
setup() {
        local s n
        for s in RACE-A RACE-B; do
                n=$(readlink -f "/sys/block/$(vm_disk_of_serial "$s")/device")
                echo 100 >"$n/power/autosuspend_delay_ms"
                echo auto >"$n/power/control"
                echo 100 >"$(usbdev "$s")/power/autosuspend_delay_ms"
                echo auto >"$(usbdev "$s")/power/control"
        done
}

vm_wait_for 60 both_there
a=$(usbdev RACE-A) b=$(usbdev RACE-B)
[[ $(readlink -f "$a/..") == $(readlink -f "$b/..") ]] || vm_fail "the disks are not on the same vhci root hub"
vm_log "RACE-A ${a##*/} and RACE-B ${b##*/} on root hub $(basename "$(readlink -f "$a/..")")"

lost=0
for ((i = 1; i <= rounds; i++)); do
        vm_wait_for 60 both_there
        setup
        vm_wait_for 30 both_suspended
        dmesg -c >>"$DROWSE_OUT/dmesg-rounds.txt"
        da=$(vm_disk_of_serial RACE-A) db=$(vm_disk_of_serial RACE-B)
        # Both reads start together; each resumes its own root port.
        dd if="/dev/$da" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null & pa=$!
        dd if="/dev/$db" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null & pb=$!
        ra=0 rb=0
        wait $pa || ra=$?
        wait $pb || rb=$?
        sleep 1
        log=$(dmesg)
        if grep -qE "can't resume|after resume, -19|USB disconnect" <<<"$log"; then
                lost=$i
                grep -qE "after resume, -19|can't resume" <<<"$log" ||
                        vm_fail "round $i lost a device, but not to a failed resume: $(grep "USB disconnect" <<<"$log")"
                vm_log "round $i: $(grep -E "after resume, -19|can't resume|USB disconnect" <<<"$log" | head -n3 | tr '\n' ' ')"
                vm_log "round $i: read of A exited $ra, read of B exited $rb"
                echo "$log" >"$DROWSE_OUT/dmesg-race.txt"
                break
        fi
        vm_log "round $i: both resumed"
done
((lost > 0)) || vm_fail "no device lost in $rounds rounds: the vhci resume race did not reproduce (fixed kernel?)"
vm_log "vhci resume race reproduced in round $lost of $rounds on $DROWSE_KVER"
