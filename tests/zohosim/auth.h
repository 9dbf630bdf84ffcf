/* auth — the simulated Zoho accounts server: OAuth tokens.
 *
 * Owns the client credentials, refresh tokens (global or bound to one
 * organization), one-time grant codes, live access tokens and the per refresh
 * token mint limit with its lockout. Thread-safe (one mutex). It never does
 * HTTP: the server passes it form parameters and sends what it returns.
 */
#ifndef ZS_AUTH_H
#define ZS_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct zs_auth;

struct zs_auth_cfg {
    const char *client_id, *client_secret;
    int64_t token_ttl_s;       /* expires_in */
    int64_t refresh_limit;     /* mints per refresh token per window; 0 = off */
    int64_t refresh_window_ms;
    int64_t lockout_ms;
    int64_t max_live_tokens;   /* per refresh token; the oldest is evicted; 0 = off */
    uint64_t seed;
    bool localized_denied;     /* Access Denied text in Chinese, as Zoho sometimes sends */
};

int zs_auth_new(struct zs_auth **out, const struct zs_auth_cfg *cfg);
struct zs_auth *zs_auth_free(struct zs_auth *a);

/* org_index -1 = valid for every organization. */
int zs_auth_add_refresh(struct zs_auth *a, const char *token, int org_index);
int zs_auth_add_code(struct zs_auth *a, const char *code);

/* Lookup function for form parameters of the token request. */
typedef const char *(*zs_param_fn)(void *ctx, const char *name);

/* Handles POST /oauth/v2/token. api_domain is put in the reply. Returns the
 * HTTP status and sets *body (malloc'd JSON, caller frees). */
int zs_auth_token(struct zs_auth *a, zs_param_fn param, void *ctx, const char *api_domain,
                  int64_t now_ms, char **body);
/* Handles POST /oauth/v2/token/revoke?token=… (refresh or access token). */
int zs_auth_revoke(struct zs_auth *a, const char *token, char **body);

/* 0 if token is a live access token for the organization, else -EACCES. */
int zs_auth_check(struct zs_auth *a, const char *token, int org_index, int64_t now_ms);
/* Makes every live access token expire now (for tests of expiry). */
void zs_auth_expire_all(struct zs_auth *a);

struct zs_auth_stats {
    uint64_t refreshes, codes, errors, access_denied, revokes, live_tokens;
};
void zs_auth_stats(struct zs_auth *a, struct zs_auth_stats *s);
/* Writes a JSON array with one object per refresh token (its text, the org
 * id it is bound to or null, refreshes, access_denied, revoked, locked,
 * live_tokens). org_ids maps org indexes to ids. */
struct zs_jw;
void zs_auth_tokens_json(struct zs_auth *a, struct zs_jw *w, const char *const *org_ids,
                         size_t n_orgs, int64_t now_ms);
/* Refreshes made with refresh tokens bound to this org. */
uint64_t zs_auth_org_refreshes(struct zs_auth *a, int org_index);
void zs_auth_reset_stats(struct zs_auth *a);

#endif
