/* test_config — the settings table (defaults, required, ranges, booleans,
 * secrets masked) and the organizations file (good and malformed files, each
 * with its precise message). */
#include "assert.h"
#include "config.h"
#include "util.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct settings {
    char *url;
    char *bind;
    char *token;
    char *events;
    int64_t rate;
    int64_t any;
    bool flag;
};

static const struct tds_config_entry table[] = {
    {"TDS_T_URL", TDS_CFG_STR, NULL, TDS_CFG_REQUIRED, 0, 0, offsetof(struct settings, url),
     "database URL"},
    {"TDS_T_BIND", TDS_CFG_STR, "tcp://*:5558", 0, 0, 0, offsetof(struct settings, bind),
     "PULL endpoint | comma list"},
    {"TDS_T_TOKEN", TDS_CFG_STR, NULL, TDS_CFG_SECRET, 0, 0, offsetof(struct settings, token),
     "api token"},
    {"TDS_T_EVENTS", TDS_CFG_STR, "", 0, 0, 0, offsetof(struct settings, events), "events"},
    {"TDS_T_RATE", TDS_CFG_INT, "100", 0, 1, 100000, offsetof(struct settings, rate), "rate"},
    {"TDS_T_ANY", TDS_CFG_INT, "-5", 0, 0, 0, offsetof(struct settings, any), "any integer"},
    {"TDS_T_FLAG", TDS_CFG_BOOL, "false", 0, 0, 0, offsetof(struct settings, flag), "flag"},
};
#define N TDS_ARRAY_SIZE(table)

static void clear_env(void)
{
    for (size_t i = 0; i < N; i++)
        unsetenv(table[i].env);
}

static char *print_to_string(const struct settings *s, int markdown)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    T_TRUE(f != NULL);
    if (markdown)
        tds_config_markdown(table, N, f);
    else
        tds_config_print(table, N, s, f);
    T_INT(fclose(f), ==, 0);
    return text;
}

static void test_table_good(void)
{
    struct settings s = {0};
    char err[256];
    char *text;

    clear_env();
    setenv("TDS_T_URL", "postgresql://u@h/db", 1);
    setenv("TDS_T_TOKEN", "hunter2-inline", 1);
    setenv("TDS_T_RATE", "250", 1);
    setenv("TDS_T_FLAG", "yes", 1);
    T_INT(tds_config_load(table, N, &s, err, sizeof(err)), ==, 0);
    T_STR(err, "");
    T_STR(s.url, "postgresql://u@h/db");
    T_STR(s.bind, "tcp://*:5558");
    T_STR(s.token, "hunter2-inline");
    T_STR(s.events, "");
    T_INT(s.rate, ==, 250);
    T_INT(s.any, ==, -5);
    T_TRUE(s.flag);

    text = print_to_string(&s, 0);
    T_STR(text, "TDS_T_URL=postgresql://u@h/db\n"
                "TDS_T_BIND=tcp://*:5558\n"
                "TDS_T_TOKEN=********\n"
                "TDS_T_EVENTS=\n"
                "TDS_T_RATE=250\n"
                "TDS_T_ANY=-5\n"
                "TDS_T_FLAG=true\n");
    T_TRUE(strstr(text, "hunter2") == NULL);
    free(text);
    tds_config_free(table, N, &s);
    T_NULL(s.url);
    T_NULL(s.token);

    /* Unset secret prints as (unset); empty number means default. */
    clear_env();
    setenv("TDS_T_URL", "x", 1);
    setenv("TDS_T_RATE", "", 1);
    setenv("TDS_T_EVENTS", "", 1);
    T_INT(tds_config_load(table, N, &s, err, sizeof(err)), ==, 0);
    T_INT(s.rate, ==, 100);
    T_NULL(s.token);
    text = print_to_string(&s, 0);
    T_TRUE(strstr(text, "TDS_T_TOKEN=(unset)\n") != NULL);
    free(text);
    tds_config_free(table, N, &s);

    text = print_to_string(NULL, 1);
    T_TRUE(strstr(text, "| TDS_T_URL | (required) | database URL |\n") != NULL);
    T_TRUE(strstr(text, "| TDS_T_BIND | `tcp://*:5558` | PULL endpoint \\| comma list |\n") != NULL);
    T_TRUE(strstr(text, "| TDS_T_EVENTS |  | events |\n") != NULL);
    free(text);
}

