/* server — routing and replies; see server.h.
 *
 * API request order, as Zoho appears to do it: token present → organization
 * given and known → token valid for it → limits (daily 45, minute 44,
 * concurrency 1070) → faults → the endpoint. Every API reply for a known
 * organization carries X-Rate-Limit-Limit/Remaining/Reset. Request bodies are
 * capped at ZS_MAX_BODY; the control API parses them with jansson.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "render.h"

#define ZS_MAX_BODY (1024 * 1024)
#define ZS_MAX_FORM 32
#define ZS_MAX_IDS 200

struct zs_server {
    struct MHD_Daemon *d;
    struct zs_sim *sim;
    uint16_t port;
};

struct req {
    char *body;
    size_t len;
    bool too_big;
};

/* ---- small helpers ---- */

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* In-place url-decoding of a form field. */
static void urldecode_inplace(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '+') {
            *o++ = ' ';
        } else if (*s == '%' && hexv(s[1]) >= 0 && hexv(s[2]) >= 0) {
            *o++ = (char)(hexv(s[1]) * 16 + hexv(s[2]));
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

struct form {
    struct MHD_Connection *c;
    char *buf;
    size_t n;
    char *names[ZS_MAX_FORM], *values[ZS_MAX_FORM];
};

static void form_parse(struct form *f, struct MHD_Connection *c, const struct req *r)
{
    memset(f, 0, sizeof(*f));
    f->c = c;
    if (!r->body || !r->len)
        return;
    f->buf = strndup(r->body, r->len);
    if (!f->buf)
        return;
    for (char *p = f->buf, *next; p && *p && f->n < ZS_MAX_FORM; p = next) {
        next = strchr(p, '&');
        if (next)
            *next++ = '\0';
        char *eq = strchr(p, '=');
        if (!eq)
            continue;
        *eq = '\0';
        urldecode_inplace(p);
        urldecode_inplace(eq + 1);
        f->names[f->n] = p;
        f->values[f->n] = eq + 1;
        f->n++;
    }
}

/* Form body first, then the query string (Zoho's docs show both). */
static const char *form_get(void *ctx, const char *name)
{
    struct form *f = ctx;
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name))
            return f->values[i];
    return MHD_lookup_connection_value(f->c, MHD_GET_ARGUMENT_KIND, name);
}

static const char *qarg(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

/* Whether the comma-separated list csv names id (n bytes). */
static bool csv_has(const char *csv, const char *id, size_t n)
{
    for (const char *p = csv; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !memcmp(p, id, n))
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* Whether the comma-separated lists a and b share an id. */
static bool csv_meet(const char *a, const char *b)
{
    for (const char *p = a; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len && csv_has(b, p, len))
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

static char *zoho_error(int code, const char *msg, size_t *len)
{
    struct zs_jw w;
    zs_jw_init(&w, 128);
    zs_jw_obj(&w);
    zs_jw_kint(&w, "code", code);
    zs_jw_kstr(&w, "message", msg);
    zs_jw_obj_end(&w);
    return zs_jw_take(&w, len);
}

static char *ctl_error(const char *msg, size_t *len)
{
    struct zs_jw w;
    zs_jw_init(&w, 128);
    zs_jw_obj(&w);
    zs_jw_kstr(&w, "error", msg);
    zs_jw_obj_end(&w);
    return zs_jw_take(&w, len);
}

struct reply {
    int status;
    char *body;
    size_t len;
    bool has_limits;
    struct zs_limit_hdr lim;
    bool retry_after;
    bool truncate;
    bool html;
};

struct trunc {
    char *body;
    size_t cut;
};

static ssize_t trunc_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct trunc *t = cls;
    if (pos >= t->cut)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = t->cut - (size_t)pos;
    if (n > max)
        n = max;
    memcpy(buf, t->body + pos, n);
    return (ssize_t)n;
}

static void trunc_free(void *cls)
{
    struct trunc *t = cls;
    free(t->body);
    free(t);
}

static enum MHD_Result send_reply(struct MHD_Connection *c, struct reply *r)
{
    struct MHD_Response *resp = NULL;
    if (!r->body)
        return MHD_NO;
    if (r->truncate && r->len > 1) {
        struct trunc *t = malloc(sizeof(*t));
        if (t) {
            t->body = r->body;
            t->cut = r->len / 2;
            resp = MHD_create_response_from_callback(r->len, 16 * 1024, trunc_read, t,
                                                     trunc_free);
            if (!resp)
                free(t);
            else
                r->body = NULL;
        }
    }
    if (!resp) {
        resp = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
            free(r->body);
            r->body = NULL;
            return MHD_NO;
        }
        r->body = NULL;
    }
    MHD_add_response_header(resp, "Content-Type",
                            r->html ? "text/html" : "application/json;charset=UTF-8");
    MHD_add_response_header(resp, "Server", "ZGS");
    if (zs_clock_offset() != 0) {
        /* libmicrohttpd writes the host's time unless the answer has a Date */
        char date[64];
        time_t t = (time_t)zs_wall_s();
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        MHD_add_response_header(resp, "Date", date);
    }
    if (r->has_limits) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)r->lim.limit);
        MHD_add_response_header(resp, "X-Rate-Limit-Limit", v);
        snprintf(v, sizeof(v), "%lld", (long long)r->lim.remaining);
        MHD_add_response_header(resp, "X-Rate-Limit-Remaining", v);
        snprintf(v, sizeof(v), "%lld", (long long)r->lim.reset_s);
        MHD_add_response_header(resp, "X-Rate-Limit-Reset", v);
        if (r->retry_after && r->status == 429) {
            snprintf(v, sizeof(v), "%lld",
                     (long long)(r->lim.retry_after_s > 0 ? r->lim.retry_after_s : 1));
            MHD_add_response_header(resp, "Retry-After", v);
        }
    }
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result simple(struct MHD_Connection *c, int status, char *body, size_t len)
{
    struct reply r = {.status = status, .body = body, .len = len};
    return send_reply(c, &r);
}

/* Closes the connection with a TCP reset instead of a reply. */
static enum MHD_Result reset_connection(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        struct linger l = {1, 0};
        setsockopt(ci->connect_fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    return MHD_NO;
}

/* ---- OAuth ---- */

static enum MHD_Result handle_token(struct zs_server *srv, struct MHD_Connection *c,
                                    const char *url, const struct req *rq)
{
    struct zs_sim *s = srv->sim;
    struct zs_faults f;
    zs_sim_get_faults(s, &f);
    if (f.token_hang_ms > 0)
        zs_sim_sleep(s, f.token_hang_ms);
    struct form fm;
    form_parse(&fm, c, rq);
    char *body = NULL;
    int status;
    if (!strcmp(url, "/oauth/v2/token/revoke"))
        status = zs_auth_revoke(s->auth, form_get(&fm, "token"), &body);
    else
        status = zs_auth_token(s->auth, form_get, &fm, s->api_domain, zs_now_ms(), &body);
    free(fm.buf);
    if (status < 0 || !body)
        return MHD_NO;
    return simple(c, status, body, strlen(body));
}

/* ---- API ---- */

static const char *ent_title(enum zs_ent e)
{
    static const char *const t[] = {"Warehouse", "Item group", "Item", "Contact", "Sales Order",
                                    "Invoice"};
    return t[e];
}

static int parse_pos(const char *v, int64_t max, int64_t *out)
{
    if (!v)
        return 1;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < 1 || n > max)
        return -EINVAL;
    *out = n;
    return 0;
}

struct api {
    struct zs_sim *s;
    struct zs_org *o;
    struct MHD_Connection *c;
    unsigned product;
    struct reply *r;
};

static void api_error(struct api *a, int status, int code, const char *msg)
{
    a->r->status = status;
    a->r->body = zoho_error(code, msg, &a->r->len);
    if (a->o) {
        struct zs_org_stats *st = &a->s->stats[a->o->org_index];
        if (status == 404)
            atomic_fetch_add(&st->r404, 1);
        else if (status == 400)
            atomic_fetch_add(&st->r400, 1);
    }
}

