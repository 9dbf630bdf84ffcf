/* webhook — body kinds, entity/id/delete detection and event ids.
 *
 * The JSON is parsed once with common/pjson (the processor's reader, so what
 * the ingress accepts the processor can read) to be sure it is JSON and to
 * read the few keys ingress needs; the bytes forwarded are the bytes received
 * (or the decoded JSONString), never a re-serialization; only a form of plain
 * fields is written out, as one JSON object of its fields.
 */
#include "webhook.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "entities.h"
#include "pjson.h"
#include "util.h"

enum tds_webhook_kind tds_webhook_kind(const char *ct)
{
    size_t n;

    if (!ct)
        return TDS_WEBHOOK_UNSUPPORTED;
    while (*ct == ' ')
        ct++;
    n = strcspn(ct, "; \t");
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return TDS_WEBHOOK_JSON;
    if (n == 33 && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0)
        return TDS_WEBHOOK_FORM;
    return TDS_WEBHOOK_UNSUPPORTED;
}

enum tds_webhook_kind tds_webhook_body_kind(enum tds_webhook_kind kind, const char *body,
                                            size_t len)
{
    size_t i = 0;

    if (kind != TDS_WEBHOOK_FORM)
        return kind;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    return i < len && body[i] == '{' ? TDS_WEBHOOK_JSON : kind;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode application/x-www-form-urlencoded text into out (at least n bytes). */
static size_t form_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

int tds_webhook_form_fields(const char *body, size_t len, char *scratch,
                            struct tds_verify_kv *kv, size_t max, size_t *n)
{
    const char *p = body, *end = body + len;

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *fe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(fe - p));
        const char *ke = eq ? eq : fe;

        if (fe > p) {
            struct tds_verify_kv *f = &kv[*n];

            if (*n == max)
                return TDS_VERIFY_E_PARAMS;
            f->k = scratch;
            f->klen = form_decode(p, (size_t)(ke - p), scratch);
            scratch += f->klen;
            f->v = scratch;
            f->vlen = eq ? form_decode(eq + 1, (size_t)(fe - eq - 1), scratch) : 0;
            scratch += f->vlen;
            (*n)++;
        }
        p = fe + 1;
    }
    return 0;
}

/* Fields (a form's, or a body-less request's query parameters) as one JSON
 * object of strings that jansson writes into w->owned. It is read as a custom
 * JSON payload is: the record's fields at the top (so ?entity= names the
 * entity), LIST-like unless it carries a whole record. A key twice keeps its
 * last value. */
static int fields_object(struct tds_webhook *w, const struct tds_verify_kv *kv, size_t n)
{
    json_t *o;
    int r = 0;

    if (n == 0)
        return TDS_WEBHOOK_E_FORM;
    if (!(o = json_object()))
        return -ENOMEM;
    for (size_t i = 0; i < n && !r; i++) {
        json_t *v;

        /* jansson refuses a value that is not UTF-8 (NULL); pjson then
         * refuses a \u0000 in a key or value, as in any JSON body */
        if (!tds_utf8_valid(kv[i].k, kv[i].klen) || !(v = json_stringn(kv[i].v, kv[i].vlen)))
            r = TDS_WEBHOOK_E_UTF8;
        else if (json_object_setn_new(o, kv[i].k, kv[i].klen, v) != 0) /* takes v */
            r = -ENOMEM;
    }
    if (!r && !(w->owned = json_dumps(o, JSON_COMPACT)))
        r = -ENOMEM;
    if (!r) {
        w->json = w->owned;
        w->json_len = strlen(w->owned);
    }
    json_decref(o);
    return r;
}

/* A form without JSONString: the fields a workflow chose (Zoho's form
 * payload is key/value pairs picked by the user), decoded. */
static int form_object(struct tds_webhook *w, const char *body, size_t len)
{
    struct tds_verify_kv kv[TDS_VERIFY_MAX_PARAMS];
    size_t n = 0;
    char *scratch = malloc(len + 1);
    int r;

    if (!scratch)
        return -ENOMEM;
    r = tds_webhook_form_fields(body, len, scratch, kv, TDS_VERIFY_MAX_PARAMS, &n) != 0
            ? TDS_WEBHOOK_E_FORM /* more than a signature covers */
            : fields_object(w, kv, n);
    free(scratch);
    return r;
}

/* Find JSONString=… among the form fields and decode it into w->owned; a
 * form without one is its fields (form_object). */
static int form_json(struct tds_webhook *w, const char *body, size_t len)
{
    const char *p = body, *end = body + len;

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *fe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(fe - p));

        if (eq && eq - p == 10 && memcmp(p, "JSONString", 10) == 0) {
            size_t vlen = (size_t)(fe - eq - 1);

            w->owned = malloc(vlen + 1);
            if (!w->owned)
                return -ENOMEM;
            w->json_len = form_decode(eq + 1, vlen, w->owned);
            w->owned[w->json_len] = '\0';
            w->json = w->owned;
            return 0;
        }
        p = fe + 1;
    }
    return form_object(w, body, len);
}

