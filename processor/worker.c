/* worker — event/page message → rows message, and dead letters.
 *
 * Stateless between frames apart from counters: any replica can take any
 * frame, and a frame handled twice yields the same rows (the writer's guard
 * and the content hash make the second application a no-op).
 */
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "entities.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "pjson.h"
#include "transform.h"
#include "util.h"
#include "value.h"

#define DEAD_RAW_MAX (64u * 1024u)

struct tds_worker {
    struct tds_transform *tf;
    struct tds_metrics *metrics;
    char *origin;
    struct tds_worker_stats st;
    struct tds_log_limit reject_log;
    struct tds_log_limit dead_log;
    struct tds_series *m_dead, *m_seconds;
};

int tds_worker_new(struct tds_worker **out, struct tds_metrics *metrics, const char *origin)
{
    struct tds_worker *w = calloc(1, sizeof(*w));
    int rc;

    if (!w)
        return -ENOMEM;
    w->metrics = metrics;
    w->reject_log.interval_ms = 10000;
    w->dead_log.interval_ms = 60000;
    if ((rc = tds_transform_new(&w->tf)) < 0)
        goto fail;
    rc = -ENOMEM;
    if (!(w->origin = strdup(origin ? origin : "processor")))
        goto fail;
    if (metrics) {
        static const double buckets[] = {0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                         0.025,  0.05,   0.1,   0.25,   0.5,   1};
        w->m_dead = tds_metrics_get(metrics, TDS_COUNTER, "tds_processor_dead_letters_total",
                                    "Frames that were not a usable event or page", "", NULL, 0);
        w->m_seconds = tds_metrics_get(metrics, TDS_HISTOGRAM, "tds_processor_transform_seconds",
                                       "Time to transform one input message", "", buckets,
                                       TDS_ARRAY_SIZE(buckets));
    }
    *out = w;
    return 0;
fail:
    tds_worker_free(w);
    return rc;
}

struct tds_worker *tds_worker_free(struct tds_worker *w)
{
    if (!w)
        return NULL;
    tds_transform_free(w->tf);
    free(w->origin);
    free(w);
    return NULL;
}

void tds_worker_stats(const struct tds_worker *w, struct tds_worker_stats *out)
{
    *out = w->st;
}

static void count(struct tds_worker *w, const char *family, const char *help, const char *labels,
                  double by)
{
    struct tds_series *s;
    if (!w->metrics || by == 0)
        return;
    if ((s = tds_metrics_get(w->metrics, TDS_COUNTER, family, help, labels, NULL, 0)))
        tds_series_inc(s, by);
}

static void count_type(struct tds_worker *w, const char *type)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "type=\"%s\"", type);
    count(w, "tds_processor_messages_total", "Input messages by type", labels, 1);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int encode(struct tds_msg *m, char **out, size_t *out_len)
{
    int rc = tds_msg_encode(m, out, out_len);
    if (rc > 0) /* over TDS_MSG_MAX_*: a page's rows go out as rejects (oversize_page) */
        rc = -E2BIG;
    return rc;
}

/* raw of a dead letter: the frame as text when it is valid UTF-8 without
 * NUL, else "hex:" + hex of its first bytes. */
static char *dead_raw(const void *frame, size_t len, size_t *n)
{
    size_t cut = len > DEAD_RAW_MAX ? DEAD_RAW_MAX : len;
    char *o;

    if (frame && tds_utf8_valid(frame, cut) && !memchr(frame, '\0', cut)) {
        while (cut > 0 && cut < len && (((const unsigned char *)frame)[cut] & 0xc0) == 0x80)
            cut--;
        if (!(o = malloc(cut + 1)))
            return NULL;
        memcpy(o, frame, cut);
        o[cut] = '\0';
        *n = cut;
        return o;
    }
    cut = frame ? (len > DEAD_RAW_MAX / 2 ? DEAD_RAW_MAX / 2 : len) : 0;
    if (!(o = malloc(4 + cut * 2 + 1)))
        return NULL;
    memcpy(o, "hex:", 4);
    tds_hex(frame, cut, o + 4);
    *n = 4 + cut * 2;
    return o;
}