static int sort_parse(enum zs_ent e, const char *col, enum zs_sort *out)
{
    static const char *const name_cols[] = {"name", "item_name", "group_name", "contact_name",
                                            "customer_name", "warehouse_name", "location_name",
                                            "invoice_number", "salesorder_number", NULL};
    (void)e;
    if (!col || !strcmp(col, "created_time") || !strcmp(col, "date")) {
        *out = ZS_SORT_CREATED;
        return 0;
    }
    if (!strcmp(col, "last_modified_time")) {
        *out = ZS_SORT_MODIFIED;
        return 0;
    }
    for (int i = 0; name_cols[i]; i++)
        if (!strcmp(col, name_cols[i])) {
            *out = ZS_SORT_NAME;
            return 0;
        }
    return -EINVAL;
}

static void api_list(struct api *a, enum zs_ent e, bool as_location)
{
    struct MHD_Connection *c = a->c;
    struct zs_page_req q = {.page = 1, .per_page = 200};
    int64_t v;
    int rc = parse_pos(qarg(c, "page"), 1000000000, &v);
    if (rc < 0)
        return api_error(a, 400, 2, "Invalid value passed for page");
    if (rc == 0)
        q.page = (size_t)v;
    rc = parse_pos(qarg(c, "per_page"), 1000000000, &v);
    if (rc < 0)
        return api_error(a, 400, 2, "Invalid value passed for per_page");
    if (rc == 0)
        q.per_page = v > 200 ? 200 : (size_t)v;
    const char *col = qarg(c, "sort_column");
    if (col && !*col)
        col = NULL;
    if (sort_parse(e, col, &q.sort))
        return api_error(a, 400, 2, "Invalid value passed for sort_column");
    const char *ord = qarg(c, "sort_order");
    if (ord && *ord) {
        if (!strcmp(ord, "D") || !strcmp(ord, "descending"))
            q.desc = true;
        else if (strcmp(ord, "A") && strcmp(ord, "ascending"))
            return api_error(a, 400, 2, "Invalid value passed for sort_order");
    }
    struct zs_faults f;
    zs_sim_get_faults(a->s, &f);
    const char *lmt = qarg(c, "last_modified_time");
    if (lmt && *lmt) {
        if (zs_parse_time(lmt, &q.after_s))
            return api_error(a, 400, 2, "Invalid value passed for last_modified_time");
        if (a->s->cfg.modified_local && strlen(lmt) >= 19) {
            /* the wall clock as written, taken in the organization's zone */
            char wall[20];
            memcpy(wall, lmt, 19);
            wall[19] = '\0';
            if (zs_parse_time(wall, &q.after_s))
                return api_error(a, 400, 2, "Invalid value passed for last_modified_time");
            q.after_s -= (int64_t)a->o->tz_min * 60;
        }
        if (a->s->cfg.modified_ge)
            q.after_s--; /* whole seconds: >= t is > t-1 */
        /* an endpoint that takes the filter and lists everything (ZOHO.md
         * reports one) */
        q.has_after = !(f.ignore_filter_mask & (1u << e));
    }
    uint32_t *idx = malloc(q.per_page * sizeof(*idx));
    if (!idx)
        return;
    struct zs_org *o = a->o;
    struct zs_jw w;
    zs_jw_init(&w, 1024 + q.per_page * (e == ZS_ITEMS ? 2200 : 1200));
    zs_jw_obj(&w);
    zs_jw_kint(&w, "code", 0);
    zs_jw_kstr(&w, "message", "success");
    zs_jw_key(&w, as_location ? "locations" : zs_ent_list_key(e));
    zs_jw_arr(&w);
    size_t n = 0;
    bool more = false;
    pthread_rwlock_rdlock(&o->lock);
    rc = zs_org_page(o, e, &q, idx, &n, &more);
    for (size_t i = 0; rc == 0 && i < n; i++)
        zs_render(&w, o, e, &o->t[e].recs[idx[i]], false, as_location);
    if (rc == 0 && n > 1 && (f.repeat_mask & (1u << e)))
        zs_render(&w, o, e, &o->t[e].recs[idx[0]], false, as_location); /* listed twice */
    pthread_rwlock_unlock(&o->lock);
    free(idx);
    zs_jw_arr_end(&w);
    zs_jw_key(&w, "page_context");
    zs_jw_obj(&w);
    zs_jw_kint(&w, "page", (int64_t)q.page);
    zs_jw_kint(&w, "per_page", (int64_t)q.per_page);
    zs_jw_kbool(&w, "has_more_page", more);
    zs_jw_kstr(&w, "report_name", as_location ? "Locations" : zs_ent_report_name(e));
    const char *flt = qarg(c, "filter_by");
    zs_jw_kstr(&w, "applied_filter", flt && *flt ? flt : "Status.All");
    zs_jw_key(&w, "custom_fields");
    zs_jw_arr(&w);
    zs_jw_arr_end(&w);
    zs_jw_kstr(&w, "sort_column", col ? col : "created_time");
    zs_jw_kstr(&w, "sort_order", q.desc ? "D" : "A");
    zs_jw_key(&w, "search_criteria");
    zs_jw_arr(&w);
    if (q.has_after) {
        zs_jw_obj(&w);
        zs_jw_kstr(&w, "column_name", "last_modified_time");
        zs_jw_kstr(&w, "search_text", lmt);
        zs_jw_kstr(&w, "comparator", "greater_than");
        zs_jw_obj_end(&w);
    }
    zs_jw_arr_end(&w);
    zs_jw_obj_end(&w);
    zs_jw_obj_end(&w);
    if (rc) {
        zs_jw_deinit(&w);
        return api_error(a, 500, 1000, "Internal Error");
    }
    a->r->status = 200;
    a->r->body = zs_jw_take(&w, &a->r->len);
}

static void api_detail(struct api *a, enum zs_ent e, const char *id, bool as_location)
{
    struct zs_org *o = a->o;
    struct zs_jw w;
    zs_jw_init(&w, 8192);
    pthread_rwlock_rdlock(&o->lock);
    struct zs_rec *r = zs_org_find(o, e, id);
    if (r) {
        zs_jw_obj(&w);
        zs_jw_kint(&w, "code", 0);
        zs_jw_kstr(&w, "message", "success");
        zs_jw_key(&w, as_location ? "location" : zs_ent_detail_key(e));
        struct zs_faults f = {0};
        if (e == ZS_ITEMS && !a->s->cfg.item_no_stock)
            zs_sim_get_faults(a->s, &f);
        if (e == ZS_ITEMS && (a->s->cfg.item_no_stock || csv_has(f.nostock_id, id, strlen(id))))
            zs_render_item_without_stock(&w, o, r);
        else
            zs_render(&w, o, e, r, true, as_location);
        zs_jw_obj_end(&w);
    }
    pthread_rwlock_unlock(&o->lock);
    if (!r) {
        char msg[64];
        zs_jw_deinit(&w);
        snprintf(msg, sizeof(msg), "%s does not exist.", ent_title(e));
        return api_error(a, 404, 1002, msg);
    }
    a->r->status = 200;
    a->r->body = zs_jw_take(&w, &a->r->len);
}

/* Takes one of the HTML 404s the faults ask for; false once none is left. */
static bool take_html404(struct zs_sim *s)
{
    pthread_mutex_lock(&s->faults_lock);
    bool take = s->faults.html404_itemdetails > 0;
    if (take)
        s->faults.html404_itemdetails--;
    pthread_mutex_unlock(&s->faults_lock);
    return take;
}

/* GET /itemdetails?item_ids=a,b,c → detail records in one call (Inventory
 * and Books); ids that do not exist are left out, or, with
 * --itemdetails-missing error, make the whole call 404 code 1002 (what
 * Zoho does is not known). */
