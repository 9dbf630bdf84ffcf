/* notify — the payloads of NOTIFY tds_changes.
 *
 * One jansson object per organization: {"table": [ids…]}. Rendering first
 * tries the full lists and falls back to counts when the text would not fit;
 * the size check is on the rendered text, so escaping is accounted for.
 */
#include "notify.h"

#include <errno.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct tds_notify {
    json_t *orgs;   /* org → {table → [ids]} */
};

int tds_notify_new(struct tds_notify **out)
{
    struct tds_notify *n = calloc(1, sizeof(*n));

    if (!n)
        return -ENOMEM;
    n->orgs = json_object();
    if (!n->orgs) {
        free(n);
        return -ENOMEM;
    }
    *out = n;
    return 0;
}

struct tds_notify *tds_notify_free(struct tds_notify *n)
{
    if (n) {
        json_decref(n->orgs);
        free(n);
    }
    return NULL;
}

void tds_notify_reset(struct tds_notify *n) { json_object_clear(n->orgs); }

int tds_notify_add(struct tds_notify *n, const char *org, const char *table, const char *id)
{
    json_t *o = json_object_get(n->orgs, org);
    json_t *ids;

    if (!o) {
        o = json_object();
        if (!o || json_object_set_new(n->orgs, org, o) != 0)
            return -ENOMEM;
    }
    ids = json_object_get(o, table);
    if (!ids) {
        ids = json_array();
        if (!ids || json_object_set_new(o, table, ids) != 0)
            return -ENOMEM;
    }
    return json_array_append_new(ids, json_string(id)) == 0 ? 0 : -ENOMEM;
}

static char *render(const char *org, json_t *tables, bool counts)
{
    json_t *doc = json_object(), *t = tables;
    char *s;

    if (!doc)
        return NULL;
    if (counts) {
        const char *name;
        json_t *ids;

        t = json_object();
        json_object_foreach(tables, name, ids)
            json_object_set_new(t, name, json_integer((json_int_t)json_array_size(ids)));
        json_object_set_new(doc, "org", json_string(org));
        json_object_set_new(doc, "tables", t);
        json_object_set_new(doc, "truncated", json_true());
    } else {
        json_object_set_new(doc, "org", json_string(org));
        json_object_set(doc, "tables", t);
    }
    s = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return s;
}

int tds_notify_payloads(const struct tds_notify *n, char ***out, size_t *n_out)
{
    size_t cnt = json_object_size(n->orgs), i = 0;
    char **p = calloc(cnt ? cnt : 1, sizeof(*p));
    const char *org;
    json_t *tables;

    if (!p)
        return -ENOMEM;
    json_object_foreach(n->orgs, org, tables) {
        const char *name;
        json_t *ids;
        size_t n_ids = 0;
        char *s;

        /* Each id takes at least 4 bytes ("x",): skip rendering lists that
         * cannot fit. */
        json_object_foreach(tables, name, ids)
            n_ids += json_array_size(ids);
        s = render(org, tables, n_ids * 4 >= TDS_NOTIFY_MAX);
        if (s && strlen(s) >= TDS_NOTIFY_MAX) {
            free(s);
            s = render(org, tables, true);
        }
        if (!s) {
            tds_notify_payloads_free(p, i);
            return -ENOMEM;
        }
        p[i++] = s;
    }
    *out = p;
    *n_out = i;
    return 0;
}

void tds_notify_payloads_free(char **p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(p[i]);
    free(p);
}