/* One reader per MHD thread, reused for every request it parses; freed when
 * the thread ends. Trimmed to ARENA_KEEP after each parse, not only reset:
 * a 1 MB body of a long array grows its scratch stack to 20-40 MiB, and
 * the reset (made for the processor's stream of records) would keep 4 MiB
 * of values and 1 MiB of each stack in every thread for good. A usual
 * webhook (a record of some KB) fits in what is kept. */
#define ARENA_KEEP (128u * 1024u)

static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static int arena_key_rc;

static void arena_destroy(void *p)
{
    tds_pjson_arena_free(p);
}

static void arena_key_init(void)
{
    arena_key_rc = pthread_key_create(&arena_key, arena_destroy);
}

static struct tds_pjson_arena *thread_arena(void)
{
    struct tds_pjson_arena *a;

    if (pthread_once(&arena_once, arena_key_init) != 0 || arena_key_rc != 0)
        return NULL;
    a = pthread_getspecific(arena_key);
    if (!a) {
        if (tds_pjson_arena_new(&a) != 0)
            return NULL;
        if (pthread_setspecific(arena_key, a) != 0) {
            tds_pjson_arena_free(a);
            return NULL;
        }
    }
    tds_pjson_arena_reset(a);
    return a;
}

/* A string or integer id, copied into out; false when absent or unusable. */
static bool get_id(const struct tds_pjson *v, char *out, size_t cap)
{
    if (!v)
        return false;
    if (v->type == TDS_PJ_STRING) {
        /* pjson refuses \u0000: no NUL inside. An id no stage would take
         * (one that is not [0-9A-Za-z_.-], or a dot segment) is refused
         * here, with a 400, rather than fetched or rejected downstream. */
        if (v->n >= cap || !tds_zoho_id_valid(v->s, v->n))
            return false;
        memcpy(out, v->s, v->n);
        out[v->n] = '\0';
        return true;
    }
    if (v->type == TDS_PJ_NUMBER) {
        /* Zoho's docs print ids unquoted: an integer lexeme, kept as written. */
        size_t i = v->s[0] == '-' ? 1 : 0;

        if (v->n <= i || v->n >= cap)
            return false;
        for (size_t k = i; k < v->n; k++)
            if (v->s[k] < '0' || v->s[k] > '9')
                return false;
        memcpy(out, v->s, v->n);
        out[v->n] = '\0';
        return true;
    }
    return false;
}

static bool word_is(const char *s, size_t n, const char *w)
{
    return n == strlen(w) && strncasecmp(s, w, n) == 0;
}

/* The event names that mean a delete, whole and case aside: "delete" or
 * "deleted", alone (the simulator's ?event=deleted) or after the webhook's
 * own entity and '_' or '.': its key ("item_deleted", "salesorder.delete"),
 * its name ("sales_orders_deleted") or that name without its plural s
 * ("sales_order_deleted"). A suffix match took "undelete",
 * "item_not_deleted" and "?event=undeleted" for deletes. */
static bool means_delete(const char *s, size_t n, const struct tds_entity *e)
{
    const char *names[] = {e->detail_key, e->name, e->name};
    size_t lens[] = {strlen(e->detail_key), strlen(e->name), strlen(e->name)};

    if (!s)
        return false;
    if (word_is(s, n, "delete") || word_is(s, n, "deleted"))
        return true;
    if (lens[2] > 1 && e->name[lens[2] - 1] == 's')
        lens[2]--;
    for (size_t i = 0; i < TDS_ARRAY_SIZE(names); i++) {
        size_t k = lens[i];

        if (n > k + 1 && strncasecmp(s, names[i], k) == 0 && (s[k] == '_' || s[k] == '.') &&
            (word_is(s + k + 1, n - k - 1, "delete") || word_is(s + k + 1, n - k - 1, "deleted")))
            return true;
    }
    return false;
}

static const char *const delete_keys[] = {"event_type", "event", "operation", "action"};

/* Longest word means_delete can take: an entity's key or name, '_' or '.',
 * "deleted". */
#define DELETE_WORD_MAX 96

/* Whether a name that starts s[0..n) can sort after "event". */
static bool after_event(const char *s, size_t n)
{
    int c = memcmp(s, "event", n < 5 ? n : 5);

    return c > 0 || (c == 0 && n >= 5); /* "event" again sorts by its value */
}