static void api_itemdetails(struct api *a)
{
    const char *ids = qarg(a->c, "item_ids");
    if (!ids || !*ids)
        return api_error(a, 400, 2, "Invalid value passed for item_ids");
    char *copy = strdup(ids);
    if (!copy)
        return;
    char *list[ZS_MAX_IDS];
    size_t n = 0;
    for (char *p = copy, *next; p; p = next) {
        next = strchr(p, ',');
        if (next)
            *next++ = '\0';
        if (!*p)
            continue;
        if (n == ZS_MAX_IDS) {
            free(copy);
            return api_error(a, 400, 2, "Invalid value passed for item_ids");
        }
        list[n++] = p;
    }
    struct zs_org *o = a->o;
    struct zs_jw w;
    zs_jw_init(&w, 1024 + n * 4096);
    zs_jw_obj(&w);
    zs_jw_kint(&w, "code", 0);
    zs_jw_kstr(&w, "message", "success");
    zs_jw_key(&w, "items");
    zs_jw_arr(&w);
    bool missing = false;
    pthread_rwlock_rdlock(&o->lock);
    for (size_t i = 0; i < n && !missing; i++) {
        struct zs_rec *r = zs_org_find(o, ZS_ITEMS, list[i]);
        if (r && a->s->cfg.itemdetails_no_stock)
            zs_render_item_without_stock(&w, o, r);
        else if (r)
            zs_render(&w, o, ZS_ITEMS, r, true, false);
        else
            missing = a->s->cfg.itemdetails_missing_error;
    }
    pthread_rwlock_unlock(&o->lock);
    free(copy);
    if (missing) {
        zs_jw_deinit(&w);
        return api_error(a, 404, 1002, "Item does not exist.");
    }
    zs_jw_arr_end(&w);
    zs_jw_obj_end(&w);
    a->r->status = 200;
    a->r->body = zs_jw_take(&w, &a->r->len);
}

static void api_organizations(struct zs_sim *s, unsigned product, struct reply *r)
{
    struct zs_jw w;
    zs_jw_init(&w, 512);
    zs_jw_obj(&w);
    zs_jw_kint(&w, "code", 0);
    zs_jw_kstr(&w, "message", "success");
    zs_jw_key(&w, "organizations");
    zs_jw_arr(&w);
    for (size_t i = 0; i < s->n_orgs; i++) {
        struct zs_org *o = &s->orgs[i];
        if (!(o->products & product))
            continue;
        char tz[16];
        int m = o->tz_min < 0 ? -o->tz_min : o->tz_min;
        snprintf(tz, sizeof(tz), "%c%02d%02d", o->tz_min < 0 ? '-' : '+', m / 60, m % 60);
        zs_jw_obj(&w);
        zs_jw_kstr(&w, "organization_id", o->id);
        zs_jw_kstr(&w, "name", o->name);
        zs_jw_kstr(&w, "time_zone", o->tz_min == 330 ? "Asia/Calcutta"
                                    : o->tz_min == 180 ? "Asia/Riyadh" : tz);
        zs_jw_kstr(&w, "time_zone_offset", tz);
        zs_jw_kstr(&w, "currency_code", o->tz_min == 330 ? "INR" : "SAR");
        zs_jw_kbool(&w, "is_default_org", i == 0);
        zs_jw_kstr(&w, "plan_name", "Premium");
        zs_jw_kbool(&w, "is_location_enabled", o->locations);
        zs_jw_obj_end(&w);
    }
    zs_jw_arr_end(&w);
    zs_jw_obj_end(&w);
    r->status = 200;
    r->body = zs_jw_take(&w, &r->len);
}

static const char *bearer(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h)
        return NULL;
    if (!strncasecmp(h, "Zoho-oauthtoken ", 16))
        return h + 16;
    if (!strncasecmp(h, "Bearer ", 7))
        return h + 7;
    return NULL;
}

/* Splits rest ("/items/123") into an entity route. Returns 0 and fills the
 * outputs, or -ENOENT. */
static int route(const char *rest, unsigned product, enum zs_ent *e, bool *loc, const char **id)
{
    static const struct {
        const char *prefix;
        enum zs_ent e;
        bool loc;
        unsigned products;
    } routes[] = {
        {"/settings/warehouses", ZS_WAREHOUSES, false, ZS_INVENTORY | ZS_BOOKS},
        {"/locations", ZS_WAREHOUSES, true, ZS_INVENTORY | ZS_BOOKS},
        {"/itemgroups", ZS_ITEM_GROUPS, false, ZS_INVENTORY},
        {"/items", ZS_ITEMS, false, ZS_INVENTORY | ZS_BOOKS},
        {"/contacts", ZS_CONTACTS, false, ZS_INVENTORY | ZS_BOOKS},
        {"/salesorders", ZS_SALESORDERS, false, ZS_INVENTORY | ZS_BOOKS},
        {"/invoices", ZS_INVOICES, false, ZS_INVENTORY | ZS_BOOKS},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        size_t l = strlen(routes[i].prefix);
        if (strncmp(rest, routes[i].prefix, l) || !(routes[i].products & product))
            continue;
        const char *t = rest + l;
        if (*t == '\0' || (t[0] == '/' && t[1] == '\0')) {
            *id = NULL;
        } else if (t[0] == '/' && !strchr(t + 1, '/')) {
            *id = t + 1;
        } else {
            continue;
        }
        *e = routes[i].e;
        *loc = routes[i].loc;
        return 0;
    }
    return -ENOENT;
}

