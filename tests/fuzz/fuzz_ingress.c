/* fuzz_ingress — fuzz target for the ingress request path: query parameters,
 * the X-Zoho-Webhook-Signature check and webhook body parsing.
 *
 * Input layout: byte 0 picks the content type (even: JSON, odd: form), then
 * the query string up to the first '\n', the signature header up to the next
 * '\n', then the raw body. Any input must give a verify code and a parse code
 * without a crash, leak or sanitizer report. Invariants: a signature made by
 * tds_verify_sign over the same parameters and body always verifies (in any
 * parameter order, in upper case and in base64 too) unless the signed bytes begin with
 * "<digits>." (then it is refused as ambiguous, and only then), one flipped
 * body byte never verifies, and a timestamped signature never verifies as a
 * plain one with its "<t>." added to the query;
 * a form's decoded fields stay in their scratch space and sign and verify with
 * the query as Zoho's form scheme does (and read as the payload of a request
 * without a body); a parsed webhook has an entity, a non-empty id and a 64-hex or Zoho event
 * id, and its journal entry encodes and decodes to the same fields.
 */
#include <ctype.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entities.h"
#include "entry.h"
#include "verify.h"
#include "webhook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                \
    do {                                                                        \
        if (!(c)) {                                                             \
            fprintf(stderr, "fuzz_ingress: check failed: %s (line %d)\n", #c,  \
                    __LINE__);                                                  \
            abort();                                                            \
        }                                                                       \
    } while (0)

static const char *const secrets[] = {"fuzzsecret0001", "fuzzsecret0002"};

/* Whether the sorted parameters (name, value) then the body begin with a
 * run of digits and a dot, worked out here without verify.c's code: an
 * insertion sort by memcmp, then the bytes in order. */
static int kv_less(const struct tds_verify_kv *a, const struct tds_verify_kv *b)
{
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(a->k, b->k, n);

    if (c || a->klen != b->klen)
        return c ? c < 0 : a->klen < b->klen;
    n = a->vlen < b->vlen ? a->vlen : b->vlen;
    c = memcmp(a->v, b->v, n);
    return c ? c < 0 : a->vlen < b->vlen;
}

static int starts_timestamped(const struct tds_verify_kv *kv, size_t n, const char *body,
                              size_t body_len)
{
    struct tds_verify_kv s[TDS_VERIFY_MAX_PARAMS];
    char head[24];
    size_t h = 0, d = 0;

    for (size_t i = 0; i < n; i++) {
        size_t j = i;

        while (j > 0 && kv_less(&kv[i], &s[j - 1])) {
            s[j] = s[j - 1];
            j--;
        }
        s[j] = kv[i];
    }
    for (size_t i = 0; i < n && h < sizeof(head); i++) {
        for (size_t k = 0; k < s[i].klen && h < sizeof(head); k++)
            head[h++] = s[i].k[k];
        for (size_t k = 0; k < s[i].vlen && h < sizeof(head); k++)
            head[h++] = s[i].v[k];
    }
    for (size_t k = 0; k < body_len && h < sizeof(head); k++)
        head[h++] = body[k];
    while (d < h && head[d] >= '0' && head[d] <= '9')
        d++;
    if (d == h && h == sizeof(head))
        return -1; /* a longer run of digits than looked at: either answer */
    return d > 0 && d < h && head[d] == '.';
}

/* Split "a=1&b=2" (no decoding: the signature sees decoded values, and any
 * bytes are values here) into kv pointing into q. Returns the count. */
