/* config — stage settings from a table of TDS_* environment variables, and the
 * organizations file (TDS_CONFIG, JSON).
 *
 * Owns the strings it puts into a stage's settings struct and every string of
 * a loaded tds_orgs. It never logs and never writes a secret's value into an
 * error message: errors name the setting (and for env:/file: references the
 * reference itself, which is not secret).
 *
 * Environment rules: an unset variable takes the table default. A variable set
 * to the empty string keeps "" for optional strings (how TDS_EVENTS_BIND is
 * switched off) and counts as unset for numbers, booleans and required
 * settings, so `TDS_X=` in a compose file never produces a confusing parse
 * error. An INT entry with min == max == 0 has no range.
 */
#include "config.h"
#include "entities.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ORGS_FILE_MAX (4 * 1024 * 1024)
#define ORGS_MAX 10000

/* ---- environment table ---- */

static char **str_at(void *settings, const struct tds_config_entry *e)
{
    return (char **)((char *)settings + e->offset);
}

static int64_t *int_at(void *settings, const struct tds_config_entry *e)
{
    return (int64_t *)((char *)settings + e->offset);
}

static bool *bool_at(void *settings, const struct tds_config_entry *e)
{
    return (bool *)((char *)settings + e->offset);
}

static bool int_ranged(const struct tds_config_entry *e) { return e->min != 0 || e->max != 0; }

static const char *secret_problem(int r)
{
    switch (r) {
    case TDS_E_NOTFOUND:
        return "not found";
    case TDS_E_TOO_LARGE:
        return "file over 64 KiB";
    default:
        return NULL;
    }
}

/* Describe a failed secret reference without its value: env:/file:
 * references are names, not secrets, so they are shown. */
static void secret_error(char *err, size_t errlen, const char *what, const char *spec, int r)
{
    const char *why = secret_problem(r);
    char sys[128];

    if (!why) {
        snprintf(sys, sizeof(sys), "%s", strerror(r < 0 ? -r : EIO));
        why = sys;
    }
    if (strncmp(spec, "env:", 4) == 0 && r == TDS_E_NOTFOUND)
        snprintf(err, errlen, "invalid %s: environment variable %s is not set", what, spec + 4);
    else if (strncmp(spec, "env:", 4) == 0 || strncmp(spec, "file:", 5) == 0)
        snprintf(err, errlen, "invalid %s: '%s': %s", what, spec, why);
    else
        snprintf(err, errlen, "invalid %s: %s", what, why);
}

static int load_one(const struct tds_config_entry *e, void *settings, char *err, size_t errlen)
{
    const char *v = getenv(e->env);
    bool from_env = v != NULL;
    int r;

    if (v && *v == '\0' && (e->type != TDS_CFG_STR || (e->flags & TDS_CFG_REQUIRED))) {
        v = NULL;
        from_env = false;
    }
    if (!v)
        v = e->def;
    if (!v) {
        if (e->flags & TDS_CFG_REQUIRED) {
            snprintf(err, errlen, "missing required setting %s", e->env);
            return TDS_E_INVALID;
        }
        return 0; /* STR stays NULL; numbers keep the zeroed value */
    }

    switch (e->type) {
    case TDS_CFG_STR: {
        char **dst = str_at(settings, e);
        char *s = NULL;

        if (e->flags & TDS_CFG_SECRET) {
            r = tds_secret_resolve(v, &s);
            if (r) {
                secret_error(err, errlen, e->env, v, r);
                return TDS_E_INVALID;
            }
            /* an empty secret file or env: variable is no setting at all */
            if (*s == '\0' && (e->flags & TDS_CFG_REQUIRED)) {
                free(s);
                snprintf(err, errlen, "invalid %s: '%s' is empty", e->env, v);
                return TDS_E_INVALID;
            }
        } else {
            s = strdup(v);
            if (!s) {
                snprintf(err, errlen, "invalid %s: out of memory", e->env);
                return TDS_E_INVALID;
            }
        }
        free(*dst);
        *dst = s;
        return 0;
    }
    case TDS_CFG_INT: {
        int64_t lo = int_ranged(e) ? e->min : INT64_MIN;
        int64_t hi = int_ranged(e) ? e->max : INT64_MAX;

        if (tds_parse_i64(v, lo, hi, int_at(settings, e)) == 0)
            return 0;
        if (int_ranged(e))
            snprintf(err, errlen, "invalid %s: '%s' (expected %" PRId64 "..%" PRId64 ")%s", e->env,
                     v, e->min, e->max, from_env ? "" : " in default");
        else
            snprintf(err, errlen, "invalid %s: '%s' (expected an integer)%s", e->env, v,
                     from_env ? "" : " in default");
        return TDS_E_INVALID;
    }
    case TDS_CFG_BOOL:
        if (tds_parse_bool(v, bool_at(settings, e)) == 0)
            return 0;
        snprintf(err, errlen, "invalid %s: '%s' (expected true or false)", e->env, v);
        return TDS_E_INVALID;
    }
    snprintf(err, errlen, "invalid %s: unknown setting type", e->env);
    return TDS_E_INVALID;
}

