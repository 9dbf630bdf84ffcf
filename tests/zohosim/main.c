/* tds-zohosim — a Zoho Inventory/Books API simulator for tests and the demo.
 *
 * Parses the command line, generates the organizations, starts the HTTP
 * server and waits for SIGTERM/SIGINT, then stops everything and exits 0.
 * See README.md in this directory for the options and the control API.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "data.h"
#include "server.h"
#include "sim.h"

#ifndef TDS_VERSION
#define TDS_VERSION "0.0.0"
#endif

#define MAX_ORGS 64
#define MAX_TOKENS 64

static const char usage[] =
    "usage: tds-zohosim [options]\n"
    "\n"
    "Simulates Zoho's accounts server (/oauth/v2/token) and the Inventory (/inventory/v1)\n"
    "and Books (/books/v3) APIs, plus a control API under /_sim/ (see README.md).\n"
    "\n"
    "  --listen HOST:PORT        address to serve on (default 127.0.0.1:0 = a free port)\n"
    "  --port-file PATH          write the bound port to PATH once listening\n"
    "  --api-domain URL          api_domain in token replies (default http://HOST:PORT)\n"
    "  --seed N                  data seed (default 1); same seed, same data\n"
    "  --org SPEC                an organization, repeatable. SPEC is key=value,... with keys\n"
    "                            id, name, tz (+0300), stock (warehouses|locations),\n"
    "                            product (inventory|books|both), items, groups, contacts,\n"
    "                            invoices, salesorders, warehouses (1..64), seed,\n"
    "                            ids (string|bare: ids as JSON numbers),\n"
    "                            itemdetails (yes|no: no answers GET /itemdetails 404),\n"
    "                            refresh_token (valid for this org only), rate, concurrency,\n"
    "                            daily (per-org limits overriding the global ones)\n"
    "  --orgs N|SPEC;SPEC        N default organizations, or several specs separated by ';'\n"
    "                            (default: 2 orgs, 60001 +0300 warehouses, 60002 +0530\n"
    "                            locations; 3 warehouses, 20 groups, 200 items, 100 contacts,\n"
    "                            150 sales orders, 150 invoices each)\n"
    "  --epoch UNIX_S            generated history ends here (default 1735689600 =\n"
    "                            2025-01-01T00:00:00Z); mutations use the wall clock\n"
    "  --client-id ID            OAuth client id (default 1000.SIMCLIENT)\n"
    "  --client-secret S         OAuth client secret (default simsecret)\n"
    "  --refresh-token T         a refresh token valid for every org, repeatable\n"
    "                            (default 1000.simrefresh when none is given)\n"
    "  --grant-code C            a one-time authorization code, repeatable\n"
    "  --token-ttl S             access token lifetime, seconds (default 3600)\n"
    "  --refresh-limit N         access tokens per refresh token per window (default 10; 0 off)\n"
    "  --refresh-window-ms MS    that window (default 600000)\n"
    "  --lockout-ms MS           Access Denied lockout, extended by every try (default 900000)\n"
    "  --max-live-tokens N       live access tokens per refresh token, oldest evicted\n"
    "                            (default 30; 0 off)\n"
    "  --rate-per-min N          requests per org per minute, 429 code 44 (default 100; 0 off)\n"
    "  --concurrency N           in-flight requests per org, 429 code 1070 (default 10; 0 off)\n"
    "  --daily-limit N           requests per org per day, 429 code 45 (default 10000; 0 off)\n"
    "  --minute-ms MS            length of a \"minute\" (default 60000)\n"
    "  --day-ms MS               length of a \"day\" (default 1440 minutes)\n"
    "  --limits-off              same as --rate-per-min 0 --concurrency 0 --daily-limit 0\n"
    "  --retry-after             add Retry-After to 429 replies (Zoho sends none)\n"
    "  --modified-filter gt|ge   last_modified_time keeps records modified after (gt,\n"
    "                            default) or at or after (ge) the given time\n"
    "  --modified-filter-offset honour|ignore\n"
    "                            the filter's offset is honoured (default), or ignored:\n"
    "                            the time is read as the organization's wall clock\n"
    "  --localized-denied        the Access Denied token error in Chinese, as Zoho\n"
    "                            sometimes sends it\n"
    "  --itemdetails-missing skip|error\n"
    "                            GET /itemdetails leaves unknown or deleted ids out (skip,\n"
    "                            default) or answers the whole call 404 code 1002 (error)\n"
    "  --itemdetails-stock yes|no|never\n"
    "                            GET /itemdetails gives each item's stock sites (yes,\n"
    "                            default) or leaves them out (no); never: GET /items/{id}\n"
    "                            leaves them out too, as for items kept at no site\n"
    "  --clock-offset S          Zoho's clock is S seconds ahead of this host's (negative:\n"
    "                            behind): mutations' times and every answer's Date header\n"
    "  --help, --version\n";

static int num(const char *opt, const char *v, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < min || n > max) {
        fprintf(stderr, "tds-zohosim: invalid %s: '%s'\n", opt, v);
        return -1;
    }
    *out = n;
    return 0;
}

/* One of two words: *second says which. */
static int choice(const char *opt, const char *v, const char *first, const char *other,
                  bool *second)
{
    if (strcmp(v, first) != 0 && strcmp(v, other) != 0) {
        fprintf(stderr, "tds-zohosim: invalid %s: '%s'\n", opt, v);
        return -1;
    }
    *second = strcmp(v, other) == 0;
    return 0;
}