static enum MHD_Result handle_api(struct zs_server *srv, struct MHD_Connection *c,
                                  const char *method, unsigned product, const char *rest)
{
    struct zs_sim *s = srv->sim;
    struct reply r = {.status = 500, .retry_after = s->cfg.retry_after};
    struct api a = {.s = s, .c = c, .product = product, .r = &r};
    const char *tok = bearer(c);
    const char *oid = qarg(c, "organization_id");
    if (!oid || !*oid)
        oid = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                          product == ZS_BOOKS ? "X-com-zoho-books-organizationid"
                                                              : "X-com-zoho-inventory-organizationid");
    struct zs_org *o = oid ? zs_sim_org(s, oid) : NULL;
    a.o = o;
    if (o) {
        /* a peek so refusals below still carry the quota headers */
        struct zs_limits *l = &s->limits[o->org_index];
        pthread_mutex_lock(&l->lock);
        int64_t daily = l->daily > 0 ? l->daily : 1000000000LL;
        r.lim.limit = daily;
        r.lim.remaining = daily - l->day_count < 0 ? 0 : daily - l->day_count;
        int64_t left = l->day_start_ms + l->day_ms - zs_now_ms();
        r.lim.reset_s = left <= 0 ? 0 : (left + 999) / 1000;
        pthread_mutex_unlock(&l->lock);
        r.has_limits = true;
    }
    if (strcmp(method, "GET")) {
        api_error(&a, 405, 37, "The HTTP method is not allowed for the requested resource");
        return send_reply(c, &r);
    }
    if (!tok || zs_auth_check(s->auth, tok, o ? o->org_index : -1, zs_now_ms())) {
        /* a token for another organization is as good as none */
        if (o)
            atomic_fetch_add(&s->stats[o->org_index].r401, 1);
        r.status = 401;
        r.body = zoho_error(57, "You are not authorized to perform this operation", &r.len);
        return send_reply(c, &r);
    }
    if (!strcmp(rest, "/organizations") || !strcmp(rest, "/organizations/")) {
        api_organizations(s, product, &r);
        return send_reply(c, &r);
    }
    if (!oid || !*oid) {
        r.status = 400;
        r.body = zoho_error(2, "Invalid value passed for organization_id", &r.len);
        return send_reply(c, &r);
    }
    if (!o || !(o->products & product)) {
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "This user is not associated with the CompanyID/CompanyName:%.40s.", oid);
        r.status = 400;
        r.has_limits = o != NULL;
        r.body = zoho_error(6041, msg, &r.len);
        return send_reply(c, &r);
    }
    struct zs_org_stats *st = &s->stats[o->org_index];
    struct zs_limits *lim = &s->limits[o->org_index];
    int code = zs_limits_enter(lim, zs_now_ms(), &r.lim);
    if (code) {
        r.status = 429;
        if (code == 45) {
            char msg[160];
            atomic_fetch_add(&st->r429_45, 1);
            snprintf(msg, sizeof(msg),
                     "The API call for this organization has exceeded the maximum call rate "
                     "limit of %lld.",
                     (long long)r.lim.limit);
            r.body = zoho_error(45, msg, &r.len);
        } else if (code == 44) {
            atomic_fetch_add(&st->r429_44, 1);
            r.body = zoho_error(44,
                                "For security reasons your organization has been blocked as it "
                                "have exceeded the maximum number of requests per minute that "
                                "can originate from an organization.",
                                &r.len);
        } else {
            atomic_fetch_add(&st->r429_1070, 1);
            r.body = zoho_error(1070,
                                "You have reached the maximum number of in process requests "
                                "allowed. Kindly try again after some time.",
                                &r.len);
        }
        return send_reply(c, &r);
    }
    atomic_fetch_add(&st->requests, 1);
    enum MHD_Result ret;
    struct zs_faults f;
    zs_sim_get_faults(s, &f);
    if (f.p_slow > 0 && zs_sim_rand(s) < f.p_slow) {
        atomic_fetch_add(&st->faults, 1);
        zs_sim_sleep(s, f.slow_ms);
    }
    if (f.deny_mask) {
        /* A scope the token lacks: this entity is refused whatever the token,
         * while the same token works for the others. */
        enum zs_ent de;
        bool dloc = false;
        const char *did = NULL;
        bool hit = !strcmp(rest, "/itemdetails") ? (f.deny_mask & (1u << ZS_ITEMS)) != 0
                   : route(rest, product, &de, &dloc, &did) == 0 && (f.deny_mask & (1u << de));
        if (hit) {
            atomic_fetch_add(&st->denied, 1);
            r.status = f.deny_status ? f.deny_status : 401;
            r.body = zoho_error(57, "You are not authorized to perform this operation", &r.len);
            ret = send_reply(c, &r);
            zs_limits_leave(lim);
            return ret;
        }
    }
    if (!strcmp(rest, "/itemdetails") && f.html404_itemdetails > 0 && take_html404(s)) {
        /* A page from something between the client and Zoho (a proxy or
         * load balancer in a bad minute), not Zoho's JSON: it says nothing
         * about whether the path exists. */
        atomic_fetch_add(&st->faults, 1);
        r.status = 404;
        r.html = true;
        r.body = strdup("<html><body><h1>404 Not Found</h1></body></html>");
        r.len = r.body ? strlen(r.body) : 0;
        ret = send_reply(c, &r);
        zs_limits_leave(lim);
        return ret;
    }
    if (f.refuse_id[0]) {
        /* One record Zoho cannot serve: its own GET fails every time, and
         * so does a GET /itemdetails that names it (the answer holds every
         * record or none), while the other records are served. */
        enum zs_ent re;
        bool rloc = false;
        const char *rid = NULL;
        bool hit = !strcmp(rest, "/itemdetails")
                       ? f.refuse_status != 200 && csv_meet(qarg(c, "item_ids"), f.refuse_id)
                       : route(rest, product, &re, &rloc, &rid) == 0 && rid &&
                             csv_has(f.refuse_id, rid, strlen(rid));
        if (hit) {
            atomic_fetch_add(&st->faults, 1);
            r.status = f.refuse_status == 500 || f.refuse_status == 200 ? f.refuse_status : 400;
            /* 200: Zoho's success without the record */
            r.body = r.status == 500   ? zoho_error(1000, "Internal Error", &r.len)
                     : r.status == 200 ? zoho_error(0, "success", &r.len)
                                       : zoho_error(2, "Invalid value passed", &r.len);
            ret = send_reply(c, &r);
            zs_limits_leave(lim);
            return ret;
        }
    }
    double x = zs_sim_rand(s);
    if (x < f.p_reset) {
        atomic_fetch_add(&st->faults, 1);
        zs_limits_leave(lim);
        return reset_connection(c);
    }
    x -= f.p_reset;
    if (x < f.p500 + f.p502 + f.p503) {
        atomic_fetch_add(&st->faults, 1);
        if (x < f.p500) {
            r.status = 500;
            r.body = zoho_error(1000, "Internal Error", &r.len);
        } else {
            r.status = x < f.p500 + f.p502 ? 502 : 503;
            r.html = true;
            r.body = strdup(r.status == 502 ? "<html><body><h1>502 Bad Gateway</h1></body></html>"
                                            : "<html><body><h1>503 Service Temporarily "
                                              "Unavailable</h1></body></html>");
            r.len = r.body ? strlen(r.body) : 0;
        }
        ret = send_reply(c, &r);
        zs_limits_leave(lim);
        return ret;
    }
    x -= f.p500 + f.p502 + f.p503;
    /* Zoho refusals: an expired token under HTTP 200, an invalid value */
    if (x < f.p_expired_token_200 + f.p400) {
        bool expired = x < f.p_expired_token_200;

        atomic_fetch_add(&st->faults, 1);
        r.status = expired ? 200 : 400;
        r.body = expired ? zoho_error(57, "You are not authorized to perform this operation", &r.len)
                         : zoho_error(2, "Invalid value passed", &r.len);
        ret = send_reply(c, &r);
        zs_limits_leave(lim);
        return ret;
    }
    x -= f.p_expired_token_200 + f.p400;
    if (x < f.p_truncate) {
        atomic_fetch_add(&st->faults, 1);
        r.truncate = true;
    }

    enum zs_ent e;
    bool loc = false;
    const char *id = NULL;
    if (!strcmp(rest, "/itemdetails") && !o->no_itemdetails) {
        atomic_fetch_add(&st->itemdetails, 1);
        api_itemdetails(&a);
    } else if (route(rest, product, &e, &loc, &id) == 0 && (!loc || o->locations)) {
        if (loc)
            atomic_fetch_add(&st->locations, 1);
        atomic_fetch_add(&st->by_ep[e][id ? ZS_EP_DETAIL : ZS_EP_LIST], 1);
        if (id)
            api_detail(&a, e, id, loc);
        else
            api_list(&a, e, loc);
    } else {
        atomic_fetch_add(&st->other, 1);
        api_error(&a, 404, 5, "Invalid URL Passed");
    }
    ret = send_reply(c, &r);
    zs_limits_leave(lim);
    return ret;
}

/* ---- control API ---- */

static struct zs_org *ctl_org(struct zs_sim *s, json_t *j)
{
    json_t *v = json_object_get(j, "org");
    if (json_is_string(v))
        return zs_sim_org(s, json_string_value(v));
    if (json_is_integer(v)) {
        char b[32];
        snprintf(b, sizeof(b), "%lld", (long long)json_integer_value(v));
        return zs_sim_org(s, b);
    }
    return NULL;
}

static int64_t jint(json_t *j, const char *k, int64_t def)
{
    json_t *v = json_object_get(j, k);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* out-of-range doubles would be undefined behaviour when converted */
        if (d != d || d > 9.0e18 || d < -9.0e18)
            return def;
        return (int64_t)d;
    }
    if (json_is_true(v))
        return 1;
    if (json_is_false(v))
        return 0;
    return def;
}

static double jnum(json_t *j, const char *k, double def)
{
    json_t *v = json_object_get(j, k);
    return json_is_number(v) ? json_number_value(v) : def;
}

