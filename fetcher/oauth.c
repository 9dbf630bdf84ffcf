/* oauth — cached, single-flight, budgeted Zoho token refresh per organization.
 *
 * Order of preference when a token is needed: the one in memory, the one in
 * tds.oauth_tokens (another replica or an earlier run may have refreshed),
 * and only then a refresh — under the advisory lock, after re-reading the
 * row once more, and after counting the attempt in the row's 10-minute
 * window, which is done only while the token family's count is under its
 * budget (a refused attempt counts nothing and waits for the family's
 * oldest counted attempt to leave its window). Failures never loop:
 * transient ones back off exponentially, "Access Denied" waits out the
 * lockout (longer when denied again right after one), bad credentials
 * pause the org.
 */
#include "oauth.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "events.h"
#include "http.h"
#include "limiter.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "util.h"
#include "zoho.h"

#define REFRESH_WINDOW_MS (10 * 60 * 1000)
#define MIN_VALID_MS 30000 /* a token this close to expiry is not handed out */
#define DB_REREAD_MS 500
#define PAUSED_RECHECK_MS 10000

struct tds_oauth {
    const struct tds_org *org;
    struct tds_oauth_cfg cfg;
    struct tds_store *store;
    struct tds_http *http;
    struct tds_events *events;
    struct tds_series *m_refreshed;
    struct tds_metrics *metrics;
    tds_oauth_change_cb cb;
    void *ud;
    struct tds_log_ctx lctx;

    char *token;
    char *api_domain;          /* the account's, from Zoho or the row; kept across tokens */
    bool warned_insecure_domain;
    char default_domain[96];   /* the data center's, when Zoho never named one */
    bool warned_default;       /* logged once that default_domain is in use */
    int64_t probe_ms;          /* last refresh asked because the API host was unreachable */
    int64_t counted_window_ms; /* refresh window the attempt in flight was counted in */
    int64_t expires_at_ms;
    char *refused;             /* token the API refused: never adopt it again */
    int64_t token_since_ms;    /* when the token in use was taken up */
    int64_t ok_sent_ms;        /* latest send time of a call it answered (0: none yet) */
    bool after_refusal;        /* it replaced a token dropped for a refusal */
    bool dropped_for_refusal;  /* the next token taken up replaces a refused one */

    bool refreshing;
    bool lock_held;
    /* The token family (store.h): the refresh token's organizations share
     * one access token and one refresh budget, and refresh one at a time
     * under the family's lock (Zoho counts refreshes per refresh token). */
    char family[2 * 32 + 1];
    char family_key[sizeof("family:") + 2 * 32];
    bool family_lock_held;
    /* Fingerprints (credentials_of) of the credentials the refresh in
     * flight uses, of the last ones Zoho refused here, and of the last ones
     * tried again after a refusal because they differ from those refused. */
    char cred_fp[2 * 32 + 1];
    char refused_cred[2 * 32 + 1];
    char retried_cred[2 * 32 + 1];
    struct tds_http_call *call;
    int64_t started_ms;

    int attempts;
    int64_t next_attempt_ms;
    int64_t locked_until_ms;
    /* "Access Denied" lockouts of the refresh token in a row (this
     * organization's, or its family's and the row's as read from the
     * database), none with a token taken up since, and when the latest one
     * ends: a refresh denied again just after one waits longer
     * (lockout_length). */
    int lockouts;
    int64_t lockout_end_ms;
    bool paused;
    bool warned_foreign;       /* logged once that the row's token is another server's */
    int64_t last_read_ms;
    int64_t last_pause_check_ms;
};

static void set_str(char **dst, const char *v)
{
    char *n = v ? strdup(v) : NULL;
    free(*dst);
    *dst = n;
}

static struct tds_series *failure_series(struct tds_oauth *o, const char *reason);

/* Take up a token; what was learnt about the previous one goes with it. */
static void use_token(struct tds_oauth *o, const char *token, int64_t now_ms)
{
    if (o->token && strcmp(o->token, token) == 0)
        return;
    set_str(&o->token, token);
    /* A new token once the lockout known here is over: the family got one,
     * so the next denial starts the lockouts over. */
    if (now_ms >= o->lockout_end_ms)
        o->lockouts = 0;
    o->token_since_ms = now_ms;
    o->ok_sent_ms = 0;
    o->after_refusal = o->dropped_for_refusal;
    o->dropped_for_refusal = false;
}

int tds_oauth_new(struct tds_oauth **out, const struct tds_org *org, const struct tds_oauth_cfg *cfg,
                  struct tds_store *store, struct tds_http *http, struct tds_events *events,
                  struct tds_metrics *metrics, tds_oauth_change_cb cb, void *ud)
{
    struct tds_oauth *o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    o->org = org;
    o->cfg = *cfg;
    if (o->cfg.timeout_ms <= 0)
        o->cfg.timeout_ms = 15000;
    if (o->cfg.lockout_ms <= 0)
        o->cfg.lockout_ms = 20 * 60 * 1000;
    if (o->cfg.lockout_max_ms <= 0)
        o->cfg.lockout_max_ms = 2 * o->cfg.lockout_ms;
    if (o->cfg.lockout_max_ms < o->cfg.lockout_ms)
        o->cfg.lockout_max_ms = o->cfg.lockout_ms;
    if (o->cfg.refresh_ahead_ms <= 0)
        o->cfg.refresh_ahead_ms = 5 * 60 * 1000;
    if (o->cfg.max_per_window <= 0)
        o->cfg.max_per_window = 5;
    o->store = store;
    o->http = http;
    o->events = events;
    o->cb = cb;
    o->ud = ud;
    o->lctx.org = org->org_id;
    o->metrics = metrics;
    /* Every data center's API domain is www.zohoapis.<dc> (ZOHO.md 1.1);
     * not for an accounts server of another kind (the simulator's). */
    const char *dc_accounts = tds_accounts_url_for(org->data_center);

