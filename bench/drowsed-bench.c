/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* drowsed host-side benchmarks against a umockdev testbed (run under umockdev-wrapper; see
 * bench/daemon and docs/performance.md). Not a test: it prints results, one TSV line each, on stdout.
 *
 *   drowsed-bench coldplug --devices N [--storage-every K] [--reps R] [--drowsed PATH]
 *     N synthetic USB devices (every K-th a usb-storage disk with its SCSI chain, every K-th+1 a HID
 *     device that the default policy excludes, the rest vendor-class devices that autosuspend). Per
 *     repetition, interleaved: the anchor (a bare libudev walk reading the same attributes, nothing
 *     written), `udevadm trigger --dry-run` over the same subsystems, and drowsed's manager_coldplug
 *     (policy decided and written); the attributes are set back to the kernel's defaults before each
 *     drowsed pass, so every pass writes. Then, with --drowsed, the real drowsed binary is started
 *     against the same testbed: time from exec to its STATUS= after coldplug, and its RSS.
 *
 *     --bind-sys (as root): the same tree bind-mounted over /sys in a private mount namespace, and
 *     everything timed in a process without umockdev's preload library, so libudev and drowsed read
 *     the tree directly, without umockdev's per-call path redirection.
 *
 *   drowsed-bench idle --drowsed PATH --mode off|on|watchdog [--seconds S] [--windows W]
 *     The real drowsed with 4 devices, idle: context switches (voluntary + involuntary, all threads)
 *     counted over W windows of S seconds. off: nothing autosuspends (no sampling timer); on: the
 *     disk autosuspends (adaptive sampling); watchdog: as off, with WATCHDOG_USEC=5 min as the
 *     shipped unit's WatchdogSec=5min sets it. */

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <umockdev.h>
/* glib has its own; ours (macro.h) win. */
#undef MIN
#undef MAX

#include "log.h"
#include "manager.h"

extern char **environ;

static UMockdevTestbed *tb;
static const char *root;
static char conf_path[512];

#define DIE(...)                                                                                   \
        do {                                                                                       \
                fprintf(stderr, "drowsed-bench: " __VA_ARGS__);                                    \
                fputc('\n', stderr);                                                               \
                exit(2);                                                                           \
        } while (0)