static void stats_json(struct zs_sim *s, struct zs_jw *w)
{
    struct zs_auth_stats as;
    zs_auth_stats(s->auth, &as);
    zs_jw_obj(w);
    zs_jw_key(w, "token");
    zs_jw_obj(w);
    zs_jw_kint(w, "refreshes", (int64_t)as.refreshes);
    zs_jw_kint(w, "code_grants", (int64_t)as.codes);
    zs_jw_kint(w, "errors", (int64_t)as.errors);
    zs_jw_kint(w, "access_denied", (int64_t)as.access_denied);
    zs_jw_kint(w, "revokes", (int64_t)as.revokes);
    zs_jw_kint(w, "live_tokens", (int64_t)as.live_tokens);
    zs_jw_key(w, "refresh_tokens");
    {
        const char *ids[64];
        size_t n = s->n_orgs < 64 ? s->n_orgs : 64;
        for (size_t i = 0; i < n; i++)
            ids[i] = s->orgs[i].id;
        zs_auth_tokens_json(s->auth, w, ids, n, zs_now_ms());
    }
    zs_jw_obj_end(w);
    zs_jw_kint(w, "control_requests", (int64_t)atomic_load(&s->ctl_requests));
    zs_jw_kint(w, "unknown_requests", (int64_t)atomic_load(&s->unknown_requests));
    uint64_t t44 = 0, t45 = 0, t1070 = 0, treq = 0;
    zs_jw_key(w, "orgs");
    zs_jw_obj(w);
    for (size_t i = 0; i < s->n_orgs; i++) {
        struct zs_org_stats *st = &s->stats[i];
        char k[64];
        zs_jw_key(w, s->orgs[i].id);
        zs_jw_obj(w);
        zs_jw_kint(w, "requests", (int64_t)atomic_load(&st->requests));
        treq += atomic_load(&st->requests);
        zs_jw_key(w, "endpoints");
        zs_jw_obj(w);
        for (int e = 0; e < ZS_ENT_COUNT; e++) {
            snprintf(k, sizeof(k), "%s.list", zs_ent_name((enum zs_ent)e));
            zs_jw_kint(w, k, (int64_t)atomic_load(&st->by_ep[e][ZS_EP_LIST]));
            snprintf(k, sizeof(k), "%s.detail", zs_ent_name((enum zs_ent)e));
            zs_jw_kint(w, k, (int64_t)atomic_load(&st->by_ep[e][ZS_EP_DETAIL]));
        }
        zs_jw_kint(w, "locations", (int64_t)atomic_load(&st->locations));
        zs_jw_kint(w, "itemdetails", (int64_t)atomic_load(&st->itemdetails));
        zs_jw_kint(w, "other", (int64_t)atomic_load(&st->other));
        zs_jw_obj_end(w);
        zs_jw_key(w, "429");
        zs_jw_obj(w);
        zs_jw_kint(w, "44", (int64_t)atomic_load(&st->r429_44));
        zs_jw_kint(w, "45", (int64_t)atomic_load(&st->r429_45));
        zs_jw_kint(w, "1070", (int64_t)atomic_load(&st->r429_1070));
        zs_jw_obj_end(w);
        t44 += atomic_load(&st->r429_44);
        t45 += atomic_load(&st->r429_45);
        t1070 += atomic_load(&st->r429_1070);
        zs_jw_kint(w, "401", (int64_t)atomic_load(&st->r401));
        zs_jw_kint(w, "404", (int64_t)atomic_load(&st->r404));
        zs_jw_kint(w, "400", (int64_t)atomic_load(&st->r400));
        zs_jw_kint(w, "faults", (int64_t)atomic_load(&st->faults));
        zs_jw_kint(w, "denied", (int64_t)atomic_load(&st->denied));
        zs_jw_kint(w, "peak_concurrency", zs_limits_peak(&s->limits[i]));
        {
            int64_t counts[ZS_WINDOWS_KEPT], seq;
            size_t n = zs_limits_windows(&s->limits[i], zs_now_ms(), counts, ZS_WINDOWS_KEPT,
                                         &seq);

            zs_jw_key(w, "minutes");
            zs_jw_obj(w);
            zs_jw_kint(w, "finished", seq);
            zs_jw_key(w, "admitted");
            zs_jw_arr(w);
            for (size_t k = 0; k < n; k++)
                zs_jw_int(w, counts[k]);
            zs_jw_arr_end(w);
            zs_jw_obj_end(w);
        }
        zs_jw_kint(w, "token_refreshes", (int64_t)zs_auth_org_refreshes(s->auth, (int)i));
        zs_jw_kint(w, "mutations", (int64_t)atomic_load(&st->mutations));
        zs_jw_kint(w, "stream_mutations", (int64_t)atomic_load(&st->stream_mutations));
        pthread_mutex_lock(&s->limits[i].lock);
        zs_jw_kint(w, "daily_used", s->limits[i].day_count);
        pthread_mutex_unlock(&s->limits[i].lock);
        struct zs_hook_stats hs;
        zs_hooks_stats(s->hooks, i, &hs);
        zs_jw_key(w, "webhooks");
        zs_jw_obj(w);
        zs_jw_kint(w, "queued", (int64_t)hs.queued);
        zs_jw_kint(w, "delivered", (int64_t)hs.delivered);
        zs_jw_kint(w, "attempts", (int64_t)hs.attempts);
        zs_jw_kint(w, "failed_attempts", (int64_t)hs.failed_attempts);
        zs_jw_kint(w, "given_up", (int64_t)hs.given_up);
        zs_jw_kint(w, "dropped", (int64_t)hs.dropped);
        zs_jw_kint(w, "pending", (int64_t)hs.pending);
        zs_jw_obj_end(w);
        zs_jw_obj_end(w);
    }
    zs_jw_obj_end(w);
    zs_jw_kint(w, "api_requests", (int64_t)treq);
    zs_jw_key(w, "totals");
    zs_jw_obj(w);
    zs_jw_kint(w, "requests", (int64_t)treq);
    zs_jw_key(w, "429");
    zs_jw_obj(w);
    zs_jw_kint(w, "44", (int64_t)t44);
    zs_jw_kint(w, "45", (int64_t)t45);
    zs_jw_kint(w, "1070", (int64_t)t1070);
    zs_jw_obj_end(w);
    zs_jw_obj_end(w);
    zs_jw_obj_end(w);
}

static void reset_stats(struct zs_sim *s)
{
    for (size_t i = 0; i < s->n_orgs; i++) {
        struct zs_org_stats *st = &s->stats[i];
        atomic_store(&st->requests, 0);
        for (int e = 0; e < ZS_ENT_COUNT; e++)
            for (int k = 0; k < ZS_EP_KINDS; k++)
                atomic_store(&st->by_ep[e][k], 0);
        atomic_store(&st->locations, 0);
        atomic_store(&st->itemdetails, 0);
        atomic_store(&st->other, 0);
        atomic_store(&st->r429_44, 0);
        atomic_store(&st->r429_45, 0);
        atomic_store(&st->r429_1070, 0);
        atomic_store(&st->r401, 0);
        atomic_store(&st->r404, 0);
        atomic_store(&st->r400, 0);
        atomic_store(&st->faults, 0);
        atomic_store(&st->denied, 0);
        atomic_store(&st->mutations, 0);
        atomic_store(&st->stream_mutations, 0);
        zs_limits_reset_peak(&s->limits[i]);
    }
    atomic_store(&s->ctl_requests, 0);
    atomic_store(&s->unknown_requests, 0);
    zs_auth_reset_stats(s->auth);
    zs_hooks_reset_stats(s->hooks);
}

static const char *const invalid_names[ZS_INVALID_KINDS] = {
    "valid", "bad_id", "bad_number", "bad_date", "bad_modified", "bad_utf8_id"};