bool tds_webhook_hides_delete(const struct tds_verify_kv *kv, size_t n,
                              const struct tds_entity *e)
{
    const struct tds_verify_kv *sorted[TDS_VERIFY_MAX_PARAMS];
    char stack[1024], *text = stack;
    size_t len = 0, need = 0;
    bool hit = false;

    if (n == 0)
        return false;
    if (tds_verify_sort(kv, n, sorted))
        return true; /* more fields than any signature covers */
    for (size_t i = 0; i < n; i++)
        need += sorted[i]->klen + sorted[i]->vlen + 1;
    if (need > sizeof(stack) && !(text = malloc(need)))
        return true;
    /* The fields' bytes in signed order; a JSONString field is a wall ('\0'):
     * its value must stay one JSON text, so no split moves bytes across it. */
    for (size_t i = 0; i < n; i++) {
        const struct tds_verify_kv *f = sorted[i];

        if (f->klen == 10 && memcmp(f->k, "JSONString", 10) == 0) {
            text[len++] = '\0';
            continue;
        }
        memcpy(text + len, f->k, f->klen);
        len += f->klen;
        memcpy(text + len, f->v, f->vlen);
        len += f->vlen;
    }
    for (const char *p = text; !hit && (p = memmem(p, len - (size_t)(p - text), "event", 5));
         p++) {
        const char *w = p + 5, *end = memchr(w, '\0', len - (size_t)(w - text));
        size_t room = (size_t)((end ? end : text + len) - w);

        /* A split is only signed as these bytes if its names stay sorted:
         * after the word comes the wall, the end, or a name past "event". */
        for (size_t k = 1; !hit && k <= room && k <= DELETE_WORD_MAX; k++)
            hit = means_delete(w, k, e) && (k == room || after_event(w + k, room - k));
    }
    if (text != stack)
        free(text);
    return hit;
}

static int parse(struct tds_webhook *w, struct tds_pjson_arena *arena, const char *entity_param,
                 const char *event_param);

/* w->json read with this thread's arena, trimmed after. */
static int parse_json(struct tds_webhook *w, const char *entity_param, const char *event_param)
{
    struct tds_pjson_arena *arena = thread_arena();
    int r;

    if (!arena)
        return -ENOMEM;
    r = parse(w, arena, entity_param, event_param);
    /* w holds copies (ids) or the body's bytes, nothing of the tree */
    tds_pjson_arena_trim(arena, ARENA_KEEP);
    return r;
}

int tds_webhook_parse(struct tds_webhook *w, enum tds_webhook_kind kind, const char *body,
                      size_t len, const char *entity_param, const char *event_param)
{
    int r;

    memset(w, 0, sizeof(*w));
    if (kind == TDS_WEBHOOK_FORM) {
        r = form_json(w, body, len);
        if (r)
            return r;
    } else {
        w->json = body;
        w->json_len = len;
    }
    return parse_json(w, entity_param, event_param);
}

int tds_webhook_parse_fields(struct tds_webhook *w, const struct tds_verify_kv *kv, size_t n,
                             const char *entity_param, const char *event_param)
{
    int r;

    memset(w, 0, sizeof(*w));
    r = n > TDS_VERIFY_MAX_PARAMS ? TDS_WEBHOOK_E_FORM : fields_object(w, kv, n);
    return r ? r : parse_json(w, entity_param, event_param);
}