int tds_worker_dead_letter(struct tds_worker *w, const char *why, const void *frame, size_t len,
                           char **out, size_t *out_len)
{
    struct tds_msg m;
    char reason[256];
    size_t raw_n = 0;
    char *raw = NULL;
    int rc = -ENOMEM;

    memset(&m, 0, sizeof(m));
    snprintf(reason, sizeof(reason), "dead letter: %s (%zu bytes)", why, len);
    m.type = TDS_MSG_ROWS;
    m.v = TDS_MSG_VERSION;
    struct tds_msg_rows *r = &m.u.rows;
    if (!(m.id = tds_uid("dl")) || !(r->org = strdup("")) || !(r->entity = strdup("")) ||
        !(r->origin = strdup(w->origin)) || !(r->src = strdup(m.id)) ||
        !(r->mode = strdup("deadletter")))
        goto out;
    if (!(raw = dead_raw(frame, len, &raw_n)))
        goto out;
    if ((rc = tds_msg_rows_add_reject(r, "", NULL, reason, raw, raw_n)) < 0)
        goto out;
    if ((rc = encode(&m, out, out_len)) < 0)
        goto out;
    /* counted once it is sent: one that could not be built is dropped, and
     * counted when its source sends it again */
    w->st.dead_letters++;
    if (w->m_dead)
        tds_series_inc(w->m_dead, 1);
    count_type(w, "invalid");
    tds_log_limited(&w->dead_log, TDS_LOG_WARN, NULL,
                    "could not use message of %zu bytes: %s, dead-lettering", len, why);
out:
    free(raw);
    tds_msg_clear(&m);
    return rc;
}

/* Per-message tally for metrics: one lookup per entity, not per record.
 * Everything is counted only once the message is encoded: a page that turns
 * out too large is rejected as a whole instead, and a message dropped for
 * lack of memory is counted when its source resends it. So every reason is
 * kept until then, however many one message has (a few inline, the rest on
 * the heap). */
#define TALLY_INLINE 8
#define TALLY_LABELS_MAX 400 /* the longest labels any caller formats */
struct tally_reason {
    char labels[TALLY_LABELS_MAX];
    uint64_t n;
};
struct tally {
    uint64_t records, rejects;
    size_t n_reasons, cap;
    struct tally_reason *reason; /* inl, or a heap array past TALLY_INLINE */
    struct tally_reason inl[TALLY_INLINE];
};

static void tally_init(struct tally *ty)
{
    ty->records = ty->rejects = 0;
    ty->n_reasons = 0;
    ty->cap = TALLY_INLINE;
    ty->reason = ty->inl;
}

static void tally_deinit(struct tally *ty)
{
    if (ty->reason != ty->inl)
        free(ty->reason);
    tally_init(ty);
}