enum {
    O_LISTEN = 256, O_PORT_FILE, O_API_DOMAIN, O_SEED, O_ORG, O_ORGS, O_EPOCH, O_CLIENT_ID,
    O_CLIENT_SECRET, O_REFRESH_TOKEN, O_GRANT_CODE, O_TOKEN_TTL, O_REFRESH_LIMIT,
    O_REFRESH_WINDOW, O_LOCKOUT, O_MAX_LIVE, O_RATE, O_CONC, O_DAILY, O_MINUTE, O_DAY,
    O_LIMITS_OFF, O_RETRY_AFTER, O_MODIFIED_FILTER, O_MODIFIED_OFFSET, O_LOCALIZED, O_ITEMDETAILS_MISSING, O_ITEMDETAILS_STOCK, O_CLOCK_OFFSET,
    O_HELP,
    O_VERSION,
};

static const struct option opts[] = {
    {"listen", required_argument, NULL, O_LISTEN},
    {"port-file", required_argument, NULL, O_PORT_FILE},
    {"api-domain", required_argument, NULL, O_API_DOMAIN},
    {"seed", required_argument, NULL, O_SEED},
    {"org", required_argument, NULL, O_ORG},
    {"orgs", required_argument, NULL, O_ORGS},
    {"epoch", required_argument, NULL, O_EPOCH},
    {"client-id", required_argument, NULL, O_CLIENT_ID},
    {"client-secret", required_argument, NULL, O_CLIENT_SECRET},
    {"refresh-token", required_argument, NULL, O_REFRESH_TOKEN},
    {"grant-code", required_argument, NULL, O_GRANT_CODE},
    {"token-ttl", required_argument, NULL, O_TOKEN_TTL},
    {"refresh-limit", required_argument, NULL, O_REFRESH_LIMIT},
    {"refresh-window-ms", required_argument, NULL, O_REFRESH_WINDOW},
    {"lockout-ms", required_argument, NULL, O_LOCKOUT},
    {"max-live-tokens", required_argument, NULL, O_MAX_LIVE},
    {"rate-per-min", required_argument, NULL, O_RATE},
    {"concurrency", required_argument, NULL, O_CONC},
    {"daily-limit", required_argument, NULL, O_DAILY},
    {"minute-ms", required_argument, NULL, O_MINUTE},
    {"day-ms", required_argument, NULL, O_DAY},
    {"limits-off", no_argument, NULL, O_LIMITS_OFF},
    {"retry-after", no_argument, NULL, O_RETRY_AFTER},
    {"modified-filter", required_argument, NULL, O_MODIFIED_FILTER},
    {"modified-filter-offset", required_argument, NULL, O_MODIFIED_OFFSET},
    {"localized-denied", no_argument, NULL, O_LOCALIZED},
    {"itemdetails-missing", required_argument, NULL, O_ITEMDETAILS_MISSING},
    {"clock-offset", required_argument, NULL, O_CLOCK_OFFSET},
    {"itemdetails-stock", required_argument, NULL, O_ITEMDETAILS_STOCK},
    {"help", no_argument, NULL, O_HELP},
    {"version", no_argument, NULL, O_VERSION},
    {NULL, 0, NULL, 0},
};