/* w->json parsed with arena, and read into w. */
static int parse(struct tds_webhook *w, struct tds_pjson_arena *arena, const char *entity_param,
                 const char *event_param)
{
    const struct tds_entity *ent = NULL;
    struct tds_pjson *root = NULL;
    const struct tds_pjson *rec = NULL, *v;
    char modified[TDS_WEBHOOK_MAX_ID + 1] = "";
    char err[160];
    int r;

    r = tds_pjson_parse(arena, w->json, w->json_len, &root, err, sizeof(err));
    if (r < 0)
        return r;
    if (r == TDS_PJ_E_UTF8)
        return TDS_WEBHOOK_E_UTF8;
    if (r == TDS_PJ_E_TOO_LARGE)
        return TDS_WEBHOOK_E_TOO_LARGE;
    if (r == TDS_PJ_E_RANGE)
        return TDS_WEBHOOK_E_NUMBER;
    if (r != 0 || root->type != TDS_PJ_OBJECT)
        return TDS_WEBHOOK_E_JSON;

    if (entity_param && *entity_param) {
        ent = tds_entity_find(entity_param);
        if (!ent)
            ent = tds_entity_by_key(entity_param);
        if (!ent)
            return TDS_WEBHOOK_E_ENTITY;
        rec = tds_pjson_get(root, ent->detail_key);
        if (!rec || rec->type != TDS_PJ_OBJECT)
            rec = root; /* a custom payload: the record's fields at the top */
    } else {
        for (uint32_t i = 0; i < root->n; i++) {
            const struct tds_pjson_member *m = &root->u.members[i];
            const struct tds_entity *e;
            char key[64];

            if (m->v.type != TDS_PJ_OBJECT || m->klen >= sizeof(key))
                continue;
            memcpy(key, m->key, m->klen);
            key[m->klen] = '\0';
            if (!(e = tds_entity_by_key(key)))
                continue;
            if (ent)
                return TDS_WEBHOOK_E_ENTITY; /* two entities (or one twice): which one? */
            ent = e;
            rec = &m->v;
        }
        if (!ent)
            return TDS_WEBHOOK_E_ENTITY;
    }
    w->entity = ent;

    if (!get_id(tds_pjson_get(rec, ent->id_field), w->zoho_id, sizeof(w->zoho_id)))
        return TDS_WEBHOOK_E_ID;
    if (ent->modified_field) {
        v = tds_pjson_get(rec, ent->modified_field);
        if (v && v->type == TDS_PJ_STRING && v->n < sizeof(modified)) {
            memcpy(modified, v->s, v->n);
            modified[v->n] = '\0';
        }
        w->has_record = modified[0] != '\0';
    } else {
        w->has_record = rec->n > 1;
    }

    /* A delete is the envelope's word: ?event=, or an event key beside the
     * record. A flat payload (?entity=, the record's fields at the top) has
     * no envelope, and a field of the record named "action" or "event" is
     * the record's own. */
    w->is_delete = event_param && means_delete(event_param, strlen(event_param), ent);
    for (size_t i = 0; i < TDS_ARRAY_SIZE(delete_keys) && !w->is_delete && rec != root; i++) {
        v = tds_pjson_get(root, delete_keys[i]);
        w->is_delete = v && v->type == TDS_PJ_STRING && means_delete(v->s, v->n, ent);
    }
    if (!w->is_delete) {
        v = tds_pjson_get(rec, "is_deleted");
        w->is_delete = v && v->type == TDS_PJ_TRUE;
    }

    /* Zoho's own event id when it sends one; else a hash that is the same
     * for the same delivery retried, and different for a new change. An
     * id-only payload to fetch with no modified time says only "this record
     * changed": every change of the record is the same bytes, so such a hash
     * would take the second change for a retry of the first. It gets an id
     * of its own per delivery (random bytes in the hash): a retried delivery
     * then costs one more fetch, never a missed change. A delete is the same
     * however often it comes, and keeps its hash.
     *
     * Whatever decides what the webhook means goes into the hash, not only
     * the body: the entity (from the key or ?entity=) and whether it is a
     * delete (?event=…deleted). Zoho's delete workflow may post the same
     * full record its update workflow posted (deleting does not change the
     * modified time): without the mark, the delete would pass for a retry of
     * the update, be answered 200 and never be applied. The mark goes before
     * the body, where no JSON text can start with it; an update's hash is
     * what it always was. */
    if (!get_id(tds_pjson_get(root, "event_id"), w->event_id, sizeof(w->event_id))) {
        unsigned char d[EVP_MAX_MD_SIZE], nonce[16];
        bool once = !w->has_record && !w->is_delete && !modified[0];
        EVP_MD_CTX *c;
        int ok;

        if (once && RAND_bytes(nonce, sizeof(nonce)) != 1)
            return -EIO;
        c = EVP_MD_CTX_new();
        ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(c, ent->name, strlen(ent->name) + 1) &&
             EVP_DigestUpdate(c, w->zoho_id, strlen(w->zoho_id) + 1) &&
             EVP_DigestUpdate(c, modified, strlen(modified) + 1) &&
             EVP_DigestUpdate(c, "\001delete", w->is_delete ? 7 : 0) &&
             EVP_DigestUpdate(c, w->json, w->json_len) &&
             EVP_DigestUpdate(c, nonce, once ? sizeof(nonce) : 0) &&
             EVP_DigestFinal_ex(c, d, NULL);
        EVP_MD_CTX_free(c);
        if (!ok)
            return -ENOMEM;
        tds_hex(d, 32, w->event_id);
    }
    return 0;
}

void tds_webhook_clear(struct tds_webhook *w)
{
    free(w->owned);
    w->owned = NULL;
    w->json = NULL;
}

const char *tds_webhook_strerror(int code)
{
    switch (code) {
    case TDS_WEBHOOK_E_UTF8: return "body is not valid UTF-8";
    case TDS_WEBHOOK_E_JSON: return "body is not a JSON object";
    case TDS_WEBHOOK_E_ENTITY: return "no single entity in payload";
    case TDS_WEBHOOK_E_ID: return "record id missing";
    case TDS_WEBHOOK_E_TOO_LARGE: return "JSON text larger than 1 MiB";
    case TDS_WEBHOOK_E_NUMBER: return "a number out of PostgreSQL's numeric range";
    case TDS_WEBHOOK_E_FORM: return "no body and no query parameters, or over 64 fields";
    default: return "error";
    }
}
