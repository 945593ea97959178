#!/bin/bash
# drowse-emu against the kernel's own USB/IP path, in one boot, interleaved. Run by bench/run
# through tests/vm/run-guest; the host side parses what lands in $DROWSE_OUT.
#
# Targets, all high-speed, all backed by a 256 MiB file on guest tmpfs (brd: RAM):
#   anchor     configfs f_mass_storage gadget on dummy_hcd -> usbip-host -> usbipd (127.0.0.1:3240)
#              -> usbip attach -> vhci_hcd.0
#   emu-tcp    drowse-emu --listen 127.0.0.1:3241 -> usbip --tcp-port 3241 attach -> vhci_hcd.0
#   emu-local  drowse-emu --attach --no-listen --vhci-controller 1 (socketpair, no TCP)
#   brd        RAM block device: the block layer's ceiling in this guest (BENCH_BRD=0 to skip)
#
# Output in $DROWSE_OUT: fio/<target>-<rep>.json (rep 0 = warm-up), attach.tsv, targets.tsv,
# env.txt, strace-*.txt, emu-*.log.
#
# Environment: BENCH_REPS (default 4, >= 3), BENCH_RUNTIME (fio seconds per metric, default 4),
# BENCH_ATTACH_REPS (default 3), BENCH_BRD (1), BENCH_STRACE (1).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../../tests/vm/guest-lib.sh
. "$DROWSE_VM_LIB"

readonly reps=${BENCH_REPS:-4} runtime=${BENCH_RUNTIME:-4} attach_reps=${BENCH_ATTACH_REPS:-3}
readonly with_brd=${BENCH_BRD:-1} with_strace=${BENCH_STRACE:-1}
readonly size_mb=256 emu_port=3241
readonly emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
((reps >= 3)) || vm_fail "BENCH_REPS must be >= 3"
[[ -x $emu ]] || vm_fail "no drowse-emu at $emu"
out=$DROWSE_OUT
mkdir -p "$out/fio"

# A sleep without fork+exec (each exec costs 40-150 ms under TCG): read with a timeout on a
# FIFO that nobody writes.
mkfifo /tmp/bench-sleep.fifo
exec {sleep_fd}<>/tmp/bench-sleep.fifo
nap() { read -r -t "$1" -u "$sleep_fd" _ || true; }
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

ip link set lo up
# delay_use=0: usb-storage would otherwise wait a fixed 1 s before the SCSI scan, on every path
# alike, which only dilutes the attach ratios toward 1 (perf-baselines.md section 3).
vm_modprobe usb-storage delay_use=0
vm_modprobe sd_mod
vm_modprobe vhci-hcd
vm_modprobe usbip-host
vm_modprobe dummy_hcd

{
        echo "kernel $DROWSE_KVER"
        echo "nproc $(nproc)"
        grep -m1 'model name' /proc/cpuinfo
        echo "reps $reps runtime $runtime attach_reps $attach_reps size_mb $size_mb"
        fio --version
        usbip version 2>&1 || true
} >"$out/env.txt"

# ---- disks appearing and disappearing ----

