#!/bin/bash
# Where drowse-emu's CPU time goes on its hot path: a SuperSpeed disk with local attach under
# sequential 1 MiB O_DIRECT reads and then writes, profiled with perf (cpu-clock, call graphs)
# and counted with strace -c. Not a benchmark (no anchor, nothing timed against anything): it
# says what the emulator's share of bench/emu-scale's CPU per GiB is spent on.
#
#   tests/vm/run-guest --kernel 6.12 --build-dir BUILD --log-dir DIR bench/guest/emu-profile.sh
#
# Output in $DROWSE_OUT: perf-read.txt, perf-write.txt (perf report --stdio), strace-read.txt,
# fio-read.txt, fio-write.txt.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../../tests/vm/guest-lib.sh
. "$DROWSE_VM_LIB"

readonly emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
[[ -x $emu ]] || vm_fail "no drowse-emu at $emu"
command -v perf >/dev/null || vm_fail "perf is needed (linux-perf)"
out=$DROWSE_OUT

vm_modprobe usb-storage delay_use=0
vm_modprobe sd_mod
vm_modprobe vhci-hcd
truncate -s 256M /tmp/profile.img
fallocate -l 256M /tmp/profile.img
"$emu" --disk /tmp/profile.img,size=256M,serial=PROFILE1,speed=super --attach --no-listen >"$out/emu.log" 2>&1 &
pid=$!
vm_wait_for 60 vm_disk_of_serial PROFILE1
disk=/dev/$(vm_disk_of_serial PROFILE1)

for rw in read write; do
        fio --filename="$disk" --direct=1 --time_based --runtime=9 --name="$rw" --rw="$rw" --bs=1M \
                --ioengine=psync --output="$out/fio-$rw.txt" &
        f=$!
        sleep 1
        if [[ $rw == read ]]; then
                strace -c -f -q -p "$pid" -o "$out/strace-$rw.txt" &
                st=$!
                sleep 3
                kill -INT "$st"
                wait "$st" || true
        fi
        perf record -e cpu-clock -F 499 -g -p "$pid" -o "/tmp/perf-$rw.data" -- sleep 3 2>>"$out/perf-record.log"
        wait "$f"
        perf report -i "/tmp/perf-$rw.data" --stdio --no-children --percent-limit 1.5 >"$out/perf-$rw.txt" 2>&1
done
kill -TERM "$pid"
wait "$pid" || true
vm_log "profile: done"