/* A secret whose default is empty (TDS_CURVE_SECRET_KEY: empty = off) is no
 * setting at all, and --print-config says so as for one without a default;
 * it printed "********" as if one were set. One set prints masked, as ever. */
static void test_empty_secret_prints_unset(void)
{
    static const struct tds_config_entry curve[] = {
        {"TDS_T_CURVE", TDS_CFG_STR, "", TDS_CFG_SECRET, 0, 0, offsetof(struct settings, token),
         "key; empty = off"},
    };
    struct settings s = {0};
    char err[256];
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    unsetenv("TDS_T_CURVE");
    T_INT(tds_config_load(curve, 1, &s, err, sizeof(err)), ==, 0);
    T_STR(s.token, "");
    f = open_memstream(&text, &len);
    T_TRUE(f != NULL);
    tds_config_print(curve, 1, &s, f);
    T_INT(fclose(f), ==, 0);
    T_STR(text, "TDS_T_CURVE=(unset)\n");
    free(text);
    tds_config_free(curve, 1, &s);

    setenv("TDS_T_CURVE", "k3y", 1);
    T_INT(tds_config_load(curve, 1, &s, err, sizeof(err)), ==, 0);
    f = open_memstream(&text, &len);
    T_TRUE(f != NULL);
    tds_config_print(curve, 1, &s, f);
    T_INT(fclose(f), ==, 0);
    T_STR(text, "TDS_T_CURVE=********\n");
    free(text);
    tds_config_free(curve, 1, &s);
    unsetenv("TDS_T_CURVE");
}

static void expect_error(const char *msg)
{
    struct settings s = {0};
    char err[256];

    T_INT(tds_config_load(table, N, &s, err, sizeof(err)), ==, TDS_E_INVALID);
    T_STR(err, msg);
    tds_config_free(table, N, &s);
}

static void test_table_errors(void)
{
    char dir[] = "/tmp/tds-test-cfg-XXXXXX";
    char spec[400];

    clear_env();
    expect_error("missing required setting TDS_T_URL");
    setenv("TDS_T_URL", "", 1);
    expect_error("missing required setting TDS_T_URL");
    setenv("TDS_T_URL", "x", 1);

    setenv("TDS_T_RATE", "abc", 1);
    expect_error("invalid TDS_T_RATE: 'abc' (expected 1..100000)");
    setenv("TDS_T_RATE", "0", 1);
    expect_error("invalid TDS_T_RATE: '0' (expected 1..100000)");
    setenv("TDS_T_RATE", "100001", 1);
    expect_error("invalid TDS_T_RATE: '100001' (expected 1..100000)");
    setenv("TDS_T_RATE", "99999999999999999999", 1);
    expect_error("invalid TDS_T_RATE: '99999999999999999999' (expected 1..100000)");
    unsetenv("TDS_T_RATE");
    setenv("TDS_T_ANY", "1x", 1);
    expect_error("invalid TDS_T_ANY: '1x' (expected an integer)");
    unsetenv("TDS_T_ANY");

    setenv("TDS_T_FLAG", "maybe", 1);
    expect_error("invalid TDS_T_FLAG: 'maybe' (expected true or false)");
    unsetenv("TDS_T_FLAG");

    setenv("TDS_T_TOKEN", "env:TDS_T_NOT_SET_ANYWHERE", 1);
    expect_error("invalid TDS_T_TOKEN: environment variable TDS_T_NOT_SET_ANYWHERE is not set");
    T_TRUE(mkdtemp(dir) != NULL);
    snprintf(spec, sizeof(spec), "file:%s/missing", dir);
    setenv("TDS_T_TOKEN", spec, 1);
    char want[600];
    snprintf(want, sizeof(want), "invalid TDS_T_TOKEN: '%s': not found", spec);
    expect_error(want);

    /* A secret file is read and its one trailing newline dropped. */
    char path[300];
    snprintf(path, sizeof(path), "%s/tok", dir);
    FILE *f = fopen(path, "w");
    T_TRUE(f != NULL);
    fputs("tok-from-file\n", f);
    fclose(f);
    snprintf(spec, sizeof(spec), "file:%s", path);
    setenv("TDS_T_TOKEN", spec, 1);
    struct settings s = {0};
    char err[256];
    T_INT(tds_config_load(table, N, &s, err, sizeof(err)), ==, 0);
    T_STR(s.token, "tok-from-file");
    tds_config_free(table, N, &s);
    /* ... and so is a Windows line ending, \r\n */
    f = fopen(path, "w");
    T_TRUE(f != NULL);
    fputs("tok-crlf\r\n", f);
    fclose(f);
    memset(&s, 0, sizeof(s));
    T_INT(tds_config_load(table, N, &s, err, sizeof(err)), ==, 0);
    T_STR(s.token, "tok-crlf");
    tds_config_free(table, N, &s);
    /* A required secret that resolves to nothing is refused, not used. */
    f = fopen(path, "w");
    T_TRUE(f != NULL);
    fputs("\n", f);
    fclose(f);
    static const struct tds_config_entry req_secret[] = {
        {"TDS_T_DB", TDS_CFG_STR, NULL, TDS_CFG_REQUIRED | TDS_CFG_SECRET, 0, 0,
         offsetof(struct settings, url), "database URL"},
    };
    snprintf(spec, sizeof(spec), "file:%s", path);
    setenv("TDS_T_DB", spec, 1);
    memset(&s, 0, sizeof(s));
    T_INT(tds_config_load(req_secret, 1, &s, err, sizeof(err)), ==, TDS_E_INVALID);
    snprintf(want, sizeof(want), "invalid TDS_T_DB: '%s' is empty", spec);
    T_STR(err, want);
    setenv("TDS_T_EMPTY_VAR", "", 1);
    setenv("TDS_T_DB", "env:TDS_T_EMPTY_VAR", 1);
    T_INT(tds_config_load(req_secret, 1, &s, err, sizeof(err)), ==, TDS_E_INVALID);
    T_STR(err, "invalid TDS_T_DB: 'env:TDS_T_EMPTY_VAR' is empty");
    T_NULL(s.url);
    unsetenv("TDS_T_EMPTY_VAR");
    unsetenv("TDS_T_DB");
    unlink(path);
    rmdir(dir);
    clear_env();
}

