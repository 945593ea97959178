/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdio.h>

#include "bus.h"
#include "config.h"
#include "log.h"

static int find_device(Manager *m, sd_bus_message *msg, sd_bus_error *error, Device **ret) {
        const char *name;
        int r;

        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        *ret = manager_find(m, name);
        if (!*ret)
                return sd_bus_error_setf(error, "org.drowse.NoSuchDevice",
                                         "No USB device '%s' known to drowsed", name);
        return 0;
}

static int method_list_devices(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sssss)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < manager_n_devices(m); i++) {
                const Device *d = manager_device(m, i);
                r = sd_bus_message_append(reply, "(sssss)", d->sysname, d->id,
                                          device_state_to_string(d->state), d->reason, d->devpath);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_device(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Device *d;
        int r;

        r = find_device(userdata, msg, error, &d);
        if (r < 0 || !d)
                return r;
        return sd_bus_reply_method_return(msg, "sssssssiiub", d->sysname, d->devpath, d->id, d->serial,
                                          device_state_to_string(d->state), d->reason, d->rule, d->delay_ms,
                                          d->disk_delay_ms, d->n_luns, d->wrote_control);
}

static int method_why(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        Device *d;
        FILE *f;
        int r;

        r = find_device(userdata, msg, error, &d);
        if (r < 0 || !d)
                return r;
        f = open_memstream(&text, &size);
        if (!f)
                return -ENOMEM;
        r = device_why(d, manager_udev(userdata), true, f);
        if (fclose(f) != 0)
                return -ENOMEM;
        if (r < 0)
                return sd_bus_error_setf(error, "org.drowse.NoSuchDevice", "%s vanished", d->sysname);
        return sd_bus_reply_method_return(msg, "s", text);
}

static int method_get_statistics(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const DeviceRecord *rec;
        Device *d;
        int r;

        r = find_device(userdata, msg, error, &d);
        if (r < 0 || !d)
                return r;
        rec = d->rec;
        return sd_bus_reply_method_return(msg, "ssssbsuttttt", d->sysname, d->id, d->serial,
                                          device_state_to_string(d->state), rec && rec->quarantined,
                                          rec && rec->quarantined ? rec->quarantine_reason : "",
                                          rec ? rec->backoff : 1, rec ? rec->stats.suspended_ms : 0,
                                          rec ? rec->stats.active_ms : 0, rec ? rec->stats.resumes : 0,
                                          rec ? rec->stats.wakeups : 0, rec ? rec->stats.decisions : 0);
}

static int check_root(sd_bus_message *msg, sd_bus_error *error, const char *what) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;
        r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                return r;
        if (uid != 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "%s needs root", what);
        return 1;
}

static int method_release(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *name;
        int r;

        r = check_root(msg, error, "Release");
        if (r <= 0)
                return r;
        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = manager_release(userdata, name);
        if (r == -ENODEV)
                return sd_bus_error_setf(error, "org.drowse.NoSuchDevice", "No USB device '%s' known to drowsed",
                                         name);
        if (r == -EALREADY)
                return sd_bus_error_setf(error, "org.drowse.NotQuarantined",
                                         "%s is not quarantined, backed off or yielded", name);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_reload(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        char text[POLICY_ERROR_MAX];
        uid_t uid;
        int r;

        r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;
        r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                return r;
        if (uid != 0)
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Reload needs root");
        if (manager_reload(userdata, text, sizeof(text)) < 0)
                return sd_bus_error_setf(error, "org.drowse.InvalidConfig",
                                         "%s (kept the previous configuration)", text);
        return sd_bus_reply_method_return(msg, NULL);
}

static int property_n_devices(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "u", (uint32_t) manager_n_devices(userdata));
}

static int property_config(sd_bus *bus, const char *path, const char *interface, const char *property,
                           sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", manager_config_path(userdata));
}

static int property_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PACKAGE_VERSION);
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ConfigFile", "s", property_config, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("NDevices", "u", property_n_devices, 0, 0),
        SD_BUS_METHOD_WITH_ARGS("ListDevices", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssss)", devices),
                                method_list_devices, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetDevice", SD_BUS_ARGS("s", name),
                                SD_BUS_RESULT("s", name, "s", devpath, "s", id, "s", serial, "s", state, "s",
                                              reason, "s", rule, "i", delay_ms, "i", disk_delay_ms, "u",
                                              luns, "b", control_set_by_drowsed),
                                method_get_device, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Why", SD_BUS_ARGS("s", name), SD_BUS_RESULT("s", json), method_why,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetStatistics", SD_BUS_ARGS("s", name),
                                SD_BUS_RESULT("s", name, "s", id, "s", serial, "s", state, "b", quarantined, "s",
                                              quarantine_reason, "u", backoff, "t", suspended_ms, "t",
                                              active_ms, "t", resumes, "t", wakeups, "t", decisions),
                                method_get_statistics, SD_BUS_VTABLE_UNPRIVILEGED),
        /* Root only, checked by the handler as for Reload. */
        SD_BUS_METHOD_WITH_ARGS("Release", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT, method_release,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        /* Unprivileged as far as sd-bus's capability check goes: the handler checks for root itself. */
        SD_BUS_METHOD_WITH_ARGS("Reload", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_reload,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int bus_open(Manager *m, sd_event *e, sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = sd_bus_open_system(&bus);
        if (r < 0)
                return log_debug_errno(r, "Cannot connect to the system bus: %m");
        r = sd_bus_add_object_vtable(bus, NULL, BUS_PATH, BUS_INTERFACE, manager_vtable, m);
        if (r < 0)
                return log_debug_errno(r, "Cannot publish %s: %m", BUS_PATH);
        r = sd_bus_request_name(bus, BUS_NAME, 0);
        if (r < 0)
                return log_debug_errno(r, "Cannot take the name %s: %m", BUS_NAME);
        r = sd_bus_attach_event(bus, e, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_debug_errno(r, "Cannot attach the bus to the event loop: %m");
        *ret = TAKE_PTR(bus);
        return 0;
}