static int tally_reject(struct tally *ty, const char *labels, uint64_t by)
{
    for (size_t i = 0; i < ty->n_reasons; i++) {
        if (strcmp(ty->reason[i].labels, labels) == 0) {
            ty->reason[i].n += by;
            return 0;
        }
    }
    if (ty->n_reasons == ty->cap) {
        size_t cap = ty->cap * 2;
        struct tally_reason *n = malloc(cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        memcpy(n, ty->reason, ty->n_reasons * sizeof(*n));
        if (ty->reason != ty->inl)
            free(ty->reason);
        ty->reason = n;
        ty->cap = cap;
    }
    snprintf(ty->reason[ty->n_reasons].labels, sizeof(ty->reason[0].labels), "%s", labels);
    ty->reason[ty->n_reasons++].n = by;
    return 0;
}

static void tally_flush(struct tds_worker *w, const struct tally *ty)
{
    for (size_t i = 0; i < ty->n_reasons; i++)
        count(w, "tds_processor_rejects_total", "Records rejected, by reason",
              ty->reason[i].labels, (double)ty->reason[i].n);
}

static int note(struct tds_worker *w, struct tally *ty, const struct tds_entity *e,
                const char *org, const struct tds_transform_result *res,
                const struct tds_msg_rows *r)
{
    int rc;

    if (!res->rejected) {
        ty->records++;
        return 0;
    }
    ty->rejects++;
    char labels[TALLY_LABELS_MAX];
    snprintf(labels, sizeof(labels), "entity=\"%s\",reason=\"%s\"", e ? e->name : "",
             res->reason_class);
    if ((rc = tally_reject(ty, labels, 1)) < 0)
        return rc;
    const struct tds_msg_reject *rj = &r->rejects[r->n_rejects - 1];
    struct tds_log_ctx ctx = {.org = org, .entity = e ? e->name : NULL};
    tds_log_limited(&w->reject_log, TDS_LOG_WARN, &ctx, "rejected record %s: %s, skipping",
                    rj->zoho_id ? rj->zoho_id : "(no id)", rj->reason);
    return 0;
}

static int fill_header(struct tds_msg *m, const char *id_prefix, const char *org,
                       const char *entity, const char *origin, const char *src)
{
    struct tds_msg_rows *r = &m->u.rows;

    m->type = TDS_MSG_ROWS;
    m->v = TDS_MSG_VERSION;
    if (!(m->id = tds_uid(id_prefix)) || !(r->org = strdup(org ? org : "")) ||
        !(r->entity = strdup(entity ? entity : "")) || !(r->origin = strdup(origin ? origin : "")) ||
        !(r->src = strdup(src ? src : "")))
        return -ENOMEM;
    return 0;
}

#define UNKNOWN_ID_MAX 128 /* bytes of a deleted id kept in its reject */

/* A record, deleted id or event of an entity this build has no transform
 * for: a reject like any other, counted and logged, so that tds.rejected
 * holds it when the writer acks the message. zoho_id: a deleted id (raw
 * NULL), else NULL. */
static int reject_unknown(struct tds_worker *w, struct tally *ty, struct tds_msg_rows *r,
                          const char *org, const char *entity, const char *zoho_id,
                          const char *raw, size_t n)
{
    char reason[192];
    const char *en = entity ? entity : "";
    int rc;

    /* the name, the id and the reason are stored as text: never a cut or a
     * byte that is not UTF-8 */
    if (!tds_utf8_valid(en, strlen(en))) {
        snprintf(reason, sizeof(reason), "unknown entity (its name is not UTF-8)");
        en = "";
    } else {
        snprintf(reason, sizeof(reason), "unknown entity '%.*s'",
                 (int)tds_utf8_prefix(en, strlen(en), 64), en);
    }
    if (zoho_id && (strlen(zoho_id) > UNKNOWN_ID_MAX || !tds_utf8_valid(zoho_id, strlen(zoho_id))))
        zoho_id = NULL;
    if (zoho_id)
        snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason),
                 " (deleted in Zoho)");
    if (raw && (!tds_utf8_valid(raw, n) || memchr(raw, '\0', n))) {
        raw = "";
        n = 0;
    }
    if ((rc = tds_msg_rows_add_reject(r, en, zoho_id, reason, raw, n)) < 0)
        return rc;
    ty->rejects++;
    if ((rc = tally_reject(ty, "entity=\"\",reason=\"unknown_entity\"", 1)) < 0)
        return rc;
    struct tds_log_ctx ctx = {.org = org};
    tds_log_limited(&w->reject_log, TDS_LOG_WARN, &ctx, "rejected %s %s: %s, skipping",
                    zoho_id ? "deleted id" : "record", zoho_id ? zoho_id : "(no id)", reason);
    return 0;
}

/* The rows message's header for a webhook event: one record, its time of
 * arrival, acked to the ingress that took it. */
static int event_header(const struct tds_msg *in, struct tds_msg *m)
{
    const struct tds_msg_event *ev = &in->u.event;
    struct tds_msg_rows *r = &m->u.rows;
    int rc;

    if ((rc = fill_header(m, "rows", ev->org, ev->entity, ev->origin, in->id)) < 0)
        return rc;
    if (!(r->mode = strdup("webhook")))
        return -ENOMEM;
    r->received_ms = ev->received_ms;
    r->records_in = 1;
    return 0;
}

static int do_event(struct tds_worker *w, const struct tds_msg *in, struct tds_msg *m,
                    struct tally *ty)
{
    const struct tds_msg_event *ev = &in->u.event;
    const struct tds_entity *e = tds_entity_find(ev->entity);
    struct tds_msg_rows *r = &m->u.rows;
    struct tds_transform_result res;
    int rc;