declare -A known=()
snap_disks() {
        local b
        known=()
        for b in /sys/block/sd*; do
                [[ -e $b ]] && known[${b##*/}]=1
        done
        return 0
}
# new_disk: set $new to an sd disk that was not in the last snapshot, has a device node and a
# non-zero size.
new_disk() {
        local b n s
        for b in /sys/block/sd*; do
                [[ -e $b ]] || continue
                n=${b##*/}
                [[ -z ${known[$n]:-} ]] || continue
                [[ -b /dev/$n ]] || continue
                read -r s <"$b/size" || continue
                ((s > 0)) || continue
                new=$n
                return 0
        done
        return 1
}
# wait_new_disk TIMEOUT_S: poll every 5 ms; sets $new and $t_found (us).
wait_new_disk() {
        local deadline=$((EPOCHSECONDS + $1))
        new=
        until new_disk; do
                ((EPOCHSECONDS < deadline)) || return 1
                nap 0.005
        done
        t_found=$(now_us)
}
disk_gone() { [[ ! -e /sys/block/$1 ]]; }

# vhci port (as `usbip detach -p` counts) of the usb device behind /dev/$1.
vhci_port_of() {
        local p
        p=$(readlink -f "/sys/block/$1/device")
        [[ $p =~ /vhci_hcd\.0/usb[0-9]+/[0-9]+-([0-9]+)/ ]] || return 1
        # vhci_hcd.0's HS root hub holds ports 0..7 of usbip's numbering.
        echo $((BASH_REMATCH[1] - 1))
}

# ---- targets ----

declare -A dev=()

# anchor: the gadget on dummy_hcd, exported by the kernel's usbip-host + usbipd.
truncate -s "${size_mb}M" /tmp/anchor.img
fallocate -l "${size_mb}M" /tmp/anchor.img
truncate -s "${size_mb}M" /tmp/emu-tcp.img
fallocate -l "${size_mb}M" /tmp/emu-tcp.img
truncate -s "${size_mb}M" /tmp/emu-local.img
fallocate -l "${size_mb}M" /tmp/emu-local.img

snap_disks
vm_gadget_disk anchor /tmp/anchor.img
gadget_busid() {
        local d
        for d in /sys/bus/usb/devices/*; do
                [[ -f $d/idVendor && $(<"$d/idVendor") == 0525 && $(readlink -f "$d") == */dummy_hcd* ]] || continue
                busid=${d##*/}
                return 0
        done
        return 1
}
vm_wait_for 30 gadget_busid
gadget_busid
vm_log "anchor gadget enumerated locally as $busid"
vm_wait_for 30 new_disk # let usb-storage finish with it locally before taking it away
local_disk=$new
usbip bind -b "$busid" >&2 || vm_fail "usbip bind -b $busid failed"
vm_wait_for 30 disk_gone "$local_disk"
usbipd -D -4 || vm_fail "usbipd -D failed"
vm_wait_for 20 usbip list -r 127.0.0.1

attach_anchor() { usbip attach -r 127.0.0.1 -b "$busid" >/dev/null 2>&1; }
attach_emu_tcp() { usbip --tcp-port "$emu_port" attach -r 127.0.0.1 -b 1-1 >/dev/null 2>&1; }

emu_tcp_pid='' emu_local_pid=''
start_emu_tcp() {
        "$emu" --disk "/tmp/emu-tcp.img,size=${size_mb}M,serial=BENCHTCP1,speed=high" \
                --listen "127.0.0.1:$emu_port" >>"$out/emu-tcp.log" 2>&1 &
        emu_tcp_pid=$!
}
start_emu_local() {
        "$emu" --disk "/tmp/emu-local.img,size=${size_mb}M,serial=BENCHLOC1,speed=high" \
                --attach --no-listen --vhci-controller 1 >>"$out/emu-local.log" 2>&1 &
        emu_local_pid=$!
}
stop_emu_local() {
        kill -TERM "$emu_local_pid" 2>/dev/null || true
        wait "$emu_local_pid" 2>/dev/null || true
        emu_local_pid=
}

snap_disks
attach_anchor || vm_fail "usbip attach of the anchor failed"
wait_new_disk 60 || vm_fail "the anchor disk did not appear"
dev[anchor]=$new

start_emu_tcp
vm_wait_for 20 usbip --tcp-port "$emu_port" list -r 127.0.0.1
snap_disks
attach_emu_tcp || vm_fail "usbip attach of drowse-emu failed"
wait_new_disk 60 || vm_fail "the emu-tcp disk did not appear"
dev[emu-tcp]=$new

snap_disks
start_emu_local
wait_new_disk 60 || vm_fail "the emu-local disk did not appear"
dev[emu-local]=$new

targets=(anchor emu-tcp emu-local)
if ((with_brd)); then
        vm_modprobe brd rd_nr=1 rd_size=$((size_mb * 1024))
        dev[brd]=ram0
        targets+=(brd)
fi

: >"$out/targets.tsv"
for t in "${targets[@]}"; do
        d=${dev[$t]}
        printf '%s\t%s\t%s\t%s\n' "$t" "$d" "$(<"/sys/block/$d/size")" "$(readlink -f "/sys/block/$d/device")" \
                >>"$out/targets.tsv"
        [[ $(<"/sys/block/$d/size") -eq $((size_mb * 2048)) ]] || vm_fail "$t: /dev/$d is not $size_mb MiB"
        # Same block-layer settings everywhere (none is the default for sd on both kernels).
        if [[ -w /sys/block/$d/queue/scheduler ]]; then
                echo none >"/sys/block/$d/queue/scheduler" 2>/dev/null || true
        fi
done
vm_log "targets: $(for t in "${targets[@]}"; do printf '%s=/dev/%s ' "$t" "${dev[$t]}"; done)"
usbip port >"$out/usbip-port.txt" 2>&1 || true
attr() { if [[ -r $1 ]]; then echo "$(<"$1")"; else echo -; fi; }
for t in "${targets[@]}"; do
        q=/sys/block/${dev[$t]}/queue
        printf '%s max_sectors_kb=%s max_hw_sectors_kb=%s nr_requests=%s scheduler=%s\n' "$t" \
                "$(attr "$q/max_sectors_kb")" "$(attr "$q/max_hw_sectors_kb")" "$(attr "$q/nr_requests")" \
                "$(attr "$q/scheduler")"
done >>"$out/env.txt"

# ---- I/O: one fio per target and repetition, four stonewalled jobs ----

run_fio() { # TARGET REP RUNTIME
        local d=/dev/${dev[$1]}
        fio --output-format=json --output="$out/fio/$1-$2.json" \
                --filename="$d" --direct=1 --time_based --runtime="$3" --size="${size_mb}M" \
                --randrepeat=0 --norandommap \
                --name=seqread --rw=read --bs=1M --ioengine=psync --iodepth=1 \
                --name=seqwrite --stonewall --rw=write --bs=1M --ioengine=psync --iodepth=1 \
                --name=randread-qd1 --stonewall --rw=randread --bs=4k --ioengine=psync --iodepth=1 \
                --name=randread-qd32 --stonewall --rw=randread --bs=4k --ioengine=libaio --iodepth=32 \
                >/dev/null 2>"$out/fio/$1-$2.err" || vm_fail "fio on $1 ($d) failed: $(<"$out/fio/$1-$2.err")"
}

vm_log "== warm-up (unmeasured), 1 s per metric"
for t in "${targets[@]}"; do
        run_fio "$t" 0 1
done
vm_log "== $reps repetitions, ${runtime} s per metric, interleaved"
for ((r = 1; r <= reps; r++)); do
        for t in "${targets[@]}"; do
                t0=$(now_us)
                run_fio "$t" "$r" "$runtime"
                vm_log "rep $r $t done in $((($(now_us) - t0) / 1000)) ms"
        done
done

# ---- syscalls per command in drowse-emu (strace -c), after the measurements ----

if ((with_strace)) && command -v strace >/dev/null; then
        vm_log "== strace -c of drowse-emu during 3 s of 4 KiB qd1 reads (not a measurement)"
        for t in emu-tcp emu-local; do
                pid=$emu_tcp_pid
                [[ $t == emu-local ]] && pid=$emu_local_pid
                strace -c -f -q -p "$pid" -o "$out/strace-$t.txt" &
                st=$!
                nap 1
                fio --output-format=json --output="$out/fio/strace-$t.json" --filename="/dev/${dev[$t]}" \
                        --direct=1 --time_based --runtime=3 --name=r --rw=randread --bs=4k --ioengine=psync \
                        >/dev/null 2>&1 || true
                kill -INT "$st" 2>/dev/null || true
                wait "$st" 2>/dev/null || true
        done
fi

# ---- attach -> /dev/sdX with a non-zero size ----

vm_log "== attach timing, $attach_reps reps, interleaved"
printf 'target\trep\tattach_ms\tcmd_ms\n' >"$out/attach.tsv"
detach_vhci() { # DISK
        local d=$1 port
        port=$(vhci_port_of "$d") || vm_fail "no vhci port for /dev/$d"
        usbip detach -p "$port" >/dev/null 2>&1 || vm_fail "usbip detach -p $port failed"
        vm_wait_for 30 disk_gone "$d"
}
attach_retry() { # FUNC: the server may need a moment to make the device available again
        local i
        for ((i = 0; i < 50; i++)); do
                "$1" && return 0
                nap 0.1
        done
        return 1
}
for ((r = 1; r <= attach_reps; r++)); do
        for t in anchor emu-tcp emu-local; do
                case $t in
                anchor | emu-tcp)
                        detach_vhci "${dev[$t]}"
                        nap 0.5
                        snap_disks
                        f=attach_anchor
                        [[ $t == emu-tcp ]] && f=attach_emu_tcp
                        t0=$(now_us)
                        attach_retry "$f" || vm_fail "re-attach of $t failed"
                        t1=$(now_us)
                        ;;
                emu-local)
                        # The attach command is the emulator itself: start-up (exec over 9p) and
                        # the attach are both inside the time.
                        d=${dev[$t]}
                        stop_emu_local
                        vm_wait_for 30 disk_gone "$d"
                        nap 0.5
                        snap_disks
                        t0=$(now_us)
                        start_emu_local
                        t1=$t0
                        ;;
                esac
                wait_new_disk 60 || vm_fail "$t did not come back"
                dev[$t]=$new
                printf '%s\t%d\t%d.%03d\t%d.%03d\n' "$t" "$r" $(((t_found - t0) / 1000)) $(((t_found - t0) % 1000)) \
                        $(((t1 - t0) / 1000)) $(((t1 - t0) % 1000)) >>"$out/attach.tsv"
                vm_log "attach $t rep $r: $(((t_found - t0) / 1000)) ms"
                nap 1 # let the partition scan finish before the next detach
        done
done

kill -TERM "$emu_tcp_pid" "$emu_local_pid" 2>/dev/null || true
wait "$emu_tcp_pid" "$emu_local_pid" 2>/dev/null || true
if grep -E "ERROR: AddressSanitizer|runtime error:" "$out"/emu-*.log; then
        vm_fail "sanitizer report in an emulator log"
fi
vm_log "bench: done"