/* ---- organizations file ---- */

static char orgs_dir[] = "/tmp/tds-test-orgs-XXXXXX";
static char orgs_path[300];

static void put(const char *json)
{
    FILE *f = fopen(orgs_path, "w");

    T_TRUE(f != NULL);
    fputs(json, f);
    T_INT(fclose(f), ==, 0);
}

static void orgs_error(const char *json, const char *want_after_path)
{
    struct tds_orgs *o = NULL;
    char err[512], want[512];

    put(json);
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_NULL(o);
    snprintf(want, sizeof(want), "%s: %s", orgs_path, want_after_path);
    T_STR(err, want);
}

static void test_accounts_urls(void)
{
    T_STR(tds_accounts_url_for("com"), "https://accounts.zoho.com");
    T_STR(tds_accounts_url_for("eu"), "https://accounts.zoho.eu");
    T_STR(tds_accounts_url_for("in"), "https://accounts.zoho.in");
    T_STR(tds_accounts_url_for("com.au"), "https://accounts.zoho.com.au");
    T_STR(tds_accounts_url_for("jp"), "https://accounts.zoho.jp");
    T_STR(tds_accounts_url_for("sa"), "https://accounts.zoho.sa");
    T_STR(tds_accounts_url_for("com.cn"), "https://accounts.zoho.com.cn");
    T_STR(tds_accounts_url_for("ca"), "https://accounts.zohocloud.ca");
    T_STR(tds_accounts_url_for("uk"), "https://accounts.zoho.uk");
    T_NULL(tds_accounts_url_for("de"));
    T_NULL(tds_accounts_url_for(""));
    T_NULL(tds_accounts_url_for(NULL));
}

/* Secrets and tokens go over https, or plain http to this machine only,
 * unless the organization says "allow_http" (a simulator elsewhere). */