int tds_config_load(const struct tds_config_entry *table, size_t n, void *settings,
                    char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char dummy[1];
        int r = load_one(&table[i], settings, err ? err : dummy, err ? errlen : sizeof(dummy));

        if (r)
            return r;
    }
    return 0;
}

void tds_config_free(const struct tds_config_entry *table, size_t n, void *settings)
{
    for (size_t i = 0; i < n; i++) {
        if (table[i].type == TDS_CFG_STR) {
            char **p = str_at(settings, &table[i]);

            free(*p);
            *p = NULL;
        }
    }
}

void tds_config_print(const struct tds_config_entry *table, size_t n, const void *settings,
                      FILE *f)
{
    void *s = (void *)(uintptr_t)settings; /* the accessors only read here */

    for (size_t i = 0; i < n; i++) {
        const struct tds_config_entry *e = &table[i];

        switch (e->type) {
        case TDS_CFG_STR: {
            const char *v = *str_at(s, e);

            /* an empty secret is no setting at all (load_one): "********"
             * would say one was given */
            if (!v || (!*v && (e->flags & TDS_CFG_SECRET)))
                fprintf(f, "%s=(unset)\n", e->env);
            else if (e->flags & TDS_CFG_SECRET)
                fprintf(f, "%s=********\n", e->env);
            else
                fprintf(f, "%s=%s\n", e->env, v);
            break;
        }
        case TDS_CFG_INT:
            fprintf(f, "%s=%" PRId64 "\n", e->env, *int_at(s, e));
            break;
        case TDS_CFG_BOOL:
            fprintf(f, "%s=%s\n", e->env, *bool_at(s, e) ? "true" : "false");
            break;
        }
    }
}

/* Markdown cells must not contain a bare '|'. */
static void md_cell(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|')
            fputc('\\', f);
        fputc(*s, f);
    }
}

void tds_config_markdown(const struct tds_config_entry *table, size_t n, FILE *f)
{
    for (size_t i = 0; i < n; i++) {
        const struct tds_config_entry *e = &table[i];

        fprintf(f, "| %s | ", e->env);
        if (e->flags & TDS_CFG_REQUIRED)
            fputs("(required)", f);
        else if (e->def && *e->def) {
            fputc('`', f);
            md_cell(f, e->def);
            fputc('`', f);
        }
        fputs(" | ", f);
        md_cell(f, e->help);
        if (e->flags & TDS_CFG_SECRET)
            fputs(" (secret: inline, env:NAME or file:/path)", f);
        fputs(" |\n", f);
    }
}

/* ---- organizations file ---- */

static const struct {
    const char *dc;
    const char *url;
} accounts[] = {
    {"com", "https://accounts.zoho.com"},       {"eu", "https://accounts.zoho.eu"},
    {"in", "https://accounts.zoho.in"},         {"com.au", "https://accounts.zoho.com.au"},
    {"jp", "https://accounts.zoho.jp"},         {"sa", "https://accounts.zoho.sa"},
    {"com.cn", "https://accounts.zoho.com.cn"}, {"ca", "https://accounts.zohocloud.ca"},
    {"uk", "https://accounts.zoho.uk"},
};

const char *tds_accounts_url_for(const char *data_center)
{
    if (!data_center)
        return NULL;
    for (size_t i = 0; i < TDS_ARRAY_SIZE(accounts); i++)
        if (strcmp(accounts[i].dc, data_center) == 0)
            return accounts[i].url;
    return NULL;
}

