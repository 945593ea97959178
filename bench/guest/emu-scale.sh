#!/bin/bash
# drowse-emu at scale, in one boot: SuperSpeed against brd (the block layer's ceiling), CPU time
# per GiB, RSS with 1/16/100 devices, all 8 vhci_hcd controllers filled, and concurrent TCP
# clients. Run by bench/emu-scale through tests/vm/run-guest; the host side parses $DROWSE_OUT.
#
# Output in $DROWSE_OUT: fio/<target>-<rep>.json (rep 0 = warm-up) with cpu.tsv (CPU ticks of
# drowse-emu and of the whole guest around each of them), fleet.tsv, tcp.tsv, env.txt, emu-*.log.
#
# Environment: BENCH_REPS (default 3), BENCH_RUNTIME (fio seconds per job, default 4), BENCH_FLEET
# (fleet sizes, default "1 16 100 240": 240 fills all 8 controllers of Debian's vhci_hcd, 15 + 15
# ports each), BENCH_TCP_DEVICES (default 16).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../../tests/vm/guest-lib.sh
. "$DROWSE_VM_LIB"

readonly reps=${BENCH_REPS:-3} runtime=${BENCH_RUNTIME:-4}
readonly fleet_sizes=${BENCH_FLEET:-1 16 100 240} tcp_devices=${BENCH_TCP_DEVICES:-16}
readonly size_mb=256 tcp_port=3242 controllers=8
readonly emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
[[ -x $emu ]] || vm_fail "no drowse-emu at $emu"
out=$DROWSE_OUT
mkdir -p "$out/fio" /tmp/fleet

# A sleep without fork+exec (each exec costs 40-150 ms under TCG).
mkfifo /tmp/bench-sleep.fifo
exec {sleep_fd}<>/tmp/bench-sleep.fifo
nap() { read -r -t "$1" -u "$sleep_fd" _ || true; }
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

ip link set lo up
vm_modprobe usb-storage delay_use=0
vm_modprobe sd_mod
vm_modprobe vhci-hcd num_controllers=$controllers
vm_modprobe brd rd_nr=1 rd_size=$((size_mb * 1024))

n_controllers=$(find /sys/devices/platform -maxdepth 1 -name 'vhci_hcd.*' | wc -l)
nports=$(</sys/devices/platform/vhci_hcd.0/nports)
((n_controllers == controllers)) || vm_fail "vhci_hcd made $n_controllers controllers, not $controllers"
per_speed=$((nports / controllers / 2)) # root ports per controller and speed
{
        echo "kernel $DROWSE_KVER"
        echo "nproc $(nproc)"
        grep -m1 'model name' /proc/cpuinfo
        echo "clk_tck $(getconf CLK_TCK)"
        echo "vhci controllers $n_controllers ports $nports per_speed $per_speed"
        echo "reps $reps runtime $runtime size_mb $size_mb fleet $fleet_sizes tcp_devices $tcp_devices"
        fio --version
} >"$out/env.txt"