static void test_url_transport(void)
{
    T_TRUE(tds_url_transport_ok("https://accounts.zoho.com", false));
    T_TRUE(tds_url_transport_ok("http://127.0.0.1:9000", false));
    T_TRUE(tds_url_transport_ok("http://127.1.2.3/x", false));
    T_TRUE(tds_url_transport_ok("http://localhost", false));
    T_TRUE(tds_url_transport_ok("http://LOCALHOST:80/", false));
    T_TRUE(tds_url_transport_ok("http://[::1]:9000", false));
    T_TRUE(!tds_url_transport_ok("http://accounts.zoho.com", false));
    T_TRUE(!tds_url_transport_ok("http://127.0.0.1.evil.example", false));
    T_TRUE(!tds_url_transport_ok("http://localhost.evil.example", false));
    T_TRUE(!tds_url_transport_ok("http://10.0.0.5:8090", false));
    /* a user name before an @: the host is what follows it */
    T_TRUE(!tds_url_transport_ok("http://localhost:80@evil.example/", false));
    T_TRUE(!tds_url_transport_ok("http://[::1]@evil.example/", false));
    T_TRUE(!tds_url_transport_ok("http://127.0.0.1:1@evil.example/x", false));
    T_TRUE(!tds_url_transport_ok("http://localhost@evil.example", false));
    T_TRUE(tds_url_transport_ok("http://localhost:8090?x=@y", false));
    T_TRUE(tds_url_transport_ok("http://127.0.0.1#frag", false));
    /* an opening bracket never closed (read on a heap copy: ASan sees a read
     * past its end) */
    char *open_bracket = strdup("http://[::1");
    T_TRUE(open_bracket != NULL);
    T_TRUE(!tds_url_transport_ok(open_bracket, false));
    free(open_bracket);
    T_TRUE(tds_url_transport_ok("http://zohosim:8090", true));
    T_TRUE(!tds_url_transport_ok("ftp://x", true));

    struct tds_orgs *o = NULL;
    char err[512];
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"accounts_url\": \"http://accounts.zoho.com\"}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "field 'accounts_url' is plain http:// to another machine") != NULL);
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"api_url\": \"http://zohosim:8090\"}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "field 'api_url' is plain http:// to another machine") != NULL);
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"accounts_url\": \"http://zohosim:8090\", \"api_url\": \"http://zohosim:8090\","
        " \"allow_http\": true}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, 0);
    T_TRUE(o->orgs[0].allow_http);
    o = tds_orgs_free(o);
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"allow_http\": \"yes\"}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "field 'allow_http' must be a boolean") != NULL);
}

