/* webhook — body kinds, entity/id/delete detection and event ids.
 *
 * The JSON is parsed once with jansson to be sure it is JSON and to read the
 * few keys ingress needs; the bytes forwarded are the bytes received (or the
 * decoded JSONString), never a re-serialization.
 */
#include "webhook.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "entities.h"
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

/* Find JSONString=… among the form fields and decode it into w->owned. */
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
    return TDS_WEBHOOK_E_JSON;
}

/* A string or integer id, copied into out; false when absent or unusable. */
static bool get_id(json_t *v, char *out, size_t cap)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);

        if (n == 0 || n >= cap || memchr(s, '\0', n))
            return false;
        memcpy(out, s, n);
        out[n] = '\0';
        return true;
    }
    if (json_is_integer(v)) {
        /* Zoho's docs print ids unquoted; 19 digits still fit json_int_t. */
        snprintf(out, cap, "%lld", (long long)json_integer_value(v));
        return true;
    }
    return false;
}

static bool says_deleted(const char *s)
{
    size_t n;

    if (!s)
        return false;
    n = strlen(s);
    return (n >= 7 && strcasecmp(s + n - 7, "deleted") == 0) ||
           (n >= 6 && strcasecmp(s + n - 6, "delete") == 0);
}

static const char *const delete_keys[] = {"event_type", "event", "operation", "action"};

int tds_webhook_parse(struct tds_webhook *w, enum tds_webhook_kind kind, const char *body,
                      size_t len, const char *entity_param, const char *event_param)
{
    const struct tds_entity *ent = NULL;
    json_t *root = NULL, *rec = NULL, *v;
    json_error_t jerr;
    const char *key;
    char modified[TDS_WEBHOOK_MAX_ID + 1] = "";
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
    root = json_loadb(w->json, w->json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        /* jansson refuses bad UTF-8 too; say which it was. */
        r = tds_utf8_valid(w->json, w->json_len) ? TDS_WEBHOOK_E_JSON : TDS_WEBHOOK_E_UTF8;
        goto out;
    }

    if (entity_param && *entity_param) {
        ent = tds_entity_find(entity_param);
        if (!ent)
            ent = tds_entity_by_key(entity_param);
        if (!ent) {
            r = TDS_WEBHOOK_E_ENTITY;
            goto out;
        }
        rec = json_object_get(root, ent->detail_key);
        if (!json_is_object(rec))
            rec = root; /* a custom payload: the record's fields at the top */
    } else {
        json_object_foreach(root, key, v) {
            const struct tds_entity *e = tds_entity_by_key(key);

            if (!e || !json_is_object(v))
                continue;
            if (ent) {
                r = TDS_WEBHOOK_E_ENTITY; /* two entities: which one? */
                goto out;
            }
            ent = e;
            rec = v;
        }
        if (!ent) {
            r = TDS_WEBHOOK_E_ENTITY;
            goto out;
        }
    }
    w->entity = ent;

    if (!get_id(json_object_get(rec, ent->id_field), w->zoho_id, sizeof(w->zoho_id))) {
        r = TDS_WEBHOOK_E_ID;
        goto out;
    }
    if (ent->modified_field) {
        v = json_object_get(rec, ent->modified_field);
        if (json_is_string(v) && json_string_length(v) < sizeof(modified))
            memcpy(modified, json_string_value(v), json_string_length(v) + 1);
        w->has_record = modified[0] != '\0';
    } else {
        w->has_record = json_object_size(rec) > 1;
    }

    w->is_delete = says_deleted(event_param);
    for (size_t i = 0; i < TDS_ARRAY_SIZE(delete_keys) && !w->is_delete; i++)
        w->is_delete = says_deleted(json_string_value(json_object_get(root, delete_keys[i])));
    if (!w->is_delete && json_is_true(json_object_get(rec, "is_deleted")))
        w->is_delete = true;

    /* Zoho's own event id when it sends one; else a hash that is the same
     * for the same delivery retried, and different for a new change. */
    if (!get_id(json_object_get(root, "event_id"), w->event_id, sizeof(w->event_id))) {
        unsigned char d[EVP_MAX_MD_SIZE];
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) &&
                 EVP_DigestUpdate(c, ent->name, strlen(ent->name) + 1) &&
                 EVP_DigestUpdate(c, w->zoho_id, strlen(w->zoho_id) + 1) &&
                 EVP_DigestUpdate(c, modified, strlen(modified) + 1) &&
                 EVP_DigestUpdate(c, w->json, w->json_len) && EVP_DigestFinal_ex(c, d, NULL);

        EVP_MD_CTX_free(c);
        if (!ok) {
            r = -ENOMEM;
            goto out;
        }
        tds_hex(d, 32, w->event_id);
    }
    r = 0;
out:
    json_decref(root);
    return r;
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
    default: return "error";
    }
}
