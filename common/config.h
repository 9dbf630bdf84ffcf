/* config — one table per stage, read from TDS_* environment variables, plus
 * the organizations file (TDS_CONFIG, JSON).
 *
 * A stage declares `static const struct tds_config_entry table[]` whose
 * entries point (by offset) into its own settings struct. tds_config_load()
 * fills the struct from defaults and the environment, resolves secret
 * references (inline, env:NAME, file:/path) and checks ranges; the first bad
 * or missing value yields one line naming it. The same table prints
 * --print-config (secrets masked) and the README's configuration table.
 */
#ifndef TDS_CONFIG_H
#define TDS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum tds_config_type {
    TDS_CFG_STR,   /* char *, malloc'd */
    TDS_CFG_INT,   /* int64_t, range [min, max] */
    TDS_CFG_BOOL,  /* bool */
};

enum {
    TDS_CFG_REQUIRED = 1u << 0, /* no default; start-up fails when unset */
    TDS_CFG_SECRET = 1u << 1,   /* resolved via tds_secret_resolve, masked when printed */
};

struct tds_config_entry {
    const char *env;        /* "TDS_DATABASE_URL" */
    enum tds_config_type type;
    const char *def;        /* default as text, NULL = none */
    unsigned flags;
    int64_t min, max;       /* TDS_CFG_INT only */
    size_t offset;          /* offsetof(struct stage_settings, field) */
    const char *help;       /* one line for --help, --print-config and the README */
};

/* Fill `settings` from the table. Returns 0, or TDS_E_INVALID with a single
 * line in err such as "invalid TDS_RATE_PER_MIN: 'abc' (expected 1..100000)"
 * or "missing required setting TDS_DATABASE_URL". Never puts a secret's value
 * into err. */
int tds_config_load(const struct tds_config_entry *table, size_t n, void *settings,
                    char *err, size_t errlen);
/* Free the strings the table's STR entries own; safe on a partially loaded struct. */
void tds_config_free(const struct tds_config_entry *table, size_t n, void *settings);
/* One "NAME=value" line per entry, secrets shown as "********" (or "(unset)"). */
void tds_config_print(const struct tds_config_entry *table, size_t n, const void *settings, FILE *f);
/* Markdown table rows "| NAME | default | description |" for the README. */
void tds_config_markdown(const struct tds_config_entry *table, size_t n, FILE *f);

/* ---- organizations file ---- */

#define TDS_ORG_MAX_SECRETS 4
#define TDS_ORG_TOKEN_MIN 16 /* characters of a webhook token, at least */
#define TDS_ORG_ID_MAX 64 /* characters of [A-Za-z0-9._-] */

struct tds_org {
    char *org_id;
    char *name;
    char *product;              /* "inventory" | "books" */
    char *data_center;          /* com, eu, in, com.au, jp, sa, com.cn, ca, uk */
    char *accounts_url;         /* resolved: override or from data_center */
    char *api_url;              /* override, NULL = use api_domain from the token response */
    char *client_id;            /* resolved secret */
    char *client_secret;        /* resolved secret */
    char *refresh_token;        /* resolved secret, may be NULL before `auth exchange` */
    char *webhook_secrets[TDS_ORG_MAX_SECRETS];
    size_t n_webhook_secrets;
    char *webhook_tokens[TDS_ORG_MAX_SECRETS]; /* resolved: X-Webhook-Token values accepted */
    size_t n_webhook_tokens;
    bool webhooks_unsigned;     /* explicitly accept unsigned webhooks */
    char **entities;            /* entity names, validated against the registry */
    size_t n_entities;
    int64_t incremental_every_s;   /* default 300 */
    int64_t incremental_budget_pct; /* default 25: share of the daily budget for them */
    int64_t reconcile_every_s;     /* default 86400 */
    int64_t daily_reserve;         /* default 500 requests kept for other integrations */
    int64_t rate_per_min;          /* default 100 */
    int64_t max_concurrency;       /* default 10 */
    int64_t daily_limit;           /* default 0 = learn from headers */
    char *timezone_offset;         /* "+0300"; default "+0000", used for last_modified_time */
    bool stock_locations;          /* "stock_sites": "locations": the warehouses entity lists
                                    * GET /locations (organizations migrated to Locations) */
    bool allow_http;               /* plain http:// to Zoho's servers allowed beyond loopback */
};

/* Whether the client secret and tokens may go to url: https://, or http://
 * to this machine (localhost, 127.0.0.0/8, [::1]), or any http:// when the
 * organization sets "allow_http" (a simulator on a private network). */
bool tds_url_transport_ok(const char *url, bool allow_http);

/* Whether the organization is a Zoho Books one (else Inventory, the default
 * when the file names no product). */
bool tds_org_books(const struct tds_org *org);

struct tds_entity;
/* Whether the organization's product (Inventory or Books) has entity e. */
bool tds_org_product_has(const struct tds_org *org, const struct tds_entity *e);
/* Whether the organization syncs entity e: its product has it, and its
 * "entities" (when given) name it. */
bool tds_org_syncs(const struct tds_org *org, const struct tds_entity *e);

struct tds_orgs {
    struct tds_org *orgs;
    size_t n;
};

/* Cut a jansson error text (json_error_t.text) before a "near" string token,
 * which may be the start of an inline secret. */
void tds_config_json_error_clean(char *text);

/* Parse the organizations file. Returns 0, or TDS_E_INVALID with one line in
 * err naming the file, the organization index/id and the field. */
int tds_orgs_load(const char *path, struct tds_orgs **out, char *err, size_t errlen);
/* The same, for a process that needs no Zoho credentials (the ingress): the
 * OAuth fields (client_id, client_secret, refresh_token) are checked for
 * shape but not resolved, so their env:/file: sources need not be there and
 * their values never enter its memory; those three stay NULL. */
int tds_orgs_load_webhooks(const char *path, struct tds_orgs **out, char *err, size_t errlen);
/* The same for a process that calls Zoho's API and takes no webhooks (the
 * fetcher): webhook_secrets and webhook_tokens are checked for shape but not
 * resolved, and stay empty. */
int tds_orgs_load_api(const char *path, struct tds_orgs **out, char *err, size_t errlen);
struct tds_orgs *tds_orgs_free(struct tds_orgs *orgs);
const struct tds_org *tds_orgs_find(const struct tds_orgs *orgs, const char *org_id);
/* Two organizations that list the same webhook secret (or token): a delivery
 * signed for one (or carrying its token) is then accepted when posted to the
 * other's path. Returns true and
 * their indexes (*a < *b), the first such pair; false when none. */
bool tds_orgs_shared_secret(const struct tds_orgs *orgs, size_t *a, size_t *b);
/* Accounts server URL for a data center code ("com" → "https://accounts.zoho.com",
 * "ca" → "https://accounts.zohocloud.ca"); NULL for an unknown code. */
const char *tds_accounts_url_for(const char *data_center);

#endif