static size_t split_query(char *q, struct tds_verify_kv *kv, size_t max)
{
    size_t n = 0;

    for (char *p = q; p && *p && n < max;) {
        char *amp = strchr(p, '&'), *eq;

        if (amp)
            *amp = '\0';
        eq = strchr(p, '=');
        if (eq) {
            *eq = '\0';
            kv[n++] = (struct tds_verify_kv){p, strlen(p), eq + 1, strlen(eq + 1)};
        } else {
            kv[n++] = (struct tds_verify_kv){p, strlen(p), "", 0};
        }
        p = amp ? amp + 1 : NULL;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tds_verify_kv kv[TDS_VERIFY_MAX_PARAMS], rev[TDS_VERIFY_MAX_PARAMS];
    char *copy, *query, *sig, *body, *nl, hex[65];
    size_t n, body_len;
    const char *entity = NULL, *event = NULL;
    struct tds_webhook w;
    int r, ts, want;

    if (size < 1)
        return 0;
    copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    query = copy;
    nl = memchr(query, '\n', size - 1);
    if (!nl) {
        free(copy);
        return 0;
    }
    *nl = '\0';
    sig = nl + 1;
    nl = memchr(sig, '\n', (size_t)(copy + size - 1 - sig));
    if (!nl) {
        free(copy);
        return 0;
    }
    *nl = '\0';
    body = nl + 1;
    body_len = (size_t)(copy + size - 1 - body);

    n = split_query(query, kv, TDS_VERIFY_MAX_PARAMS);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(kv[i].k, "entity") == 0)
            entity = kv[i].v;
        else if (strcmp(kv[i].k, "event") == 0)
            event = kv[i].v;
    }

    /* Whatever the header says: a code, never a crash. */
    r = tds_verify_check(secrets, 2, sig, kv, n, body, body_len, 1700000000000, 300000);
    CHECK(r >= 0 && r <= TDS_VERIFY_E_AMBIGUOUS);

    /* Our own signature verifies, in reverse parameter order and upper case,
     * unless its bytes could be a timestamped signature's. */
    ts = starts_timestamped(kv, n, body, body_len);
    CHECK(tds_verify_sign(secrets[1], NULL, kv, n, body, body_len, hex) == 0);
    for (size_t i = 0; i < n; i++)
        rev[i] = kv[n - 1 - i];
    r = tds_verify_check(secrets, 2, hex, rev, n, body, body_len, 0, 0);
    CHECK(ts < 0 ? r == 0 || r == TDS_VERIFY_E_AMBIGUOUS
                 : r == (ts ? TDS_VERIFY_E_AMBIGUOUS : 0));
    want = r;
    for (char *p = hex; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    CHECK(tds_verify_check(secrets, 2, hex, kv, n, body, body_len, 0, 0) == want);
    /* The same digest in base64, padded or not, verifies alike. */
    {
        unsigned char raw[32];
        char b64[45];

        for (size_t i = 0; i < 32; i++) {
            unsigned v = 0;

            CHECK(sscanf(hex + 2 * i, "%2x", &v) == 1);
            raw[i] = (unsigned char)v;
        }
        CHECK(EVP_EncodeBlock((unsigned char *)b64, raw, 32) == 44);
        CHECK(tds_verify_check(secrets, 2, b64, kv, n, body, body_len, 0, 0) == want);
        b64[43] = '\0';
        CHECK(tds_verify_check(secrets, 2, b64, kv, n, body, body_len, 0, 0) == want);
    }

    /* A stale timestamped signature, its "<t>." moved into the query as a
     * parameter of its own: never verifies as a plain signature. */
    if (n < TDS_VERIFY_MAX_PARAMS) {
        CHECK(tds_verify_sign(secrets[0], "1699996400000.", kv, n, body, body_len, hex) == 0);
        memcpy(rev, kv, n * sizeof(*kv));
        rev[n] = (struct tds_verify_kv){"1699996400000.", 14, "", 0};
        CHECK(tds_verify_check(secrets, 2, hex, rev, n + 1, body, body_len, 1700000000000,
                               300000) != 0);
    }
    if (body_len && want == 0) {
        body[0] ^= 0x20;
        CHECK(tds_verify_check(secrets, 2, hex, kv, n, body, body_len, 0, 0) ==
              TDS_VERIFY_E_MISMATCH);
        body[0] ^= 0x20;
    }

    if (data[0] & 1) {
        /* A form's fields, decoded: never past their scratch space, and a
         * signature over them and the query verifies. */
        struct tds_verify_kv all[TDS_VERIFY_MAX_PARAMS];
        char *scratch = malloc(body_len + 1);
        size_t m = n;

        CHECK(scratch != NULL);
        memcpy(all, kv, n * sizeof(*kv));
        r = tds_webhook_form_fields(body, body_len, scratch, all, TDS_VERIFY_MAX_PARAMS, &m);
        CHECK(r == 0 || r == TDS_VERIFY_E_PARAMS);
        if (r == 0) {
            int fts = starts_timestamped(all, m, "", 0);

            CHECK(tds_verify_sign(secrets[0], NULL, all, m, "", 0, hex) == 0);
            r = tds_verify_check(secrets, 2, hex, all, m, "", 0, 0, 0);
            CHECK(fts < 0 ? r == 0 || r == TDS_VERIFY_E_AMBIGUOUS
                          : r == (fts ? TDS_VERIFY_E_AMBIGUOUS : 0));
        }
        free(scratch);
    }

    r = tds_webhook_parse(&w, data[0] & 1 ? TDS_WEBHOOK_FORM : TDS_WEBHOOK_JSON, body, body_len,
                          entity, event);
    CHECK(r >= 0 && r <= TDS_WEBHOOK_E_FORM);
    if (r == 0) {
        struct tds_entry e = {0}, d;
        char *buf = NULL;
        size_t len = 0;

        CHECK(w.entity != NULL && w.zoho_id[0] != '\0' && w.event_id[0] != '\0');
        CHECK(w.json != NULL);
        e.dest = w.has_record || w.is_delete ? TDS_ENTRY_PROCESSOR : TDS_ENTRY_FETCHER;
        e.org = "60001";
        e.org_len = 5;
        e.entity = w.entity->name;
        e.entity_len = strlen(w.entity->name);
        e.msgid = w.event_id;
        e.msgid_len = strlen(w.event_id);
        e.msg = w.json;
        e.msg_len = w.json_len;
        CHECK(tds_entry_encode(&e, &buf, &len) == 0);
        CHECK(tds_entry_decode(buf, len, &d) == 0);
        CHECK(d.dest == e.dest && d.msg_len == e.msg_len && d.msgid_len == e.msgid_len &&
              memcmp(d.msgid, e.msgid, e.msgid_len) == 0 &&
              memcmp(d.msg, e.msg, e.msg_len) == 0);
        free(buf);
    }
    tds_webhook_clear(&w);

    /* The query parameters as the payload of a request without a body. */
    r = tds_webhook_parse_fields(&w, kv, n, entity, event);
    CHECK(r >= 0 && r <= TDS_WEBHOOK_E_FORM);
    if (r == 0)
        CHECK(w.entity != NULL && w.zoho_id[0] != '\0' && w.event_id[0] != '\0' &&
              w.json != NULL && w.json_len > 0);
    tds_webhook_clear(&w);
    free(copy);
    return 0;
}