/* Error context while parsing one organization. */
struct orgs_ctx {
    const char *path;
    char *err;
    size_t errlen;
    size_t index;
    const char *org_id; /* NULL until known */
    bool no_oauth;      /* OAuth secrets checked, not resolved (tds_orgs_load_webhooks) */
    bool no_webhooks;   /* webhook secrets and tokens checked, not resolved (tds_orgs_load_api) */
};

void tds_config_json_error_clean(char *text)
{
    /* jansson ends its text with "near '<token>'": a token may be the start
     * of an inline secret, quoted ("s3cr...) or not (a value left unquoted),
     * so it is left out, but for a duplicate key (a field's name) and a
     * token of one punctuation mark. */
    char *near = strstr(text, " near '");

    if (!near || strncmp(text, "duplicate object key", 20) == 0)
        return;
    if (strchr("[]{}:,", near[7]) && near[7] && strcmp(near + 8, "'") == 0)
        return;
    *near = '\0';
}

static int fail(struct orgs_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct orgs_ctx *c, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (c->org_id)
        snprintf(c->err, c->errlen, "%s: organizations[%zu] (org_id %s): %s", c->path, c->index,
                 c->org_id, what);
    else
        snprintf(c->err, c->errlen, "%s: organizations[%zu]: %s", c->path, c->index, what);
    return TDS_E_INVALID;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* Optional string field: absent or null leaves *out NULL. */
static int get_str(struct orgs_ctx *c, json_t *o, const char *key, char **out)
{
    json_t *v = json_object_get(o, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return fail(c, "field '%s' must be a string, not %s", key, json_kind(v));
    *out = strdup(json_string_value(v));
    if (!*out)
        return fail(c, "out of memory");
    return 0;
}

static int get_secret(struct orgs_ctx *c, json_t *o, const char *key, bool required, char **out)
{
    json_t *v = json_object_get(o, key);
    char what[64];
    int r;

    if (!v || json_is_null(v)) {
        if (required)
            return fail(c, "missing required field '%s'", key);
        return 0;
    }
    if (!json_is_string(v))
        return fail(c, "field '%s' must be a string, not %s", key, json_kind(v));
    if (c->no_oauth)
        return 0; /* shape only: the value is not this process's to hold */
    r = tds_secret_resolve(json_string_value(v), out);
    if (r) {
        char msg[256];

        snprintf(what, sizeof(what), "field '%s'", key);
        secret_error(msg, sizeof(msg), what, json_string_value(v), r);
        return fail(c, "%s", msg);
    }
    if (required && **out == '\0')
        return fail(c, "field '%s' is empty", key);
    for (const unsigned char *p = (const unsigned char *)*out; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return fail(c, "field '%s' holds a control character (0x%02x at byte %zu): Zoho "
                        "would refuse it", key, *p, (size_t)(p - (const unsigned char *)*out));
    return 0;
}

/* A list of up to TDS_ORG_MAX_SECRETS webhook credentials (several during a
 * rotation), each inline, env:NAME or file:/path. A secret may hold any byte
 * but a control character; a token goes in an HTTP header as it is, so it is
 * printable ASCII without blanks, and at least min_len long. */
static int get_secret_list(struct orgs_ctx *c, json_t *o, const char *key, size_t min_len,
                           bool header_safe, char **out, size_t *n)
{
    json_t *v = json_object_get(o, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return fail(c, "field '%s' must be an array, not %s", key, json_kind(v));
    if (json_array_size(v) > TDS_ORG_MAX_SECRETS)
        return fail(c, "field '%s' has %zu entries (at most %d)", key, json_array_size(v),
                    TDS_ORG_MAX_SECRETS);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *x = json_array_get(v, i);
        char what[64], msg[256];
        char *s = NULL;
        int r;

        if (!json_is_string(x))
            return fail(c, "%s[%zu] must be a string, not %s", key, i, json_kind(x));
        if (c->no_webhooks)
            continue; /* shape only: the value is not this process's to hold */
        r = tds_secret_resolve(json_string_value(x), &s);
        if (r) {
            snprintf(what, sizeof(what), "%s[%zu]", key, i);
            secret_error(msg, sizeof(msg), what, json_string_value(x), r);
            return fail(c, "%s", msg);
        }
        out[(*n)++] = s;
        if (*s == '\0')
            return fail(c, "%s[%zu] is empty", key, i);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
            if (*p < 0x20 || *p == 0x7f)
                return fail(c, "%s[%zu] holds a control character (0x%02x at byte %zu): %s", key,
                            i, *p, (size_t)(p - (const unsigned char *)s),
                            header_safe ? "no HTTP header could carry it"
                                        : "no signature made with the secret would match");
            if (header_safe && (*p == ' ' || *p > 0x7e))
                return fail(c, "%s[%zu] holds a blank or a non-ASCII byte (at byte %zu): a "
                            "token goes in an HTTP header as it is, so use printable ASCII",
                            key, i, (size_t)(p - (const unsigned char *)s));
        }
        if (strlen(s) < min_len)
            return fail(c, "%s[%zu] is %zu characters long: a token must have at least %zu, "
                        "so that it cannot be guessed", key, i, strlen(s), min_len);
    }
    return 0;
}

static int get_int(struct orgs_ctx *c, json_t *o, const char *key, int64_t def, int64_t min,
                   int64_t max, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    int64_t x;

    *out = def;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return fail(c, "field '%s' must be an integer, not %s", key, json_kind(v));
    x = json_integer_value(v);
    if (x < min || x > max)
        return fail(c, "field '%s' is %" PRId64 " (expected %" PRId64 "..%" PRId64 ")", key, x,
                    min, max);
    *out = x;
    return 0;
}

static bool org_id_ok(const char *s)
{
    size_t n = strlen(s);

    /* The id goes into origins, metric labels and SQL parameters: keep it plain. */
    if (n == 0 || n > TDS_ORG_ID_MAX)
        return false;
    for (; *s; s++) {
        char ch = *s;

        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              ch == '-' || ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

/* "+0300", "-05:30" → "+0300" / "-0530" in out (6 bytes). */
static bool tz_normalize(const char *s, char out[6])
{
    size_t n = strlen(s);
    int hh, mm;

    if (n != 5 && n != 6)
        return false;
    if (s[0] != '+' && s[0] != '-')
        return false;
    if (n == 6 && s[3] != ':')
        return false;
    const char *h = s + 1, *m = s + (n == 6 ? 4 : 3);
    for (int i = 0; i < 2; i++)
        if (h[i] < '0' || h[i] > '9' || m[i] < '0' || m[i] > '9')
            return false;
    hh = (h[0] - '0') * 10 + (h[1] - '0');
    mm = (m[0] - '0') * 10 + (m[1] - '0');
    if (hh > 14 || mm > 59)
        return false;
    out[0] = s[0];
    out[1] = h[0];
    out[2] = h[1];
    out[3] = m[0];
    out[4] = m[1];
    out[5] = '\0';
    return true;
}

static const char *const org_keys[] = {
    "org_id", "name", "product", "data_center", "accounts_url", "api_url", "client_id",
    "client_secret", "refresh_token", "webhook_secrets", "webhook_tokens", "webhooks_unsigned",
    "entities",
    "incremental_every_s", "incremental_budget_pct", "reconcile_every_s", "daily_reserve",
    "rate_per_min", "max_concurrency", "daily_limit", "timezone_offset", "stock_sites",
    "allow_http",
};

/* Unknown keys are rejected so a typo ("entites") cannot silently change
 * behaviour; keys starting with '_' are comments. */
static int check_keys(struct orgs_ctx *c, json_t *o)
{
    const char *key;
    json_t *v;

    json_object_foreach(o, key, v) {
        bool known = key[0] == '_';

        for (size_t i = 0; !known && i < TDS_ARRAY_SIZE(org_keys); i++)
            known = strcmp(key, org_keys[i]) == 0;
        if (!known)
            return fail(c, "unknown field '%s'", key);
    }
    return 0;
}

static void org_clear(struct tds_org *g)
{
    free(g->org_id);
    free(g->name);
    free(g->product);
    free(g->data_center);
    free(g->accounts_url);
    free(g->api_url);
    free(g->client_id);
    free(g->client_secret);
    free(g->refresh_token);
    for (size_t i = 0; i < g->n_webhook_secrets; i++)
        free(g->webhook_secrets[i]);
    for (size_t i = 0; i < g->n_webhook_tokens; i++)
        free(g->webhook_tokens[i]);
    for (size_t i = 0; i < g->n_entities; i++)
        free(g->entities[i]);
    free(g->entities);
    free(g->timezone_offset);
    memset(g, 0, sizeof(*g));
}

static bool is_http_url(const char *s)
{
    return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

bool tds_url_transport_ok(const char *url, bool allow_http)
{
    if (strncmp(url, "https://", 8) == 0)
        return true;
    if (strncmp(url, "http://", 7) != 0)
        return false;
    if (allow_http)
        return true;
    const char *h = url + 7;
    size_t n = strcspn(h, ":/?#");
    if (n > 0 && h[0] == '[') {
        n = strcspn(h, "]");
        if (h[n] != ']')
            return false; /* no closing bracket: no host */
        n++;
    }
    /* After the host only a port of digits, then the path, query or end:
     * "http://localhost:80@remote.example/" names the host remote.example
     * (what came before the @ is a user name and password) and would send
     * credentials over plain HTTP to another machine. */
    const char *rest = h + n;
    if (*rest == ':')
        rest += 1 + strspn(rest + 1, "0123456789");
    if (*rest != '\0' && !strchr("/?#", *rest))
        return false;
    return (n == 9 && strncasecmp(h, "localhost", 9) == 0) || (n == 5 && strncmp(h, "[::1]", 5) == 0) ||
           (n >= 9 && n <= 15 && strncmp(h, "127.", 4) == 0 &&
            strspn(h, "0123456789.") >= n);
}

static int add_entity(struct orgs_ctx *c, struct tds_org *g, const char *name)
{
    for (size_t i = 0; i < g->n_entities; i++)
        if (strcmp(g->entities[i], name) == 0)
            return fail(c, "entity '%s' is listed twice", name);
    g->entities[g->n_entities] = strdup(name);
    if (!g->entities[g->n_entities])
        return fail(c, "out of memory");
    g->n_entities++;
    return 0;
}

bool tds_org_books(const struct tds_org *org)
{
    return org->product && strcmp(org->product, "books") == 0;
}

bool tds_org_product_has(const struct tds_org *org, const struct tds_entity *e)
{
    return (e->products & (tds_org_books(org) ? TDS_PRODUCT_BOOKS : TDS_PRODUCT_INVENTORY)) != 0;
}

bool tds_org_syncs(const struct tds_org *org, const struct tds_entity *e)
{
    if (!tds_org_product_has(org, e))
        return false;
    if (org->n_entities == 0)
        return true;
    for (size_t i = 0; i < org->n_entities; i++)
        if (strcmp(org->entities[i], e->name) == 0)
            return true;
    return false;
}

static int parse_entities(struct orgs_ctx *c, json_t *o, struct tds_org *g, unsigned product)
{
    json_t *v = json_object_get(o, "entities");
    size_t cap = tds_entity_count();
    int r;

    if (v && !json_is_null(v) && !json_is_array(v))
        return fail(c, "field 'entities' must be an array, not %s", json_kind(v));
    if (v && json_is_array(v) && json_array_size(v) == 0)
        return fail(c, "field 'entities' is empty (leave it out for all entities)");
    g->entities = calloc(cap ? cap : 1, sizeof(*g->entities));
    if (!g->entities)
        return fail(c, "out of memory");

    if (!v || json_is_null(v)) {
        /* All registry entities that this product has. */
        for (size_t i = 0; i < cap; i++) {
            const struct tds_entity *e = tds_entity_at(i);

            if ((e->products & product) && (r = add_entity(c, g, e->name)))
                return r;
        }
        return 0;
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *x = json_array_get(v, i);
        const struct tds_entity *e;

        if (!json_is_string(x))
            return fail(c, "entities[%zu] must be a string, not %s", i, json_kind(x));
        e = tds_entity_find(json_string_value(x));
        if (!e)
            return fail(c, "unknown entity '%s'", json_string_value(x));
        if (!(e->products & product))
            return fail(c, "entity '%s' does not exist in Zoho %s", e->name, g->product);
        if (g->n_entities >= cap)
            return fail(c, "entity '%s' is listed twice", e->name);
        if ((r = add_entity(c, g, e->name)))
            return r;
    }
    return 0;
}

static int parse_org(struct orgs_ctx *c, json_t *o, struct tds_org *g)
{
    json_t *v;
    unsigned product;
    const char *url;
    char tz[6];
    int r;

    if (!json_is_object(o))
        return fail(c, "must be an object, not %s", json_kind(o));

    v = json_object_get(o, "org_id");
    if (!v || json_is_null(v))
        return fail(c, "missing required field 'org_id'");
    if (json_is_integer(v)) {
        char num[32];

        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        g->org_id = strdup(num);
    } else if (json_is_string(v)) {
        g->org_id = strdup(json_string_value(v));
    } else {
        return fail(c, "field 'org_id' must be a string, not %s", json_kind(v));
    }
    if (!g->org_id)
        return fail(c, "out of memory");
    if (!org_id_ok(g->org_id))
        return fail(c, "field 'org_id' must be 1..%d characters of [A-Za-z0-9._-]", TDS_ORG_ID_MAX);
    c->org_id = g->org_id;

    if ((r = check_keys(c, o)))
        return r;

    if ((r = get_str(c, o, "name", &g->name)))
        return r;
    if (!g->name && !(g->name = strdup(g->org_id)))
        return fail(c, "out of memory");

    if ((r = get_str(c, o, "product", &g->product)))
        return r;
    if (!g->product && !(g->product = strdup("inventory")))
        return fail(c, "out of memory");
    if (strcmp(g->product, "inventory") == 0)
        product = TDS_PRODUCT_INVENTORY;
    else if (strcmp(g->product, "books") == 0)
        product = TDS_PRODUCT_BOOKS;
    else
        return fail(c, "field 'product' is '%s' (expected inventory or books)", g->product);

    if ((r = get_str(c, o, "data_center", &g->data_center)))
        return r;
    if (!g->data_center && !(g->data_center = strdup("com")))
        return fail(c, "out of memory");
    url = tds_accounts_url_for(g->data_center);
    if (!url)
        return fail(c, "field 'data_center' is '%s' (expected com, eu, in, com.au, jp, sa, "
                       "com.cn, ca or uk)",
                    g->data_center);

    v = json_object_get(o, "allow_http");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return fail(c, "field 'allow_http' must be a boolean, not %s", json_kind(v));
        g->allow_http = json_is_true(v);
    }
    if ((r = get_str(c, o, "accounts_url", &g->accounts_url)))
        return r;
    if (g->accounts_url && !is_http_url(g->accounts_url))
        return fail(c, "field 'accounts_url' must start with http:// or https://");
    if (g->accounts_url && !tds_url_transport_ok(g->accounts_url, g->allow_http))
        return fail(c, "field 'accounts_url' is plain http:// to another machine: the client "
                       "secret and tokens would cross the network unencrypted (use https://, or "
                       "set \"allow_http\": true for a simulator on a private network)");
    if (!g->accounts_url && !(g->accounts_url = strdup(url)))
        return fail(c, "out of memory");
    if ((r = get_str(c, o, "api_url", &g->api_url)))
        return r;
    if (g->api_url && !is_http_url(g->api_url))
        return fail(c, "field 'api_url' must start with http:// or https://");
    if (g->api_url && !tds_url_transport_ok(g->api_url, g->allow_http))
        return fail(c, "field 'api_url' is plain http:// to another machine: the access token "
                       "would cross the network unencrypted (use https://, or set "
                       "\"allow_http\": true for a simulator on a private network)");

    if ((r = get_secret(c, o, "client_id", true, &g->client_id)))
        return r;
    if ((r = get_secret(c, o, "client_secret", true, &g->client_secret)))
        return r;
    if ((r = get_secret(c, o, "refresh_token", false, &g->refresh_token)))
        return r;

    if ((r = get_secret_list(c, o, "webhook_secrets", 1, false, g->webhook_secrets,
                             &g->n_webhook_secrets)) ||
        (r = get_secret_list(c, o, "webhook_tokens", TDS_ORG_TOKEN_MIN, true, g->webhook_tokens,
                             &g->n_webhook_tokens)))
        return r;
    v = json_object_get(o, "webhooks_unsigned");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return fail(c, "field 'webhooks_unsigned' must be a boolean, not %s", json_kind(v));
        g->webhooks_unsigned = json_is_true(v);
    }

    if ((r = parse_entities(c, o, g, product)))
        return r;

    if ((r = get_int(c, o, "incremental_every_s", 300, 1, 31536000, &g->incremental_every_s)) ||
        (r = get_int(c, o, "incremental_budget_pct", 25, 1, 100, &g->incremental_budget_pct)) ||
        (r = get_int(c, o, "reconcile_every_s", 86400, 0, 31536000, &g->reconcile_every_s)) ||
        (r = get_int(c, o, "daily_reserve", 500, 0, 100000000, &g->daily_reserve)) ||
        (r = get_int(c, o, "rate_per_min", 100, 1, 100000, &g->rate_per_min)) ||
        (r = get_int(c, o, "max_concurrency", 10, 1, 1000, &g->max_concurrency)) ||
        (r = get_int(c, o, "daily_limit", 0, 0, 100000000, &g->daily_limit)))
        return r;
    /* the limiter stops at the reserve: one as large as the day's calls
     * would leave the organization unsynced for good */
    if (g->daily_limit > 0 && g->daily_reserve >= g->daily_limit)
        return fail(c, "field 'daily_reserve' (%" PRId64 ") must be below 'daily_limit' (%" PRId64
                       ")", (int64_t)g->daily_reserve, (int64_t)g->daily_limit);

    if ((r = get_str(c, o, "timezone_offset", &g->timezone_offset)))
        return r;
    if (!g->timezone_offset) {
        if (!(g->timezone_offset = strdup("+0000")))
            return fail(c, "out of memory");
    } else {
        if (!tz_normalize(g->timezone_offset, tz))
            return fail(c, "field 'timezone_offset' is '%s' (expected +HHMM or -HHMM)",
                        g->timezone_offset);
        memcpy(g->timezone_offset, tz, sizeof(tz)); /* normalized is never longer */
    }

    /* Where Zoho lists the stock sites: organizations migrated to Locations
     * list them at GET /locations, older ones at GET /settings/warehouses. */
    v = json_object_get(o, "stock_sites");
    if (v && !json_is_null(v)) {
        const char *ss = json_string_value(v);

        if (!ss)
            return fail(c, "field 'stock_sites' must be a string, not %s", json_kind(v));
        if (strcmp(ss, "locations") == 0)
            g->stock_locations = true;
        else if (strcmp(ss, "warehouses") != 0)
            return fail(c, "field 'stock_sites' is '%s' (expected \"warehouses\" or \"locations\")",
                        ss);
    }
    return 0;
}

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    struct tds_buf b = {.max = ORGS_FILE_MAX};
    char chunk[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int r = 0;

    if (fd < 0) {
        snprintf(err, errlen, "%s: could not open: %s", path, strerror(errno));
        return TDS_E_INVALID;
    }
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s: could not read: %s", path, strerror(errno));
            r = TDS_E_INVALID;
            break;
        }
        if (n == 0)
            break;
        r = tds_buf_add(&b, chunk, (size_t)n);
        if (r) {
            snprintf(err, errlen, "%s: %s", path,
                     r == TDS_E_TOO_LARGE ? "file is over 4 MiB" : "out of memory");
            r = TDS_E_INVALID;
            break;
        }
    }
    close(fd);
    if (r) {
        tds_buf_deinit(&b);
        return r;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

static int orgs_load(const char *path, struct tds_orgs **out, char *err, size_t errlen,
                     bool no_oauth, bool no_webhooks);

int tds_orgs_load(const char *path, struct tds_orgs **out, char *err, size_t errlen)
{
    return orgs_load(path, out, err, errlen, false, false);
}

int tds_orgs_load_webhooks(const char *path, struct tds_orgs **out, char *err, size_t errlen)
{
    return orgs_load(path, out, err, errlen, true, false);
}

int tds_orgs_load_api(const char *path, struct tds_orgs **out, char *err, size_t errlen)
{
    return orgs_load(path, out, err, errlen, false, true);
}

static int orgs_load(const char *path, struct tds_orgs **out, char *err, size_t errlen,
                     bool no_oauth, bool no_webhooks)
{
    struct tds_orgs *orgs = NULL;
    struct orgs_ctx c = {.path = path, .err = err, .errlen = errlen, .no_oauth = no_oauth,
                         .no_webhooks = no_webhooks};
    json_error_t jerr;
    json_t *root = NULL, *list;
    char *text = NULL;
    size_t len = 0;
    const char *key;
    json_t *v;
    int r;

    if (err && errlen)
        err[0] = '\0';
    r = read_file(path, &text, &len, err, errlen);
    if (r)
        goto out;
    if (len == 0) {
        snprintf(err, errlen, "%s: file is empty", path);
        r = TDS_E_INVALID;
        goto out;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        tds_config_json_error_clean(jerr.text);
        snprintf(err, errlen, "%s: line %d column %d: %s", path, jerr.line, jerr.column,
                 jerr.text);
        r = TDS_E_INVALID;
        goto out;
    }
    if (!json_is_object(root)) {
        snprintf(err, errlen, "%s: top level must be an object, not %s", path, json_kind(root));
        r = TDS_E_INVALID;
        goto out;
    }
    json_object_foreach(root, key, v) {
        if (key[0] != '_' && strcmp(key, "organizations") != 0) {
            snprintf(err, errlen, "%s: unknown top-level field '%s'", path, key);
            r = TDS_E_INVALID;
            goto out;
        }
    }
    list = json_object_get(root, "organizations");
    if (!list) {
        snprintf(err, errlen, "%s: missing field 'organizations'", path);
        r = TDS_E_INVALID;
        goto out;
    }
    if (!json_is_array(list)) {
        snprintf(err, errlen, "%s: field 'organizations' must be an array, not %s", path,
                 json_kind(list));
        r = TDS_E_INVALID;
        goto out;
    }
    if (json_array_size(list) == 0 || json_array_size(list) > ORGS_MAX) {
        snprintf(err, errlen, "%s: field 'organizations' must list 1..%d organizations", path,
                 ORGS_MAX);
        r = TDS_E_INVALID;
        goto out;
    }

    orgs = calloc(1, sizeof(*orgs));
    if (!orgs || !(orgs->orgs = calloc(json_array_size(list), sizeof(*orgs->orgs)))) {
        snprintf(err, errlen, "%s: out of memory", path);
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(list); i++) {
        c.index = i;
        c.org_id = NULL;
        orgs->n++; /* counted first so a half-parsed entry is freed too */
        r = parse_org(&c, json_array_get(list, i), &orgs->orgs[i]);
        if (r)
            goto out;
        for (size_t k = 0; k < i; k++) {
            if (strcmp(orgs->orgs[k].org_id, orgs->orgs[i].org_id) == 0) {
                r = fail(&c, "org_id is a duplicate of organizations[%zu]", k);
                goto out;
            }
        }
    }
    *out = orgs;
    orgs = NULL;
    r = 0;
out:
    tds_orgs_free(orgs);
    json_decref(root);
    free(text);
    return r;
}

struct tds_orgs *tds_orgs_free(struct tds_orgs *orgs)
{
    if (!orgs)
        return NULL;
    for (size_t i = 0; i < orgs->n; i++)
        org_clear(&orgs->orgs[i]);
    free(orgs->orgs);
    free(orgs);
    return NULL;
}

static bool share_one(char *const *x, size_t nx, char *const *y, size_t ny)
{
    for (size_t i = 0; i < nx; i++)
        for (size_t j = 0; j < ny; j++)
            if (strcmp(x[i], y[j]) == 0)
                return true;
    return false;
}

bool tds_orgs_shared_secret(const struct tds_orgs *orgs, size_t *a, size_t *b)
{
    for (size_t i = 0; orgs && i < orgs->n; i++)
        for (size_t j = i + 1; j < orgs->n; j++) {
            const struct tds_org *x = &orgs->orgs[i], *y = &orgs->orgs[j];

            if (share_one(x->webhook_secrets, x->n_webhook_secrets, y->webhook_secrets,
                          y->n_webhook_secrets) ||
                share_one(x->webhook_tokens, x->n_webhook_tokens, y->webhook_tokens,
                          y->n_webhook_tokens)) {
                *a = i;
                *b = j;
                return true;
            }
        }
    return false;
}

const struct tds_org *tds_orgs_find(const struct tds_orgs *orgs, const char *org_id)
{
    if (!orgs || !org_id)
        return NULL;
    for (size_t i = 0; i < orgs->n; i++)
        if (strcmp(orgs->orgs[i].org_id, org_id) == 0)
            return &orgs->orgs[i];
    return NULL;
}