static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CPU time (user + system) of this process, or of its waited-for children. */
static double cpu_ms(int who) {
        struct rusage ru;
        getrusage(who, &ru);
        return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void write_conf(const char *text) {
        FILE *f;
        snprintf(conf_path, sizeof(conf_path), "%s/drowse.conf", root);
        if (!(f = fopen(conf_path, "w")))
                DIE("cannot write %s", conf_path);
        fputs(text, f);
        fclose(f);
}

static char *add(const char *subsystem, const char *name, const char *parent, const char *devtype,
                 const char *driver, const char *const *attrs) {
        const char *props[] = { "DEVTYPE", devtype, NULL };
        char *p = umockdev_testbed_add_devicev(tb, subsystem, name, parent, (char **) attrs,
                                               devtype ? (char **) props : (char *[]){ NULL });
        if (!p)
                DIE("cannot add %s", name);
        if (driver) {
                char link[128];
                snprintf(link, sizeof(link), "/sys/bus/%s/drivers/%s", subsystem, driver);
                umockdev_testbed_set_attribute_link(tb, p, "driver", link);
        }
        return p;
}

typedef struct Synth {
        char *usb, *sdev, *block;
} Synth;

static Synth *synth;
static size_t n_synth;

/* Device i: port i%100+1 of root hub usb(i/100+1). */
static void build(size_t n, size_t storage_every) {
        char *hub = NULL;
        size_t host = 0;

        synth = calloc(n, sizeof(Synth));
        n_synth = n;
        for (size_t i = 0; i < n; i++) {
                char name[64], serial[32], intf[80], buf[64], blk[16];
                bool storage = storage_every && i % storage_every == 0;
                bool hid = storage_every && i % storage_every == 1;

                if (i % 100 == 0) {
                        snprintf(name, sizeof(name), "usb%zu", i / 100 + 1);
                        hub = add("usb", name, NULL, "usb_device", "usb",
                                  (const char *[]){ "bDeviceClass", "09", "bNumInterfaces", " 1",
                                                    "power/control", "auto", NULL });
                }
                snprintf(name, sizeof(name), "%zu-%zu", i / 100 + 1, i % 100 + 1);
                snprintf(serial, sizeof(serial), "SER-%06zu", i);
                synth[i].usb = add(
                        "usb", name, hub, "usb_device", "usb",
                        (const char *[]){ "idVendor", storage ? "0525" : hid ? "046d" : "1209", "idProduct",
                                          storage ? "a4a5" : hid ? "c077" : "0001", "serial", serial,
                                          "bDeviceClass", "00", "bNumInterfaces", " 1", "removable",
                                          storage ? "removable" : "fixed", "power/control", "on",
                                          "power/autosuspend_delay_ms", "2000", "power/runtime_status",
                                          "active", "power/wakeup", "disabled", "power/persist", "1",
                                          "power/runtime_active_time", "1000", "power/runtime_suspended_time",
                                          "0", NULL });
                snprintf(intf, sizeof(intf), "%s:1.0", name);
                char *ip = add("usb", intf, synth[i].usb, "usb_interface",
                               storage ? "usb-storage" : hid ? "usbhid" : "cdc_acm",
                               (const char *[]){ "bInterfaceClass", storage ? "08" : hid ? "03" : "ff",
                                                 "supports_autosuspend", "1", "power/runtime_status", "active",
                                                 NULL });
                if (!storage) {
                        g_free(ip);
                        continue;
                }
                snprintf(buf, sizeof(buf), "host%zu", host);
                char *h = add("scsi", buf, ip, "scsi_host", NULL,
                              (const char *[]){ "power/runtime_status", "active", NULL });
                snprintf(buf, sizeof(buf), "target%zu:0:0", host);
                char *t = add("scsi", buf, h, "scsi_target", NULL,
                              (const char *[]){ "power/runtime_status", "active", NULL });
                snprintf(buf, sizeof(buf), "%zu:0:0:0", host);
                synth[i].sdev = add("scsi", buf, t, "scsi_device", "sd",
                                    (const char *[]){ "power/control", "on", "power/autosuspend_delay_ms", "-1",
                                                      "power/runtime_status", "active", NULL });
                /* sda .. sdz, sdaa .. sdzz, sdaaa ... */
                size_t k = host, len = 0;
                char rev[8];
                do {
                        rev[len++] = 'a' + k % 26;
                        k = k / 26;
                } while (k-- > 0 && len < sizeof(rev));
                blk[0] = 's', blk[1] = 'd';
                for (size_t j = 0; j < len; j++)
                        blk[2 + j] = rev[len - 1 - j];
                blk[2 + len] = 0;
                synth[i].block = add("block", blk, synth[i].sdev, "disk", NULL,
                                     (const char *[]){ "events", "media_change", "events_poll_msecs", "-1",
                                                       "removable", "1", NULL });
                host++;
                g_free(ip), g_free(h), g_free(t);
        }
}

static void put(const char *dir, const char *attr, const char *value) {
        char path[4096];
        int fd;
        snprintf(path, sizeof(path), "%s%s/%s", root, dir, attr);
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (fd < 0 || write(fd, value, strlen(value)) < 0)
                DIE("cannot write %s", path);
        close(fd);
}

static bool is(const char *dir, const char *attr, const char *value) {
        char path[4096], buf[64] = "";
        FILE *f;
        snprintf(path, sizeof(path), "%s%s/%s", root, dir, attr);
        if (!(f = fopen(path, "re")))
                return false;
        if (!fgets(buf, sizeof(buf), f))
                buf[0] = 0;
        fclose(f);
        buf[strcspn(buf, "\n")] = 0;
        return streq(buf, value);
}

/* Back to what the kernel shows after probe: every pass has to write. */
static void reset(void) {
        for (size_t i = 0; i < n_synth; i++) {
                put(synth[i].usb, "power/control", "on");
                put(synth[i].usb, "power/autosuspend_delay_ms", "2000");
                if (synth[i].sdev) {
                        put(synth[i].sdev, "power/control", "on");
                        put(synth[i].sdev, "power/autosuspend_delay_ms", "-1");
                        put(synth[i].block, "events_poll_msecs", "-1");
                }
        }
}

/* How many of the synthetic devices, and of their disks, are set to autosuspend. */
static void count_applied(size_t *usb_auto, size_t *chains_auto, size_t *chains) {
        *usb_auto = *chains_auto = *chains = 0;
        for (size_t i = 0; i < n_synth; i++) {
                *usb_auto += is(synth[i].usb, "power/control", "auto");
                if (synth[i].sdev) {
                        (*chains)++;
                        *chains_auto += is(synth[i].usb, "power/control", "auto") &&
                                        is(synth[i].sdev, "power/control", "auto") &&
                                        is(synth[i].block, "events_poll_msecs", "0");
                }
        }
}

/* The anchor: the libudev walk any udev-based tool does at least, reading what drowsed reads to
 * decide, and writing nothing. Same open/read per attribute as drowsed's sysfs.c. */
static volatile size_t sink;
static void read_attr(const char *dir, const char *attr) {
        char path[4096], buf[256];
        int fd;
        ssize_t n;
        snprintf(path, sizeof(path), "%s/%s", dir, attr);
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n > 0)
                sink += (size_t) n + (size_t) buf[0];
        close(fd);
}

