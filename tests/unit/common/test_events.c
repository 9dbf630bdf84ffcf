/* test_events — a SUB socket receives [name][json] with ts, stage, event and
 * the given fields; no socket configured is a quiet no-op. */
#include "assert.h"
#include "bus.h"
#include "events.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static void test_emit(void)
{
    struct tds_bus *bus = NULL;
    struct tds_events *ev = NULL;
    struct tds_bus_sock *sub = NULL;
    char *topic = NULL, *body = NULL;
    size_t len = 0;
    int more = 0, r = -1, ms = 50;

    T_INT(tds_bus_new(&bus), ==, 0);
    T_INT(tds_events_new(&ev, bus, "fetcher", "inproc://events"), ==, 0);
    T_INT(tds_bus_sock_new(bus, ZMQ_SUB, NULL, &sub), ==, 0);
    T_INT(tds_bus_connect(sub, "inproc://events"), ==, 0);
    T_INT(tds_bus_subscribe(sub, "tds.zoho.sync."), ==, 0);
    T_INT(zmq_setsockopt(tds_bus_sock_raw(sub), ZMQ_RCVTIMEO, &ms, sizeof(ms)), ==, 0);

    for (int i = 0; i < 100 && r != 0; i++) {
        tds_events_emit(ev, "tds.zoho.api.success", "org", "1", NULL); /* filtered out */
        tds_events_emit(ev, "tds.zoho.sync.started", "org", "600123", "entity", "items",
                        "run", NULL, "note", "quote \" and \xff", NULL);
        r = tds_bus_recv(sub, &topic, &len, 1024, 0, &more);
    }
    T_INT(r, ==, 0);
    T_STR(topic, "tds.zoho.sync.started");
    T_INT(more, ==, 1);
    T_INT(tds_bus_recv(sub, &body, &len, 4096, 0, &more), ==, 0);
    T_INT(more, ==, 0);

    json_error_t e;
    json_t *o = json_loads(body, 0, &e);
    T_TRUE(o != NULL);
    T_STR(json_string_value(json_object_get(o, "event")), "tds.zoho.sync.started");
    T_STR(json_string_value(json_object_get(o, "stage")), "fetcher");
    T_STR(json_string_value(json_object_get(o, "org")), "600123");
    T_STR(json_string_value(json_object_get(o, "entity")), "items");
    T_TRUE(json_is_null(json_object_get(o, "run")));
    T_TRUE(json_is_null(json_object_get(o, "note"))); /* invalid UTF-8 is not sent */
    const char *ts = json_string_value(json_object_get(o, "ts"));
    T_TRUE(ts != NULL && strlen(ts) == 24 && ts[10] == 'T' && ts[23] == 'Z');
    T_INT(json_object_size(o), ==, 7);
    json_decref(o);
    free(topic);
    free(body);

    tds_bus_sock_free(sub);
    tds_events_free(ev);
    tds_bus_free(bus);
}

static void test_off(void)
{
    struct tds_events *ev = NULL;

    T_INT(tds_events_new(&ev, NULL, "writer", ""), ==, 0);
    tds_events_emit(ev, "tds.zoho.sync.completed", "org", "1", NULL);
    T_NULL(tds_events_free(ev));
    T_INT(tds_events_new(&ev, NULL, "writer", NULL), ==, 0);
    tds_events_emit(ev, "tds.zoho.sync.completed", NULL);
    tds_events_free(ev);
    tds_events_emit(NULL, "tds.zoho.sync.completed", NULL);

    /* A bind that cannot work is an error at start-up. */
    struct tds_bus *bus = NULL;
    T_INT(tds_bus_new(&bus), ==, 0);
    ev = NULL;
    T_INT(tds_events_new(&ev, bus, "writer", "bogus://nowhere"), <, 0);
    T_NULL(ev);
    tds_bus_free(bus);
}

int main(void)
{
    T_RUN(test_emit);
    T_RUN(test_off);
    return 0;
}
