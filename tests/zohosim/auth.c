/* auth — OAuth tokens of the simulated accounts server; see auth.h.
 *
 * Zoho answers most token errors with HTTP 200 and an "error" key; only the
 * mint limit answers 400 "Access Denied". A request during a lockout extends
 * it: integrators report the block clears only after a quiet period, which is
 * exactly what punishes a client that retries refreshes in a loop.
 */
#include "auth.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "jw.h"

#define NBUCKETS 4096
#define TOKEN_MAX 127

struct refresh {
    char token[TOKEN_MAX + 1];
    int org;
    bool revoked;
    int64_t *mints;   /* ring of mint times (ms), refresh_limit long */
    size_t n_mints, head;
    int64_t locked_until_ms;
    uint64_t live;
    uint64_t refreshes, denied;
};

struct access {
    char token[TOKEN_MAX + 1];
    int org;
    int64_t expires_ms;
    size_t refresh;   /* index into refresh[], SIZE_MAX for none */
    uint64_t serial;
    struct access *next;
};

struct code {
    char code[TOKEN_MAX + 1];
    bool used;
};

struct zs_auth {
    pthread_mutex_t lock;
    struct zs_auth_cfg cfg;
    char *client_id, *client_secret;
    struct refresh *refresh;
    size_t n_refresh, cap_refresh;
    struct code *codes;
    size_t n_codes, cap_codes;
    struct access *buckets[NBUCKETS];
    uint64_t serial, counter, inserts;
    struct zs_auth_stats st;
};

static uint64_t hash_str(const char *s)
{
    uint64_t x = 1469598103934665603ULL;
    for (; *s; s++)
        x = (x ^ (unsigned char)*s) * 1099511628211ULL;
    return x;
}

int zs_auth_new(struct zs_auth **out, const struct zs_auth_cfg *cfg)
{
    struct zs_auth *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    pthread_mutex_init(&a->lock, NULL);
    a->cfg = *cfg;
    a->client_id = strdup(cfg->client_id);
    a->client_secret = strdup(cfg->client_secret);
    if (!a->client_id || !a->client_secret) {
        zs_auth_free(a);
        return -ENOMEM;
    }
    a->cfg.client_id = a->client_id;
    a->cfg.client_secret = a->client_secret;
    *out = a;
    return 0;
}

struct zs_auth *zs_auth_free(struct zs_auth *a)
{
    if (!a)
        return NULL;
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct access *n = a->buckets[i];
        while (n) {
            struct access *nx = n->next;
            free(n);
            n = nx;
        }
    }
    for (size_t i = 0; i < a->n_refresh; i++)
        free(a->refresh[i].mints);
    free(a->refresh);
    free(a->codes);
    free(a->client_id);
    free(a->client_secret);
    pthread_mutex_destroy(&a->lock);
    free(a);
    return NULL;
}

static int add_refresh_locked(struct zs_auth *a, const char *token, int org, size_t *idx)
{
    if (strlen(token) > TOKEN_MAX || !*token)
        return -EINVAL;
    if (a->n_refresh == a->cap_refresh) {
        size_t cap = a->cap_refresh ? a->cap_refresh * 2 : 8;
        struct refresh *nr = realloc(a->refresh, cap * sizeof(*nr));
        if (!nr)
            return -ENOMEM;
        a->refresh = nr;
        a->cap_refresh = cap;
    }
    struct refresh *r = &a->refresh[a->n_refresh];
    memset(r, 0, sizeof(*r));
    memcpy(r->token, token, strlen(token) + 1);
    r->org = org;
    if (a->cfg.refresh_limit > 0) {
        r->mints = calloc((size_t)a->cfg.refresh_limit, sizeof(int64_t));
        if (!r->mints)
            return -ENOMEM;
    }
    if (idx)
        *idx = a->n_refresh;
    a->n_refresh++;
    return 0;
}

int zs_auth_add_refresh(struct zs_auth *a, const char *token, int org_index)
{
    pthread_mutex_lock(&a->lock);
    int rc = add_refresh_locked(a, token, org_index, NULL);
    pthread_mutex_unlock(&a->lock);
    return rc;
}