static size_t anchor_walk(void) {
        struct udev *udev = udev_new();
        struct udev_enumerate *e = udev_enumerate_new(udev);
        struct udev_list_entry *i, *j;
        size_t n = 0;

        udev_enumerate_add_match_subsystem(e, "usb");
        udev_enumerate_add_match_property(e, "DEVTYPE", "usb_device");
        udev_enumerate_scan_devices(e);
        udev_list_entry_foreach(i, udev_enumerate_get_list_entry(e)) {
                struct udev_device *dev = udev_device_new_from_syspath(udev, udev_list_entry_get_name(i));
                if (!dev)
                        continue;
                const char *sp = udev_device_get_syspath(dev);
                if (strneq(udev_device_get_sysname(dev), "usb", 3)) {
                        udev_device_unref(dev);
                        continue;
                }
                n++;
                sink += strlen(udev_device_get_driver(dev) ?: "");
                sink += !!udev_device_get_property_value(dev, "ID_AUTOSUSPEND");
                for (const char *const *a = (const char *const[]){ "idVendor", "idProduct", "serial",
                                                                    "bDeviceClass", "bNumInterfaces", "removable",
                                                                    "power/control", "power/autosuspend_delay_ms",
                                                                    "power/runtime_status", NULL };
                     *a; a++)
                        read_attr(sp, *a);
                struct udev_enumerate *c = udev_enumerate_new(udev);
                udev_enumerate_add_match_parent(c, dev);
                udev_enumerate_scan_devices(c);
                udev_list_entry_foreach(j, udev_enumerate_get_list_entry(c)) {
                        struct udev_device *k = udev_device_new_from_syspath(udev, udev_list_entry_get_name(j));
                        if (!k)
                                continue;
                        const char *t = udev_device_get_devtype(k), *kp = udev_device_get_syspath(k);
                        sink += strlen(udev_device_get_driver(k) ?: "");
                        if (t && streq(t, "usb_interface")) {
                                read_attr(kp, "bInterfaceClass");
                                read_attr(kp, "supports_autosuspend");
                        } else if (t && streq(t, "scsi_device")) {
                                read_attr(kp, "power/control");
                                read_attr(kp, "power/autosuspend_delay_ms");
                        } else if (t && streq(t, "disk")) {
                                read_attr(kp, "events");
                                read_attr(kp, "events_poll_msecs");
                        }
                        udev_device_unref(k);
                }
                udev_enumerate_unref(c);
                udev_device_unref(dev);
        }
        udev_enumerate_unref(e);
        udev_unref(udev);
        return n;
}

static double run_udevadm(double *cpu) {
        char *argv[] = { "udevadm", "trigger", "--dry-run", "--subsystem-match=usb", "--subsystem-match=scsi",
                         "--subsystem-match=block", NULL };
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status;
        double t0 = now_ms(), c0 = cpu_ms(RUSAGE_CHILDREN);

        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        if (posix_spawnp(&pid, "udevadm", &fa, NULL, argv, environ) != 0)
                return -1;
        posix_spawn_file_actions_destroy(&fa);
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return -1;
        *cpu = cpu_ms(RUSAGE_CHILDREN) - c0;
        return now_ms() - t0;
}