    if ((rc = event_header(in, m)) < 0)
        return rc;
    tds_transform_begin(w->tf, r);
    tds_transform_set_tz(w->tf, ev->tz);
    if (!e)
        return reject_unknown(w, ty, r, ev->org, ev->entity, NULL, ev->body.p, ev->body.n);
    if (ev->op && strcmp(ev->op, "delete") == 0)
        rc = tds_transform_delete(w->tf, r, e, ev->org, ev->zoho_id, ev->body.p, ev->body.n, &res);
    else
        rc = tds_transform_event_body(w->tf, r, e, ev->org, ev->body.p ? ev->body.p : "",
                                      ev->body.n, &res);
    if (rc < 0)
        return rc;
    return note(w, ty, e, ev->org, &res, r);
}

/* The rows message's header for a page: what the writer needs to count,
 * commit and ack it. */
static int page_header(const struct tds_msg *in, struct tds_msg *m)
{
    const struct tds_msg_page *pg = &in->u.page;
    struct tds_msg_rows *r = &m->u.rows;
    int rc;

    if ((rc = fill_header(m, "rows", pg->org, pg->entity, pg->origin, in->id)) < 0)
        return rc;
    if ((pg->run && !(r->run = strdup(pg->run))) ||
        !(r->mode = strdup(pg->mode ? pg->mode : "")) ||
        (pg->cursor && !(r->cursor = dup_or_null(pg->cursor))))
        return -ENOMEM;
    r->page = pg->page;
    r->final = pg->final;
    r->received_ms = pg->fetched_ms;
    r->records_in = (int64_t)pg->n_records;
    /* the messages this page answers are acked with it, by the writer */
    if (pg->n_acks && !(r->acks = calloc(pg->n_acks, sizeof(*r->acks))))
        return -ENOMEM;
    for (size_t i = 0; i < pg->n_acks; i++, r->n_acks++)
        if (!(r->acks[i] = strdup(pg->acks[i])))
            return -ENOMEM;
    return 0;
}

/* The ids a page found deleted; of an entity this build does not know (e
 * NULL), each one is a reject, as the page's records are. */
static int page_deletes(struct tds_worker *w, const struct tds_msg_page *pg,
                        const struct tds_entity *e, struct tds_msg_rows *r, struct tally *ty)
{
    struct tds_transform_result res;
    int rc;

    for (size_t i = 0; i < pg->n_deleted; i++) {
        if (!e) {
            if ((rc = reject_unknown(w, ty, r, pg->org, pg->entity, pg->deleted_ids[i], NULL,
                                     0)) < 0)
                return rc;
            continue;
        }
        rc = tds_transform_delete(w->tf, r, e, pg->org, pg->deleted_ids[i], NULL, 0, &res);
        if (rc < 0 || (rc = note(w, ty, e, pg->org, &res, r)) < 0)
            return rc;
    }
    return 0;
}

static int do_page(struct tds_worker *w, const struct tds_msg *in, struct tds_msg *m,
                   struct tally *ty)
{
    const struct tds_msg_page *pg = &in->u.page;
    const struct tds_entity *e = tds_entity_find(pg->entity);
    struct tds_msg_rows *r = &m->u.rows;
    struct tds_transform_result res;
    int rc;

    if ((rc = page_header(in, m)) < 0)
        return rc;
    tds_transform_begin(w->tf, r);
    tds_transform_set_tz(w->tf, pg->tz);
    for (size_t i = 0; i < pg->n_records; i++) {
        if (!e) {
            if ((rc = reject_unknown(w, ty, r, pg->org, pg->entity, NULL, pg->records[i].p,
                                     pg->records[i].n)) < 0)
                return rc;
            continue;
        }
        rc = tds_transform_record(w->tf, r, e, pg->org, pg->records[i].p ? pg->records[i].p : "",
                                  pg->records[i].n, pg->detail ? TDS_FORM_DETAIL : TDS_FORM_LIST,
                                  &res);
        if (rc < 0 || (rc = note(w, ty, e, pg->org, &res, r)) < 0)
            return rc;
    }
    return page_deletes(w, pg, e, r, ty);
}

#define OVERSIZE_RAW_MAX (64u * 1024) /* of each record's JSON kept in its reject */