static void test_orgs_good(void)
{
    struct tds_orgs *o = NULL;
    char err[512], secret_path[320], json[2048];
    const struct tds_org *g;

    snprintf(secret_path, sizeof(secret_path), "%s/refresh", orgs_dir);
    FILE *f = fopen(secret_path, "w");
    T_TRUE(f != NULL);
    fputs("1000.refresh\n", f);
    fclose(f);
    setenv("TDS_T_CLIENT_SECRET", "csecret", 1);
    setenv("TDS_T_HOOK", "hook1", 1);

    snprintf(json, sizeof(json),
             "{\"_comment\": \"two orgs\", \"organizations\": [\n"
             " {\"org_id\": \"60012345678\", \"name\": \"Main store\", \"product\": \"inventory\",\n"
             "  \"data_center\": \"eu\", \"accounts_url\": null, \"api_url\": null,\n"
             "  \"client_id\": \"1000.ABC\", \"client_secret\": \"env:TDS_T_CLIENT_SECRET\",\n"
             "  \"refresh_token\": \"file:%s\", \"webhook_secrets\": [\"env:TDS_T_HOOK\", \"h2\"],\n"
             "  \"entities\": [\"items\", \"contacts\"], \"incremental_every_s\": 60,\n"
             "  \"reconcile_every_s\": 0, \"daily_reserve\": 1000, \"rate_per_min\": 30,\n"
             "  \"max_concurrency\": 2, \"daily_limit\": 5000, \"timezone_offset\": \"+05:30\",\n"
             "  \"stock_sites\": \"locations\"},\n"
             " {\"org_id\": 777, \"product\": \"books\", \"client_id\": \"c\", \"client_secret\": \"s\",\n"
             "  \"accounts_url\": \"http://127.0.0.1:9000\", \"api_url\": \"http://127.0.0.1:9000\",\n"
             "  \"webhooks_unsigned\": true}\n"
             "]}\n",
             secret_path);
    put(json);
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, 0);
    T_INT(o->n, ==, 2);

    g = tds_orgs_find(o, "60012345678");
    T_TRUE(g == &o->orgs[0]);
    T_STR(g->name, "Main store");
    T_STR(g->product, "inventory");
    T_STR(g->data_center, "eu");
    T_STR(g->accounts_url, "https://accounts.zoho.eu");
    T_NULL(g->api_url);
    T_STR(g->client_id, "1000.ABC");
    T_STR(g->client_secret, "csecret");
    T_STR(g->refresh_token, "1000.refresh");
    T_INT(g->n_webhook_secrets, ==, 2);
    T_STR(g->webhook_secrets[0], "hook1");
    T_STR(g->webhook_secrets[1], "h2");
    T_TRUE(!g->webhooks_unsigned);
    T_INT(g->n_entities, ==, 2);
    T_STR(g->entities[0], "items");
    T_STR(g->entities[1], "contacts");
    T_INT(g->incremental_every_s, ==, 60);
    T_INT(g->reconcile_every_s, ==, 0);
    T_INT(g->daily_reserve, ==, 1000);
    T_INT(g->rate_per_min, ==, 30);
    T_INT(g->max_concurrency, ==, 2);
    T_INT(g->daily_limit, ==, 5000);
    T_STR(g->timezone_offset, "+0530");
    T_TRUE(g->stock_locations);

    g = tds_orgs_find(o, "777");
    T_TRUE(g == &o->orgs[1]);
    T_STR(g->name, "777");
    T_STR(g->product, "books");
    T_STR(g->data_center, "com");
    T_STR(g->accounts_url, "http://127.0.0.1:9000");
    T_STR(g->api_url, "http://127.0.0.1:9000");
    T_NULL(g->refresh_token);
    T_INT(g->n_webhook_secrets, ==, 0);
    T_TRUE(g->webhooks_unsigned);
    /* Absent entities: every registry entity Zoho Books has (not item_groups). */
    T_INT(g->n_entities, ==, 5);
    for (size_t i = 0; i < g->n_entities; i++)
        T_TRUE(strcmp(g->entities[i], "item_groups") != 0);
    T_STR(g->entities[0], "warehouses");
    T_INT(g->incremental_every_s, ==, 300);
    T_INT(g->reconcile_every_s, ==, 86400);
    T_INT(g->daily_reserve, ==, 500);
    T_INT(g->rate_per_min, ==, 100);
    T_INT(g->max_concurrency, ==, 10);
    T_INT(g->daily_limit, ==, 0);
    T_STR(g->timezone_offset, "+0000");
    T_TRUE(!g->stock_locations); /* warehouses by default */

    T_NULL(tds_orgs_find(o, "nope"));
    size_t sa = 9, sb = 9;
    T_TRUE(!tds_orgs_shared_secret(o, &sa, &sb)); /* only one organization has secrets */
    o = tds_orgs_free(o);
    T_NULL(o);

    /* Two organizations with a webhook secret in common are found. */
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"webhook_secrets\": [\"one\"]}, {\"org_id\": \"2\", \"client_id\": \"c\","
        " \"client_secret\": \"s\", \"webhook_secrets\": [\"two\"]}, {\"org_id\": \"3\","
        " \"client_id\": \"c\", \"client_secret\": \"s\", \"webhook_secrets\": [\"x\", \"two\"]}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, 0);
    T_TRUE(tds_orgs_shared_secret(o, &sa, &sb));
    T_INT(sa, ==, 1);
    T_INT(sb, ==, 2);
    o = tds_orgs_free(o);

    /* Webhook tokens: read like secrets, and a token in common is found too. */
    setenv("TDS_T_TOKEN", "fromTheEnvironment-0001\n", 1);
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"webhook_tokens\": [\"env:TDS_T_TOKEN\", \"Q7~x!pL2#rT9@wZ4\"]}, {\"org_id\": \"2\","
        " \"client_id\": \"c\", \"client_secret\": \"s\", \"webhook_secrets\": [\"Q7~x!pL2#rT9@wZ4\"]}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, 0);
    T_INT(o->orgs[0].n_webhook_tokens, ==, 2);
    T_STR(o->orgs[0].webhook_tokens[0], "fromTheEnvironment-0001");
    T_STR(o->orgs[0].webhook_tokens[1], "Q7~x!pL2#rT9@wZ4");
    T_INT(o->orgs[1].n_webhook_tokens, ==, 0);
    T_TRUE(!tds_orgs_shared_secret(o, &sa, &sb)); /* a token and a secret alike are not shared */
    o = tds_orgs_free(o);
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"webhook_tokens\": [\"env:TDS_T_TOKEN\"]}, {\"org_id\": \"2\", \"client_id\": \"c\","
        " \"client_secret\": \"s\", \"webhook_tokens\": [\"fromTheEnvironment-0001\"]}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, 0);
    T_TRUE(tds_orgs_shared_secret(o, &sa, &sb));
    T_INT(sa, ==, 0);
    T_INT(sb, ==, 1);
    o = tds_orgs_free(o);
    unsetenv("TDS_T_TOKEN");

    /* Inventory default: all six entities. */
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"data_center\": \"ca\"}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, 0);
    T_INT(o->orgs[0].n_entities, ==, 6);
    T_STR(o->orgs[0].accounts_url, "https://accounts.zohocloud.ca");
    tds_orgs_free(o);
    unlink(secret_path);
    unsetenv("TDS_T_CLIENT_SECRET");
    unsetenv("TDS_T_HOOK");
}

