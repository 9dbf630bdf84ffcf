/* verify — the X-Zoho-Webhook-Signature check (DESIGN.md §6, §11).
 *
 * Zoho signs hex(HMAC-SHA256(secret, k1 v1 k2 v2 … raw_body)) with the query
 * parameters sorted by key (then value) and concatenated without separators.
 * The digest is taken in hex (either case) or in base64 (standard or URL-safe
 * alphabet, padded or not), since Zoho does not document which it sends.
 * A Payments-style header "t=<unix ms>,v=<hex>" signs "<t>." before the same
 * string and is refused once older than max_age. Query parameters are joined
 * with no separator, so a plain signature whose signed bytes begin like that
 * prefix ("<digits>.", e.g. from a parameter named "1700000000000.") could be
 * a timestamped one replayed without its age check: it is refused
 * (TDS_VERIFY_E_AMBIGUOUS), and t= takes digits only. Digests are compared in
 * constant time against every configured secret (rotation). Works on the raw
 * bytes before any parsing; never logs and never says why in a response.
 * tds_verify_token checks the X-Webhook-Token an organization without a
 * signature may use instead.
 */
#ifndef TDS_INGRESS_VERIFY_H
#define TDS_INGRESS_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#define TDS_VERIFY_MAX_PARAMS 64

enum {
    TDS_VERIFY_E_MISSING = 1,   /* no signature header */
    TDS_VERIFY_E_MALFORMED = 2, /* neither hex nor base64 of 32 bytes / bad t=,v= form */
    TDS_VERIFY_E_MISMATCH = 3,  /* no secret produces this digest */
    TDS_VERIFY_E_STALE = 4,     /* t= older (or newer) than max_age */
    TDS_VERIFY_E_PARAMS = 5,    /* more than TDS_VERIFY_MAX_PARAMS query parameters */
    TDS_VERIFY_E_AMBIGUOUS = 6, /* plain signature over bytes that begin "<digits>.": the
                                   bytes a t= signature covers, so its age would go unchecked */
    TDS_VERIFY_E_TOKEN = 7,     /* an X-Webhook-Token that is none of the organization's */
};

struct tds_verify_kv {
    const char *k;
    size_t klen;
    const char *v;
    size_t vlen;
};

/* Check sig (NUL-terminated header value, or NULL) against secrets. params are
 * the decoded query parameters in any order. now_ms/max_age_ms are wall-clock
 * milliseconds, used only with the t= form. Returns 0 when one secret matches,
 * else a TDS_VERIFY_E_* code, or -ENOMEM. */
int tds_verify_check(const char *const *secrets, size_t n_secrets, const char *sig,
                     const struct tds_verify_kv *params, size_t n_params, const void *body,
                     size_t body_len, int64_t now_ms, int64_t max_age_ms);

/* Lower-case hex signature as Zoho computes it (prefix: NULL, or "<t>." for the
 * t= form). For tests, the simulator-free bench and the fuzz target. */
int tds_verify_sign(const char *secret, const char *prefix, const struct tds_verify_kv *params,
                    size_t n_params, const void *body, size_t body_len, char hex[65]);

/* params[0..n) as a signature covers them: sorted by name, then value,
 * bytewise, into sorted[]. Returns 0, or TDS_VERIFY_E_PARAMS past
 * TDS_VERIFY_MAX_PARAMS. */
int tds_verify_sort(const struct tds_verify_kv *params, size_t n,
                    const struct tds_verify_kv **sorted);

/* Check an X-Webhook-Token header value (NUL-terminated, or NULL) against the
 * organization's tokens, for a Zoho webhook that carries a shared token in a
 * custom header instead of a signature. Returns 0 when one matches,
 * TDS_VERIFY_E_MISSING, TDS_VERIFY_E_TOKEN, or -ENOMEM. Constant time in the
 * contents and lengths of both sides. */
int tds_verify_token(const char *const *tokens, size_t n_tokens, const char *tok);

/* "missing", "malformed", "mismatch", "stale", "params", "ambiguous", "token" —
 * for logs and metric labels. */
const char *tds_verify_reason(int code);

#endif