static size_t drowsed_coldplug(double *ms, double *cpu) {
        ManagerOptions o = { .config_path = conf_path, .monitor = MONITOR_UDEV };
        Manager *m = NULL;
        size_t n;
        double t0;

        if (manager_new(&o, &m) < 0 || manager_load_config(m) < 0)
                DIE("cannot set up the manager");
        t0 = now_ms();
        double c0 = cpu_ms(RUSAGE_SELF);
        if (manager_coldplug(m) < 0)
                DIE("coldplug failed");
        *ms = now_ms() - t0;
        *cpu = cpu_ms(RUSAGE_SELF) - c0;
        n = manager_n_devices(m);
        manager_free(m);
        return n;
}

/* ---- the real drowsed binary ---- */

static int notify_fd = -1;
static char notify_path[600];

static void notify_socket(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(notify_path, sizeof(notify_path), "%s/notify", root);
        if (strlen(notify_path) >= sizeof(sa.sun_path))
                DIE("testbed path too long for a socket");
        strcpy(sa.sun_path, notify_path);
        notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (notify_fd < 0 || bind(notify_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                DIE("cannot bind %s: %m", notify_path);
}

static pid_t spawn_drowsed(const char *drowsed, const char *log_path, bool watchdog) {
        pid_t pid = fork();
        if (pid < 0)
                DIE("fork: %m");
        if (pid == 0) {
                char wpid[32];
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd >= 0)
                        dup2(fd, STDERR_FILENO);
                setenv("NOTIFY_SOCKET", notify_path, 1);
                if (watchdog) {
                        snprintf(wpid, sizeof(wpid), "%d", (int) getpid());
                        setenv("WATCHDOG_PID", wpid, 1);
                        setenv("WATCHDOG_USEC", "300000000", 1); /* WatchdogSec=5min */
                }
                execl(drowsed, drowsed, "--config", conf_path, "--control", "", "--state-dir", "", "--no-bus",
                      NULL);
                _exit(127);
        }
        return pid;
}

/* Waits for the STATUS= that follows the coldplug pass (it names the number of devices). */
static bool wait_status(size_t n, double timeout_ms) {
        char buf[4096], want[64];
        double end = now_ms() + timeout_ms;
        snprintf(want, sizeof(want), "STATUS=%zu USB devices", n);
        while (now_ms() < end) {
                struct timeval tv = { .tv_sec = 0, .tv_usec = 200 * 1000 };
                setsockopt(notify_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                ssize_t k = recv(notify_fd, buf, sizeof(buf) - 1, 0);
                if (k <= 0)
                        continue;
                buf[k] = 0;
                if (strstr(buf, want))
                        return true;
        }
        return false;
}

/* Reads NAME's value (kB or a count) from /proc/PID/status. */
static long proc_status(pid_t pid, const char *name) {
        char path[64], line[256];
        long v = -1;
        FILE *f;
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        if (!(f = fopen(path, "re")))
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strneq(line, name, strlen(name)) && line[strlen(name)] == ':')
                        v = strtol(line + strlen(name) + 1, NULL, 10);
        fclose(f);
        return v;
}

/* Context switches of every thread of PID: voluntary (went to sleep: one per wakeup) and involuntary
 * (preempted while running, more of them on a loaded host). */
static int ctxt_switches(pid_t pid, long *vol, long *invol) {
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/task", (int) pid);
        DIR *d = opendir(path);
        struct dirent *de;
        if (!d)
                return -1;
        *vol = *invol = 0;
        while ((de = readdir(d))) {
                char p[320];
                FILE *f;
                if (de->d_name[0] == '.')
                        continue;
                snprintf(p, sizeof(p), "/proc/%d/task/%s/status", (int) pid, de->d_name);
                if (!(f = fopen(p, "re")))
                        continue;
                while (fgets(line, sizeof(line), f))
                        if (strneq(line, "voluntary_ctxt_switches:", 24))
                                *vol += strtol(line + 24, NULL, 10);
                        else if (strneq(line, "nonvoluntary_ctxt_switches:", 27))
                                *invol += strtol(line + 27, NULL, 10);
                fclose(f);
        }
        closedir(d);
        return 0;
}

static void stop(pid_t pid) {
        int status;
        kill(pid, SIGTERM);
        waitpid(pid, &status, 0);
}

static void drowsed_rss(const char *drowsed, size_t n, const char *tag) {
        char log_path[600];
        double t0;
        pid_t pid;

        snprintf(log_path, sizeof(log_path), "%s/drowsed-%s.log", root, tag);
        t0 = now_ms();
        pid = spawn_drowsed(drowsed, log_path, false);
        if (!wait_status(n, 600 * 1000.0)) {
                stop(pid);
                DIE("drowsed did not report %zu devices (log %s)", n, log_path);
        }
        double ms = now_ms() - t0;
        usleep(200 * 1000); /* let it go idle */
        printf("rss\t%s\tdevices\t%zu\n", tag, n);
        printf("rss\t%s\texec_to_status_ms\t%.1f\n", tag, ms);
        printf("rss\t%s\tVmRSS_kB\t%ld\n", tag, proc_status(pid, "VmRSS"));
        printf("rss\t%s\tVmHWM_kB\t%ld\n", tag, proc_status(pid, "VmHWM"));
        printf("rss\t%s\tRssAnon_kB\t%ld\n", tag, proc_status(pid, "RssAnon"));
        printf("rss\t%s\tRssFile_kB\t%ld\n", tag, proc_status(pid, "RssFile"));
        fflush(stdout);
        stop(pid);
}

static const char *CONFIG =
        "[defaults]\ndelay-ms = 2000\ndisk-delay-ms = 2000\n"
        "[rule keyboard]\nmatch-id = 046d:c31c\nautosuspend = yes\n"
        "[rule printers]\nmatch-class = 07\nautosuspend = no\n"
        "[rule modem]\nmatch-id = 12d1:*\ndelay-ms = 5000\n"
        "[rule sticks-slow]\nmatch-serial = SER-0099*\ndisk-delay-ms = 10000\n"
        "[rule port]\nmatch-devpath = 3-7\nautosuspend = no\n";

/* The testbed's sys/ bind-mounted over /sys in a private mount namespace: libudev and drowsed read
 * the synthetic tree directly, without umockdev's LD_PRELOAD path redirection on every call. */
static void bind_sys(void) {
        char src[600];
        snprintf(src, sizeof(src), "%s/sys", root);
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount(src, "/sys", NULL, MS_BIND | MS_REC, NULL) < 0)
                DIE("cannot bind %s over /sys in a private mount namespace (root needed): %m", src);
}