/* The ingress loads the file without the OAuth secrets: their sources need
 * not be there, and their values never enter its memory. */
static void test_orgs_webhooks_only(void)
{
    struct tds_orgs *o = NULL;
    char err[512];

    setenv("TDS_T_HOOK", "hook1", 1);
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"env:TDS_T_NOT_SET\","
        " \"client_secret\": \"file:/nonexistent/secret\", \"refresh_token\": \"1000.r\","
        " \"webhook_secrets\": [\"env:TDS_T_HOOK\"]}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_INT(tds_orgs_load_webhooks(orgs_path, &o, err, sizeof(err)), ==, 0);
    T_NULL(o->orgs[0].client_id);
    T_NULL(o->orgs[0].client_secret);
    T_NULL(o->orgs[0].refresh_token);
    T_INT(o->orgs[0].n_webhook_secrets, ==, 1);
    T_STR(o->orgs[0].webhook_secrets[0], "hook1");
    o = tds_orgs_free(o);
    /* still checked for shape */
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_secret\": \"s\"}]}");
    T_INT(tds_orgs_load_webhooks(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "missing required field 'client_id'") != NULL);
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": 5, \"client_secret\": \"s\"}]}");
    T_INT(tds_orgs_load_webhooks(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "field 'client_id' must be a string") != NULL);
    /* a webhook secret's source must be there */
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"webhook_secrets\": [\"env:TDS_T_NOT_SET\"]}]}");
    T_INT(tds_orgs_load_webhooks(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);

    /* The fetcher's load: OAuth resolved, webhook credentials not (their
     * sources need not exist where it runs), but still checked for shape. */
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"refresh_token\": \"env:TDS_T_HOOK\","
        " \"webhook_secrets\": [\"env:TDS_T_NOT_SET\", \"file:/nonexistent/hook\"],"
        " \"webhook_tokens\": [\"file:/nonexistent/token\"]}]}");
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_INT(tds_orgs_load_api(orgs_path, &o, err, sizeof(err)), ==, 0);
    T_STR(o->orgs[0].refresh_token, "hook1");
    T_INT(o->orgs[0].n_webhook_secrets, ==, 0);
    T_INT(o->orgs[0].n_webhook_tokens, ==, 0);
    o = tds_orgs_free(o);
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"webhook_secrets\": [5]}]}");
    T_INT(tds_orgs_load_api(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "webhook_secrets[0] must be a string, not an integer") != NULL);
    put("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\","
        " \"webhook_tokens\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}]}");
    T_INT(tds_orgs_load_api(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "field 'webhook_tokens' has 5 entries (at most 4)") != NULL);
    unsetenv("TDS_T_HOOK");
}

#define ORG(extra) "{\"organizations\": [{\"org_id\": \"42\", \"client_id\": \"c\", " \
                   "\"client_secret\": \"s\"" extra "}]}"

