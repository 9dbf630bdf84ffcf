/* zoho — Zoho's envelopes, token responses and record spans (its time
 * format is common/ztime.c).
 *
 * Pure functions over bytes: no I/O, no global state, no logging. The JSON
 * scanner here only measures values (it never builds a tree) and has a fixed
 * nesting limit, so a hostile body costs at most one pass.
 */
#include "zoho.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---- API responses ---- */

/* The envelope's code without building a tree: a page of 200 records is
 * large, and this runs on the loop for every answer. */
static int64_t envelope_code(const char *body, size_t len, bool *parsed)
{
    *parsed = false;
    if (!body || len == 0)
        return -1;
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    if (i == len || body[i] != '{' || !tds_json_complete(body, len))
        return -1;
    *parsed = true;
    char tmp[32];
    int64_t code = -1;
    if (tds_json_scalar(body, len, "code", tmp, sizeof(tmp)) == 0)
        tds_parse_i64(tmp, -1000000000, 1000000000, &code);
    return code;
}

enum tds_zapi_class tds_zoho_classify(bool transport_ok, long http_status, const char *body,
                                      size_t len, int64_t *code)
{
    bool parsed;
    *code = -1;
    if (!transport_ok)
        return TDS_ZAPI_RETRY;
    *code = envelope_code(body, len, &parsed);
    /* Code 45 has been seen under HTTP 200 too: check codes before statuses. */
    if (*code == 45)
        return TDS_ZAPI_RATE_DAILY;
    if (*code == 1070)
        return TDS_ZAPI_RATE_CONCURRENCY;
    if (*code == 44)
        return TDS_ZAPI_RATE_MINUTE;
    if (http_status == 429)
        return TDS_ZAPI_RATE_MINUTE;
    if (http_status == 401 || *code == 57 || *code == 14)
        return TDS_ZAPI_AUTH;
    if (*code == 1002)
        return TDS_ZAPI_NOTFOUND;
    if (http_status >= 500 || http_status == 0)
        return TDS_ZAPI_RETRY;
    if (!parsed) {
        /* A 2xx whose body does not parse was cut short (or a proxy page):
         * the same request is worth another try. */
        return http_status >= 200 && http_status < 300 ? TDS_ZAPI_RETRY : TDS_ZAPI_FATAL;
    }
    if (http_status >= 200 && http_status < 300 && *code == 0)
        return TDS_ZAPI_OK;
    if (*code == 1000)
        return TDS_ZAPI_RETRY;
    return TDS_ZAPI_FATAL;
}

const char *tds_zapi_class_name(enum tds_zapi_class c)
{
    switch (c) {
    case TDS_ZAPI_OK: return "ok";
    case TDS_ZAPI_RETRY: return "retry";
    case TDS_ZAPI_AUTH: return "auth";
    case TDS_ZAPI_NOTFOUND: return "notfound";
    case TDS_ZAPI_RATE_MINUTE: return "rate_minute";
    case TDS_ZAPI_RATE_CONCURRENCY: return "rate_concurrency";
    case TDS_ZAPI_RATE_DAILY: return "rate_daily";
    case TDS_ZAPI_FATAL: return "fatal";
    }
    return "unknown";
}

/* ---- OAuth ---- */

static void copy_str(char *dst, size_t cap, const char *src)
{
    if (!src)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* A token lifetime: an integer or a string of digits, 1..max. */
static int token_lifetime(const json_t *v, int64_t max, int64_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= max) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v))
        return tds_parse_i64(json_string_value(v), 1, max, out);
    return -1;
}

enum tds_zoauth_class tds_zoauth_parse(bool transport_ok, long http_status, const char *body,
                                       size_t len, struct tds_zoauth *out)
{
    memset(out, 0, sizeof(*out));
    out->expires_in_s = 3600;
    if (!transport_ok) {
        copy_str(out->error, sizeof(out->error), "token endpoint did not answer");
        return TDS_ZOAUTH_RETRY;
    }
    json_error_t jerr;
    json_t *root = body && len ? json_loadb(body, len, 0, &jerr) : NULL;
    if (!root || !json_is_object(root)) {
        json_decref(root);
        snprintf(out->error, sizeof(out->error), "token endpoint answered HTTP %ld without JSON",
                 http_status);
        /* A 400 without a readable body is most likely the throttle page:
         * retrying would extend the lockout. */
        return http_status == 400 ? TDS_ZOAUTH_DENIED : TDS_ZOAUTH_RETRY;
    }
    enum tds_zoauth_class cls;
    json_t *err = json_object_get(root, "error");
    json_t *at = json_object_get(root, "access_token");
    if (json_is_string(err) || (err && !json_is_null(err))) {
        const char *e = json_is_string(err) ? json_string_value(err) : "";
        if (e[0])
            copy_str(out->error, sizeof(out->error), e);
        else
            snprintf(out->error, sizeof(out->error),
                     "token endpoint answered HTTP %ld with an unnamed error", http_status);
        if (strncmp(e, "invalid_", 8) == 0 || strcmp(e, "unauthorized_client") == 0 ||
            strcmp(e, "unsupported_grant_type") == 0)
            cls = TDS_ZOAUTH_INVALID;
        else if (http_status >= 500)
            cls = TDS_ZOAUTH_RETRY;
        else
            /* "Access Denied", translated variants, anything else under 4xx:
             * Zoho's throttle. Never retry in a loop. */
            cls = TDS_ZOAUTH_DENIED;
    } else if (json_is_string(at) && json_string_length(at) > 0 && http_status >= 200 &&
               http_status < 300) {
        copy_str(out->access_token, sizeof(out->access_token), json_string_value(at));
        json_t *rt = json_object_get(root, "refresh_token");
        if (json_is_string(rt))
            copy_str(out->refresh_token, sizeof(out->refresh_token), json_string_value(rt));
        json_t *dom = json_object_get(root, "api_domain");
        if (json_is_string(dom))
            copy_str(out->api_domain, sizeof(out->api_domain), json_string_value(dom));
        /* expires_in_sec when given; otherwise expires_in, which some answers
         * give in milliseconds ("expires_in_sec":3600,"expires_in":3600000).
         * An access token lives an hour, so more than a day is milliseconds. */
        const int64_t week = 86400LL * 7;
        int64_t v = 0;
        if (token_lifetime(json_object_get(root, "expires_in_sec"), week, &v) == 0)
            out->expires_in_s = v;
        else if (token_lifetime(json_object_get(root, "expires_in"), week * 1000, &v) == 0)
            out->expires_in_s = v > 86400 ? (v + 999) / 1000 : v;
        cls = TDS_ZOAUTH_OK;
    } else {
        snprintf(out->error, sizeof(out->error), "token endpoint answered HTTP %ld without a token",
                 http_status);
        cls = http_status == 400 ? TDS_ZOAUTH_DENIED : TDS_ZOAUTH_RETRY;
    }
    json_decref(root);
    return cls;
}

bool tds_zoho_id_ok(const char *s) { return tds_zoho_id_valid(s, strnlen(s, TDS_ZOHO_ID_MAX + 1)); }