int zs_auth_add_code(struct zs_auth *a, const char *code)
{
    if (strlen(code) > TOKEN_MAX || !*code)
        return -EINVAL;
    pthread_mutex_lock(&a->lock);
    int rc = 0;
    if (a->n_codes == a->cap_codes) {
        size_t cap = a->cap_codes ? a->cap_codes * 2 : 4;
        struct code *nc = realloc(a->codes, cap * sizeof(*nc));
        if (!nc) {
            rc = -ENOMEM;
            goto out;
        }
        a->codes = nc;
        a->cap_codes = cap;
    }
    memset(&a->codes[a->n_codes], 0, sizeof(a->codes[0]));
    memcpy(a->codes[a->n_codes].code, code, strlen(code) + 1);
    a->n_codes++;
out:
    pthread_mutex_unlock(&a->lock);
    return rc;
}

static void new_token_text(struct zs_auth *a, char out[TOKEN_MAX + 1])
{
    a->counter++;
    uint64_t x = zs_h(a->cfg.seed, a->counter, 0xa11);
    uint64_t y = zs_mix(x ^ a->counter);
    snprintf(out, TOKEN_MAX + 1, "1000.%016llx%08llx.%016llx", (unsigned long long)x,
             (unsigned long long)a->counter, (unsigned long long)y);
}

static void unlink_access(struct zs_auth *a, struct access **pp)
{
    struct access *n = *pp;
    *pp = n->next;
    if (n->refresh != SIZE_MAX && n->refresh < a->n_refresh && a->refresh[n->refresh].live)
        a->refresh[n->refresh].live--;
    if (a->st.live_tokens)
        a->st.live_tokens--;
    free(n);
}

static void sweep_expired(struct zs_auth *a, int64_t now_ms)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct access **pp = &a->buckets[i];
        while (*pp) {
            if ((*pp)->expires_ms <= now_ms)
                unlink_access(a, pp);
            else
                pp = &(*pp)->next;
        }
    }
}

/* Zoho keeps at most N live access tokens per refresh token; a new one
 * silently kills the oldest. */
static void evict_oldest(struct zs_auth *a, size_t ri)
{
    struct access **best = NULL;
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct access **pp = &a->buckets[i]; *pp; pp = &(*pp)->next)
            if ((*pp)->refresh == ri && (!best || (*pp)->serial < (*best)->serial))
                best = pp;
    if (best)
        unlink_access(a, best);
}

static int mint(struct zs_auth *a, int org, size_t ri, int64_t now_ms, char out[TOKEN_MAX + 1])
{
    if (++a->inserts % 1024 == 0)
        sweep_expired(a, now_ms);
    if (ri != SIZE_MAX && a->cfg.max_live_tokens > 0 &&
        a->refresh[ri].live >= (uint64_t)a->cfg.max_live_tokens)
        evict_oldest(a, ri);
    struct access *n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    new_token_text(a, n->token);
    n->org = org;
    n->expires_ms = now_ms + a->cfg.token_ttl_s * 1000;
    n->refresh = ri;
    n->serial = ++a->serial;
    size_t b = hash_str(n->token) % NBUCKETS;
    n->next = a->buckets[b];
    a->buckets[b] = n;
    if (ri != SIZE_MAX)
        a->refresh[ri].live++;
    a->st.live_tokens++;
    memcpy(out, n->token, TOKEN_MAX + 1);
    return 0;
}

static char *json_error(const char *err)
{
    struct zs_jw w;
    zs_jw_init(&w, 64);
    zs_jw_obj(&w);
    zs_jw_kstr(&w, "error", err);
    zs_jw_obj_end(&w);
    return zs_jw_take(&w, NULL);
}

/* Zoho localises this one; integrations that match the English text break
 * (--localized-denied sends the Chinese variant seen in the wild). */
static char *access_denied(bool localized)
{
    struct zs_jw w;
    zs_jw_init(&w, 200);
    zs_jw_obj(&w);
    zs_jw_kstr(&w, "error_description",
               localized ? "您的请求过于频繁，请稍后再试。"
                         : "You have made too many requests continuously. Please try again "
                           "after some time.");
    zs_jw_kstr(&w, "error", localized ? "拒绝访问" : "Access Denied");
    zs_jw_kstr(&w, "status", "failure");
    zs_jw_obj_end(&w);
    return zs_jw_take(&w, NULL);
}

