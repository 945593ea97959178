#!/bin/bash
# The live demo (tools/demo): drowse-emu's default topology on a real kernel, step by step, with drowsed
# applying its policy. A hub with a disk and a keyboard behind it, and a disk on a root port of its own
# controller. Then a wakeup storm injected into the keyboard, which drowsed backs off and quarantines, and a
# summary from drowsed's statistics with its SVG power timeline. Runs inside the VM (default) or on the host
# kernel (tools/demo --host); as the vm-demo tests it also checks the summary and the SVG.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../guest-lib.sh
. "$DROWSE_VM_LIB"

emu=$DROWSE_BUILD_DIR/emulator/drowse-emu
work=$(mktemp -d /tmp/drowse-demo.XXXXXX)
sock=$work/emu.ctl
emu_pid=
drowsed_pid=
reader=

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
ctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --emu-socket "$sock" "$@"; }
dctl() { "$DROWSE_BUILD_DIR/daemon/drowsectl" --socket "$work/drowsed.ctl" "$@"; }
field() { ctl emu show "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"; }

cleanup() {
        [[ -n $reader ]] && kill "$reader" 2>/dev/null
        [[ -n $emu_pid ]] && kill -TERM "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null
        [[ -n $drowsed_pid ]] && kill -TERM "$drowsed_pid" 2>/dev/null && wait "$drowsed_pid" 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT

dev_by_serial() {
        local s
        for s in /sys/bus/usb/devices/*/serial; do
                [[ $(cat "$s") == "$1" ]] && { dirname "$s"; return 0; }
        done
        return 1
}
disk_of() {
        local d u
        u=$(readlink -f "$(dev_by_serial "$1")") || return 1
        for d in $(vm_usb_disks); do
                [[ $(readlink -f "/sys/block/$d/device") == "$u"/* ]] && { echo "$d"; return 0; }
        done
        return 1
}
event_of() {
        local e u
        u=$(readlink -f "$(dev_by_serial "$1")") || return 1
        for e in /sys/class/input/event*; do
                [[ $(readlink -f "$e/device") == "$u"/* ]] && { echo "/dev/input/${e##*/}"; return 0; }
        done
        return 1
}
chain_of() { # the runtime-PM chain from the disk up to the USB device
        local p stop
        p=$(readlink -f "/sys/block/$1/device")
        stop=$(readlink -f "$(dev_by_serial "$2")")
        while :; do
                [[ -d $p/power ]] && echo "$p"
                [[ $p == "$stop" ]] && break
                p=${p%/*}
        done
}
show_chain() {
        local n
        chain_of "$1" "$2" | while read -r n; do
                printf '   %-10s %s\n' "$(cat "$n/power/runtime_status")" "${n#/sys/devices/platform/}"
        done
}
suspended() { [[ $(cat "$1/power/runtime_status") == suspended ]]; }

for m in vhci-hcd usb-storage sd_mod ext4 usbhid hid_generic evdev; do vm_modprobe "$m"; done

bold "0. drowsed starts with its policy: disks after 500 ms idle, a rule for our keyboard, storm protection"
cat >"$work/drowse.conf" <<'CONF'
[defaults]
delay-ms = 500
disk-delay-ms = 500

# HID devices are left alone by default; this keyboard wakes reliably through its hub.
[rule emulated-keyboard]
match-id = 1209:0003
autosuspend = yes
delay-ms = 200

# Tighter than the defaults (60 a minute, x4, quarantine at the third strike, sampled every 1-30 s), so
# that the storm of step 8 is caught in seconds; still far above what the disks' own use looks like.
[protect]
storm-resumes-per-minute = 20
storm-backoff = 2
quarantine-after = 2
sample-min-ms = 500
sample-max-ms = 2000
CONF
sed 's/^/   /' "$work/drowse.conf"
# No udevd in the guest: drowsed listens to the kernel's own uevents. Its statistics and quarantines go
# to a state directory of the demo's own, never the machine's /var/lib/drowse (tools/demo --host).
"$DROWSE_BUILD_DIR/daemon/drowsed" --config "$work/drowse.conf" --monitor kernel --no-bus \
        --state-dir "$work/state" --control "$work/drowsed.ctl" >"$DROWSE_OUT/drowsed.log" 2>&1 &
drowsed_pid=$!
vm_wait_for 20 test -S "$work/drowsed.ctl"

bold "1. drowse-emu: a hub with a disk and a keyboard, and a disk on its own vhci controller"
"$emu" --attach --no-listen --control "$sock" --hub hub0,ports=4 \
        --disk "$work/data.img,size=128M,serial=DATA0001,product=DataDisk,name=data,hub=hub0,port=2" \
        --keyboard kbd,hub=hub0,port=3 \
        --disk "$work/solo.img,size=64M,serial=SOLO0001,product=SoloDisk,name=solo" \
        >"$DROWSE_OUT/emu.log" 2>&1 &
emu_pid=$!
vm_wait_for 60 disk_of DATA0001
vm_wait_for 60 disk_of SOLO0001
vm_wait_for 60 event_of kbd
data=$(disk_of DATA0001) solo=$(disk_of SOLO0001) ev=$(event_of kbd)
lsusb -t | grep -B1 -A3 "Class=Hub" | sed 's/^/   /'
say "data disk /dev/$data behind the hub, keyboard $ev, solo disk /dev/$solo on vhci_hcd.1"
ctl emu list | sed 's/^/   /'

bold "2. a filesystem and data on the disk behind the hub"
mkfs.ext4 -q -F "/dev/$data"
mkdir -p "$work/mnt"
mount "/dev/$data" "$work/mnt"
head -c $((16 << 20)) /dev/urandom >"$work/mnt/data"
sync
sum=$(sha256sum <"$work/mnt/data" | cut -c1-16)
umount "$work/mnt"
say "wrote 16 MiB (sha256 $sum...), synced, unmounted"

bold "3. drowsed's decisions; the disk chain autosuspends and the hub suspends its port"
datadev=$(dev_by_serial DATA0001)
vm_wait_for 30 suspended "$datadev"
dctl list | sed 's/^/   /'
show_chain "$data" DATA0001
say "drowse-emu: $(grep "port 2 suspended" "$DROWSE_OUT/emu.log" | tail -n1)"

bold "4. I/O resumes it through the hub"
mount "/dev/$data" "$work/mnt"
say "sha256 $(sha256sum <"$work/mnt/data" | cut -c1-16)... (same data)"
umount "$work/mnt"
say "drowse-emu: $(grep "port 2 resumed by the host" "$DROWSE_OUT/emu.log" | tail -n1)"
vm_wait_for 30 suspended "$datadev"
say "idle again: $(cat "$datadev/power/runtime_status")"

bold "5. a key press wakes the suspended keyboard through the hub"
kbddev=$(dev_by_serial kbd)
python3 - "$ev" "$work/reader-ready" >"$work/keys" <<'PY' &
import os, select, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)   # open: usbhid arms remote wakeup
open(sys.argv[2], "w").close()           # evdev keeps no events for readers that open later
names = {32: "d", 19: "r", 24: "o", 17: "w", 31: "s", 18: "e"}
typed, deadline = "", time.monotonic() + 60
while len(typed) < 6 and time.monotonic() < deadline:
    if select.select([fd], [], [], 1)[0]:
        data = os.read(fd, 24 * 64)
        for i in range(0, len(data) - 23, 24):
            _, _, typ, code, value = struct.unpack("qqHHi", data[i:i + 24])
            if typ == 1 and value == 1:
                typed += names.get(code, "?")
print(typed, flush=True)
PY
reader=$!
vm_wait_for 30 test -e "$work/reader-ready"
vm_wait_for 30 suspended "$kbddev"
say "keyboard: $(cat "$kbddev/power/runtime_status"), remote wakeup armed by usbhid: $(field kbd 'd["remote_wakeup"]')"
ctl emu type kbd drowse >/dev/null
wait "$reader" || true
reader=
say "the input device received: \"$(cat "$work/keys")\""
say "drowse-emu: $(grep "signals remote wakeup" "$DROWSE_OUT/emu.log" | tail -n1)"
[[ $(cat "$work/keys") == drowse ]] || vm_fail "the typed keys did not arrive"

bold "6. the solo disk on its own controller: root-port suspend, which vhci keeps to itself"
solodev=$(dev_by_serial SOLO0001)
vm_wait_for 30 suspended "$solodev"
dd if="/dev/$solo" of=/dev/null bs=4k count=1 iflag=direct status=none
vm_wait_for 10 grep -q "solo: GET_STATUS after" "$DROWSE_OUT/emu.log"
say "drowse-emu inferred: $(grep "solo: GET_STATUS after" "$DROWSE_OUT/emu.log" | tail -n1)"

bold "7. why won't it suspend? a process holds the solo disk's usbfs node open"
exec 3<"/dev/bus/usb/$(printf %03d "$(cat "$solodev/busnum")")/$(printf %03d "$(cat "$solodev/devnum")")"
dctl why "$solo" | sed 's/^/   /'
exec 3<&-
vm_wait_for 30 suspended "$solodev"
say "closed again: $(cat "$solodev/power/runtime_status")"


bold "8. a wakeup storm: the keyboard signals remote wakeup over and over; drowsed backs off, then quarantines it"
kbd=${kbddev##*/}
exec 4<"$ev" # held open, so that usbhid arms remote wakeup, as a desktop's input stack does
armed_and_suspended() { suspended "$kbddev" && [[ $(field kbd 'd["remote_wakeup"]') == True ]]; }
vm_wait_for 30 armed_and_suspended
storm=$(ctl emu fault add kbd wakeup-storm n=60 interval=100ms) # "fault N"
storm=${storm##* }
say "\$ drowsectl emu fault add kbd wakeup-storm n=60 interval=100ms        (fault $storm)"
say "60 remote wakeups from the keyboard, each 100 ms after the host has suspended it again; drowsed allows"
say "20 resumes a minute, then doubles the 200 ms delay, and quarantines the keyboard at the second strike"
decisions() { grep -E '^/devices/[^ ]+ \([0-9a-f:]+\): (backoff|quarantine|release): ' "$DROWSE_OUT/drowsed.log" || true; }
# A decision line as the user reads it: the device's name instead of its devpath, folded to the terminal.
show_decision() {
        sed -E 's|^/devices/[^ ]*/([^/ ]+) \(|\1 (|' | fold -s -w 100 | sed '1s/^/   drowsed: /; 2,$s/^/            /'
}
storm_progress() {
        local faults stats
        faults=$(ctl emu fault list --json) stats=$(dctl stats --json "$kbd")
        python3 - "$faults" "$stats" "$1" "$(cat "$kbddev/power/runtime_status")" <<'PY'
import json, sys
hits = sum(f["hits"] for f in json.loads(sys.argv[1]) if f["kind"] == "wakeup-storm")
d = json.loads(sys.argv[2])["devices"][0]
print("   %3ds  keyboard %-9s  %2d wakeups signalled   drowsed: %2d resumes in the last minute, delay %s ms"
      % (int(sys.argv[3]), sys.argv[4], hits, d["resumes_last_minute"], d["delay_ms"]))
PY
}
shown=0 t0=$EPOCHSECONDS next=$((EPOCHSECONDS + 3))
until [[ $(cat "$kbddev/power/control") == on ]] && decisions | grep -q ': quarantine: '; do
        ((EPOCHSECONDS - t0 < 180)) || vm_fail "no quarantine of the keyboard after 180 s of storm"
        mapfile -t lines < <(decisions)
        for ((; shown < ${#lines[@]}; shown++)); do
                show_decision <<<"${lines[shown]}"
        done
        if ((EPOCHSECONDS >= next)); then
                storm_progress $((EPOCHSECONDS - t0))
                next=$((EPOCHSECONDS + 3))
        fi
        sleep 0.3
done
mapfile -t lines < <(decisions)
for ((; shown < ${#lines[@]}; shown++)); do
        show_decision <<<"${lines[shown]}"
done
storm_progress $((EPOCHSECONDS - t0))
say "storm caught in $((EPOCHSECONDS - t0)) s"
say "\$ drowsectl why $kbd"
dctl why "$kbd" | sed 's/^/   /'
say "\$ drowsectl show $kbd"
dctl show "$kbd" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for k in ("state", "reason", "quarantined", "control_set_by_drowsed"):
    print("   %-24s %s" % (k, d.get(k)))'
dctl show "$kbd" | grep -q '"state":"quarantined"' || vm_fail "drowsectl show does not say quarantined"
dctl why "$kbd" | grep -q 'quarantined' || vm_fail "drowsectl why does not name the quarantine"

bold "9. quarantined, the keyboard stays awake; drowsectl release gives it back to the policy"
left() { ctl emu fault list --json | python3 -c "import json,sys; f=[x for x in json.load(sys.stdin) if x['id']==$storm][0]; print(60 - f['hits'])"; }
sleep 3
[[ $(cat "$kbddev/power/runtime_status") == active ]] || vm_fail "the quarantined keyboard suspended"
say "3 s later: power/control=$(cat "$kbddev/power/control"), runtime_status=$(cat "$kbddev/power/runtime_status"), hub port: $(field kbd 'd["link"]');"
say "the storm still has $(left) wakeups to send, but the keyboard no longer suspends, so it cannot"
ctl emu fault clear all >/dev/null
say "\$ drowsectl emu fault clear all; drowsectl release $kbd"
dctl release "$kbd"
decisions | grep ': release: ' | tail -n1 | show_decision
control_is() { [[ $(cat "$kbddev/power/control") == "$1" ]]; }
vm_wait_for 20 control_is auto
vm_wait_for 30 suspended "$kbddev"
say "released: power/control=$(cat "$kbddev/power/control"), delay $(cat "$kbddev/power/autosuspend_delay_ms") ms again, $(cat "$kbddev/power/runtime_status")"
exec 4<&-

bold "10. summary: drowsed's statistics and the emulator's counts"
# One last sample of every device, so that the statistics include the last few seconds.
sleep 2.5
dctl stats --json >"$DROWSE_OUT/stats.json"
ctl emu list --json >"$DROWSE_OUT/summary.json"
dctl plot "$DROWSE_OUT/timeline.svg" >/dev/null
python3 - "$DROWSE_OUT/stats.json" "$DROWSE_OUT/summary.json" "data=${datadev##*/}" "solo=${solodev##*/}" \
        "kbd=$kbd" <<'PY' || vm_fail "the summary is not what the demo did"
import json, sys
stats = {d["name"]: d for d in json.load(open(sys.argv[1]))["devices"]}
emu = {d["name"]: d for d in json.load(open(sys.argv[2]))}
usb = dict(a.split("=", 1) for a in sys.argv[3:])
def secs(ms):
    return "%.1f s" % (ms / 1000)
def quarantine(d):
    q = [h["decision"] for h in d["history"] if h.get("decision") in ("quarantine", "release")]
    return "now" if d["quarantined"] else "released" if q and q[-1] == "release" else "-"
print("   %-5s %-6s %-12s %10s %8s %8s %8s %9s %-10s | %9s %9s"
      % ("", "usb", "state", "suspended", "active", "resumes", "wakeups", "decisions", "quarantine",
         "suspends", "wakeups"))
print("   %-5s %-6s %-12s %57s | %19s" % ("", "", "", "drowsed (drowsectl stats --json)", "drowse-emu (emu list)"))
bad = []
for name, dev in usb.items():
    d, e = stats[dev], emu[name]
    q = quarantine(d)
    print("   %-5s %-6s %-12s %10s %8s %8d %8d %9d %-10s | %9s %9d"
          % (name, dev, d["state"], secs(d["suspended_ms"]), secs(d["active_ms"]), d["resumes"], d["wakeups"],
             d["decisions"], q, e["suspends"] if e["hub"] else "(root)", e["wakeups_signalled"]))
    if name == "kbd":
        if q == "-":
            bad.append("the keyboard was never quarantined")
        decided = [h["decision"] for h in d["history"] if "decision" in h]
        if decided[-1:] != ["release"]:
            bad.append("the keyboard was struck again after its release: %s" % decided)
        if d["resumes"] < 20:
            bad.append("only %d keyboard resumes counted" % d["resumes"])
        if e["wakeups_signalled"] < 20:
            bad.append("only %d wakeups signalled" % e["wakeups_signalled"])
    else:
        if d["suspended_ms"] <= 0 or d["resumes"] <= 0:
            bad.append("%s: %d ms suspended, %d resumes" % (name, d["suspended_ms"], d["resumes"]))
        if q != "-":
            bad.append("%s was struck: %s" % (name, [h for h in d["history"] if "decision" in h]))
print("   suspends: PORT_SUSPENDs from the kernel (vhci keeps root-port suspend to itself); the kernel counts")
print("   wakeup_count only for system wakeups, so a runtime storm leaves drowsed's wakeups at 0")
for b in bad:
    print("   FAIL: " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
grep -q "<svg" "$DROWSE_OUT/timeline.svg" || vm_fail "drowsectl plot wrote no SVG"
if command -v xmllint >/dev/null; then
        xmllint --noout "$DROWSE_OUT/timeline.svg" || vm_fail "the power timeline is not well-formed XML"
fi
grep -q "quarantine: resume storm" "$DROWSE_OUT/timeline.svg" || vm_fail "the timeline lacks the quarantine"
out=${DROWSE_DEMO_OUT_HOST:-"this run's log directory"}
say "power timeline (open it in a browser): $out/timeline.svg"
say "statistics and every device's state: stats.json and summary.json, logs: drowsed.log emu.log, in $out"
say "demo finished: a hub over stock vhci_hcd, its ports suspended and resumed by the kernel, a key press that"
say "woke the host through the hub, and a wakeup storm that drowsed caught, backed off and quarantined"