struct args {
    char host[64];
    long long port;
    const char *port_file, *api_domain;
    const char *org_specs[MAX_ORGS];
    size_t n_specs;
    long long n_default_orgs;
    char *orgs_copy;
    const char *refresh[MAX_TOKENS], *codes[MAX_TOKENS];
    size_t n_refresh, n_codes;
    struct zs_sim_cfg sim;
    struct zs_auth_cfg auth;
};

static int parse_listen(struct args *a, const char *v)
{
    const char *colon = strrchr(v, ':');
    if (!colon || (size_t)(colon - v) >= sizeof(a->host) || colon == v) {
        fprintf(stderr, "tds-zohosim: invalid --listen: '%s'\n", v);
        return -1;
    }
    memcpy(a->host, v, (size_t)(colon - v));
    a->host[colon - v] = '\0';
    if (!strcmp(a->host, "localhost"))
        snprintf(a->host, sizeof(a->host), "127.0.0.1");
    return num("--listen", colon + 1, 0, 65535, &a->port);
}

static int parse_args(struct args *a, int argc, char **argv)
{
    long long n;
    int c;
    opterr = 0; /* one line of our own instead of getopt's */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_LISTEN:
            if (parse_listen(a, optarg))
                return 2;
            break;
        case O_PORT_FILE: a->port_file = optarg; break;
        case O_API_DOMAIN: a->api_domain = optarg; break;
        case O_SEED:
            if (num("--seed", optarg, 0, INT64_MAX, &n))
                return 2;
            a->sim.seed = (uint64_t)n;
            break;
        case O_ORG:
            if (a->n_specs == MAX_ORGS) {
                fprintf(stderr, "tds-zohosim: invalid --org: at most %d organizations\n",
                        MAX_ORGS);
                return 2;
            }
            a->org_specs[a->n_specs++] = optarg;
            break;
        case O_ORGS:
            if (strchr(optarg, '=')) {
                free(a->orgs_copy);
                a->orgs_copy = strdup(optarg);
                if (!a->orgs_copy)
                    return 1;
                for (char *p = a->orgs_copy, *next; p; p = next) {
                    next = strchr(p, ';');
                    if (next)
                        *next++ = '\0';
                    if (!*p)
                        continue;
                    if (a->n_specs == MAX_ORGS) {
                        fprintf(stderr, "tds-zohosim: invalid --orgs: too many\n");
                        return 2;
                    }
                    a->org_specs[a->n_specs++] = p;
                }
            } else if (num("--orgs", optarg, 1, MAX_ORGS, &a->n_default_orgs)) {
                return 2;
            }
            break;
        case O_EPOCH:
            if (num("--epoch", optarg, 86400 * 400, 4000000000LL, &n))
                return 2;
            a->sim.epoch_s = n;
            break;
        case O_CLIENT_ID: a->auth.client_id = optarg; break;
        case O_CLIENT_SECRET: a->auth.client_secret = optarg; break;
        case O_REFRESH_TOKEN:
            if (a->n_refresh == MAX_TOKENS || strlen(optarg) > 127 || !*optarg) {
                fprintf(stderr, "tds-zohosim: invalid --refresh-token: '%s'\n", optarg);
                return 2;
            }
            a->refresh[a->n_refresh++] = optarg;
            break;
        case O_GRANT_CODE:
            if (a->n_codes == MAX_TOKENS || strlen(optarg) > 127 || !*optarg) {
                fprintf(stderr, "tds-zohosim: invalid --grant-code: '%s'\n", optarg);
                return 2;
            }
            a->codes[a->n_codes++] = optarg;
            break;
        case O_TOKEN_TTL:
            if (num("--token-ttl", optarg, 1, 86400 * 365, &n))
                return 2;
            a->auth.token_ttl_s = n;
            break;
        case O_REFRESH_LIMIT:
            if (num("--refresh-limit", optarg, 0, 1000000, &n))
                return 2;
            a->auth.refresh_limit = n;
            break;
        case O_REFRESH_WINDOW:
            if (num("--refresh-window-ms", optarg, 1, INT32_MAX * 1000LL, &n))
                return 2;
            a->auth.refresh_window_ms = n;
            break;
        case O_LOCKOUT:
            if (num("--lockout-ms", optarg, 0, INT32_MAX * 1000LL, &n))
                return 2;
            a->auth.lockout_ms = n;
            break;
        case O_MAX_LIVE:
            if (num("--max-live-tokens", optarg, 0, 1000000, &n))
                return 2;
            a->auth.max_live_tokens = n;
            break;
        case O_RATE:
            if (num("--rate-per-min", optarg, 0, INT32_MAX, &n))
                return 2;
            a->sim.rate_per_min = n;
            break;
        case O_CONC:
            if (num("--concurrency", optarg, 0, INT32_MAX, &n))
                return 2;
            a->sim.concurrency = n;
            break;
        case O_DAILY:
            if (num("--daily-limit", optarg, 0, INT64_MAX / 4, &n))
                return 2;
            a->sim.daily = n;
            break;
        case O_MINUTE:
            if (num("--minute-ms", optarg, 1, INT32_MAX, &n))
                return 2;
            a->sim.minute_ms = n;
            break;
        case O_DAY:
            if (num("--day-ms", optarg, 1, INT64_MAX / 4, &n))
                return 2;
            a->sim.day_ms = n;
            break;
        case O_LIMITS_OFF:
            a->sim.rate_per_min = a->sim.concurrency = a->sim.daily = 0;
            break;
        case O_RETRY_AFTER: a->sim.retry_after = true; break;
        case O_CLOCK_OFFSET:
            if (num("--clock-offset", optarg, -86400 * 366, 86400 * 366, &n))
                return 2;
            zs_set_clock_offset(n);
            break;
        case O_MODIFIED_FILTER:
            if (choice("--modified-filter", optarg, "gt", "ge", &a->sim.modified_ge))
                return 2;
            break;
        case O_MODIFIED_OFFSET:
            if (choice("--modified-filter-offset", optarg, "honour", "ignore",
                       &a->sim.modified_local))
                return 2;
            break;
        case O_LOCALIZED: a->auth.localized_denied = true; break;
        case O_ITEMDETAILS_STOCK:
            if (strcmp(optarg, "never") == 0)
                a->sim.itemdetails_no_stock = a->sim.item_no_stock = true;
            else if (choice("--itemdetails-stock", optarg, "yes", "no", &a->sim.itemdetails_no_stock))
                return 2;
            break;
        case O_ITEMDETAILS_MISSING:
            if (choice("--itemdetails-missing", optarg, "skip", "error",
                       &a->sim.itemdetails_missing_error))
                return 2;
            break;
        case O_HELP: fputs(usage, stdout); return -1;
        case O_VERSION: printf("tds-zohosim %s\n", TDS_VERSION); return -1;
        default:
            fprintf(stderr, "tds-zohosim: invalid argument: '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tds-zohosim: invalid argument: '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

static int build_orgs(struct args *a, struct zs_org **out, size_t *n_out)
{
    size_t n = a->n_specs ? a->n_specs : (size_t)a->n_default_orgs;
    struct zs_org *orgs = calloc(n, sizeof(*orgs));
    if (!orgs)
        return 1;
    for (size_t i = 0; i < n; i++) {
        char err[160];
        zs_org_defaults(&orgs[i], (int)i);
        if (a->n_specs && zs_org_parse(&orgs[i], a->org_specs[i], err, sizeof(err))) {
            fprintf(stderr, "tds-zohosim: invalid --org: '%s': %s\n", a->org_specs[i], err);
            free(orgs);
            return 2;
        }
        if (!orgs[i].seed)
            orgs[i].seed = zs_mix(a->sim.seed * 1000003 + i);
        for (size_t k = 0; k < i; k++)
            if (!strcmp(orgs[k].id, orgs[i].id)) {
                fprintf(stderr, "tds-zohosim: invalid --org: duplicate id '%s'\n", orgs[i].id);
                free(orgs);
                return 2;
            }
    }
    *out = orgs;
    *n_out = n;
    return 0;
}

int main(int argc, char **argv)
{
    struct args a;
    memset(&a, 0, sizeof(a));
    snprintf(a.host, sizeof(a.host), "127.0.0.1");
    a.n_default_orgs = 2;
    a.sim.seed = 1;
    a.sim.epoch_s = 1735689600;
    a.sim.rate_per_min = 100;
    a.sim.concurrency = 10;
    a.sim.daily = 10000;
    a.sim.minute_ms = 60000;
    a.auth.client_id = "1000.SIMCLIENT";
    a.auth.client_secret = "simsecret";
    a.auth.token_ttl_s = 3600;
    a.auth.refresh_limit = 10;
    a.auth.refresh_window_ms = 600000;
    a.auth.lockout_ms = 900000;
    a.auth.max_live_tokens = 30;
    int rc = parse_args(&a, argc, argv);
    if (rc) {
        free(a.orgs_copy);
        return rc < 0 ? 0 : rc;
    }
    if (!a.sim.day_ms)
        a.sim.day_ms = a.sim.minute_ms * 1440;
    /* tokens must differ between runs: a restarted simulator must not
     * accept (or re-issue) the previous run's tokens */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    a.auth.seed = zs_mix(a.sim.seed ^ ((uint64_t)now.tv_sec << 30) ^ (uint64_t)now.tv_nsec ^
                         ((uint64_t)getpid() << 48));

    /* Signals are taken by sigwait below; threads started later inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    struct zs_org *orgs = NULL;
    size_t n_orgs = 0;
    struct zs_auth *auth = NULL;
    struct zs_sim *sim = NULL;
    struct zs_server *srv = NULL;
    int exit_code = 1;
    if ((rc = build_orgs(&a, &orgs, &n_orgs))) {
        exit_code = rc;
        goto out;
    }
    int64_t t0 = zs_now_ms();
    size_t total = 0;
    for (size_t i = 0; i < n_orgs; i++) {
        if (zs_org_generate(&orgs[i], a.sim.epoch_s)) {
            fprintf(stderr, "tds-zohosim: could not generate data: out of memory\n");
            for (size_t k = 0; k <= i; k++)
                zs_org_deinit(&orgs[k]);
            free(orgs);
            goto out;
        }
        for (int e = 0; e < ZS_ENT_COUNT; e++)
            total += orgs[i].t[e].n;
    }
    fprintf(stderr,
            "{\"level\":\"info\",\"stage\":\"zohosim\",\"msg\":\"generated %zu records for %zu "
            "organizations in %lld ms\"}\n",
            total, n_orgs, (long long)(zs_now_ms() - t0));
    if (zs_auth_new(&auth, &a.auth)) {
        for (size_t k = 0; k < n_orgs; k++)
            zs_org_deinit(&orgs[k]);
        free(orgs);
        goto out;
    }
    if (!a.n_refresh)
        a.refresh[a.n_refresh++] = "1000.simrefresh";
    for (size_t i = 0; i < a.n_refresh; i++)
        zs_auth_add_refresh(auth, a.refresh[i], -1);
    for (size_t i = 0; i < a.n_codes; i++)
        zs_auth_add_code(auth, a.codes[i]);
    for (size_t i = 0; i < n_orgs; i++)
        if (orgs[i].refresh_token[0])
            zs_auth_add_refresh(auth, orgs[i].refresh_token, (int)i);
    if (zs_sim_new(&sim, &a.sim, orgs, n_orgs, auth)) {
        /* zs_sim_new took orgs and auth and freed them */
        fprintf(stderr, "tds-zohosim: could not start: out of memory\n");
        goto out;
    }
    rc = zs_server_new(&srv, sim, a.host, (uint16_t)a.port, a.api_domain);
    if (rc) {
        fprintf(stderr, "tds-zohosim: could not listen on %s:%lld: %s\n", a.host, a.port,
                strerror(-rc));
        goto out;
    }
    unsigned port = zs_server_port(srv);
    if (a.port_file) {
        FILE *f = fopen(a.port_file, "w");
        if (!f || fprintf(f, "%u\n", port) < 0 || fclose(f)) {
            fprintf(stderr, "tds-zohosim: could not write port file '%s'\n", a.port_file);
            goto out;
        }
    }
    printf("listening on http://%s:%u\n", a.host, port);
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    atomic_store(&sim->stopping, 1);
    exit_code = 0;
out:
    srv = zs_server_free(srv);
    sim = zs_sim_free(sim);
    curl_global_cleanup();
    free(a.orgs_copy);
    return exit_code;
}