/* GET /_sim/truth/{org}/{entity}[?offset=&limit=&form=list] */
static void ctl_truth(struct zs_sim *s, struct MHD_Connection *c, const char *path,
                      struct reply *r)
{
    char org[64], ent[64];
    const char *slash = strchr(path, '/');
    if (!slash || (size_t)(slash - path) >= sizeof(org) || strlen(slash + 1) >= sizeof(ent)) {
        r->status = 404;
        r->body = ctl_error("use /_sim/truth/{org}/{entity}", &r->len);
        return;
    }
    memcpy(org, path, (size_t)(slash - path));
    org[slash - path] = '\0';
    memcpy(ent, slash + 1, strlen(slash + 1) + 1);
    struct zs_org *o = zs_sim_org(s, org);
    int e = zs_ent_parse(ent);
    if (!o || e < 0) {
        r->status = 404;
        r->body = ctl_error(!o ? "unknown org" : "unknown entity", &r->len);
        return;
    }
    int64_t off = 0, lim = INT64_MAX;
    const char *v;
    if ((v = qarg(c, "offset")))
        off = strtoll(v, NULL, 10);
    if ((v = qarg(c, "limit")))
        lim = strtoll(v, NULL, 10);
    if (off < 0)
        off = 0;
    if (lim < 0)
        lim = 0;
    const char *form = qarg(c, "form");
    bool detail = !form || strcmp(form, "list");
    bool as_loc = !strcmp(ent, "locations");
    struct zs_jw w;
    pthread_rwlock_rdlock(&o->lock);
    struct zs_table *t = &o->t[e];
    size_t want = (size_t)(lim < (int64_t)t->n ? lim : (int64_t)t->n);
    size_t hint = 4096 + want * (detail ? 3000 : 1500);
    zs_jw_init(&w, hint < ((size_t)64 << 20) ? hint : ((size_t)64 << 20));
    zs_jw_obj(&w);
    zs_jw_kstr(&w, "org", o->id);
    zs_jw_kstr(&w, "entity", zs_ent_name((enum zs_ent)e));
    zs_jw_kstr(&w, "id_field", as_loc ? "location_id" : zs_ent_id_field((enum zs_ent)e));
    zs_jw_kstr(&w, "detail_key", zs_ent_detail_key((enum zs_ent)e));
    zs_jw_kstr(&w, "stock", o->locations ? "locations" : "warehouses");
    size_t live = 0;
    for (size_t i = 0; i < t->n; i++)
        live += !t->recs[i].deleted;
    zs_jw_kint(&w, "count", (int64_t)live);
    zs_jw_key(&w, "records");
    zs_jw_arr(&w);
    int64_t k = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->recs[i].deleted)
            continue;
        if (k++ < off || k - off > lim)
            continue;
        zs_render(&w, o, (enum zs_ent)e, &t->recs[i], detail, as_loc);
    }
    zs_jw_arr_end(&w);
    zs_jw_key(&w, "deleted");
    zs_jw_arr(&w);
    for (size_t i = 0; i < t->n; i++) {
        if (!t->recs[i].deleted)
            continue;
        char id[32], tm[32];
        zs_render_id(id, &t->recs[i]);
        zs_fmt_time(tm, t->recs[i].modified_s, o->tz_min);
        zs_jw_obj(&w);
        zs_jw_kstr(&w, "id", id);
        zs_jw_kstr(&w, "deleted_time", tm);
        zs_jw_obj_end(&w);
    }
    zs_jw_arr_end(&w);
    zs_jw_key(&w, "invalid");
    zs_jw_arr(&w);
    for (size_t i = 0; i < t->n; i++) {
        if (!t->recs[i].invalid)
            continue;
        char id[32];
        zs_render_id(id, &t->recs[i]);
        zs_jw_obj(&w);
        zs_jw_kstr(&w, "id", id);
        zs_jw_kstr(&w, "kind", invalid_names[t->recs[i].invalid]);
        zs_jw_kbool(&w, "deleted", t->recs[i].deleted);
        zs_jw_obj_end(&w);
    }
    zs_jw_arr_end(&w);
    zs_jw_obj_end(&w);
    pthread_rwlock_unlock(&o->lock);
    r->status = 200;
    r->body = zs_jw_take(&w, &r->len);
}

#define MAX_MUTATE 100000

static void ctl_mutate(struct zs_sim *s, json_t *j, struct reply *r)
{
    struct zs_org *o = ctl_org(s, j);
    json_t *ev = json_object_get(j, "entity");
    int e = json_is_string(ev) ? zs_ent_parse(json_string_value(ev)) : -1;
    if (!o || e < 0) {
        r->status = 400;
        r->body = ctl_error(!o ? "unknown or missing org" : "unknown or missing entity", &r->len);
        return;
    }
    static const char *const keys[ZS_MUT_OPS] = {
        [ZS_MUT_UPDATE] = "update", [ZS_MUT_CREATE] = "create", [ZS_MUT_DELETE] = "delete"};
    long n[ZS_MUT_OPS];
    for (int k = 0; k < ZS_MUT_OPS; k++) {
        int64_t v = jint(j, keys[k], 0);
        if (v < 0 || v > MAX_MUTATE || (e == ZS_WAREHOUSES && k != ZS_MUT_UPDATE && v > 0)) {
            r->status = 400;
            r->body = ctl_error(e == ZS_WAREHOUSES ? "warehouses can only be updated"
                                                   : "count out of range",
                                &r->len);
            return;
        }
        n[k] = (long)v;
    }
    json_t *mv = json_object_get(j, "moves_stock");
    if (mv && !json_is_boolean(mv)) {
        r->status = 400;
        r->body = ctl_error("moves_stock must be true or false", &r->len);
        return;
    }
    if (json_is_true(mv) && e != ZS_INVOICES && e != ZS_SALESORDERS) {
        r->status = 400;
        r->body = ctl_error("moves_stock is for invoices and sales_orders only", &r->len);
        return;
    }
    struct zs_jw w;
    zs_jw_init(&w, 1024);
    zs_jw_obj(&w);
    int rc = zs_sim_mutate_request(s, o, (enum zs_ent)e, n, json_is_true(mv), &w);
    zs_jw_obj_end(&w);
    if (rc) {
        zs_jw_deinit(&w);
        r->status = 500;
        r->body = ctl_error("out of memory", &r->len);
        return;
    }
    r->status = 200;
    r->body = zs_jw_take(&w, &r->len);
}

static void ctl_invalid(struct zs_sim *s, json_t *j, struct reply *r)
{
    struct zs_org *o = ctl_org(s, j);
    json_t *ev = json_object_get(j, "entity");
    int e = json_is_string(ev) ? zs_ent_parse(json_string_value(ev)) : -1;
    int64_t n = jint(j, "n", 1);
    const char *kind = json_string_value(json_object_get(j, "kind"));
    int fixed = 0;
    if (kind && strcmp(kind, "mixed")) {
        for (int k = 1; k < ZS_INVALID_KINDS; k++)
            if (!strcmp(kind, invalid_names[k]))
                fixed = k;
        if (!fixed) {
            r->status = 400;
            r->body = ctl_error("kind must be bad_id, bad_number, bad_date, bad_modified, "
                                "bad_utf8_id or mixed",
                                &r->len);
            return;
        }
    }
    if (!o || e < 0 || e == ZS_WAREHOUSES || n < 1 || n > MAX_MUTATE) {
        r->status = 400;
        r->body = ctl_error("need org, entity (not warehouses) and 1 <= n <= 100000", &r->len);
        return;
    }
    struct zs_jw w;
    zs_jw_init(&w, 1024);
    zs_jw_obj(&w);
    zs_jw_key(&w, "created");
    zs_jw_arr(&w);
    for (int64_t i = 0; i < n; i++) {
        int kd = fixed ? fixed : 1 + (int)(i % (ZS_BAD_UTF8_ID - 1));
        zs_jw_obj(&w);
        zs_jw_key(&w, "id");
        zs_sim_mutate(s, o, (enum zs_ent)e, ZS_MUT_CREATE, 1, (enum zs_invalid)kd, 0, &w);
        zs_jw_kstr(&w, "kind", invalid_names[kd]);
        zs_jw_obj_end(&w);
    }
    zs_jw_arr_end(&w);
    zs_jw_obj_end(&w);
    r->status = 200;
    r->body = zs_jw_take(&w, &r->len);
}

/* Entity names of a mask (1 << zs_ent), as the faults show them. */
static json_t *mask_names(unsigned mask)
{
    json_t *a = json_array();
    for (int e = 0; a && e < ZS_ENT_COUNT; e++)
        if (mask & (1u << e))
            json_array_append_new(a, json_string(zs_ent_name((enum zs_ent)e)));
    return a;
}

/* A faults request's list of entity names, when given, replaces *mask. */
static void ent_mask(const json_t *names, unsigned *mask)
{
    if (!json_is_array(names))
        return;
    *mask = 0;
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v) {
        int e = json_is_string(v) ? zs_ent_parse(json_string_value(v)) : -1;
        if (e >= 0)
            *mask |= 1u << e;
    }
}