/* A page whose rows do not fit in one message (TDS_MSG_MAX_FRAME,
 * TDS_MSG_MAX_ARRAY rows of one table, or TDS_MSG_MAX_ELEMENTS values and
 * rows in all): dropping it would have the fetcher
 * send it again forever, so each record becomes a reject that says why (the
 * writer stores them, commits the page's metadata and acks it); its deletes
 * still apply. The fetcher's TDS_FETCHER_PAGE_MAX_BYTES keeps pages well
 * below this. */
static int oversize_page(struct tds_worker *w, const struct tds_msg *in, struct tds_msg *m,
                         struct tally *ty)
{
    const struct tds_msg_page *pg = &in->u.page;
    const struct tds_entity *e = tds_entity_find(pg->entity);
    struct tds_msg_rows *r = &m->u.rows;
    struct tds_pjson_arena *arena = NULL;
    char reason[256], labels[TALLY_LABELS_MAX];
    int rc;

    if ((rc = page_header(in, m)) < 0)
        return rc;
    if ((rc = tds_pjson_arena_new(&arena)) < 0)
        return rc;
    snprintf(reason, sizeof(reason),
             "page too large: the rows of its %zu records exceed one message (%u MiB, %u rows a "
             "table, %u values); lower TDS_FETCHER_PAGE_MAX_BYTES",
             pg->n_records, TDS_MSG_MAX_FRAME / (1024 * 1024), TDS_MSG_MAX_ARRAY,
             TDS_MSG_MAX_ELEMENTS);
    for (size_t i = 0; i < pg->n_records; i++) {
        const char *raw = pg->records[i].p ? pg->records[i].p : "";
        size_t n = pg->records[i].p ? pg->records[i].n : 0;
        struct tds_pjson *root;
        const struct tds_pjson *id = NULL;
        char err[128], *zid = NULL;

        tds_pjson_arena_reset(arena);
        if (e && tds_pjson_parse(arena, raw, n, &root, err, sizeof(err)) == 0 &&
            (id = tds_pjson_get(root, e->id_field)) &&
            (id->type == TDS_PJ_STRING || id->type == TDS_PJ_NUMBER) && id->n > 0 &&
            !(zid = strndup(id->s, id->n))) {
            rc = -ENOMEM;
            break;
        }
        rc = tds_msg_rows_add_reject(r, pg->entity ? pg->entity : "", zid, reason, raw,
                                     tds_utf8_prefix(raw, n, OVERSIZE_RAW_MAX));
        free(zid);
        if (rc < 0)
            break;
        ty->rejects++;
    }
    tds_pjson_arena_free(arena);
    if (rc < 0)
        return rc;
    /* the ids found deleted are small: they still apply */
    tds_transform_begin(w->tf, r);
    if ((rc = page_deletes(w, pg, e, r, ty)) < 0)
        return rc;
    snprintf(labels, sizeof(labels), "entity=\"%s\",reason=\"page_too_large\"", e ? e->name : "");
    if ((rc = tally_reject(ty, labels, pg->n_records)) < 0)
        return rc;
    struct tds_log_ctx ctx = {.org = pg->org, .entity = e ? e->name : NULL};
    tds_log(TDS_LOG_ERROR, &ctx, "page %lld of run %s: %s; its records are rejected",
            (long long)pg->page, pg->run ? pg->run : "-", reason);
    return 0;
}

/* A webhook's record whose rows do not fit in one message (the same limits
 * as a page's): dropping it would have the ingress send it again forever,
 * its journal held behind it. It becomes a reject that says why, with the
 * first 64 KiB of the body, which the writer stores, and the event is acked
 * as usual. */