/* The timed part: runs on the testbed at ROOT, through /sys (umockdev's preload) or, bound, directly. */
static int measure(size_t n, unsigned reps, const char *drowsed) {
        size_t usb_auto, chains_auto, chains;
        double t0;

        snprintf(conf_path, sizeof(conf_path), "%s/drowse.conf", root);
        log_set_max_level(LOG_INFO);
        /* rep 0 is a warm-up; then interleaved anchor, udevadm, drowsed. */
        for (unsigned rep = 0; rep <= reps && reps > 0; rep++) {
                double ms, cpu;
                t0 = now_ms();
                cpu = cpu_ms(RUSAGE_SELF);
                size_t k = anchor_walk();
                ms = now_ms() - t0;
                cpu = cpu_ms(RUSAGE_SELF) - cpu;
                if (k != n)
                        DIE("the anchor walked %zu devices, not %zu", k, n);
                printf("coldplug\tanchor-libudev\t%u\t%.2f\t%.2f\n", rep, ms, cpu);
                ms = run_udevadm(&cpu);
                if (ms >= 0)
                        printf("coldplug\tudevadm-dry-run\t%u\t%.2f\t%.2f\n", rep, ms, cpu);
                reset();
                k = drowsed_coldplug(&ms, &cpu);
                if (k != n)
                        DIE("drowsed tracked %zu devices, not %zu", k, n);
                printf("coldplug\tdrowsed\t%u\t%.2f\t%.2f\n", rep, ms, cpu);
                count_applied(&usb_auto, &chains_auto, &chains);
                printf("applied\t%u\tusb_auto\t%zu\tchains_auto\t%zu\tchains\t%zu\n", rep, usb_auto, chains_auto,
                       chains);
                fflush(stdout);
        }
        if (drowsed) {
                char tag[32];
                reset();
                notify_socket();
                snprintf(tag, sizeof(tag), "drowsed-%zu", n);
                drowsed_rss(drowsed, n, tag);
                count_applied(&usb_auto, &chains_auto, &chains);
                printf("applied\tdrowsed-bin\tusb_auto\t%zu\tchains_auto\t%zu\tchains\t%zu\n", usb_auto,
                       chains_auto, chains);
                unlink(notify_path);
        }
        return 0;
}