static void faults_json(struct zs_sim *s, struct reply *r)
{
    struct zs_faults f;
    zs_sim_get_faults(s, &f);
    json_t *j = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:I,s:I,s:I}", "p500", f.p500,
                          "p502", f.p502, "p503", f.p503, "p_slow", f.p_slow, "p_truncate",
                          f.p_truncate, "p_reset", f.p_reset, "p_expired_token_200",
                          f.p_expired_token_200, "p400", f.p400, "slow_ms", (json_int_t)f.slow_ms,
                          "token_hang_ms", (json_int_t)f.token_hang_ms, "deny_status",
                          (json_int_t)(f.deny_status ? f.deny_status : 401),
                          "html404_itemdetails", (json_int_t)f.html404_itemdetails);
    if (j) {
        json_object_set_new(j, "deny", mask_names(f.deny_mask));
        json_object_set_new(j, "ignore_filter", mask_names(f.ignore_filter_mask));
        json_object_set_new(j, "repeat_in_list", mask_names(f.repeat_mask));
    }
    r->status = 200;
    r->body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    r->len = r->body ? strlen(r->body) : 0;
    json_decref(j);
}

static void ctl_faults(struct zs_sim *s, json_t *j, struct reply *r)
{
    pthread_mutex_lock(&s->faults_lock);
    struct zs_faults *f = &s->faults;
    if (json_is_true(json_object_get(j, "clear")))
        memset(f, 0, sizeof(*f));
    f->p500 = jnum(j, "p500", f->p500);
    f->p502 = jnum(j, "p502", f->p502);
    f->p503 = jnum(j, "p503", f->p503);
    f->p_slow = jnum(j, "p_slow", f->p_slow);
    f->p_truncate = jnum(j, "p_truncate", f->p_truncate);
    f->p_reset = jnum(j, "p_reset", f->p_reset);
    f->p_expired_token_200 = jnum(j, "p_expired_token_200", f->p_expired_token_200);
    f->p400 = jnum(j, "p400", f->p400);
    ent_mask(json_object_get(j, "deny"), &f->deny_mask);
    f->deny_status = (int)jint(j, "deny_status", f->deny_status);
    ent_mask(json_object_get(j, "ignore_filter"), &f->ignore_filter_mask);
    ent_mask(json_object_get(j, "repeat_in_list"), &f->repeat_mask);
    f->slow_ms = jint(j, "slow_ms", f->slow_ms);
    json_t *ri = json_object_get(j, "refuse_id");
    if (json_is_string(ri))
        snprintf(f->refuse_id, sizeof(f->refuse_id), "%s", json_string_value(ri));
    f->refuse_status = (int)jint(j, "refuse_status", f->refuse_status);
    f->html404_itemdetails = jint(j, "html404_itemdetails", f->html404_itemdetails);
    json_t *ni = json_object_get(j, "nostock_id");
    if (json_is_string(ni))
        snprintf(f->nostock_id, sizeof(f->nostock_id), "%s", json_string_value(ni));
    json_t *th = json_object_get(j, "token_hang");
    if (json_is_true(th))
        f->token_hang_ms = 30000;
    else if (json_is_false(th))
        f->token_hang_ms = 0;
    else if (json_is_number(th))
        f->token_hang_ms = jint(j, "token_hang", 0);
    f->token_hang_ms = jint(j, "token_hang_ms", f->token_hang_ms);
    pthread_mutex_unlock(&s->faults_lock);
    faults_json(s, r);
}

static void ctl_webhooks(struct zs_sim *s, json_t *j, struct reply *r)
{
    struct zs_org *o = ctl_org(s, j);
    if (!o) {
        r->status = 400;
        r->body = ctl_error("unknown or missing org", &r->len);
        return;
    }
    struct zs_hook_cfg cfg = {0};
    cfg.url = json_string_value(json_object_get(j, "url"));
    cfg.secret = json_string_value(json_object_get(j, "secret"));
    const char *enc = json_string_value(json_object_get(j, "encoding"));
    if (enc && strcmp(enc, "hex") != 0 && strcmp(enc, "base64") != 0) {
        r->status = 400;
        r->body = ctl_error("encoding must be hex or base64", &r->len);
        return;
    }
    cfg.base64 = enc && strcmp(enc, "base64") == 0;
    cfg.retries = (int)jint(j, "retries", 3);
    cfg.retry_delay_ms = jint(j, "retry_delay_ms", 200);
    cfg.timeout_ms = jint(j, "timeout_ms", 5000);
    json_t *q = json_object_get(j, "query");
    const char *k;
    json_t *v;
    if (json_is_object(q)) {
        json_object_foreach(q, k, v)
        {
            if (cfg.n_params == ZS_HOOK_MAX_PARAMS || !json_is_string(v))
                break;
            cfg.param_names[cfg.n_params] = k;
            cfg.param_values[cfg.n_params] = json_string_value(v);
            cfg.n_params++;
        }
    }
    int rc = zs_hooks_configure(s->hooks, (size_t)o->org_index, &cfg);
    r->status = rc ? 400 : 200;
    r->body = rc ? ctl_error("bad webhook settings (url must be http(s)://…)", &r->len)
                 : strdup("{\"ok\":true}");
    if (!rc && r->body)
        r->len = strlen(r->body);
}

static void ctl_stream(struct zs_sim *s, json_t *j, struct reply *r)
{
    struct zs_org *o = ctl_org(s, j);
    double rate = jnum(j, "rate_per_s", 0);
    double secs = jnum(j, "seconds", 0);
    unsigned mask = 0;
    json_t *ents = json_object_get(j, "entities"), *v;
    const char *ops = json_string_value(json_object_get(j, "ops"));
    size_t i;
    bool bad = !o || !(rate >= 0 && rate <= 100000) || !(secs >= 0 && secs <= 1e9) ||
               (ops && strcmp(ops, "mixed") != 0 && strcmp(ops, "update") != 0);
    json_array_foreach(ents, i, v)
    {
        int e = zs_ent_parse(json_string_value(v));
        if (e < 0)
            bad = true;
        else
            mask |= 1u << e;
    }
    if (bad) {
        r->status = 400;
        r->body = ctl_error("need org, 0 <= rate_per_s <= 100000, 0 <= seconds <= 1e9, known "
                            "entities, ops \"mixed\" or \"update\"",
                            &r->len);
        return;
    }
    zs_sim_stream(s, o, rate, (int64_t)(secs * 1000), mask, ops && !strcmp(ops, "update"));
    r->status = 200;
    r->body = strdup("{\"ok\":true}");
    r->len = r->body ? strlen(r->body) : 0;
}

static void ctl_limits(struct zs_sim *s, json_t *j, struct reply *r)
{
    struct zs_org *o = ctl_org(s, j);
    if (!o) {
        for (size_t i = 0; i < s->n_orgs; i++)
            zs_limits_set(&s->limits[i], jint(j, "rate_per_min", -1), jint(j, "concurrency", -1),
                          jint(j, "daily", -1));
    } else {
        zs_limits_set(&s->limits[o->org_index], jint(j, "rate_per_min", -1),
                      jint(j, "concurrency", -1), jint(j, "daily", -1));
    }
    r->status = 200;
    r->body = strdup("{\"ok\":true}");
    r->len = r->body ? strlen(r->body) : 0;
}