# usable_disks: the sd disks that have a device node and a size (a disk is there for a user).
usable_disks() {
        local b s n=0
        for b in /sys/block/sd*; do
                [[ -e $b && -b /dev/${b##*/} ]] || continue
                read -r s <"$b/size" || continue
                ((s > 0)) && n=$((n + 1))
        done
        echo "$n"
}
wait_disks() { # N TIMEOUT_S [PID]: until exactly N usable sd disks exist; sets t_found (us)
        local deadline=$((EPOCHSECONDS + $2))
        until (($(usable_disks) == $1)); do
                ((EPOCHSECONDS < deadline)) || return 1
                # The emulator that should bring them exited (a refused configuration, a crash).
                [[ -z ${3:-} ]] || kill -0 "$3" 2>/dev/null || return 1
                nap 0.02
        done
        t_found=$(now_us)
}
no_disks() { [[ ! -e $(compgen -G '/sys/block/sd*' | head -n1) ]]; }
cpu_ticks() { # PID: utime + stime
        local f
        read -r -a f <"/proc/$1/stat"
        echo $((f[13] + f[14]))
}
guest_busy() { # all CPUs, in ticks: everything but idle and iowait
        local _cpu u n s i w q sq st
        read -r _cpu u n s i w q sq st _ </proc/stat
        echo $((u + n + s + q + sq + st))
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
stop_emu() { # PID
        kill -TERM "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
}

# ---- SuperSpeed and high speed against brd; CPU time per GiB ----

for s in super high; do
        truncate -s "${size_mb}M" "/tmp/emu-$s.img"
        fallocate -l "${size_mb}M" "/tmp/emu-$s.img"
done
"$emu" --disk "/tmp/emu-super.img,size=${size_mb}M,serial=BENCHSS1,speed=super" --attach --no-listen \
        --vhci-controller 0 >>"$out/emu-super.log" 2>&1 &
pid_super=$!
"$emu" --disk "/tmp/emu-high.img,size=${size_mb}M,serial=BENCHHS1,speed=high" --attach --no-listen \
        --vhci-controller 1 >>"$out/emu-high.log" 2>&1 &
pid_high=$!
wait_disks 2 120 || vm_fail "the two emulated disks did not appear: $(tail -n 3 "$out"/emu-{super,high}.log)"
declare -A dev=([emu-super]=$(vm_disk_of_serial BENCHSS1) [emu-high]=$(vm_disk_of_serial BENCHHS1) [brd]=ram0)
declare -A pid=([emu-super]=$pid_super [emu-high]=$pid_high [brd]=)
targets=(emu-super emu-high brd)
for t in "${targets[@]}"; do
        d=${dev[$t]}
        [[ -n $d && $(<"/sys/block/$d/size") -eq $((size_mb * 2048)) ]] || vm_fail "$t: no $size_mb MiB disk"
        usb=
        if [[ $t != brd ]]; then
                usb=$(readlink -f "/sys/block/$d/device")
                while [[ $usb == /sys/* && ! -f $usb/speed ]]; do usb=${usb%/*}; done
        fi
        q=/sys/block/$d/queue
        printf '%s dev=%s usb_speed=%s max_sectors_kb=%s\n' "$t" "$d" \
                "$(if [[ -n $usb && -f $usb/speed ]]; then cat "$usb/speed"; else echo -; fi)" "$(<"$q/max_sectors_kb")"
        [[ -w $q/scheduler ]] && { echo none >"$q/scheduler" 2>/dev/null || true; }
done >>"$out/env.txt"
grep -q '^emu-super .*usb_speed=5000 ' "$out/env.txt" || vm_fail "the SuperSpeed disk is not on a SuperSpeed port"

printf 'target\trep\temu_ticks\tguest_ticks\n' >"$out/cpu.tsv"
run_fio() { # TARGET REP RUNTIME
        local d=/dev/${dev[$1]} p=${pid[$1]} e0=0 e1=0 g0 g1
        [[ -z $p ]] || e0=$(cpu_ticks "$p")
        g0=$(guest_busy)
        fio --output-format=json --output="$out/fio/$1-$2.json" --filename="$d" --direct=1 --time_based \
                --runtime="$3" --size="${size_mb}M" \
                --name=seqread --rw=read --bs=1M --ioengine=psync --iodepth=1 \
                --name=seqwrite --stonewall --rw=write --bs=1M --ioengine=psync --iodepth=1 \
                >/dev/null 2>"$out/fio/$1-$2.err" || vm_fail "fio on $1 ($d) failed: $(<"$out/fio/$1-$2.err")"
        g1=$(guest_busy)
        [[ -z $p ]] || e1=$(cpu_ticks "$p")
        printf '%s\t%d\t%d\t%d\n' "$1" "$2" $((e1 - e0)) $((g1 - g0)) >>"$out/cpu.tsv"
        # 4 KiB random reads at qd1 and qd32 as in the anchor's boot, outside the CPU-per-GiB count.
        fio --output-format=json --output="$out/fio/$1-$2-rand.json" --filename="$d" --direct=1 \
                --time_based --runtime="$3" --size="${size_mb}M" --randrepeat=0 --norandommap \
                --name=randread-qd1 --rw=randread --bs=4k --ioengine=psync --iodepth=1 \
                --name=randread-qd32 --stonewall --rw=randread --bs=4k --ioengine=libaio --iodepth=32 \
                >/dev/null 2>"$out/fio/$1-$2-rand.err" || vm_fail "fio on $1 ($d) failed: $(<"$out/fio/$1-$2-rand.err")"
}
vm_log "== sequential I/O: warm-up, then $reps repetitions of ${runtime} s per job, interleaved"
for t in "${targets[@]}"; do run_fio "$t" 0 1; done
for ((r = 1; r <= reps; r++)); do
        for t in "${targets[@]}"; do run_fio "$t" "$r" "$runtime"; done
        vm_log "rep $r done"
done
stop_emu "$pid_super"
stop_emu "$pid_high"
vm_wait_for 60 no_disks
rm -f /tmp/emu-super.img /tmp/emu-high.img

# ---- attach: one disk at high speed and at SuperSpeed, from the emulator's start to usable ----

printf 'speed\trep\tattach_ms\n' >"$out/attach.tsv"
for ((r = 1; r <= reps; r++)); do
        for speed in high super; do
                t0=$(now_us)
                "$emu" --disk "/tmp/fleet/a.img,size=1M,serial=ATTACH1,speed=$speed" --attach --no-listen \
                        >>"$out/emu-attach.log" 2>&1 &
                p=$!
                wait_disks 1 120 "$p" || vm_fail "attach at $speed: no disk; $(tail -n 3 "$out/emu-attach.log")"
                printf '%s\t%d\t%d.%03d\n' "$speed" "$r" $(((t_found - t0) / 1000)) $(((t_found - t0) % 1000)) \
                        >>"$out/attach.tsv"
                stop_emu "$p"
                vm_wait_for 60 no_disks
                nap 0.5
        done
done
rm -f /tmp/fleet/a.img

# ---- fleets: N disks in one emulator, local attach; time until all are usable, then RSS ----

printf 'devices\tattach_ms\tVmRSS_kB\tVmHWM_kB\tRssAnon_kB\tRssFile_kB\temu_ticks\n' >"$out/fleet.tsv"
for n in $fleet_sizes; do
        ((n >= 1 && n <= 2 * per_speed * controllers)) || vm_fail "fleet of $n: vhci has $((2 * per_speed * controllers)) ports"
        args=()
        for ((i = 1; i <= n; i++)); do
                # High-speed ports first; the rest on the SuperSpeed root hubs.
                speed=high
                ((i > per_speed * controllers)) && speed=super
                args+=(--disk "/tmp/fleet/d$i.img,size=1M,serial=FLEET$i,speed=$speed")
        done
        vm_log "== fleet of $n"
        t0=$(now_us)
        "$emu" "${args[@]}" --attach --no-listen >"$out/emu-fleet-$n.log" 2>&1 &
        p=$!
        wait_disks "$n" 900 "$p" ||
                vm_fail "fleet of $n: only $(usable_disks) disks usable; emulator: $(tail -n 3 "$out/emu-fleet-$n.log")"
        nap 2 # the partition scans and the emulator's last replies settle
        printf '%d\t%d.%03d\t%s\t%s\t%s\t%s\t%s\n' "$n" $(((t_found - t0) / 1000)) $(((t_found - t0) % 1000)) \
                "$(status_kb "$p" VmRSS)" "$(status_kb "$p" VmHWM)" "$(status_kb "$p" RssAnon)" \
                "$(status_kb "$p" RssFile)" "$(cpu_ticks "$p")" >>"$out/fleet.tsv"
        vm_log "fleet of $n: all usable after $(((t_found - t0) / 1000)) ms, VmRSS $(status_kb "$p" VmRSS) kB"
        stop_emu "$p"
        vm_wait_for 300 no_disks
        rm -f /tmp/fleet/*.img
done

# ---- concurrent TCP clients ----
# The same N devices attached over TCP one after another with stock `usbip attach`, then by N
# clients at once. Stock usbip cannot do the latter: two attaches that pick the same vhci port leave
# one spinning on EBUSY with a port list it never re-reads, so the concurrent importer
# (usbip-import.py) speaks the same protocol and claims ports under a lock. Then N concurrent
# `usbip list -r` against N one after another: the server's devlist path.

args=()
for ((i = 1; i <= tcp_devices; i++)); do
        args+=(--disk "/tmp/fleet/t$i.img,size=1M,serial=TCP$i,speed=high")
done
"$emu" "${args[@]}" --listen "127.0.0.1:$tcp_port" >"$out/emu-tcp.log" 2>&1 &
pid_tcp=$!
kill -0 "$pid_tcp" || vm_fail "the TCP emulator exited: $(tail -n 3 "$out/emu-tcp.log")"
vm_wait_for 30 usbip --tcp-port "$tcp_port" list -r 127.0.0.1
mapfile -t busids < <(usbip --tcp-port "$tcp_port" list -r 127.0.0.1 2>/dev/null |
        sed -n 's/^[[:space:]]*\([0-9][0-9]*-[0-9.][0-9.]*\): .*/\1/p')
((${#busids[@]} == tcp_devices)) || vm_fail "usbip list shows ${#busids[@]} devices, not $tcp_devices"

detach_all() {
        local p
        for p in $(usbip port 2>/dev/null | sed -n 's/^Port \([0-9]*\):.*/\1/p'); do
                timeout 30 usbip detach -p "$p" >/dev/null 2>&1 || vm_fail "usbip detach -p $p failed"
        done
        vm_wait_for 120 no_disks
        nap 1
}
printf 'mode\trep\tclients\tall_usable_ms\tcommands_ms\n' >"$out/tcp.tsv"
for ((r = 1; r <= 2; r++)); do
        for mode in sequential concurrent; do
                t0=$(now_us)
                if [[ $mode == sequential ]]; then
                        for b in "${busids[@]}"; do
                                timeout 60 usbip --tcp-port "$tcp_port" attach -r 127.0.0.1 -b "$b" >/dev/null 2>&1 ||
                                        vm_fail "usbip attach of $b failed"
                        done
                else
                        timeout 120 python3 "$DROWSE_SRC_DIR/bench/guest/usbip-import.py" 127.0.0.1 "$tcp_port" \
                                "${busids[@]}" >"$out/import-$r.txt" 2>&1 ||
                                vm_fail "concurrent import failed: $(<"$out/import-$r.txt")"
                fi
                t1=$(now_us)
                wait_disks "$tcp_devices" 300 || vm_fail "$mode: only $(usable_disks) disks usable"
                printf '%s\t%d\t%d\t%d.%03d\t%d.%03d\n' "$mode" "$r" "$tcp_devices" \
                        $(((t_found - t0) / 1000)) $(((t_found - t0) % 1000)) $(((t1 - t0) / 1000)) \
                        $(((t1 - t0) % 1000)) >>"$out/tcp.tsv"
                vm_log "tcp $mode rep $r: $tcp_devices disks usable after $(((t_found - t0) / 1000)) ms"
                detach_all
        done
done
list_one() { timeout 60 usbip --tcp-port "$tcp_port" list -r 127.0.0.1 >/dev/null 2>&1; }
for ((r = 1; r <= 2; r++)); do
        for mode in list-sequential list-concurrent; do
                t0=$(now_us)
                if [[ $mode == list-sequential ]]; then
                        for ((i = 0; i < tcp_devices; i++)); do list_one || vm_fail "usbip list failed"; done
                else
                        pids=()
                        for ((i = 0; i < tcp_devices; i++)); do
                                list_one &
                                pids+=($!)
                        done
                        for p in "${pids[@]}"; do wait "$p" || vm_fail "a concurrent usbip list failed"; done
                fi
                t1=$(now_us)
                printf '%s\t%d\t%d\t%d.%03d\t%d.%03d\n' "$mode" "$r" "$tcp_devices" $(((t1 - t0) / 1000)) \
                        $(((t1 - t0) % 1000)) $(((t1 - t0) / 1000)) $(((t1 - t0) % 1000)) >>"$out/tcp.tsv"
        done
done
stop_emu "$pid_tcp"

if grep -E "ERROR: AddressSanitizer|runtime error:" "$out"/emu-*.log; then
        vm_fail "sanitizer report in an emulator log"
fi
vm_log "bench: done"
