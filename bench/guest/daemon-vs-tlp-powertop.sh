#!/bin/bash
# drowsed against TLP and powertop on the same devices, in one boot. Run by bench/daemon through
# tests/vm/run-guest; the host side summarises what lands in $DROWSE_OUT.
#
# Devices: two configfs f_mass_storage gadget disks (0525:a4a5, "a" and "b") on dummy_hcd, behind
# systemd-udevd, usb-storage delay_use=0. Timestamps come from the kernel itself: kprobes on
# dev_uevent (every device uevent, with the kobject's name and action) and dev_attr_store (every
# write of a device attribute, with its name and value), so one clock times every tool alike.
#
#   coldplug  from the kernel's defaults (both disks replugged), one pass of each tool over the
#             devices present: `drowsed --once`, `tlp usb`, `powertop --auto-tune`; its wall time,
#             and whether each disk's whole chain (scsi_device, target, host, interface, USB
#             device) reaches runtime "suspended" within BENCH_BOUND s.
#   hotplug   BENCH_HOTPLUGS times: disk a unplugged and plugged (its UDC unbound and bound);
#             latency from the kernel's add uevent of the USB device, and from the last uevent
#             before it, to the tool's last write of power/control=auto. drowsed as a daemon
#             (udev monitor), with BENCH_KERNEL_MONITOR=1 the same with --monitor kernel (no udevd in
#             between; not yet run in a VM), then TLP's udev hook (85-tlp.rules -> tlp-usb-udev).
#   idle      drowsed's context switches over BENCH_IDLE s while it samples the suspended disk.
#
# TLP and powertop are not installed: bench/daemon unpacks their Debian packages into
# BENCH_ANCHORS (default /work/bench-anchors/root); TLP is copied to /tmp and its paths rewritten.
# Output in $DROWSE_OUT: coldplug.tsv, hotplug.tsv, drowsed.tsv, env.txt, trace-*.txt, *.log.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../../tests/vm/guest-lib.sh
. "$DROWSE_VM_LIB"

readonly hotplugs=${BENCH_HOTPLUGS:-30} bound=${BENCH_BOUND:-20} idle=${BENCH_IDLE:-60}
readonly anchors=${BENCH_ANCHORS:-/work/bench-anchors/root}
readonly drowsed=$DROWSE_BUILD_DIR/daemon/drowsed
out=$DROWSE_OUT
[[ -x $drowsed ]] || vm_fail "no drowsed at $drowsed"
[[ -x $anchors/usr/sbin/tlp && -x $anchors/usr/sbin/powertop ]] || vm_fail "no TLP/powertop under $anchors"

now_us() { echo "${EPOCHREALTIME/[.,]/}"; }
wait_for() { # TIMEOUT COMMAND...: like vm_wait_for, but returns 1 instead of failing the run
        local deadline=$((EPOCHSECONDS + $1))
        shift
        until "$@" >/dev/null 2>&1; do
                ((EPOCHSECONDS < deadline)) || return 1
                sleep 0.05
        done
}

vm_modprobe dummy_hcd num=2
vm_modprobe usb-storage delay_use=0
vm_modprobe sd_mod
/lib/systemd/systemd-udevd --daemon --resolve-names=never || vm_fail "systemd-udevd does not start"
udevadm trigger --action=add --subsystem-match=usb --subsystem-match=scsi --subsystem-match=block
udevadm settle -t 60 || vm_fail "udevadm settle timed out"

# ---- kernel-side timestamps ----
tr=/sys/kernel/tracing
[[ -e $tr/kprobe_events ]] || tr=/sys/kernel/debug/tracing
# kobject_uevent_env itself is notrace (lib/); dev_uevent() adds a device's variables to every
# device uevent (add, bind, change, remove...) just before it is sent, with "ACTION=..." already in
# envp[0] (struct kobj_uevent_env: char *argv[3], then envp[]). Attribute writes: dev_attr_store(),
# or the power/control handler itself, with the same argument layout.
kprobe() { # DEFINITION...: the first one the kernel accepts
        local d
        for d in "$@"; do
                echo "$d" >>"$tr/kprobe_events" 2>/dev/null && return 0
        done
        cat "$tr/error_log" >&2 || true
        return 1
}
kprobe 'p:bench/uev dev_uevent name=+0(+0(%di)):string act=+0(+24(%si)):string' ||
        vm_fail "cannot place a kprobe on dev_uevent"