/* The synthetic devices' paths, for a process that did not build them. */
static void save_synth(void) {
        char path[600];
        FILE *f;
        snprintf(path, sizeof(path), "%s/synth.tsv", root);
        if (!(f = fopen(path, "we")))
                DIE("cannot write %s", path);
        for (size_t i = 0; i < n_synth; i++)
                fprintf(f, "%s\t%s\t%s\n", synth[i].usb, synth[i].sdev ?: "-", synth[i].block ?: "-");
        fclose(f);
}

static void load_synth(void) {
        char path[600], line[3 * 1024];
        size_t cap = 0;
        FILE *f;
        snprintf(path, sizeof(path), "%s/synth.tsv", root);
        if (!(f = fopen(path, "re")))
                DIE("cannot read %s", path);
        while (fgets(line, sizeof(line), f)) {
                char *a = strtok(line, "\t\n"), *b = strtok(NULL, "\t\n"), *c = strtok(NULL, "\t\n");
                if (!a || !b || !c)
                        continue;
                if (n_synth == cap) {
                        cap = cap ? cap * 2 : 1024;
                        synth = reallocarray(synth, cap, sizeof(Synth));
                        if (!synth)
                                DIE("out of memory");
                }
                synth[n_synth++] = (Synth){ strdup(a), streq(b, "-") ? NULL : strdup(b), streq(c, "-") ? NULL : strdup(c) };
        }
        fclose(f);
}