static int oversize_event(const struct tds_msg *in, struct tds_msg *m, struct tally *ty)
{
    const struct tds_msg_event *ev = &in->u.event;
    struct tds_msg_rows *r = &m->u.rows;
    const char *raw = ev->body.p ? ev->body.p : "", *zid = ev->zoho_id;
    size_t n = ev->body.p ? ev->body.n : 0;
    char reason[256], labels[TALLY_LABELS_MAX], *esc;
    int rc;

    if ((rc = event_header(in, m)) < 0)
        return rc;
    snprintf(reason, sizeof(reason),
             "record too large: its rows exceed one message (%u MiB, %u rows a table, %u "
             "values)",
             TDS_MSG_MAX_FRAME / (1024 * 1024), TDS_MSG_MAX_ARRAY, TDS_MSG_MAX_ELEMENTS);
    if (!tds_utf8_valid(raw, n) || memchr(raw, '\0', n))
        n = 0;
    if (zid && (strlen(zid) > UNKNOWN_ID_MAX || !tds_utf8_valid(zid, strlen(zid))))
        zid = NULL;
    if ((rc = tds_msg_rows_add_reject(r, ev->entity ? ev->entity : "", zid, reason, raw,
                                      tds_utf8_prefix(raw, n, OVERSIZE_RAW_MAX))) < 0)
        return rc;
    ty->rejects++;
    esc = tds_metrics_escape_n(ev->entity ? ev->entity : "", 100);
    snprintf(labels, sizeof(labels), "entity=\"%s\",reason=\"record_too_large\"",
             esc ? esc : "");
    free(esc);
    if ((rc = tally_reject(ty, labels, 1)) < 0)
        return rc;
    struct tds_log_ctx ctx = {.org = ev->org, .entity = ev->entity};
    tds_log(TDS_LOG_ERROR, &ctx, "webhook event %s (record %s): %s; it is rejected",
            in->id ? in->id : "-", zid ? zid : "-", reason);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int tds_worker_handle(struct tds_worker *w, const void *frame, size_t len, char **out,
                      size_t *out_len)
{
    struct tds_msg in, m;
    struct tally ty;
    char why[160];
    double t0 = now_s();
    int rc;

    *out = NULL;
    *out_len = 0;
    w->st.messages++;
    rc = tds_msg_decode(frame, len, &in);
    if (rc == -ENOMEM)
        return rc; /* not the message's fault: the source resends it */
    if (rc != 0) {
        snprintf(why, sizeof(why), "undecodable message: %s", tds_msg_strerror(rc));
        return tds_worker_dead_letter(w, why, frame, len, out, out_len);
    }
    if (in.type != TDS_MSG_EVENT && in.type != TDS_MSG_PAGE) {
        snprintf(why, sizeof(why), "unexpected message type '%s'", tds_msg_type_name(in.type));
        tds_msg_clear(&in);
        return tds_worker_dead_letter(w, why, frame, len, out, out_len);
    }
    const char *tz = in.type == TDS_MSG_EVENT ? in.u.event.tz : in.u.page.tz;
    if (tz && !tds_value_tz_ok(tz)) {
        snprintf(why, sizeof(why), "invalid tz '%.8s' (expected +HHMM or -HHMM)", tz);
        tds_msg_clear(&in);
        return tds_worker_dead_letter(w, why, frame, len, out, out_len);
    }
    memset(&m, 0, sizeof(m));
    tally_init(&ty);
    rc = in.type == TDS_MSG_EVENT ? do_event(w, &in, &m, &ty) : do_page(w, &in, &m, &ty);
    if (rc == 0)
        rc = encode(&m, out, out_len);
    if (rc == -E2BIG) {
        tds_msg_clear(&m);
        memset(&m, 0, sizeof(m));
        tally_deinit(&ty);
        rc = in.type == TDS_MSG_PAGE ? oversize_page(w, &in, &m, &ty)
                                     : oversize_event(&in, &m, &ty);
        if (rc == 0)
            rc = encode(&m, out, out_len);
    }
    if (rc == 0) {
        count_type(w, in.type == TDS_MSG_EVENT ? "event" : "page");
        const char *entity = in.type == TDS_MSG_EVENT ? in.u.event.entity : in.u.page.entity;
        char *esc = tds_metrics_escape_n(entity ? entity : "", 100);
        char labels[400];
        snprintf(labels, sizeof(labels), "entity=\"%s\"", esc ? esc : "");
        free(esc);
        count(w, "tds_processor_records_total", "Records transformed into rows", labels,
              (double)ty.records);
        tally_flush(w, &ty);
        w->st.records += ty.records;
        w->st.rejects += ty.rejects;
        if (w->m_seconds)
            tds_series_observe(w->m_seconds, now_s() - t0);
    }
    tally_deinit(&ty);
    tds_msg_clear(&m);
    tds_msg_clear(&in);
    return rc;
}