static char *success(struct zs_auth *a, const char *access, const char *refresh,
                     const char *api_domain)
{
    struct zs_jw w;
    zs_jw_init(&w, 256);
    zs_jw_obj(&w);
    zs_jw_kstr(&w, "access_token", access);
    if (refresh)
        zs_jw_kstr(&w, "refresh_token", refresh);
    zs_jw_kstr(&w, "scope", "ZohoInventory.fullaccess.all ZohoBooks.fullaccess.all");
    zs_jw_kstr(&w, "api_domain", api_domain);
    zs_jw_kstr(&w, "token_type", "Bearer");
    zs_jw_kint(&w, "expires_in", a->cfg.token_ttl_s);
    zs_jw_obj_end(&w);
    return zs_jw_take(&w, NULL);
}

static bool str_eq(const char *a, const char *b) { return a && b && !strcmp(a, b); }

int zs_auth_token(struct zs_auth *a, zs_param_fn param, void *ctx, const char *api_domain,
                  int64_t now_ms, char **body)
{
    const char *grant = param(ctx, "grant_type");
    const char *cid = param(ctx, "client_id"), *sec = param(ctx, "client_secret");
    char tok[TOKEN_MAX + 1];
    int status = 200;
    *body = NULL;
    pthread_mutex_lock(&a->lock);
    if (!str_eq(cid, a->client_id) || !str_eq(sec, a->client_secret)) {
        a->st.errors++;
        *body = json_error("invalid_client");
    } else if (str_eq(grant, "refresh_token")) {
        const char *rt = param(ctx, "refresh_token");
        size_t ri = SIZE_MAX;
        for (size_t i = 0; rt && i < a->n_refresh; i++)
            if (!strcmp(a->refresh[i].token, rt))
                ri = i;
        if (ri == SIZE_MAX || a->refresh[ri].revoked) {
            a->st.errors++;
            *body = json_error("invalid_code");
        } else {
            struct refresh *r = &a->refresh[ri];
            bool denied = false;
            if (now_ms < r->locked_until_ms) {
                r->locked_until_ms = now_ms + a->cfg.lockout_ms;
                denied = true;
            } else if (a->cfg.refresh_limit > 0) {
                size_t lim = (size_t)a->cfg.refresh_limit;
                /* drop mints that left the window */
                while (r->n_mints &&
                       r->mints[(r->head + lim - r->n_mints) % lim] <=
                           now_ms - a->cfg.refresh_window_ms)
                    r->n_mints--;
                if (r->n_mints >= lim) {
                    r->locked_until_ms = now_ms + a->cfg.lockout_ms;
                    denied = true;
                } else {
                    r->mints[r->head] = now_ms;
                    r->head = (r->head + 1) % lim;
                    r->n_mints++;
                }
            }
            if (denied) {
                r->denied++;
                a->st.access_denied++;
                status = 400;
                *body = access_denied(a->cfg.localized_denied);
            } else if (mint(a, r->org, ri, now_ms, tok) == 0) {
                r = &a->refresh[ri];
                r->refreshes++;
                a->st.refreshes++;
                *body = success(a, tok, NULL, api_domain);
            }
        }
    } else if (str_eq(grant, "authorization_code")) {
        const char *code = param(ctx, "code");
        struct code *c = NULL;
        for (size_t i = 0; code && i < a->n_codes; i++)
            if (!strcmp(a->codes[i].code, code))
                c = &a->codes[i];
        if (!c || c->used) {
            a->st.errors++;
            *body = json_error("invalid_code");
        } else {
            char rt[TOKEN_MAX + 1];
            size_t ri;
            c->used = true;
            new_token_text(a, rt);
            if (add_refresh_locked(a, rt, -1, &ri) == 0 && mint(a, -1, ri, now_ms, tok) == 0) {
                a->st.codes++;
                *body = success(a, tok, rt, api_domain);
            }
        }
    } else {
        a->st.errors++;
        *body = json_error("unsupported_grant_type");
    }
    pthread_mutex_unlock(&a->lock);
    if (!*body)
        return -ENOMEM;
    return status;
}