kprobe 'p:bench/store dev_attr_store name=+0(+0(%di)):string attr=+0(+0(%si)):string val=+0(%dx):string' \
        'p:bench/store control_store name=+0(+0(%di)):string attr=+0(+0(%si)):string val=+0(%dx):string' ||
        vm_fail "cannot place a kprobe on dev_attr_store or control_store"
grep bench "$tr/kprobe_events" >"$out/kprobes.txt"
echo 8192 >"$tr/buffer_size_kb"
echo 1 >"$tr/events/bench/enable"
echo 1 >"$tr/tracing_on"
trace_clear() { echo >"$tr/trace"; }
trace_save() { cat "$tr/trace" >"$out/trace-$1.txt"; }
# The kernel clock of "now", as the trace stamps it (a marker written into the buffer).
mark() { echo "bench-mark $1" >"$tr/trace_marker"; }

# ---- the disks ----
mapfile -t udcs < <(find /sys/class/udc -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
truncate -s 16M /tmp/a.img /tmp/b.img
vm_gadget_disk a /tmp/a.img "${udcs[0]}"
vm_gadget_disk b /tmp/b.img "${udcs[1]}"
vm_wait_for 60 vm_disk_of_serial drowse-a
vm_wait_for 60 vm_disk_of_serial drowse-b
udevadm settle -t 60
usb_of() { local p; p=$(readlink -f "/sys/block/$1/device"); p=${p%/*/*/*/*}; echo "${p##*/}"; }
chain_of() { # DISK: the five nodes, leaf first
        local s
        s=$(readlink -f "/sys/block/$1/device")
        echo "$s" "${s%/*}" "${s%/*/*}" "${s%/*/*/*}" "${s%/*/*/*/*}"
}
chain_suspended() {
        local n
        for n in $(chain_of "$1"); do
                [[ $(<"$n/power/runtime_status") == suspended ]] || return 1
        done
}
chain_state() { # DISK: "control/status" of each node, leaf first
        local n s=
        for n in $(chain_of "$1"); do
                # An interface has no power/control: its field stays empty.
                s+="${n##*/}:$(cat "$n/power/control" 2>/dev/null)/$(<"$n/power/runtime_status") "
        done
        echo "${s% }"
}
unplug() { # NAME
        local serial=drowse-$1 d
        d=$(vm_disk_of_serial "$serial" || true)
        echo "" >"/sys/kernel/config/usb_gadget/$1/UDC" 2>/dev/null || true
        [[ -z $d ]] || vm_wait_for 30 bash -c "[[ ! -e /sys/block/$d ]]"
}
plug() { # NAME UDC
        echo "$2" >"/sys/kernel/config/usb_gadget/$1/UDC"
}
replug_all() {
        unplug a
        unplug b
        udevadm settle -t 60
        plug a "${udcs[0]}"
        plug b "${udcs[1]}"
        vm_wait_for 60 vm_disk_of_serial drowse-a
        vm_wait_for 60 vm_disk_of_serial drowse-b
        udevadm settle -t 60
}

{
        echo "kernel $(uname -r)"
        echo "cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x$(nproc)"
        echo "drowsed $("$drowsed" --version)"
        echo "tlp $(grep -m1 'TLPVER=' "$anchors/usr/share/tlp/tlp-func-base" | cut -d'"' -f2)"
        echo "hotplugs $hotplugs bound_s $bound"
} >"$out/env.txt"

# ---- TLP from its unpacked package, with its paths moved under /tmp ----
tlp_root=/tmp/tlp-root
cp -a "$anchors" "$tlp_root"
mkdir -p /run/tlp-var
for f in "$tlp_root/usr/sbin/tlp" "$tlp_root/usr/bin/tlp-stat" "$tlp_root/lib/udev/tlp-usb-udev" \
        "$tlp_root"/usr/share/tlp/tlp-* "$tlp_root"/usr/share/tlp/func.d/* "$tlp_root/lib/udev/rules.d/85-tlp.rules"; do
        sed -i -e "s#/usr/share/tlp#$tlp_root/usr/share/tlp#g" -e "s#/etc/tlp#$tlp_root/etc/tlp#g" \
                -e "s#/var/lib/tlp#/run/tlp-var#g" -e "s#/usr/sbin/tlp#$tlp_root/usr/sbin/tlp#g" \
                -e "s#/lib/udev/tlp-usb-udev#$tlp_root/lib/udev/tlp-usb-udev#g" "$f"
done
tlp=$tlp_root/usr/sbin/tlp
powertop=(env "LD_LIBRARY_PATH=$anchors/lib/x86_64-linux-gnu:$anchors/usr/lib/x86_64-linux-gnu"
        "$anchors/usr/sbin/powertop")

printf '[defaults]\n' >/tmp/drowse.conf # the defaults: delay-ms 2000, disk-delay-ms 2000

# ---- coldplug: one pass of each tool from the kernel's defaults ----
echo -e "tool\twall_ms\trc\tdisk\tsuspended\tsuspended_after_ms\tchain" >"$out/coldplug.tsv"
coldplug_one() { # TOOL COMMAND...
        local tool=$1 t0 t1 rc=0 d ts
        shift
        replug_all
        trace_clear
        mark "start $tool"
        t0=$(now_us)
        "$@" >"$out/coldplug-$tool.log" 2>&1 || rc=$?
        t1=$(now_us)
        mark "end $tool"
        vm_log "coldplug $tool: $(((t1 - t0) / 1000)) ms, rc $rc"
        local deadline=$((t1 + bound * 1000000)) left=(a b)
        declare -A at=()
        while ((${#left[@]})) && (($(now_us) < deadline)); do
                local still=()
                for n in "${left[@]}"; do
                        d=$(vm_disk_of_serial "drowse-$n")
                        if chain_suspended "$d"; then at[$n]=$((($(now_us) - t1) / 1000)); else still+=("$n"); fi
                done
                left=("${still[@]}")
                sleep 0.1
        done
        for n in a b; do
                d=$(vm_disk_of_serial "drowse-$n")
                if [[ -n ${at[$n]:-} ]]; then ts=yes; else ts=no; fi
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" $(((t1 - t0) / 1000)) "$rc" "$n" "$ts" \
                        "${at[$n]:--}" "$(chain_state "$d")" >>"$out/coldplug.tsv"
        done
        trace_save "coldplug-$tool"
}
# Each under timeout(1), so all three pay the same extra exec. BENCH_COLDPLUG=0 skips this stage.
((${BENCH_COLDPLUG:-1})) || coldplug_one() { :; }
coldplug_one drowsed timeout 300 "$drowsed" --once --config /tmp/drowse.conf --state-dir "" --no-bus
coldplug_one tlp-usb timeout 300 "$tlp" usb

# ---- hotplug latency ----
echo -e "tool\ti\tt_usb_add\tt_last_uevent\tt_applied" >"$out/hotplug.tsv"
# From a saved trace: the USB device's add, the last uevent before the last control=auto write, and
# that write. Trace lines: "... [cpu] flags 123.456789: uev: (...) name="1-1" act="ACTION=add"".
parse_plug() { # TOOL I USBNAME TRACEFILE
        awk -v tool="$1" -v i="$2" -v usb="$3" '
                function ts(   k) { for (k = 1; k <= NF; k++) if ($k ~ /^[0-9]+\.[0-9]+:$/) return substr($k, 1, length($k) - 1) }
                # dev_uevent() also runs when anyone reads a "uevent" file (act=(fault): no ACTION yet).
                / uev: / && /act="ACTION=/ { t = ts(); if ($0 ~ "name=\"" usb "\" act=\"ACTION=add\"") add = t; u[++nu] = t }
                / store: / && /attr="control"/ && /val="auto/ { applied = ts() }
                END {
                        last = ""
                        for (k = 1; k <= nu; k++) if (u[k] + 0 <= applied + 0) last = u[k]
                        printf "%s\t%s\t%s\t%s\t%s\n", tool, i, add, last, applied
                }' "$4" >>"$out/hotplug.tsv"
}
hotplug_run() { # TOOL APPLIED-CHECK
        local tool=$1 check=$2 i d u failed=0
        for ((i = 0; i < hotplugs; i++)); do
                if ((failed >= 2 && failed == i)); then
                        vm_log "$tool: the first $failed plugs were never applied; giving up on it"
                        break
                fi
                unplug a
                udevadm settle -t 30
                trace_clear
                plug a "${udcs[0]}"
                vm_wait_for 30 vm_disk_of_serial drowse-a
                d=$(vm_disk_of_serial drowse-a)
                u=$(usb_of "$d")
                if ! wait_for 30 "$check" "$d" "$u"; then
                        vm_log "$tool: plug $i not applied: $(chain_state "$d")"
                        failed=$((failed + 1))
                fi
                udevadm settle -t 30
                cat "$tr/trace" >/tmp/trace.txt
                parse_plug "$tool" "$i" "$u" /tmp/trace.txt
                mkdir -p "$out/traces"
                { grep -E ' (uev|store): ' /tmp/trace.txt || true; } | gzip >"$out/traces/hotplug-$tool-$i.txt.gz"
        done
        vm_log "hotplug $tool: $hotplugs plugs done"
}
drowsed_applied() { [[ $(<"/sys/block/$1/device/power/control") == auto && $(<"/sys/bus/usb/devices/$2/power/control") == auto ]]; }
tlp_applied() { [[ $(<"/sys/bus/usb/devices/$2/power/control") == auto ]]; }

# Back to the kernel's defaults, drowsed as the service runs it (udev monitor).
replug_all
"$drowsed" --config /tmp/drowse.conf --control "" --state-dir "" --no-bus --log-level info \
        >"$out/drowsed-daemon.log" 2>&1 &
drowsed_pid=$!
vm_wait_for 30 drowsed_applied "$(vm_disk_of_serial drowse-a)" "$(usb_of "$(vm_disk_of_serial drowse-a)")"
hotplug_run drowsed drowsed_applied
# The last plug: does the chain get to suspended, and what does drowsed cost meanwhile?
d=$(vm_disk_of_serial drowse-a)
cs0=$(awk '/ctxt_switches/ { s += $2 } END { print s }' "/proc/$drowsed_pid/status")
t0=$(now_us)
sus=no
until (($(now_us) - t0 > bound * 1000000)); do
        if chain_suspended "$d"; then sus=yes; break; fi
        sleep 0.1
done
sus_ms=$((($(now_us) - t0) / 1000))
# Idle with sampling on (a suspended chain is watched): past the sampler's ramp (1 s doubling to
# 30 s, 31 s in all), one window of BENCH_IDLE s.
sleep 35
cs0=$(awk '/ctxt_switches/ { s += $2 } END { print s }' "/proc/$drowsed_pid/status")
t1=$(now_us)
sleep "$idle"
cs1=$(awk '/ctxt_switches/ { s += $2 } END { print s }' "/proc/$drowsed_pid/status")
span=$((($(now_us) - t1) / 1000))
{
        echo -e "key\tvalue"
        echo -e "hotplug_chain_suspended\t$sus"
        echo -e "hotplug_suspended_after_ms\t$sus_ms"
        echo -e "hotplug_chain\t$(chain_state "$d")"
        echo -e "idle_on_ctxt_switches\t$((cs1 - cs0))\nidle_on_window_ms\t$span"
        grep -E '^(VmRSS|VmHWM|RssAnon|RssFile)' "/proc/$drowsed_pid/status" | tr -s ' :' '\t' | sed 's/\tkB$//'
} >"$out/drowsed.tsv"
kill -TERM "$drowsed_pid"
wait "$drowsed_pid" || true

# drowsed on the kernel's own uevents (--monitor kernel): the same plugs without udevd's rule
# processing in between, i.e. drowsed's own share of the latency.
if ((${BENCH_KERNEL_MONITOR:-0})); then
        replug_all
        "$drowsed" --config /tmp/drowse.conf --control "" --state-dir "" --no-bus --log-level info \
                --monitor kernel >"$out/drowsed-kernel.log" 2>&1 &
        drowsed_pid=$!
        vm_wait_for 30 drowsed_applied "$(vm_disk_of_serial drowse-a)" "$(usb_of "$(vm_disk_of_serial drowse-a)")"
        hotplug_run drowsed-kernel drowsed_applied
        kill -TERM "$drowsed_pid"
        wait "$drowsed_pid" || true
fi

# TLP's per-device udev hook, from the kernel's defaults again.
replug_all
mkdir -p /run/udev/rules.d
grep -v power_supply "$tlp_root/lib/udev/rules.d/85-tlp.rules" >/run/udev/rules.d/85-tlp.rules
udevadm control --reload
hotplug_run tlp-udev tlp_applied
d=$(vm_disk_of_serial drowse-a)
t0=$(now_us)
sus=no
until (($(now_us) - t0 > bound * 1000000)); do
        if chain_suspended "$d"; then sus=yes; break; fi
        sleep 0.1
done
{
        echo -e "tlp_udev_hotplug_chain_suspended\t$sus"
        echo -e "tlp_udev_hotplug_suspended_after_ms\t$((($(now_us) - t0) / 1000))"
        echo -e "tlp_udev_hotplug_chain\t$(chain_state "$d")"
} >>"$out/drowsed.tsv"
rm -f /run/udev/rules.d/85-tlp.rules
udevadm control --reload

# powertop last: --auto-tune also turns on runtime PM of every PCI device and more.
coldplug_one powertop timeout 300 "${powertop[@]}" --auto-tune
vm_log "daemon benchmark done"
