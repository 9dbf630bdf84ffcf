/* verify — HMAC-SHA256 webhook signatures with OpenSSL's EVP_MAC.
 *
 * Owns nothing but a lazily fetched EVP_MAC handle (shared by all threads,
 * as OpenSSL allows). Never logs: the caller counts the reason.
 */
#include "verify.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static EVP_MAC *hmac;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* Released at exit so LeakSanitizer sees a clean process. */
__attribute__((destructor)) static void hmac_release(void)
{
    EVP_MAC_free(hmac);
    hmac = NULL;
}

static int kv_cmp(const void *a, const void *b)
{
    const struct tds_verify_kv *x = *(const struct tds_verify_kv *const *)a;
    const struct tds_verify_kv *y = *(const struct tds_verify_kv *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->k, y->k, n);

    if (c || x->klen != y->klen)
        return c ? c : (x->klen < y->klen ? -1 : 1);
    n = x->vlen < y->vlen ? x->vlen : y->vlen;
    c = memcmp(x->v, y->v, n);
    if (c || x->vlen != y->vlen)
        return c ? c : (x->vlen < y->vlen ? -1 : 1);
    return 0;
}

/* HMAC over prefix + sorted params + body with one secret. */
static int mac(const char *secret, const char *prefix, const struct tds_verify_kv *const *sorted,
               size_t n, const void *body, size_t body_len, unsigned char out[32])
{
    OSSL_PARAM p[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                       OSSL_PARAM_construct_end()};
    EVP_MAC_CTX *ctx;
    size_t outl = 0;
    int ok;

    pthread_once(&hmac_once, hmac_fetch);
    if (!hmac)
        return -ENOMEM;
    ctx = EVP_MAC_CTX_new(hmac);
    if (!ctx)
        return -ENOMEM;
    ok = EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), p);
    if (ok && prefix)
        ok = EVP_MAC_update(ctx, (const unsigned char *)prefix, strlen(prefix));
    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_MAC_update(ctx, (const unsigned char *)sorted[i]->k, sorted[i]->klen) &&
             EVP_MAC_update(ctx, (const unsigned char *)sorted[i]->v, sorted[i]->vlen);
    if (ok)
        ok = EVP_MAC_update(ctx, body, body_len);
    if (ok)
        ok = EVP_MAC_final(ctx, out, &outl, 32);
    EVP_MAC_CTX_free(ctx);
    return ok && outl == 32 ? 0 : -ENOMEM;
}

int tds_verify_sort(const struct tds_verify_kv *params, size_t n,
                    const struct tds_verify_kv **sorted)
{
    if (n > TDS_VERIFY_MAX_PARAMS)
        return TDS_VERIFY_E_PARAMS;
    for (size_t i = 0; i < n; i++)
        sorted[i] = &params[i];
    qsort(sorted, n, sizeof(*sorted), kv_cmp);
    return 0;
}

int tds_verify_sign(const char *secret, const char *prefix, const struct tds_verify_kv *params,
                    size_t n_params, const void *body, size_t body_len, char hex[65])
{
    const struct tds_verify_kv *sorted[TDS_VERIFY_MAX_PARAMS];
    unsigned char d[32];
    int r = tds_verify_sort(params, n_params, sorted);

    if (r)
        return r;
    r = mac(secret, prefix, sorted, n_params, body, body_len, d);
    if (r)
        return r;
    tds_hex(d, sizeof(d), hex);
    return 0;
}

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A digest in base64: 43 characters of the standard alphabet or of the
 * URL-safe one (not mixed), then one '=' or none. The 43rd holds the last
 * four bits and two zero bits, so each digest has exactly one spelling.
 * EVP_DecodeBlock (standard alphabet, padded) decodes it: 44 characters give
 * 33 bytes, the padding's byte last. */
static bool parse_base64(const char *s, size_t n, unsigned char out[32])
{
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char in[44], dec[33];
    bool is_std = false, is_url = false;

    if (n == 44 && s[43] == '=')
        n = 43;
    if (n != 43)
        return false;
    for (size_t i = 0; i < 43; i++) {
        const char *c = s[i] ? strchr(std, s[i]) : NULL;

        if (c) {
            is_std |= s[i] == '+' || s[i] == '/';
        } else if (s[i] && (c = strchr(url, s[i])) != NULL) {
            is_url = true;
            c = std + (c - url);
        } else {
            return false;
        }
        in[i] = (unsigned char)*c;
    }
    in[43] = '=';
    if ((is_std && is_url) || EVP_DecodeBlock(dec, in, 44) != 33 || dec[32] != 0)
        return false;
    memcpy(out, dec, 32);
    return true;
}

/* A digest as Zoho may send it, surrounded by nothing but blanks, with or
 * without "sha256=" in front: 64 hex digits (either case), or base64 (which
 * encoding Zoho uses is not documented; the two shapes cannot be mistaken
 * for each other). */