static void test_orgs_errors(void)
{
    struct tds_orgs *o = NULL;
    char err[512], want[512];

    T_INT(tds_orgs_load("/nonexistent/orgs.json", &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_STR(err, "/nonexistent/orgs.json: could not open: No such file or directory");

    orgs_error("", "file is empty");
    orgs_error("{\"organizations\": [", "line 1 column 19: ']' expected near end of file");
    orgs_error("{\"organizations\": [{\"org_id\": 1}, ]}",
               "line 1 column 35: unexpected token near ']'");
    orgs_error("[]", "top level must be an object, not an array");
    orgs_error("{}", "missing field 'organizations'");
    orgs_error("{\"orgs\": []}", "unknown top-level field 'orgs'");
    orgs_error("{\"organizations\": {}}", "field 'organizations' must be an array, not an object");
    orgs_error("{\"organizations\": []}", "field 'organizations' must list 1..10000 organizations");
    orgs_error("{\"organizations\": [\"x\"]}", "organizations[0]: must be an object, not a string");
    orgs_error("{\"organizations\": [{\"name\": \"x\"}]}",
               "organizations[0]: missing required field 'org_id'");
    orgs_error("{\"organizations\": [{\"org_id\": true}]}",
               "organizations[0]: field 'org_id' must be a string, not a boolean");
    orgs_error("{\"organizations\": [{\"org_id\": \"a b\"}]}",
               "organizations[0]: field 'org_id' must be 1..64 characters of [A-Za-z0-9._-]");
    orgs_error(ORG(", \"entites\": []"), "organizations[0] (org_id 42): unknown field 'entites'");
    orgs_error("{\"organizations\": [{\"org_id\": \"42\", \"client_secret\": \"s\"}]}",
               "organizations[0] (org_id 42): missing required field 'client_id'");
    orgs_error(ORG(", \"product\": \"crm\""),
               "organizations[0] (org_id 42): field 'product' is 'crm' (expected inventory or books)");
    orgs_error(ORG(", \"data_center\": \"de\""),
               "organizations[0] (org_id 42): field 'data_center' is 'de' (expected com, eu, in, "
               "com.au, jp, sa, com.cn, ca or uk)");
    orgs_error(ORG(", \"name\": 5"),
               "organizations[0] (org_id 42): field 'name' must be a string, not an integer");
    orgs_error(ORG(", \"accounts_url\": \"accounts.zoho.com\""),
               "organizations[0] (org_id 42): field 'accounts_url' must start with http:// or https://");
    orgs_error(ORG(", \"entities\": [\"items\", \"widgets\"]"),
               "organizations[0] (org_id 42): unknown entity 'widgets'");
    orgs_error(ORG(", \"entities\": [\"items\", \"items\"]"),
               "organizations[0] (org_id 42): entity 'items' is listed twice");
    orgs_error(ORG(", \"entities\": []"),
               "organizations[0] (org_id 42): field 'entities' is empty (leave it out for all entities)");
    orgs_error(ORG(", \"entities\": \"items\""),
               "organizations[0] (org_id 42): field 'entities' must be an array, not a string");
    orgs_error(ORG(", \"entities\": [1]"),
               "organizations[0] (org_id 42): entities[0] must be a string, not an integer");
    orgs_error(ORG(", \"product\": \"books\", \"entities\": [\"item_groups\"]"),
               "organizations[0] (org_id 42): entity 'item_groups' does not exist in Zoho books");
    orgs_error(ORG(", \"rate_per_min\": 0"),
               "organizations[0] (org_id 42): field 'rate_per_min' is 0 (expected 1..100000)");
    orgs_error(ORG(", \"incremental_every_s\": \"300\""),
               "organizations[0] (org_id 42): field 'incremental_every_s' must be an integer, not a string");
    orgs_error(ORG(", \"max_concurrency\": 1.5"),
               "organizations[0] (org_id 42): field 'max_concurrency' must be an integer, not a number");
    orgs_error(ORG(", \"timezone_offset\": \"UTC\""),
               "organizations[0] (org_id 42): field 'timezone_offset' is 'UTC' (expected +HHMM or -HHMM)");
    orgs_error(ORG(", \"stock_sites\": \"branches\""),
               "organizations[0] (org_id 42): field 'stock_sites' is 'branches' (expected "
               "\"warehouses\" or \"locations\")");
    orgs_error(ORG(", \"stock_sites\": true"),
               "organizations[0] (org_id 42): field 'stock_sites' must be a string, not a boolean");
    orgs_error(ORG(", \"webhooks_unsigned\": \"yes\""),
               "organizations[0] (org_id 42): field 'webhooks_unsigned' must be a boolean, not a string");
    orgs_error(ORG(", \"webhook_secrets\": [\"ab\\tc\"]"),
               "organizations[0] (org_id 42): webhook_secrets[0] holds a control character "
               "(0x09 at byte 2): no signature made with the secret would match");
    orgs_error(ORG(", \"webhook_tokens\": [\"short-token\"]"),
               "organizations[0] (org_id 42): webhook_tokens[0] is 11 characters long: a token "
               "must have at least 16, so that it cannot be guessed");
    orgs_error(ORG(", \"webhook_tokens\": [\"a token with blanks in it\"]"),
               "organizations[0] (org_id 42): webhook_tokens[0] holds a blank or a non-ASCII byte "
               "(at byte 1): a token goes in an HTTP header as it is, so use printable ASCII");
    orgs_error(ORG(", \"webhook_tokens\": [\"\u0645\u0641\u062a\u0627\u062d-\u0633\u0631\u064a-0001\"]"),
               "organizations[0] (org_id 42): webhook_tokens[0] holds a blank or a non-ASCII byte "
               "(at byte 0): a token goes in an HTTP header as it is, so use printable ASCII");
    orgs_error(ORG(", \"webhook_tokens\": [\"0123456789abcdef\\t\"]"),
               "organizations[0] (org_id 42): webhook_tokens[0] holds a control character "
               "(0x09 at byte 16): no HTTP header could carry it");
    orgs_error(ORG(", \"webhook_tokens\": \"0123456789abcdef\""),
               "organizations[0] (org_id 42): field 'webhook_tokens' must be an array, not a string");
    orgs_error(ORG(", \"webhook_secrets\": [\"a\", \"b\", \"c\", \"d\", \"e\"]"),
               "organizations[0] (org_id 42): field 'webhook_secrets' has 5 entries (at most 4)");
    orgs_error(ORG(", \"webhook_secrets\": [\"a\", \"env:TDS_T_UNSET_HOOK\"]"),
               "organizations[0] (org_id 42): invalid webhook_secrets[1]: environment variable "
               "TDS_T_UNSET_HOOK is not set");
    orgs_error(ORG(", \"refresh_token\": \"file:/nonexistent/tok\""),
               "organizations[0] (org_id 42): invalid field 'refresh_token': "
               "'file:/nonexistent/tok': not found");
    orgs_error("{\"organizations\": [{\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": "
               "\"s\"}, {\"org_id\": \"1\", \"client_id\": \"c\", \"client_secret\": \"s\"}]}",
               "organizations[1] (org_id 1): org_id is a duplicate of organizations[0]");
    orgs_error("{\"organizations\": [{\"org_id\": \"1\", \"org_id\": \"2\"}]}",
               "line 1 column 43: duplicate object key near '\"org_id\"'");

    orgs_error(ORG(", \"daily_limit\": 1000, \"daily_reserve\": 1000"),
               "organizations[0] (org_id 42): field 'daily_reserve' (1000) must be below "
               "'daily_limit' (1000)");
    /* A value left unquoted is not quoted back: it may be a secret. */
    orgs_error(ORG(", \"refresh_token\": hunterTwo"),
               "line 1 column 102: invalid token");
    /* A credential with a control character (a JSON \\n escape, or a
     * variable's second line) is refused by name: Zoho would answer
     * invalid_code, which reads as a revoked token. */
    orgs_error(ORG(", \"refresh_token\": \"1000.abc\\n\""),
               "organizations[0] (org_id 42): field 'refresh_token' holds a control character "
               "(0x0a at byte 8): Zoho would refuse it");
    /* A syntax error inside an inline secret does not quote its start. */
    orgs_error(ORG(", \"refresh_token\": \"1000.9f8e7d6c5b4a\t3210\""),
               "line 1 column 111: control character 0x9");

    /* An inline secret's value never appears in an error. */
    put(ORG(", \"refresh_token\": \"inline-super-secret\", \"rate_per_min\": -1"));
    T_INT(tds_orgs_load(orgs_path, &o, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "inline-super-secret") == NULL);
    snprintf(want, sizeof(want),
             "%s: organizations[0] (org_id 42): field 'rate_per_min' is -1 (expected 1..100000)",
             orgs_path);
    T_STR(err, want);
}

int main(void)
{
    T_TRUE(mkdtemp(orgs_dir) != NULL);
    snprintf(orgs_path, sizeof(orgs_path), "%s/orgs.json", orgs_dir);

    T_RUN(test_table_good);
    T_RUN(test_empty_secret_prints_unset);
    T_RUN(test_table_errors);
    T_RUN(test_accounts_urls);
    T_RUN(test_url_transport);
    T_RUN(test_orgs_good);
    T_RUN(test_orgs_errors);
    T_RUN(test_orgs_webhooks_only);

    unlink(orgs_path);
    rmdir(orgs_dir);
    return 0;
}