int zs_auth_revoke(struct zs_auth *a, const char *token, char **body)
{
    int status = 400;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; token && i < a->n_refresh; i++) {
        struct refresh *r = &a->refresh[i];
        if (strcmp(r->token, token) || r->revoked)
            continue;
        r->revoked = true;
        /* its access tokens die with it */
        for (size_t b = 0; b < NBUCKETS; b++) {
            struct access **pp = &a->buckets[b];
            while (*pp) {
                if ((*pp)->refresh == i)
                    unlink_access(a, pp);
                else
                    pp = &(*pp)->next;
            }
        }
        status = 200;
    }
    if (status != 200 && token) {
        struct access **pp = &a->buckets[hash_str(token) % NBUCKETS];
        for (; *pp; pp = &(*pp)->next)
            if (!strcmp((*pp)->token, token)) {
                unlink_access(a, pp);
                status = 200;
                break;
            }
    }
    if (status == 200)
        a->st.revokes++;
    pthread_mutex_unlock(&a->lock);
    struct zs_jw w;
    zs_jw_init(&w, 64);
    zs_jw_obj(&w);
    if (status == 200) {
        zs_jw_kstr(&w, "status", "success");
    } else {
        zs_jw_kstr(&w, "status", "failure");
        zs_jw_kstr(&w, "error", "invalid_token");
    }
    zs_jw_obj_end(&w);
    *body = zs_jw_take(&w, NULL);
    return *body ? status : -ENOMEM;
}

int zs_auth_check(struct zs_auth *a, const char *token, int org_index, int64_t now_ms)
{
    if (!token || strlen(token) > TOKEN_MAX)
        return -EACCES;
    int rc = -EACCES;
    pthread_mutex_lock(&a->lock);
    for (struct access *n = a->buckets[hash_str(token) % NBUCKETS]; n; n = n->next) {
        if (strcmp(n->token, token))
            continue;
        if (n->expires_ms > now_ms && (n->org < 0 || n->org == org_index))
            rc = 0;
        break;
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

void zs_auth_expire_all(struct zs_auth *a)
{
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct access *n = a->buckets[i]; n; n = n->next)
            n->expires_ms = 0;
    pthread_mutex_unlock(&a->lock);
}

void zs_auth_stats(struct zs_auth *a, struct zs_auth_stats *s)
{
    pthread_mutex_lock(&a->lock);
    *s = a->st;
    pthread_mutex_unlock(&a->lock);
}

void zs_auth_tokens_json(struct zs_auth *a, struct zs_jw *w, const char *const *org_ids,
                         size_t n_orgs, int64_t now_ms)
{
    pthread_mutex_lock(&a->lock);
    zs_jw_arr(w);
    for (size_t i = 0; i < a->n_refresh; i++) {
        const struct refresh *r = &a->refresh[i];
        zs_jw_obj(w);
        zs_jw_kstr(w, "token", r->token);
        zs_jw_key(w, "org");
        if (r->org >= 0 && (size_t)r->org < n_orgs)
            zs_jw_str(w, org_ids[r->org]);
        else
            zs_jw_null(w);
        zs_jw_kint(w, "refreshes", (int64_t)r->refreshes);
        zs_jw_kint(w, "access_denied", (int64_t)r->denied);
        zs_jw_kbool(w, "revoked", r->revoked);
        zs_jw_kbool(w, "locked", now_ms < r->locked_until_ms);
        zs_jw_kint(w, "live_tokens", (int64_t)r->live);
        zs_jw_obj_end(w);
    }
    zs_jw_arr_end(w);
    pthread_mutex_unlock(&a->lock);
}

uint64_t zs_auth_org_refreshes(struct zs_auth *a, int org_index)
{
    uint64_t n = 0;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_refresh; i++)
        if (a->refresh[i].org == org_index)
            n += a->refresh[i].refreshes;
    pthread_mutex_unlock(&a->lock);
    return n;
}

void zs_auth_reset_stats(struct zs_auth *a)
{
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < a->n_refresh; i++)
        a->refresh[i].refreshes = a->refresh[i].denied = 0;
    uint64_t live = a->st.live_tokens;
    memset(&a->st, 0, sizeof(a->st));
    a->st.live_tokens = live;
    pthread_mutex_unlock(&a->lock);
}
