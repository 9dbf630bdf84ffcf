/* events — the named pipeline events (tds.zoho.*) on the stage's PUB socket.
 *
 * Owns the PUB socket when one is configured. Publishing never blocks and
 * never fails the caller: a PUB socket drops at its high-water mark, and any
 * send error is counted in `dropped` and otherwise ignored, because an
 * observer must never slow the pipeline down. With no socket it is a no-op.
 */
#include "events.h"
#include "bus.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define MAX_FIELDS 32 /* key/value pairs per event */

struct tds_events {
    struct tds_bus_sock *sock;
    char *stage;
    uint64_t dropped;
};

int tds_events_new(struct tds_events **out, struct tds_bus *bus, const char *stage, const char *bind)
{
    struct tds_events *ev = calloc(1, sizeof(*ev));
    int r;

    if (!ev)
        return -ENOMEM;
    ev->stage = strdup(stage ? stage : "");
    if (!ev->stage) {
        r = -ENOMEM;
        goto fail;
    }
    if (bind && *bind) {
        if (!bus) {
            r = -EINVAL;
            goto fail;
        }
        /* No linger: pending events are worthless once the stage exits. */
        r = tds_bus_sock_new(bus, ZMQ_PUB, &(struct tds_bus_opts){.linger_ms = -1}, &ev->sock);
        if (r)
            goto fail;
        r = tds_bus_bind(ev->sock, bind);
        if (r)
            goto fail;
    }
    *out = ev;
    return 0;
fail:
    tds_events_free(ev);
    return r;
}

struct tds_events *tds_events_free(struct tds_events *ev)
{
    if (!ev)
        return NULL;
    tds_bus_sock_free(ev->sock);
    free(ev->stage);
    free(ev);
    return NULL;
}

static int set_str(json_t *o, const char *key, const char *value)
{
    return json_object_set_new(o, key, value ? json_string(value) : json_null());
}

void tds_events_emit(struct tds_events *ev, const char *name, ...)
{
    int64_t wall = tds_wall_ms();
    time_t secs = (time_t)(wall / 1000);
    char ts[80]; /* room for any int the format could print */
    struct tm tm;
    json_t *o;
    char *text = NULL;
    va_list ap;
    int fields = 0;
    int r = 0;

    if (!ev || !ev->sock || !name)
        return;
    o = json_object();
    if (!o)
        goto drop;
    gmtime_r(&secs, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall % 1000));
    r |= set_str(o, "ts", ts);
    r |= set_str(o, "stage", ev->stage);
    r |= set_str(o, "event", name);
    va_start(ap, name);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        const char *value;

        if (!key || ++fields > MAX_FIELDS)
            break;
        value = va_arg(ap, const char *);
        /* Invalid UTF-8 would make jansson refuse the value; send null instead. */
        if (value && !tds_utf8_valid(value, strlen(value)))
            value = NULL;
        r |= set_str(o, key, value);
    }
    va_end(ap);
    if (r)
        goto drop;
    text = json_dumps(o, JSON_COMPACT);
    if (!text)
        goto drop;
    if (tds_bus_send(ev->sock, name, strlen(name), ZMQ_SNDMORE | ZMQ_DONTWAIT) ||
        tds_bus_send(ev->sock, text, strlen(text), ZMQ_DONTWAIT))
        goto drop;
    free(text);
    json_decref(o);
    return;
drop:
    ev->dropped++;
    free(text);
    json_decref(o);
}
