#!/bin/busybox sh
# PID 1 of the drowse test guest (packed into the initramfs by run-guest).
#
# It mounts the host's root file system read-only over 9p, puts tmpfs over the few places that
# tests must write to, runs the job that run-guest left in the writable "drowseout" share, and
# reports the job's exit code, its output and the kernel log back through that share. Then it
# powers the machine off (QEMU runs with -no-reboot, so any reboot or panic also ends QEMU).
#
# Kernel parameters read here:  drowse.soft_timeout=SECONDS  (guest-side deadline, see below)
#                               drowse.init=systemd  (run the job as a service of systemd as PID 1)

/bin/busybox --install -s /bin
export PATH=/bin

OUT=/newroot/run/drowse-out

log() { echo "drowse-init: $*" >/dev/console; }

poweroff_now() {
        sync
        echo o >/proc/sysrq-trigger
        # sysrq-o is asynchronous; never return to the caller (PID 1 must not exit).
        while :; do sleep 1; done
}

die() {
        log "FATAL: $*"
        # Without the out share there is nobody to tell; the host sees "no exit code" (125).
        [ -d "$OUT/.job" ] && echo "init: $*" >"$OUT/init-error"
        poweroff_now
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec >/dev/console 2>&1 </dev/null

soft_timeout=0
init=
read -r cmdline </proc/cmdline
for word in $cmdline; do
        case "$word" in
        drowse.soft_timeout=*) soft_timeout=${word#*=} ;;
        drowse.init=*) init=${word#*=} ;;
        esac
done

# The 9p stack (and on 6.1 virtio itself) is modular in Debian kernels; modules.order lists the
# files in dependency order, already decompressed (busybox insmod cannot read .ko.xz).
while read -r mod; do
        insmod "/lib/modules/$mod" || log "insmod $mod failed"
done </modules.order

# 9p: the host root is shared read-only. cache=loose lets the guest cache pages and dentries:
# under TCG every exec/stat over 9p is expensive, and the host tree does not change under a
# running test. msize 512000 is the largest the virtio transport takes on both 6.1 and 6.12.
P9OPTS=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /newroot
mount -t 9p -o "$P9OPTS,cache=loose,ro" hostroot /newroot || die "cannot mount the host root over 9p"

# Writable places: /tmp and /var/tmp for scratch files and disk images, /run for runtime state
# (/var/run -> /run: usbip keeps /var/run/vhci_hcd there, dbus/udev their sockets), /var/log
# for tools that insist on logging. Everything else, /etc included, stays the host's, read-only.
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=1777 tmpfs /newroot/var/tmp
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mount -t tmpfs -o mode=0755 tmpfs /newroot/var/log
mkdir -p /newroot/run/lock /newroot/run/udev "$OUT"

mount -o bind /proc /newroot/proc
mount -o bind /sys /newroot/sys
mount -o bind /dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
# devtmpfs has no /dev/fd or /dev/std*; udev or systemd would add them. Bash's <(...) needs /dev/fd.
ln -sfn /proc/self/fd /newroot/dev/fd
ln -sfn /proc/self/fd/0 /newroot/dev/stdin
ln -sfn /proc/self/fd/1 /newroot/dev/stdout
ln -sfn /proc/self/fd/2 /newroot/dev/stderr
# Handy for usbmon and dynamic debug; absence is not fatal.
mount -t debugfs debugfs /newroot/sys/kernel/debug 2>/dev/null || true

# The out share is the host's log dir. No cache: whatever the guest writes must be on the host
# before sysrq-o cuts the power.
mount -t 9p -o "$P9OPTS" drowseout "$OUT" || die "cannot mount the out share over 9p"
[ -f "$OUT/.job/job.sh" ] || die "no job in the out share"

# Guest-side deadline, a little before the host kills QEMU, so that a hung test still leaves
# its dmesg (with the blocked-task dump) and a "timeout" verdict behind.
watchdog=
if [ "$soft_timeout" -gt 0 ]; then
        (
                sleep "$soft_timeout"
                log "soft timeout (${soft_timeout}s) reached, dumping state"
                echo w >/proc/sysrq-trigger
                dmesg >"$OUT/dmesg.txt"
                echo timeout >"$OUT/exit-code"
                poweroff_now
        ) &
        watchdog=$!
fi

if [ "$init" = systemd ]; then
        # The host's systemd becomes PID 1 in the shared root, for tests of the units as shipped. The
        # job is a service that reports and powers off as below; systemd does not use the busybox
        # tree, so the soft-timeout watchdog above keeps working. Units' StateDirectory= is created
        # under /var/lib, read-only here, hence a tmpfs (it holds no state the boot needs).
        mount -t tmpfs -o mode=0755 tmpfs /newroot/var/lib
        mkdir -p /newroot/run/systemd/system
        cat >/newroot/run/drowse-job-wrap.sh <<'EOF'
#!/bin/bash
out=/run/drowse-out
bash "$out/.job/job.sh" 2>&1 | tee "$out/output.log" >/dev/console
rc=${PIPESTATUS[0]}
dmesg >"$out/dmesg.txt"
journalctl -b --no-pager -o short-monotonic >"$out/journal.txt" 2>&1
echo "$rc" >"$out/exit-code"
sync
echo o >/proc/sysrq-trigger
sleep infinity
EOF
        cat >/newroot/run/systemd/system/drowse-job.service <<'EOF'
[Unit]
Description=drowse test job
After=basic.target

[Service]
Type=exec
ExecStart=/bin/bash /run/drowse-job-wrap.sh
EOF
        cat >/newroot/run/systemd/system/drowse-job.target <<'EOF'
[Unit]
Description=drowse test job (what the guest boots into)
Requires=basic.target drowse-job.service
After=basic.target
AllowIsolate=yes
EOF
        log "running job under systemd"
        exec chroot /newroot /lib/systemd/systemd --unit=drowse-job.target
fi

log "running job"
# The job's own output goes to output.log and, for the live view, to the console; the exit
# code travels through a file because a pipeline reports tee's.
{
        chroot /newroot /bin/bash /run/drowse-out/.job/job.sh
        echo $? >/job-rc
} 2>&1 | tee "$OUT/output.log"
read -r rc </job-rc || rc=255
[ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null

dmesg >"$OUT/dmesg.txt"
echo "$rc" >"$OUT/exit-code"
log "job exited with $rc"
poweroff_now