static void ctl_orgs(struct zs_sim *s, struct reply *r)
{
    struct zs_jw w;
    zs_jw_init(&w, 1024);
    zs_jw_obj(&w);
    zs_jw_key(&w, "orgs");
    zs_jw_arr(&w);
    for (size_t i = 0; i < s->n_orgs; i++) {
        struct zs_org *o = &s->orgs[i];
        zs_jw_obj(&w);
        zs_jw_kstr(&w, "id", o->id);
        zs_jw_kstr(&w, "name", o->name);
        zs_jw_kint(&w, "tz_min", o->tz_min);
        zs_jw_kstr(&w, "stock", o->locations ? "locations" : "warehouses");
        zs_jw_kstr(&w, "product", o->products == (ZS_INVENTORY | ZS_BOOKS) ? "both"
                                  : o->products == ZS_BOOKS                ? "books"
                                                                           : "inventory");
        zs_jw_key(&w, "counts");
        zs_jw_obj(&w);
        pthread_rwlock_rdlock(&o->lock);
        for (int e = 0; e < ZS_ENT_COUNT; e++) {
            size_t live = 0;
            for (size_t k = 0; k < o->t[e].n; k++)
                live += !o->t[e].recs[k].deleted;
            zs_jw_kint(&w, zs_ent_name((enum zs_ent)e), (int64_t)live);
        }
        pthread_rwlock_unlock(&o->lock);
        zs_jw_obj_end(&w);
        zs_jw_obj_end(&w);
    }
    zs_jw_arr_end(&w);
    zs_jw_obj_end(&w);
    r->status = 200;
    r->body = zs_jw_take(&w, &r->len);
}

static enum MHD_Result handle_ctl(struct zs_server *srv, struct MHD_Connection *c,
                                  const char *method, const char *path, const struct req *rq)
{
    struct zs_sim *s = srv->sim;
    struct reply r = {.status = 404};
    atomic_fetch_add(&s->ctl_requests, 1);
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    json_t *j = NULL;
    if (post) {
        json_error_t je;
        j = rq->len ? json_loadb(rq->body, rq->len, 0, &je) : json_object();
        if (!j || !json_is_object(j)) {
            json_decref(j);
            r.status = 400;
            r.body = ctl_error("body must be a JSON object", &r.len);
            return send_reply(c, &r);
        }
    }
    if (get && !strncmp(path, "truth/", 6)) {
        ctl_truth(s, c, path + 6, &r);
    } else if (get && !strcmp(path, "stats")) {
        struct zs_jw w;
        zs_jw_init(&w, 4096);
        stats_json(s, &w);
        r.status = 200;
        r.body = zs_jw_take(&w, &r.len);
    } else if (get && !strcmp(path, "orgs")) {
        ctl_orgs(s, &r);
    } else if (get && !strcmp(path, "faults")) {
        faults_json(s, &r);
    } else if (get && !strcmp(path, "health")) {
        r.status = 200;
        r.body = strdup("{\"ok\":true}");
        r.len = r.body ? strlen(r.body) : 0;
    } else if (post && !strcmp(path, "mutate")) {
        ctl_mutate(s, j, &r);
    } else if (post && !strcmp(path, "invalid")) {
        ctl_invalid(s, j, &r);
    } else if (post && !strcmp(path, "faults")) {
        ctl_faults(s, j, &r);
    } else if (post && !strcmp(path, "reset-stats")) {
        reset_stats(s);
        r.status = 200;
        r.body = strdup("{\"ok\":true}");
        r.len = r.body ? strlen(r.body) : 0;
    } else if (post && !strcmp(path, "webhooks")) {
        ctl_webhooks(s, j, &r);
    } else if (post && !strcmp(path, "stream")) {
        ctl_stream(s, j, &r);
    } else if (post && !strcmp(path, "limits")) {
        ctl_limits(s, j, &r);
    } else if (post && !strcmp(path, "clock")) {
        /* Zoho's clock moved (an NTP step on either side): --clock-offset now */
        json_t *v = json_object_get(j, "offset");
        bool ok = json_is_integer(v) && llabs(json_integer_value(v)) <= 86400 * 366;
        if (ok)
            zs_set_clock_offset(json_integer_value(v));
        r.status = ok ? 200 : 400;
        r.body = ok ? strdup("{\"ok\":true}") : ctl_error("offset: whole seconds, within a year", &r.len);
        if (ok && r.body)
            r.len = strlen(r.body);
    } else if (post && !strcmp(path, "expire-tokens")) {
        zs_auth_expire_all(s->auth);
        r.status = 200;
        r.body = strdup("{\"ok\":true}");
        r.len = r.body ? strlen(r.body) : 0;
    } else if (post && (!strcmp(path, "grant-code") || !strcmp(path, "refresh-token"))) {
        const char *v = json_string_value(json_object_get(j, path[0] == 'g' ? "code" : "token"));
        struct zs_org *o = ctl_org(s, j);
        int rc = !v ? -EINVAL
                 : path[0] == 'g' ? zs_auth_add_code(s->auth, v)
                                  : zs_auth_add_refresh(s->auth, v, o ? o->org_index : -1);
        r.status = rc ? 400 : 200;
        r.body = rc ? ctl_error("bad or missing code/token", &r.len) : strdup("{\"ok\":true}");
        if (!rc && r.body)
            r.len = strlen(r.body);
    } else {
        r.body = ctl_error("unknown control endpoint", &r.len);
    }
    json_decref(j);
    if (!r.body)
        return MHD_NO;
    return send_reply(c, &r);
}

/* ---- MHD plumbing ---- */

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    struct zs_server *srv = cls;
    (void)version;
    struct req *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (rq->len + *upload_data_size > ZS_MAX_BODY) {
            rq->too_big = true;
        } else {
            char *nb = realloc(rq->body, rq->len + *upload_data_size + 1);
            if (!nb)
                return MHD_NO;
            rq->body = nb;
            memcpy(rq->body + rq->len, upload_data, *upload_data_size);
            rq->len += *upload_data_size;
            rq->body[rq->len] = '\0';
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    size_t len = 0;
    char *b;
    if (rq->too_big) {
        b = zoho_error(1038, "Request body too large", &len);
        return simple(c, 413, b, len);
    }
    if (!strncmp(url, "/oauth/v2/token", 15) &&
        (!strcmp(url + 15, "") || !strcmp(url + 15, "/revoke"))) {
        if (strcmp(method, "POST")) {
            b = ctl_error("method not allowed", &len);
            return simple(c, 405, b, len);
        }
        return handle_token(srv, c, url, rq);
    }
    if (!strncmp(url, "/inventory/v1/", 14) || !strcmp(url, "/inventory/v1"))
        return handle_api(srv, c, method, ZS_INVENTORY, url + 13);
    if (!strncmp(url, "/books/v3/", 10) || !strcmp(url, "/books/v3"))
        return handle_api(srv, c, method, ZS_BOOKS, url + 9);
    if (!strncmp(url, "/_sim/", 6))
        return handle_ctl(srv, c, method, url + 6, rq);
    atomic_fetch_add(&srv->sim->unknown_requests, 1);
    b = zoho_error(5, "Invalid URL Passed", &len);
    return simple(c, 404, b, len);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct req *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

int zs_server_new(struct zs_server **out, struct zs_sim *sim, const char *host, uint16_t port,
                  const char *api_domain)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        return -EINVAL;
    /* Bind first: api_domain needs the real port and must be set before any
     * request thread can read it. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t alen = sizeof(addr);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 1024) ||
        getsockname(fd, (struct sockaddr *)&addr, &alen)) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    struct zs_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        close(fd);
        return -ENOMEM;
    }
    srv->sim = sim;
    srv->port = ntohs(addr.sin_port);
    if (api_domain && *api_domain)
        snprintf(sim->api_domain, sizeof(sim->api_domain), "%s", api_domain);
    else /* a wildcard address is not one clients can call back */
        snprintf(sim->api_domain, sizeof(sim->api_domain), "http://%s:%u",
                 strcmp(host, "0.0.0.0") ? host : "127.0.0.1", (unsigned)srv->port);
    srv->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                  MHD_USE_POLL,
                              0, NULL, NULL, handler, srv, MHD_OPTION_LISTEN_SOCKET, fd,
                              MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)4000,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
    if (!srv->d) {
        close(fd);
        free(srv);
        return -EADDRINUSE;
    }
    *out = srv;
    return 0;
}

uint16_t zs_server_port(const struct zs_server *s) { return s->port; }

struct zs_server *zs_server_free(struct zs_server *s)
{
    if (!s)
        return NULL;
    if (s->d)
        MHD_stop_daemon(s->d);
    free(s);
    return NULL;
}