static bool parse_digest(const char *s, size_t n, unsigned char out[32])
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n > 7 && strncasecmp(s, "sha256=", 7) == 0) {
        s += 7;
        n -= 7;
    }
    if (n != 64)
        return parse_base64(s, n, out);
    for (size_t i = 0; i < 32; i++) {
        int hi = unhex(s[2 * i]), lo = unhex(s[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* Whether the bytes a plain signature covers (sorted params, name then value,
 * then the body) begin with a run of digits and a dot: the "<t>." a
 * timestamped signature puts in front of the same string. Empty names and
 * values add no bytes, so they are stepped over like the separators that
 * are not there. */
static bool looks_timestamped(const struct tds_verify_kv *const *sorted, size_t n,
                              const void *body, size_t body_len)
{
    size_t digits = 0;

    for (size_t i = 0; i <= 2 * n; i++) {
        const char *p;
        size_t len;

        if (i == 2 * n) {
            p = body;
            len = body_len;
        } else {
            p = i % 2 ? sorted[i / 2]->v : sorted[i / 2]->k;
            len = i % 2 ? sorted[i / 2]->vlen : sorted[i / 2]->klen;
        }
        for (size_t k = 0; k < len; k++) {
            if (p[k] >= '0' && p[k] <= '9')
                digits++;
            else
                return p[k] == '.' && digits > 0;
        }
    }
    return false;
}

int tds_verify_check(const char *const *secrets, size_t n_secrets, const char *sig,
                     const struct tds_verify_kv *params, size_t n_params, const void *body,
                     size_t body_len, int64_t now_ms, int64_t max_age_ms)
{
    const struct tds_verify_kv *sorted[TDS_VERIFY_MAX_PARAMS];
    unsigned char want[32], got[32];
    char prefix[32];
    const char *v = sig;
    size_t vlen;
    bool match = false;
    int r;

    if (!sig || !*sig)
        return TDS_VERIFY_E_MISSING;
    prefix[0] = '\0';
    if (sig[0] == 't' && sig[1] == '=') {
        /* "t=<ms>,v=<hex>": the timestamp is signed too, so it can be trusted
         * once the digest matches; check age first, it is cheaper. */
        const char *comma = strchr(sig, ',');
        size_t tlen = comma ? (size_t)(comma - sig - 2) : 0;
        int64_t t;

        if (!comma || tlen == 0 || tlen >= 20 || strncmp(comma + 1, "v=", 2) != 0)
            return TDS_VERIFY_E_MALFORMED;
        memcpy(prefix, sig + 2, tlen);
        prefix[tlen] = '\0';
        /* digits only (no sign): the prefix is exactly "<digits>.", the
         * shape a plain signature's bytes may not begin with (below) */
        if (strspn(prefix, "0123456789") != tlen || tds_parse_i64(prefix, 0, INT64_MAX, &t))
            return TDS_VERIFY_E_MALFORMED;
        prefix[tlen] = '.';
        prefix[tlen + 1] = '\0';
        v = comma + 3;
        if (max_age_ms > 0 && (t < now_ms - max_age_ms || t > now_ms + max_age_ms))
            r = TDS_VERIFY_E_STALE;
        else
            r = 0;
        if (r)
            return r;
    }
    vlen = strlen(v);
    if (!parse_digest(v, vlen, got))
        return TDS_VERIFY_E_MALFORMED;
    r = tds_verify_sort(params, n_params, sorted);
    if (r)
        return r;
    for (size_t i = 0; i < n_secrets; i++) {
        r = mac(secrets[i], prefix[0] ? prefix : NULL, sorted, n_params, body, body_len, want);
        if (r)
            return r;
        /* Every secret is tried, so timing does not tell which one matched. */
        if (tds_ct_equal(want, sizeof(want), got, sizeof(got)))
            match = true;
    }
    if (!match)
        return TDS_VERIFY_E_MISMATCH;
    /* A plain signature over "<t>." + params + body is a timestamped
     * signature's digest: taking it would skip the age check. Checked after
     * the match so the reason names a replay, not a wrong digest. */
    if (!prefix[0] && looks_timestamped(sorted, n_params, body, body_len))
        return TDS_VERIFY_E_AMBIGUOUS;
    return 0;
}

int tds_verify_token(const char *const *tokens, size_t n_tokens, const char *tok)
{
    unsigned char got[32], want[32];
    bool match = false;

    if (!tok || !*tok)
        return TDS_VERIFY_E_MISSING;
    /* Digests of both sides, compared in constant time: neither a token's
     * contents nor its length show in the time taken. */
    if (!EVP_Digest(tok, strlen(tok), got, NULL, EVP_sha256(), NULL))
        return -ENOMEM;
    for (size_t i = 0; i < n_tokens; i++) {
        if (!EVP_Digest(tokens[i], strlen(tokens[i]), want, NULL, EVP_sha256(), NULL))
            return -ENOMEM;
        if (tds_ct_equal(want, sizeof(want), got, sizeof(got)))
            match = true;
    }
    return match ? 0 : TDS_VERIFY_E_TOKEN;
}

const char *tds_verify_reason(int code)
{
    switch (code) {
    case TDS_VERIFY_E_MISSING: return "missing";
    case TDS_VERIFY_E_MALFORMED: return "malformed";
    case TDS_VERIFY_E_MISMATCH: return "mismatch";
    case TDS_VERIFY_E_STALE: return "stale";
    case TDS_VERIFY_E_PARAMS: return "params";
    case TDS_VERIFY_E_AMBIGUOUS: return "ambiguous";
    case TDS_VERIFY_E_TOKEN: return "token";
    default: return "error";
    }
}