    if (dc_accounts && (!org->accounts_url || strcmp(org->accounts_url, dc_accounts) == 0))
        snprintf(o->default_domain, sizeof(o->default_domain), "https://www.zohoapis.%s",
                 org->data_center);
    if (metrics) {
        char *e = tds_metrics_escape(org->org_id);
        if (e) {
            o->m_refreshed = tds_metrics_getf(metrics, TDS_COUNTER, "tds_fetcher_tokens_refreshed_total",
                                              "Zoho access tokens refreshed", "org=\"%s\"", e);
            free(e);
        }
        /* Every reason exists from the start at 0, so rate() and the alert
         * rules see the first failure as an increase. */
        static const char *const reasons[] = {"access_denied", "revoked", "invalid_client",
                                              "server_error", "timeout"};
        for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
            (void)failure_series(o, reasons[i]);
    }
    *out = o;
    return 0;
}

/* Families refreshing in this process. The advisory lock cannot tell the
 * organizations of one process apart: they share the store's session, on
 * which a lock taken again is granted again. */
static struct {
    pthread_mutex_t mu;
    struct {
        char family[2 * 32 + 1];
        const struct tds_oauth *holder;
    } held[256];
    size_t n;
} families = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Whether o may refresh for its family in this process (it holds it now). */
static bool family_take(const struct tds_oauth *o)
{
    bool ok = true;
    size_t i;

    pthread_mutex_lock(&families.mu);
    for (i = 0; i < families.n; i++)
        if (strcmp(families.held[i].family, o->family) == 0) {
            ok = families.held[i].holder == o;
            break;
        }
    if (i == families.n) {
        if (families.n < sizeof(families.held) / sizeof(families.held[0])) {
            memcpy(families.held[i].family, o->family, sizeof(families.held[i].family));
            families.held[i].holder = o;
            families.n++;
        } else {
            ok = false; /* 256 families refreshing at once: wait for one */
        }
    }
    pthread_mutex_unlock(&families.mu);
    return ok;
}

static void family_give(const struct tds_oauth *o)
{
    pthread_mutex_lock(&families.mu);
    for (size_t i = 0; i < families.n; i++)
        if (families.held[i].holder == o) {
            families.held[i] = families.held[--families.n];
            break;
        }
    pthread_mutex_unlock(&families.mu);
}

static void unlock(struct tds_oauth *o)
{
    if (o->family_lock_held) {
        family_give(o);
        tds_store_token_unlock(o->store, o->family_key);
        o->family_lock_held = false;
    }
    if (o->lock_held) {
        tds_store_token_unlock(o->store, o->org->org_id);
        o->lock_held = false;
    }
}

