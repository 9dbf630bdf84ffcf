/* fuzz_zoho — fuzz target for what the fetcher reads from Zoho's answers:
 * the API envelope's classification, the OAuth token response, and the
 * record spans that common/jscan.c slices out of list and detail pages.
 *
 * Input layout: byte 0 bit 0 says whether the transfer finished, byte 1
 * picks an HTTP status, the rest is the body. Any input must classify
 * without a crash, leak or sanitizer report, and give a token only from a
 * 2xx with a non-empty access_token and a lifetime of a second to a week.
 *
 * jscan reads structure only, so it must take every text jansson takes
 * (nested at most 100 deep, and without a raw NUL byte, which jansson lets
 * pass after a number): such a text is complete; every top-level member
 * it finds spans a value equal to the member jansson reads (keys unique);
 * an array member's element spans are exactly its elements; a string member
 * without escapes reads back as the same bytes, a null as absent. On texts
 * jansson refuses, the spans it gives must stay inside the body.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jscan.h"
#include "json_depth.h"
#include "util.h"
#include "zoho.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "fuzz_zoho: check failed: %s (line %d)\n", #c,   \
                    __LINE__);                                                \
            abort();                                                          \
        }                                                                     \
    } while (0)

static const long statuses[] = {200, 201, 204, 400, 401, 403, 404, 429, 500, 502, 503, 0, 302};

static bool span_in(struct tds_span sp, size_t len)
{
    return sp.off <= len && sp.len <= len - sp.off && sp.len > 0;
}

/* The value jansson reads from body[sp] equals want. */
static void check_span_equals(const char *body, struct tds_span sp, const json_t *want)
{
    json_error_t jerr;
    json_t *got = json_loadb(body + sp.off, sp.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    CHECK(got != NULL);
    CHECK(json_equal(got, (json_t *)want));
    json_decref(got);
}

static void check_member(const char *body, size_t len, const char *key, const json_t *want)
{
    struct tds_span sp;
    int rc = tds_json_member_span(body, len, key, &sp);
    /* a key Zoho never escapes is found; an escaped one may not be */
    CHECK(rc == 0 || rc == TDS_E_NOTFOUND);
    if (rc != 0)
        return;
    CHECK(span_in(sp, len));
    check_span_equals(body, sp, want);

    struct tds_span *spans = NULL;
    size_t n = 0;
    rc = tds_json_array_spans(body, len, key, &spans, &n);
    if (json_is_array(want)) {
        CHECK(rc == 0);
        CHECK(n == json_array_size(want));
        CHECK((n == 0) == (spans == NULL));
        for (size_t i = 0; i < n; i++) {
            CHECK(span_in(spans[i], len));
            CHECK(spans[i].off >= sp.off && spans[i].off + spans[i].len <= sp.off + sp.len);
            check_span_equals(body, spans[i], json_array_get(want, i));
        }
    } else {
        CHECK(rc == TDS_E_NOTFOUND);
        CHECK(spans == NULL && n == 0);
    }
    free(spans);

    char out[64];
    rc = tds_json_scalar(body, len, key, out, sizeof(out));
    if (json_is_null(want)) {
        CHECK(rc == TDS_E_NOTFOUND);
    } else if (json_is_object(want) || json_is_array(want)) {
        CHECK(rc == TDS_E_INVALID);
    } else if (json_is_string(want)) {
        bool escaped = memchr(body + sp.off, '\\', sp.len) != NULL;
        if (escaped) {
            CHECK(rc == TDS_E_INVALID);
        } else if (json_string_length(want) >= sizeof(out)) {
            CHECK(rc == TDS_E_TOO_LARGE);
        } else {
            CHECK(rc == 0);
            CHECK(strlen(out) == json_string_length(want));
            CHECK(memcmp(out, json_string_value(want), json_string_length(want)) == 0);
        }
    } else if (rc == 0) {
        /* a number or literal, as written */
        CHECK(strlen(out) == sp.len);
        CHECK(memcmp(out, body + sp.off, sp.len) == 0);
    } else {
        CHECK(rc == TDS_E_TOO_LARGE && sp.len >= sizeof(out));
    }
    if (rc == 0)
        (void)tds_zoho_id_ok(out);
}

/* Whatever jscan makes of any bytes: spans inside the body, nothing more. */
static void scan_any(const char *body, size_t len)
{
    static const char *const keys[] = {"items", "code", "page_context", "has_more_page", "item",
                                       "", "a"};
    (void)tds_json_complete(body, len);
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        struct tds_span sp;
        if (tds_json_member_span(body, len, keys[k], &sp) == 0) {
            CHECK(span_in(sp, len));
            char out[32];
            (void)tds_json_scalar(body + sp.off, sp.len, "has_more_page", out, sizeof(out));
        }
        struct tds_span *spans = NULL;
        size_t n = 0;
        if (tds_json_array_spans(body, len, keys[k], &spans, &n) == 0) {
            for (size_t i = 0; i < n; i++) {
                CHECK(span_in(spans[i], len));
                char id[TDS_ZOHO_ID_MAX + 1];
                if (tds_json_scalar(body + spans[i].off, spans[i].len, "item_id", id,
                                    sizeof(id)) == 0)
                    (void)tds_zoho_id_ok(id);
            }
        } else {
            CHECK(spans == NULL && n == 0);
        }
        free(spans);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    bool transport_ok = data[0] & 1;
    long status = statuses[data[1] % (sizeof(statuses) / sizeof(statuses[0]))];
    const char *body = (const char *)data + 2;
    size_t len = size - 2;

    int64_t code = 0;
    enum tds_zapi_class cls = tds_zoho_classify(transport_ok, status, body, len, &code);
    CHECK(cls >= TDS_ZAPI_OK && cls <= TDS_ZAPI_FATAL);
    CHECK(strcmp(tds_zapi_class_name(cls), "unknown") != 0);
    if (!transport_ok)
        CHECK(cls == TDS_ZAPI_RETRY && code == -1);
    if (cls == TDS_ZAPI_OK)
        CHECK(code == 0 && status >= 200 && status < 300);

    struct tds_zoauth *tok = malloc(sizeof(*tok));
    if (tok) {
        enum tds_zoauth_class oc = tds_zoauth_parse(transport_ok, status, body, len, tok);
        CHECK(oc >= TDS_ZOAUTH_OK && oc <= TDS_ZOAUTH_INVALID);
        CHECK(memchr(tok->access_token, '\0', sizeof(tok->access_token)) != NULL);
        CHECK(memchr(tok->refresh_token, '\0', sizeof(tok->refresh_token)) != NULL);
        CHECK(memchr(tok->api_domain, '\0', sizeof(tok->api_domain)) != NULL);
        CHECK(memchr(tok->error, '\0', sizeof(tok->error)) != NULL);
        if (oc == TDS_ZOAUTH_OK) {
            CHECK(transport_ok && status >= 200 && status < 300);
            CHECK(tok->access_token[0] != '\0');
            CHECK(tok->expires_in_s >= 1 && tok->expires_in_s <= 86400 * 7);
        } else {
            CHECK(tok->error[0] != '\0');
        }
        free(tok);
    }

    scan_any(body, len);

    /* jansson lets a raw NUL byte pass right after a number; JSON has none */
    if (memchr(body, '\0', len))
        return 0;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES,
                              &jerr);
    if (root && fuzz_json_depth(root) <= 100) {
        CHECK(tds_json_complete(body, len));
        if (json_is_object(root)) {
            const char *key;
            size_t key_len;
            json_t *val;
            json_object_keylen_foreach(root, key, key_len, val) {
                if (strlen(key) == key_len)
                    check_member(body, len, key, val);
            }
            /* a whole envelope is never taken for a body cut short */
            if (transport_ok && status >= 200 && status < 300 && cls == TDS_ZAPI_RETRY)
                CHECK(code == 1000);
        }
    }
    json_decref(root);
    return 0;
}
