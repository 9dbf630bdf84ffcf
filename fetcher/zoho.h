/* zoho — pure helpers for what Zoho sends and expects: its time format, the
 * response envelope, the OAuth token response, and byte spans of records
 * inside a response body.
 *
 * Owns no state and does no I/O, so every rule here is unit-tested without a
 * network. It never logs. Record bytes are sliced out of the original body
 * (never re-serialized) so numbers such as 1369.66 reach the processor exactly
 * as Zoho wrote them.
 */
#ifndef TDS_FETCHER_ZOHO_H
#define TDS_FETCHER_ZOHO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "entities.h" /* TDS_ZOHO_ID_MAX, tds_zoho_id_valid */
#include "jscan.h"    /* record spans of list pages and answers */
#include "ztime.h"    /* Zoho's time format */

/* ---- API responses ---- */

enum tds_zapi_class {
    TDS_ZAPI_OK = 0,        /* HTTP 2xx and envelope code 0 */
    TDS_ZAPI_RETRY,         /* transport error, 5xx, truncated or non-JSON body */
    TDS_ZAPI_AUTH,          /* HTTP 401, code 57 or 14: token dead, refresh once */
    TDS_ZAPI_NOTFOUND,      /* code 1002: the record does not exist (deleted) */
    TDS_ZAPI_RATE_MINUTE,   /* 429 code 44 (or 429 without a known code) */
    TDS_ZAPI_RATE_CONCURRENCY, /* 429 code 1070 */
    TDS_ZAPI_RATE_DAILY,    /* code 45, under 429 or 200 */
    TDS_ZAPI_FATAL,         /* any other error: retrying will not help */
};

/* Classify one finished API call. transport_ok is false when the transfer
 * failed (timeout, reset, short read). *code gets the envelope code, or -1
 * when there is none. */
enum tds_zapi_class tds_zoho_classify(bool transport_ok, long http_status, const char *body,
                                      size_t len, int64_t *code);
const char *tds_zapi_class_name(enum tds_zapi_class c);

/* ---- OAuth token endpoint ---- */

enum tds_zoauth_class {
    TDS_ZOAUTH_OK = 0,      /* access_token present */
    TDS_ZOAUTH_RETRY,       /* transport error, 5xx, unparseable: try later, with backoff */
    TDS_ZOAUTH_DENIED,      /* "Access Denied" / HTTP 400 throttle: lockout, do not retry */
    TDS_ZOAUTH_INVALID,     /* invalid_code / invalid_client / …: the org must be paused */
};

#define TDS_ZOAUTH_TOKEN_MAX 4096
#define TDS_ZOAUTH_DOMAIN_MAX 512
#define TDS_ZOAUTH_ERROR_MAX 256

struct tds_zoauth {
    char access_token[TDS_ZOAUTH_TOKEN_MAX];
    char refresh_token[TDS_ZOAUTH_TOKEN_MAX]; /* only from a code exchange; "" otherwise */
    char api_domain[TDS_ZOAUTH_DOMAIN_MAX];   /* "" when the response omits it */
    int64_t expires_in_s;                     /* seconds, default 3600 */
    char error[TDS_ZOAUTH_ERROR_MAX];         /* the `error` value, or a description */
};

/* Classify a token endpoint response. The `error` key wins over the HTTP
 * status: Zoho reports invalid_client with HTTP 200. */
enum tds_zoauth_class tds_zoauth_parse(bool transport_ok, long http_status, const char *body,
                                       size_t len, struct tds_zoauth *out);

/* Whether s (NUL-terminated, as tds_json_scalar gives it) is an id the
 * processor accepts (tds_zoho_id_valid in common/entities.h). */
bool tds_zoho_id_ok(const char *s);

#endif