/* SHA-256 in hex of n strings, each with its NUL; "" when it fails. */
static void digest_hex(const char *const *parts, size_t n, char out[2 * 32 + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;

    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(c, parts[i], strlen(parts[i]) + 1) == 1; /* with its NUL */
    ok = ok && EVP_DigestFinal_ex(c, md, &len) == 1 && len == 32;
    EVP_MD_CTX_free(c);
    out[0] = '\0';
    for (unsigned int i = 0; ok && i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The family of a refresh token at org's accounts server: SHA-256 of the
 * accounts server, client id and refresh token, in hex. Not the token: the
 * row may be read by whoever may read tds.oauth_tokens' other columns. */
static void family_of(const struct tds_org *org, const char *refresh, char out[2 * 32 + 1])
{
    const char *parts[] = {org->accounts_url ? org->accounts_url : "",
                           org->client_id ? org->client_id : "", refresh ? refresh : ""};

    digest_hex(parts, 3, out);
}

/* The fingerprint of everything a refresh sends that Zoho may refuse: the
 * accounts server, client id, client secret and refresh token (SHA-256,
 * hex, under a tag of its own so that it never equals a family). A row
 * paused by a refusal keeps it, so that other credentials are tried again
 * and the same ones are not; the secrets themselves are never stored. */
static void credentials_of(const struct tds_org *org, const char *refresh, char out[2 * 32 + 1])
{
    const char *parts[] = {"tds-credentials", org->accounts_url ? org->accounts_url : "",
                           org->client_id ? org->client_id : "",
                           org->client_secret ? org->client_secret : "", refresh ? refresh : ""};

    digest_hex(parts, 5, out);
}

/* The refresh token a refresh of o uses: the file's wins over the row's. */
static const char *refresh_token_of(const struct tds_oauth *o, const struct tds_token_row *row)
{
    if (o->org->refresh_token && *o->org->refresh_token)
        return o->org->refresh_token;
    return row->refresh_token;
}

static bool refusal_status(const char *status)
{
    return status && (strcmp(status, "revoked") == 0 || strcmp(status, "invalid") == 0);
}

/* Whether the row's refusal (status revoked or invalid) holds for the
 * credentials o would send now. It does for the ones Zoho refused (named by
 * the row, or refused in this process); other ones (the operator fixed the
 * refresh token or the client secret in TDS_CONFIG, and restarted) are tried
 * again, once each, with a line saying why. A row paused by a release that
 * did not record the credentials is tried once too: one refused refresh
 * costs less than an organization paused for good. */
static bool still_refused(struct tds_oauth *o, const struct tds_token_row *row)
{
    char fp[2 * 32 + 1];

    if (!refusal_status(row->status))
        return false;
    credentials_of(o->org, refresh_token_of(o, row), fp);
    if (!fp[0] || strcmp(fp, o->refused_cred) == 0)
        return true;
    if (row->failed_credentials && strcmp(row->failed_credentials, fp) == 0)
        return true;
    if (strcmp(fp, o->retried_cred) != 0) {
        tds_log(TDS_LOG_INFO, &o->lctx,
                row->failed_credentials
                    ? "zoho refused this organization's credentials (%s), but the refresh token or "
                      "client id/secret configured now differ: trying them"
                    : "zoho refused this organization's credentials (%s), with no record of which: "
                      "trying the configured ones once",
                row->last_error ? row->last_error : row->status);
        memcpy(o->retried_cred, fp, sizeof(o->retried_cred));
    }
    return false;
}

struct tds_oauth *tds_oauth_free(struct tds_oauth *o)
{
    if (!o)
        return NULL;
    if (o->call)
        tds_http_cancel(o->http, o->call);
    unlock(o);
    free(o->token);
    free(o->api_domain);
    free(o->refused);
    free(o);
    return NULL;
}

static void fire(struct tds_oauth *o)
{
    if (o->cb)
        o->cb(o->ud);
}

/* Adopt the row's token when it is usable and not one the API refused. */
static bool adopt(struct tds_oauth *o, const struct tds_token_row *r, int64_t now_ms)
{
    const char *acc = o->org->accounts_url ? o->org->accounts_url : "";
    bool ours = r->accounts_url && strcmp(r->accounts_url, acc) == 0;
    /* The api_domain belongs to the account, not to one token: keep it even
     * from an expired or refused token's row, since a refresh answer may
     * leave it out (ZOHO.md 1.1). Not from another accounts server's row. */
    if (ours && r->api_domain && *r->api_domain &&
        (!o->api_domain || strcmp(o->api_domain, r->api_domain) != 0))
        set_str(&o->api_domain, r->api_domain);
    if (!r->access_token || r->expires_at_ms - now_ms <= MIN_VALID_MS)
        return false;
    /* A token (and its api_domain) minted by another accounts server (a data
     * center change, a moved server) is not good here: refresh instead. */
    if (!ours) {
        if (!o->warned_foreign) {
            tds_log(TDS_LOG_INFO, &o->lctx, "cached token is from accounts server %s, not %s: not used",
                    r->accounts_url ? r->accounts_url : "(unknown)", acc);
            o->warned_foreign = true;
        }
        return false;
    }
    if (o->refused && strcmp(o->refused, r->access_token) == 0)
        return false;
    use_token(o, r->access_token, now_ms);
    o->expires_at_ms = r->expires_at_ms;
    return o->token != NULL;
}

static void on_refreshed(const struct tds_http_resp *resp, void *ud);

/* The request never reached the server: it could not be resolved or
 * connected to (refused, or the connect phase timed out). */
static bool never_sent(const struct tds_http_resp *resp)
{
    if (resp->transport_ok)
        return false;
    return resp->no_connect || strncmp(resp->error, "Connection timed out", 20) == 0 ||
           strncmp(resp->error, "Resolving timed out", 19) == 0;
}

static struct tds_series *failure_series(struct tds_oauth *o, const char *reason)
{
    char *oe = tds_metrics_escape(o->org->org_id);
    if (!oe)
        return NULL;
    struct tds_series *c = tds_metrics_getf(o->metrics, TDS_COUNTER,
                                            "tds_fetcher_token_refresh_failures_total",
                                            "Failed Zoho token refreshes by organization and reason",
                                            "org=\"%s\",reason=\"%s\"", oe, reason);
    free(oe);
    return c;
}

static void count_failure(struct tds_oauth *o, const char *reason)
{
    if (!o->metrics)
        return;
    struct tds_series *c = failure_series(o, reason);
    if (c)
        tds_series_inc(c, 1);
}

/* Zoho's lockout clears only after 15-30 minutes without a try, and every
 * try during it starts it over (ZOHO.md 1.5): a fixed wait shorter than the
 * lockout is denied for ever, each retry re-arming it. So a refresh denied
 * right after a lockout waits twice as long as that one did, up to
 * lockout_max_ms. The lockouts counted before one that starts at start_ms:
 * none when the latest ended longer ago than the longest wait (Zoho's was
 * over by then; that denial had another cause). */
static int lockouts_before(const struct tds_oauth *o, int64_t start_ms)
{
    if (o->lockouts == 0 || start_ms > o->lockout_end_ms + o->cfg.lockout_max_ms)
        return 0;
    return o->lockouts;
}

/* The wait after a denial that follows n lockouts in a row: lockout_ms,
 * doubling with each, at most lockout_max_ms. */
static int64_t lockout_length(const struct tds_oauth *o, int n)
{
    int64_t ms = o->cfg.lockout_ms;

    for (int i = 0; i < n && ms < o->cfg.lockout_max_ms; i++)
        ms *= 2;
    return ms < o->cfg.lockout_max_ms ? ms : o->cfg.lockout_max_ms;
}

static void count_lockout(struct tds_oauth *o, int before, int64_t until_ms)
{
    o->lockouts = before < 64 ? before + 1 : before;
    o->lockout_end_ms = until_ms;
}

/* A lockout recorded in the database (the organization's row, a row of its
 * family: another organization or replica was denied) ending at until_ms.
 * Counted once: one recorded here comes back from the row to within the
 * rounding of its timestamp. It started at most lockout_max_ms before its
 * end, and follows the one known before if that started soon enough. */
static void lockout_seen(struct tds_oauth *o, int64_t until_ms)
{
    if (until_ms <= o->lockout_end_ms + 1000)
        return;
    count_lockout(o, lockouts_before(o, until_ms - o->cfg.lockout_max_ms), until_ms);
}

/* Start a refresh if we may. Returns a TDS_OAUTH_* code for the caller.
 * probe: refresh although the token in memory is still good (its API host
 * could not be reached), unless the row holds another token already. */
static int start_refresh(struct tds_oauth *o, int64_t now_ms, int64_t *wait_ms, bool probe)
{
    if (now_ms < o->next_attempt_ms) {
        *wait_ms = o->next_attempt_ms - now_ms;
        return TDS_OAUTH_LOCKED;
    }
    bool got = false;
    if (tds_store_token_lock(o->store, o->org->org_id, &got) != 0) {
        tds_log(TDS_LOG_WARN, &o->lctx, "could not lock token row: %s, retrying in 2000 ms",
                tds_store_error(o->store));
        *wait_ms = 2000;
        return TDS_OAUTH_PENDING;
    }
    if (!got) {
        /* Another replica (or `auth` command) is refreshing: wait for its row. */
        *wait_ms = 500;
        return TDS_OAUTH_PENDING;
    }
    o->lock_held = true;
    struct tds_token_row row;
    if (tds_store_token_get(o->store, o->org->org_id, &row) != 0) {
        unlock(o);
        *wait_ms = 2000;
        return TDS_OAUTH_PENDING;
    }
    int rc;
    bool other = row.access_token && (!o->token || strcmp(row.access_token, o->token) != 0);
    if (adopt(o, &row, now_ms) && row.expires_at_ms - now_ms > o->cfg.refresh_ahead_ms &&
        (!probe || other)) {
        unlock(o);
        rc = TDS_OAUTH_READY;
        goto out;
    }
    if (still_refused(o, &row)) {
        unlock(o);
        o->paused = true;
        o->last_pause_check_ms = now_ms;
        rc = TDS_OAUTH_PAUSED;
        goto out;
    }
    /* the row stays 'locked' after its lockout ends until a token is
     * minted: a restart at the end of one still counts it */
    if (row.locked_until_ms > 0 && row.status && strcmp(row.status, "locked") == 0)
        lockout_seen(o, row.locked_until_ms);
    if (row.locked_until_ms > now_ms) {
        unlock(o);
        o->locked_until_ms = row.locked_until_ms;
        *wait_ms = row.locked_until_ms - now_ms;
        rc = o->token && o->expires_at_ms - now_ms > MIN_VALID_MS ? TDS_OAUTH_READY : TDS_OAUTH_LOCKED;
        goto out;
    }
    const char *refresh = refresh_token_of(o, &row);
    if (!refresh || !*refresh) {
        unlock(o);
        if (!o->paused)
            tds_log(TDS_LOG_ERROR, &o->lctx,
                    "organization has no refresh token: run 'tds-fetcher auth exchange', pausing it");
        o->paused = true;
        o->last_pause_check_ms = now_ms;
        rc = TDS_OAUTH_PAUSED;
        goto out;
    }
    /* The family: wait while another of its organizations refreshes, then
     * take the token it stored rather than refresh again. */
    family_of(o->org, refresh, o->family);
    if (o->family[0]) {
        bool fgot = false;

        snprintf(o->family_key, sizeof(o->family_key), "family:%s", o->family);
        if (!family_take(o)) {
            unlock(o);
            *wait_ms = 500;
            rc = o->token && o->expires_at_ms - now_ms > MIN_VALID_MS ? TDS_OAUTH_READY
                                                                       : TDS_OAUTH_PENDING;
            goto out;
        }
        if (tds_store_token_lock(o->store, o->family_key, &fgot) != 0 || !fgot) {
            family_give(o);
            unlock(o);
            *wait_ms = 500;
            rc = o->token && o->expires_at_ms - now_ms > MIN_VALID_MS ? TDS_OAUTH_READY
                                                                       : TDS_OAUTH_PENDING;
            goto out;
        }
        o->family_lock_held = true;
        struct tds_token_row sib;
        bool found = false;
        if (tds_store_token_family_peek(o->store, o->family, o->org->org_id, o->org->accounts_url,
                                        now_ms + o->cfg.refresh_ahead_ms, &sib, &found) == 0 &&
            found && (!probe || !o->token || strcmp(sib.access_token, o->token) != 0) &&
            !(o->refused && strcmp(o->refused, sib.access_token) == 0)) {
            if (tds_store_token_save(o->store, o->org->org_id, sib.access_token, sib.api_domain,
                                     sib.expires_at_ms, NULL, o->org->accounts_url,
                                     o->family) != 0)
                tds_log(TDS_LOG_WARN, &o->lctx, "could not store the shared token: %s",
                        tds_store_error(o->store));
            tds_log(TDS_LOG_DEBUG, &o->lctx,
                    "using the access token another organization of its refresh token minted");
            use_token(o, sib.access_token, now_ms);
            if (sib.api_domain && *sib.api_domain)
                set_str(&o->api_domain, sib.api_domain);
            o->expires_at_ms = sib.expires_at_ms;
            tds_token_row_clear(&sib);
            unlock(o);
            rc = o->token ? TDS_OAUTH_READY : TDS_OAUTH_PENDING;
            *wait_ms = 500;
            goto out;
        }
        tds_token_row_clear(&sib);
        /* Zoho locks out the refresh token, so every organization of the
         * family: one denied there means none refreshes here until the
         * lockout is over (a refresh during it extends it). */
        int64_t fam_until = 0;
        if (tds_store_token_family_locked(o->store, o->family, &fam_until) != 0) {
            unlock(o);
            *wait_ms = 2000;
            rc = o->token && o->expires_at_ms - now_ms > MIN_VALID_MS ? TDS_OAUTH_READY
                                                                       : TDS_OAUTH_PENDING;
            goto out;
        }
        if (fam_until > now_ms) {
            unlock(o);
            lockout_seen(o, fam_until);
            if (o->locked_until_ms != fam_until)
                tds_log(TDS_LOG_WARN, &o->lctx,
                        "zoho denied a refresh of this organization's refresh token (its family), "
                        "not refreshing for %lld s",
                        (long long)((fam_until - now_ms + 999) / 1000));
            o->locked_until_ms = fam_until;
            *wait_ms = fam_until - now_ms;
            rc = o->token && o->expires_at_ms - now_ms > MIN_VALID_MS ? TDS_OAUTH_READY
                                                                       : TDS_OAUTH_LOCKED;
            goto out;
        }
    }
    /* Zoho's budget is the refresh token's: the attempt counts only if the
     * family's count (this organization's window and its siblings') is
     * under it, in one statement under the family's lock. A refused attempt
     * counts nothing: counted, it kept the sum at the budget for a window of
     * its own, each retry starting another, and the family never refreshed
     * again. */
    int64_t count = 0, wstart = 0, free_at = 0;
    bool counted = false;
    if (tds_store_token_count_refresh(o->store, o->org->org_id, o->family, REFRESH_WINDOW_MS,
                                      o->cfg.max_per_window, &counted, &count, &wstart,
                                      &free_at) != 0) {
        tds_log(TDS_LOG_WARN, &o->lctx, "could not count the refresh: %s, retrying in 2000 ms",
                tds_store_error(o->store));
        unlock(o);
        *wait_ms = 2000;
        rc = TDS_OAUTH_PENDING;
        goto out;
    }
    if (!counted) {
        /* Zoho would lock us out at 10: stop well before, until the family's
         * oldest counted attempt leaves its window. */
        unlock(o);
        o->locked_until_ms = free_at > now_ms + 1000 ? free_at : now_ms + 1000;
        *wait_ms = o->locked_until_ms - now_ms;
        tds_log(TDS_LOG_WARN, &o->lctx,
                "token refresh budget of %lld per 10 minutes used, waiting %lld ms",
                (long long)o->cfg.max_per_window, (long long)*wait_ms);
        rc = o->token && o->expires_at_ms - now_ms > MIN_VALID_MS ? TDS_OAUTH_READY : TDS_OAUTH_LOCKED;
        goto out;
    }
    char *cid = tds_http_escape(o->org->client_id ? o->org->client_id : "");
    char *sec = tds_http_escape(o->org->client_secret ? o->org->client_secret : "");
    char *rt = tds_http_escape(refresh);
    struct tds_buf form = {0};
    char url[1024];
    snprintf(url, sizeof(url), "%s/oauth/v2/token", o->org->accounts_url ? o->org->accounts_url : "");
    int frc = (cid && sec && rt)
                  ? tds_buf_addf(&form, "grant_type=refresh_token&client_id=%s&client_secret=%s&refresh_token=%s",
                                 cid, sec, rt)
                  : -ENOMEM;
    free(cid);
    free(sec);
    free(rt);
    const char *hdrs[] = {"Accept: application/json", NULL};
    if (frc == 0)
        frc = tds_http_request(o->http, url, hdrs, form.p, o->cfg.timeout_ms, on_refreshed, o, &o->call);
    tds_buf_deinit(&form);
    if (frc != 0) {
        unlock(o);
        *wait_ms = 2000;
        rc = TDS_OAUTH_PENDING;
        goto out;
    }
    o->refreshing = true;
    o->started_ms = now_ms;
    o->counted_window_ms = wstart;
    credentials_of(o->org, refresh, o->cred_fp);
    tds_log(TDS_LOG_DEBUG, &o->lctx, "refreshing access token (%lld in this window)", (long long)count);
    rc = o->token && o->expires_at_ms - now_ms > MIN_VALID_MS ? TDS_OAUTH_READY : TDS_OAUTH_PENDING;
    *wait_ms = 500;
out:
    tds_token_row_clear(&row);
    return rc;
}

static void on_refreshed(const struct tds_http_resp *resp, void *ud)
{
    struct tds_oauth *o = ud;
    o->call = NULL;
    o->refreshing = false;
    int64_t now = tds_wall_ms();
    struct tds_zoauth *z = calloc(1, sizeof(*z));
    if (!z) {
        unlock(o);
        o->next_attempt_ms = now + 5000;
        fire(o);
        return;
    }
    enum tds_zoauth_class cls = tds_zoauth_parse(resp->transport_ok, resp->status, resp->body,
                                                 resp->len, z);
    const char *org = o->org->org_id;
    switch (cls) {
    case TDS_ZOAUTH_OK: {
        int64_t exp = now + z->expires_in_s * 1000;
        if (tds_store_token_save(o->store, org, z->access_token, z->api_domain, exp, NULL,
                                 o->org->accounts_url, o->family) != 0)
            tds_log(TDS_LOG_WARN, &o->lctx, "could not store refreshed token: %s",
                    tds_store_error(o->store));
        use_token(o, z->access_token, now);
        if (z->api_domain[0])
            set_str(&o->api_domain, z->api_domain);
        o->expires_at_ms = exp;
        o->attempts = 0;
        o->next_attempt_ms = 0;
        o->locked_until_ms = 0;
        o->lockouts = 0;
        o->lockout_end_ms = 0;
        o->paused = false;
        o->refused_cred[0] = '\0';
        if (o->m_refreshed)
            tds_series_inc(o->m_refreshed, 1);
        tds_events_emit(o->events, "tds.zoho.token.refreshed", "org", org, NULL);
        tds_log(TDS_LOG_INFO, &o->lctx, "access token refreshed, expires in %lld s",
                (long long)z->expires_in_s);
        break;
    }
    case TDS_ZOAUTH_DENIED: {
        /* Sent right after a lockout (of this organization or its family)
         * that Zoho had not cleared yet: that retry re-armed it, so wait
         * longer than last time. */
        int before = lockouts_before(o, o->started_ms);
        int64_t wait = lockout_length(o, before);
        o->locked_until_ms = now + wait;
        count_lockout(o, before, o->locked_until_ms);
        count_failure(o, "access_denied");
        /* The row names its family: the family's other organizations see
         * the lockout (start_refresh) and do not extend it with refreshes
         * of their own, nor raise alerts of their own. */
        tds_store_token_fail(o->store, org, o->family, "locked", o->locked_until_ms, z->error, NULL);
        tds_events_emit(o->events, "tds.zoho.token.refresh_failed", "org", org, "reason",
                        "access_denied", NULL);
        tds_store_alert(o->store, "zoho_token_lockout", "error", org, NULL,
                        "Zoho refused token refresh (Access Denied); waiting out the lockout");
        if (before)
            tds_log(TDS_LOG_ERROR, &o->lctx,
                    "token endpoint denied the refresh again right after a lockout (%d in a row), "
                    "not retrying for %lld s",
                    before + 1, (long long)(wait / 1000));
        else
            tds_log(TDS_LOG_ERROR, &o->lctx,
                    "token endpoint denied the refresh (too many requests), "
                    "not retrying for %lld s",
                    (long long)(wait / 1000));
        break;
    }
    case TDS_ZOAUTH_INVALID: {
        bool revoked = strcmp(z->error, "invalid_code") == 0;
        count_failure(o, revoked ? "revoked" : "invalid_client");
        o->paused = true;
        o->last_pause_check_ms = now;
        /* which credentials were refused: the same ones are not tried
         * again (a restart included), other ones are (still_refused) */
        memcpy(o->refused_cred, o->cred_fp, sizeof(o->refused_cred));
        tds_store_token_fail(o->store, org, o->family, revoked ? "revoked" : "invalid", 0, z->error,
                             o->cred_fp);
        tds_events_emit(o->events, revoked ? "tds.zoho.token.revoked" : "tds.zoho.token.refresh_failed",
                        "org", org, "reason", z->error, NULL);
        tds_store_alert(o->store, revoked ? "zoho_token_revoked" : "zoho_token_invalid", "critical",
                        org, NULL,
                        revoked ? "Zoho refresh token is invalid or revoked; organization paused"
                                : "Zoho rejected the client credentials; organization paused");
        tds_log(TDS_LOG_ERROR, &o->lctx, "token refresh failed: %s, pausing organization", z->error);
        break;
    }
    case TDS_ZOAUTH_RETRY: {
        /* No connection to the accounts server: the request never reached
         * Zoho, so Zoho did not count it and neither do we (a network outage
         * must not spend the budget and lock the organization out once the
         * network is back). Backed off all the same, to 30 s at most. */
        bool unsent = never_sent(resp);
        count_failure(o, resp->transport_ok ? "server_error" : "timeout");
        if (unsent && tds_store_token_uncount_refresh(o->store, org, o->counted_window_ms) != 0)
            tds_log(TDS_LOG_WARN, &o->lctx, "could not uncount the unsent refresh: %s",
                    tds_store_error(o->store));
        o->attempts++;
        o->next_attempt_ms = now + tds_backoff_ms(o->attempts, 2000, unsent ? 30000 : 300000,
                                                  (uint32_t)rand());
        tds_store_token_fail(o->store, org, o->family, "ok", 0, z->error, NULL);
        tds_events_emit(o->events, "tds.zoho.token.refresh_failed", "org", org, "reason",
                        resp->transport_ok ? "server_error" : "timeout", NULL);
        tds_log(TDS_LOG_WARN, &o->lctx, "token refresh failed: %s, retrying in %lld ms", z->error,
                (long long)(o->next_attempt_ms - now));
        break;
    }
    }
    free(z);
    unlock(o);
    fire(o);
}

/* Paused, and still so: the token row is read again at most every
 * PAUSED_RECHECK_MS, since an operator may have fixed the credentials
 * (`auth exchange` sets status ok). *wait_ms: until the next look. */
static bool still_paused(struct tds_oauth *o, int64_t now_ms, int64_t *wait_ms)
{
    if (!o->paused)
        return false;
    if (now_ms - o->last_pause_check_ms < PAUSED_RECHECK_MS) {
        *wait_ms = PAUSED_RECHECK_MS - (now_ms - o->last_pause_check_ms);
        return true;
    }
    o->last_pause_check_ms = now_ms;
    struct tds_token_row row;
    bool still = true;
    if (tds_store_token_get(o->store, o->org->org_id, &row) == 0) {
        const char *refresh = refresh_token_of(o, &row);
        still = !row.exists || !refresh || !*refresh || still_refused(o, &row);
        tds_token_row_clear(&row);
    }
    if (still) {
        *wait_ms = PAUSED_RECHECK_MS;
        return true;
    }
    o->paused = false;
    o->attempts = 0;
    o->next_attempt_ms = 0;
    tds_log(TDS_LOG_INFO, &o->lctx, "organization credentials fixed, resuming");
    return false;
}

bool tds_oauth_paused(struct tds_oauth *o, int64_t now_ms)
{
    int64_t wait;
    return still_paused(o, now_ms, &wait);
}

int tds_oauth_get(struct tds_oauth *o, int64_t now_ms, const char **token, const char **api_domain,
                  int64_t *wait_ms)
{
    *token = NULL;
    *api_domain = NULL;
    *wait_ms = 0;
    if (still_paused(o, now_ms, wait_ms))
        return TDS_OAUTH_PAUSED;
    int rc = TDS_OAUTH_PENDING;
    bool have = o->token && o->expires_at_ms - now_ms > MIN_VALID_MS;
    if (have && o->expires_at_ms - now_ms > o->cfg.refresh_ahead_ms) {
        rc = TDS_OAUTH_READY;
    } else if (o->refreshing) {
        *wait_ms = 500;
        rc = have ? TDS_OAUTH_READY : TDS_OAUTH_PENDING;
    } else {
        if (!have && now_ms - o->last_read_ms >= DB_REREAD_MS) {
            o->last_read_ms = now_ms;
            struct tds_token_row row;
            if (tds_store_token_get(o->store, o->org->org_id, &row) == 0) {
                have = adopt(o, &row, now_ms);
                if (row.locked_until_ms > now_ms) {
                    o->locked_until_ms = row.locked_until_ms;
                    lockout_seen(o, row.locked_until_ms);
                }
                tds_token_row_clear(&row);
            }
        }
        if (have && o->expires_at_ms - now_ms > o->cfg.refresh_ahead_ms) {
            rc = TDS_OAUTH_READY;
        } else if (o->locked_until_ms > now_ms) {
            *wait_ms = o->locked_until_ms - now_ms;
            rc = have ? TDS_OAUTH_READY : TDS_OAUTH_LOCKED;
        } else {
            rc = start_refresh(o, now_ms, wait_ms, false);
            have = o->token && o->expires_at_ms - now_ms > MIN_VALID_MS;
            if (rc != TDS_OAUTH_PAUSED && have)
                rc = TDS_OAUTH_READY;
        }
    }
    if (rc == TDS_OAUTH_READY) {
        *token = o->token;
        *api_domain = o->api_domain;
        if (*api_domain && !tds_url_transport_ok(*api_domain, o->org->allow_http)) {
            /* The token would go to it in the clear: Zoho's are https. */
            if (!o->warned_insecure_domain) {
                tds_log(TDS_LOG_ERROR, &o->lctx,
                        "zoho gave api_domain %.100s, plain http:// to another machine: not used "
                        "(the data center's is)", *api_domain);
                o->warned_insecure_domain = true;
            }
            *api_domain = NULL;
        }
        if (!*api_domain && o->default_domain[0]) {
            /* Zoho named none (a refresh may leave it out, a data center
             * change forgets the old one): the data center's own. A good
             * token is never dropped for want of an api_domain. */
            if (!o->warned_default) {
                tds_log(TDS_LOG_INFO, &o->lctx,
                        "zoho gave no api_domain for this token, using the data center's %s",
                        o->default_domain);
                o->warned_default = true;
            }
            *api_domain = o->default_domain;
        }
    }
    return rc;
}

void tds_oauth_unreachable(struct tds_oauth *o, const char *token, int64_t now_ms)
{
    if (!token || !o->token || strcmp(o->token, token) != 0)
        return;
    if (o->probe_ms && now_ms - o->probe_ms < REFRESH_WINDOW_MS)
        return;
    if (o->refreshing || o->paused || now_ms < o->locked_until_ms || now_ms < o->next_attempt_ms)
        return;
    o->probe_ms = now_ms;
    tds_log(TDS_LOG_INFO, &o->lctx,
            "api domain %s could not be reached: asking the accounts server once whether it moved "
            "(the token is kept)",
            o->api_domain ? o->api_domain : o->default_domain);
    int64_t wait;
    (void)start_refresh(o, now_ms, &wait, true);
}

void tds_oauth_invalidate(struct tds_oauth *o, const char *token)
{
    if (!token)
        return;
    if (!o->refused || strcmp(o->refused, token) != 0) {
        set_str(&o->refused, token);
        tds_store_token_expire(o->store, o->org->org_id, token);
    }
    if (o->token && strcmp(o->token, token) == 0) {
        free(o->token);
        o->token = NULL;
        o->expires_at_ms = 0;
        o->last_read_ms = 0;
    }
}

int tds_oauth_refused(struct tds_oauth *o, const char *token, int64_t sent_ms, int64_t now_ms)
{
    if (!token || !o->token || strcmp(o->token, token) != 0)
        return TDS_OAUTH_REFUSAL_REPLACED;
    /* It answered a call sent after this one: alive, so this resource is
     * what it may not reach. */
    if (o->ok_sent_ms > 0 && o->ok_sent_ms >= sent_ms)
        return TDS_OAUTH_REFUSAL_KEPT;
    /* A token taken up because the last one was refused, refused in turn:
     * refreshing again would mint the same scope. Refreshes are scarce (five
     * per 10 minutes here, shared by every call of the organization), and
     * dropping a token leaves every other call waiting for the next one.
     * After 10 minutes a refusal may drop it: a token can also die young
     * (revoked, evicted as the 31st). */
    if (o->after_refusal && now_ms - o->token_since_ms < REFRESH_WINDOW_MS)
        return TDS_OAUTH_REFUSAL_KEPT;
    o->dropped_for_refusal = true;
    tds_oauth_invalidate(o, token);
    return TDS_OAUTH_REFUSAL_DROPPED;
}

void tds_oauth_worked(struct tds_oauth *o, const char *token, int64_t sent_ms)
{
    if (token && o->token && sent_ms > o->ok_sent_ms && strcmp(o->token, token) == 0)
        o->ok_sent_ms = sent_ms;
}

const char *tds_oauth_state(const struct tds_oauth *o, int64_t now_ms)
{
    if (o->paused)
        return "paused";
    if (o->refreshing)
        return "refreshing";
    if (o->locked_until_ms > now_ms)
        return "locked";
    if (o->token && o->expires_at_ms > now_ms)
        return "ok";
    return "none";
}

/* ---- grant code exchange (CLI, blocking) ---- */

static size_t collect(char *p, size_t sz, size_t n, void *ud)
{
    struct tds_buf *b = ud;
    return tds_buf_add(b, p, sz * n) == 0 ? sz * n : 0;
}

/* Store what a grant code bought. The row names the family its next
 * refresh counts against: the file's refresh token's when the file sets one
 * (it wins, start_refresh), else the new one's. Without a family the row
 * left the family's refresh count (tds_store_token_count_refresh) until the
 * organization's next successful refresh, and its siblings refreshed past
 * the family's budget. */
/* The token for each organization, in one statement; each one's family
 * from the refresh token its fetchers use (the file's wins). */
static int exchange_save(struct tds_store *store, const struct tds_org *const *orgs, size_t n,
                         const struct tds_zoauth *z)
{
    const char **ids = calloc(n, sizeof(*ids)), **families = calloc(n, sizeof(*families));
    char (*fam)[2 * 32 + 1] = calloc(n, sizeof(*fam));
    int rc = -ENOMEM;

    if (ids && families && fam) {
        for (size_t i = 0; i < n; i++) {
            const struct tds_org *o = orgs[i];
            family_of(o, o->refresh_token && *o->refresh_token ? o->refresh_token : z->refresh_token,
                      fam[i]);
            ids[i] = o->org_id;
            families[i] = fam[i];
        }
        rc = tds_store_token_save_orgs(store, ids, families, n, z->access_token, z->api_domain,
                                       tds_wall_ms() + z->expires_in_s * 1000, z->refresh_token,
                                       orgs[0]->accounts_url);
    }
    free(ids);
    free(families);
    free(fam);
    return rc;
}

int tds_oauth_exchange(const struct tds_org *const *orgs, size_t n_orgs, struct tds_store *store,
                       const char *code, int64_t timeout_ms, char *err, size_t errlen)
{
    const struct tds_org *org = orgs[0];
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "could not initialise libcurl");
        return -EIO;
    }
    char *cid = tds_http_escape(org->client_id ? org->client_id : "");
    char *sec = tds_http_escape(org->client_secret ? org->client_secret : "");
    char *cd = tds_http_escape(code);
    struct tds_buf form = {0}, body = {.max = 1u << 20};
    int rc = -EIO;
    if (!cid || !sec || !cd ||
        tds_buf_addf(&form, "grant_type=authorization_code&client_id=%s&client_secret=%s&code=%s", cid,
                     sec, cd) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    char url[1024];
    snprintf(url, sizeof(url), "%s/oauth/v2/token", org->accounts_url ? org->accounts_url : "");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, form.p);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cr = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    struct tds_zoauth *z = calloc(1, sizeof(*z));
    if (!z) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    enum tds_zoauth_class cls = tds_zoauth_parse(cr == CURLE_OK, status, body.p ? body.p : "",
                                                 body.len, z);
    if (cls != TDS_ZOAUTH_OK) {
        snprintf(err, errlen, "token endpoint refused the grant code: %s",
                 cr != CURLE_OK ? curl_easy_strerror(cr) : z->error);
        rc = cls == TDS_ZOAUTH_RETRY ? -EIO : TDS_E_INVALID;
    } else if (!z->refresh_token[0]) {
        snprintf(err, errlen, "token endpoint returned no refresh token (was the code already used?)");
        rc = TDS_E_INVALID;
    } else if (exchange_save(store, orgs, n_orgs, z) != 0) {
        snprintf(err, errlen, "could not store the token: %s", tds_store_error(store));
        rc = -EIO;
    } else {
        rc = 0;
    }
    free(z);
out:
    free(cid);
    free(sec);
    free(cd);
    tds_buf_deinit(&form);
    tds_buf_deinit(&body);
    curl_easy_cleanup(c);
    return rc;
}