static int cmd_coldplug(size_t n, size_t storage_every, unsigned reps, const char *drowsed,
                        bool bind) {
        double t0 = now_ms();

        build(n, storage_every);
        write_conf(CONFIG);
        printf("setup\ttestbed_build_ms\t%.0f\n", now_ms() - t0);
        fflush(stdout);
        if (!bind)
                return measure(n, reps, drowsed);

        /* The testbed's sys/ over /sys in a private mount namespace, and the measurements in a fresh
         * process without umockdev's preload library: it would still wrap every call (and leak a
         * socket per open) even without $UMOCKDEV_DIR. sd-device refuses a /sys that is not sysfs
         * unless told not to check (under the preload, umockdev fakes statfs). */
        bind_sys();
        char ns[32], reps_s[16], self_path[4096];
        snprintf(ns, sizeof(ns), "%zu", n);
        snprintf(reps_s, sizeof(reps_s), "%u", reps);
        ssize_t l = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
        if (l < 0)
                DIE("cannot find myself");
        self_path[l] = 0;
        save_synth();
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
                DIE("fork: %m");
        if (pid == 0) {
                unsetenv("LD_PRELOAD");
                unsetenv("UMOCKDEV_DIR");
                setenv("SYSTEMD_DEVICE_VERIFY_SYSFS", "0", 1);
                execl(self_path, self_path, "measure-bound", root, ns, reps_s, drowsed ?: "", NULL);
                _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                DIE("the bound measurement failed");
        return 0;
}

static int cmd_idle(const char *drowsed, const char *mode, unsigned seconds, unsigned windows) {
        char log_path[600];
        bool watchdog = streq(mode, "watchdog");
        pid_t pid;

        if (!streq(mode, "off") && !streq(mode, "on") && !watchdog)
                DIE("--mode must be off, on or watchdog");
        build(4, 4); /* a disk, a HID device, two vendor-class devices */
        /* sample-min/max at their defaults (1 s, doubling to 30 s). */
        write_conf(streq(mode, "on") ? "" : "[defaults]\nautosuspend = no\n");
        notify_socket();
        snprintf(log_path, sizeof(log_path), "%s/drowsed-idle.log", root);
        pid = spawn_drowsed(drowsed, log_path, watchdog);
        if (!wait_status(4, 60 * 1000.0)) {
                stop(pid);
                DIE("drowsed did not start");
        }
        size_t usb_auto, chains_auto, chains;
        count_applied(&usb_auto, &chains_auto, &chains);
        sleep(2); /* the coldplug pass's tail: not idle yet */
        printf("idle\t%s\tusb_auto\t%zu\tchains_auto\t%zu\n", mode, usb_auto, chains_auto);
        for (unsigned w = 0; w < windows; w++) {
                long v0, i0, v1, i1;
                if (ctxt_switches(pid, &v0, &i0) < 0)
                        DIE("drowsed went away");
                sleep(seconds);
                if (ctxt_switches(pid, &v1, &i1) < 0)
                        DIE("drowsed went away");
                printf("idle\t%s\twindow\t%u\tseconds\t%u\tctxt_switches\t%ld\tper_minute\t%.1f\tvoluntary\t%ld\t"
                       "involuntary\t%ld\n",
                       mode, w, seconds, v1 - v0 + i1 - i0, (v1 - v0 + i1 - i0) * 60.0 / seconds, v1 - v0, i1 - i0);
                fflush(stdout);
        }
        printf("idle\t%s\tVmRSS_kB\t%ld\n", mode, proc_status(pid, "VmRSS"));
        stop(pid);
        return 0;
}

int main(int argc, char *argv[]) {
        size_t n = 10000, storage_every = 10;
        unsigned reps = 5, seconds = 60, windows = 1;
        const char *drowsed = NULL, *mode = "off";
        bool bind = false;

        if (argc < 2)
                DIE("usage: drowsed-bench coldplug|idle [options] (see the source)");
        if (streq(argv[1], "measure-bound")) { /* internal: ROOT N REPS DROWSED, see cmd_coldplug() */
                if (argc != 6)
                        DIE("measure-bound ROOT N REPS DROWSED");
                root = argv[2];
                load_synth();
                if (n_synth != strtoul(argv[3], NULL, 10))
                        DIE("synth.tsv has %zu devices, not %s", n_synth, argv[3]);
                return measure(n_synth, strtoul(argv[4], NULL, 10), *argv[5] ? argv[5] : NULL);
        }
        for (int i = 2; i < argc; i++) {
                if (streq(argv[i], "--bind-sys")) {
                        bind = true;
                        continue;
                }
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!v)
                        DIE("%s needs a value", argv[i]);
                if (streq(argv[i], "--devices"))
                        n = strtoul(v, NULL, 10);
                else if (streq(argv[i], "--storage-every"))
                        storage_every = strtoul(v, NULL, 10);
                else if (streq(argv[i], "--reps"))
                        reps = strtoul(v, NULL, 10);
                else if (streq(argv[i], "--drowsed"))
                        drowsed = v;
                else if (streq(argv[i], "--mode"))
                        mode = v;
                else if (streq(argv[i], "--seconds"))
                        seconds = strtoul(v, NULL, 10);
                else if (streq(argv[i], "--windows"))
                        windows = strtoul(v, NULL, 10);
                else
                        DIE("unknown option %s", argv[i]);
                i++;
        }
        bool preload = getenv("LD_PRELOAD") && strstr(getenv("LD_PRELOAD"), "umockdev");
        if (!preload)
                DIE("run me under umockdev-wrapper");
        tb = umockdev_testbed_new();
        if (!tb)
                DIE("no testbed");
        root = umockdev_testbed_get_root_dir(tb);
        int r;
        if (streq(argv[1], "coldplug"))
                r = cmd_coldplug(n, storage_every, reps, drowsed, bind);
        else if (streq(argv[1], "idle")) {
                if (!drowsed)
                        DIE("idle needs --drowsed");
                r = cmd_idle(drowsed, mode, seconds, windows);
        } else
                DIE("unknown command %s", argv[1]);
        if (notify_fd >= 0)
                unlink(notify_path);
        g_object_unref(tb); /* removes the testbed */
        return r;
}
