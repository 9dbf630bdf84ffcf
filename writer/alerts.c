/* alerts — rule table and alert state machine (see alerts.h).
 *
 * The defaults below are the rules table of writer/ALERTS.md; keep both in
 * step. Thresholds agree with deploy/prometheus/alerts.yml where the same
 * condition is watched there. Never touches the database or the network.
 */
#include "alerts.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

static const struct tds_alert_rule defaults[] = {
    {"sync_failed", "database", TDS_ALERT_ABOVE, 0, 2, TDS_SEV_ERROR, TDS_SEV_CRITICAL, 0, 86400,
     true, "consecutive failed runs of an organization's entity (latest finished run failed, "
           "within window_s)", 0},
    {"sync_stuck", "database", TDS_ALERT_ABOVE, 900, 3600, TDS_SEV_WARNING, TDS_SEV_ERROR, 0, 0,
     true, "seconds since a running run was last updated", 0},
    {"entity_stale", "database", TDS_ALERT_ABOVE, 3, 6, TDS_SEV_WARNING, TDS_SEV_ERROR, 0, 0,
     true, "time since the last successful sync, in multiples of the entity's sync interval", 0},
    {"token_failed", "database", TDS_ALERT_ABOVE, 0, 1, TDS_SEV_ERROR, TDS_SEV_CRITICAL, 0, 0,
     true, "token state: 1 = refresh locked out, 2 = refresh token revoked or invalid", 0},
    {"rejects_spike", "database", TDS_ALERT_ABOVE, 100, 1000, TDS_SEV_WARNING, TDS_SEV_ERROR, 0,
     300, true, "records added to tds.rejected within window_s, per organization and entity", 0},
    {"api_error_rate", "metrics", TDS_ALERT_ABOVE, 0.05, 0.5, TDS_SEV_ERROR, TDS_SEV_CRITICAL,
     600, 300, true, "share of Zoho API calls that failed (not 2xx/404/429) within window_s, "
                     "per organization (at least 20 calls)", 0},
    {"rate_limit_storm", "metrics", TDS_ALERT_ABOVE, 0.2, 2, TDS_SEV_WARNING, TDS_SEV_ERROR, 300,
     300, true, "Zoho 429 answers per second within window_s, per organization", 0},
    {"quota_low", "metrics", TDS_ALERT_BELOW, 500, 50, TDS_SEV_WARNING, TDS_SEV_ERROR, 120, 0,
     true, "Zoho API calls left today, per organization", 0},
    {"signature_failures", "metrics", TDS_ALERT_ABOVE, 0.1, 1, TDS_SEV_WARNING, TDS_SEV_ERROR,
     300, 300, true, "webhooks failing the signature check per second within window_s", 0},
    {"ingress_unacked", "metrics", TDS_ALERT_ABOVE, 1000, 10000, TDS_SEV_ERROR, TDS_SEV_CRITICAL,
     600, 600, true, "journaled webhooks not yet acked, per ingress, while growing within "
                     "window_s", 0},
    {"journal_bytes", "metrics", TDS_ALERT_ABOVE, 0.5, 0.9, TDS_SEV_WARNING, TDS_SEV_ERROR, 600, 0,
     true, "share of the ingress journal's bound (TDS_INGRESS_JOURNAL_MAX_BYTES) held by "
           "webhooks not yet acked, per ingress; at 1 they get 503", 1},
    {"journal_damaged", "metrics", TDS_ALERT_ABOVE, 0, NAN, TDS_SEV_ERROR, TDS_SEV_ERROR, 0, 0,
     true, "bytes an ingress's journal skipped inside its segments when it last started: "
           "damaged on disk, what they held is lost", 0},
    {"stage_not_ready", "metrics", TDS_ALERT_ABOVE, 0, 1, TDS_SEV_ERROR, TDS_SEV_CRITICAL, 120, 0,
     true, "1 = a stage's /readyz is not 200, 2 = its admin port does not answer", 0},
};
#define N_RULES TDS_ARRAY_SIZE(defaults)

struct tds_alert_rules {
    struct tds_alert_rule r[N_RULES];
};

static const char *const sev_names[] = {NULL, "info", "warning", "error", "critical"};

const char *tds_alert_sev_name(int sev)
{
    return sev > 0 && sev <= TDS_SEV_CRITICAL ? sev_names[sev] : NULL;
}

int tds_alert_sev_parse(const char *s, int *out)
{
    for (int i = TDS_SEV_INFO; s && i <= TDS_SEV_CRITICAL; i++)
        if (strcmp(s, sev_names[i]) == 0) {
            *out = i;
            return 0;
        }
    return TDS_E_INVALID;
}

int tds_alert_rules_new(struct tds_alert_rules **out)
{
    struct tds_alert_rules *r = malloc(sizeof(*r));

    *out = NULL;
    if (!r)
        return -ENOMEM;
    memcpy(r->r, defaults, sizeof(defaults));
    *out = r;
    return 0;
}

struct tds_alert_rules *tds_alert_rules_free(struct tds_alert_rules *r)
{
    free(r);
    return NULL;
}

size_t tds_alert_rules_count(const struct tds_alert_rules *r)
{
    return r ? N_RULES : 0;
}

const struct tds_alert_rule *tds_alert_rules_at(const struct tds_alert_rules *r, size_t i)
{
    return r && i < N_RULES ? &r->r[i] : NULL;
}

static struct tds_alert_rule *find_mut(struct tds_alert_rules *r, const char *name)
{
    for (size_t i = 0; i < N_RULES; i++)
        if (strcmp(r->r[i].name, name) == 0)
            return &r->r[i];
    return NULL;
}

const struct tds_alert_rule *tds_alert_rules_find(const struct tds_alert_rules *r, const char *name)
{
    return r && name ? find_mut((struct tds_alert_rules *)r, name) : NULL;
}

static int json_rule(struct tds_alert_rule *rule, json_t *o, const char *path, char *err,
                     size_t errlen)
{
    const char *k;
    json_t *v;

    if (!json_is_object(o)) {
        snprintf(err, errlen, "invalid TDS_ALERT_RULES file '%s': rule %s is not an object", path,
                 rule->name);
        return TDS_E_INVALID;
    }
    json_object_foreach(o, k, v) {
        bool ok = true;

        if (strcmp(k, "threshold") == 0 && json_is_number(v))
            rule->threshold = json_number_value(v);
        else if (strcmp(k, "escalate") == 0 && json_is_number(v))
            rule->escalate = json_number_value(v);
        else if (strcmp(k, "escalate") == 0 && json_is_null(v))
            rule->escalate = NAN;
        else if (strcmp(k, "for_s") == 0 && json_is_integer(v) && json_integer_value(v) >= 0)
            rule->for_s = json_integer_value(v);
        else if (strcmp(k, "window_s") == 0 && json_is_integer(v) && json_integer_value(v) >= 1)
            rule->window_s = json_integer_value(v);
        else if (strcmp(k, "enabled") == 0 && json_is_boolean(v))
            rule->enabled = json_is_true(v);
        else if (strcmp(k, "severity") == 0 && json_is_string(v))
            ok = tds_alert_sev_parse(json_string_value(v), &rule->severity) == 0;
        else if (strcmp(k, "escalate_severity") == 0 && json_is_string(v))
            ok = tds_alert_sev_parse(json_string_value(v), &rule->escalate_severity) == 0;
        else
            ok = false;
        if (!ok) {
            snprintf(err, errlen, "invalid TDS_ALERT_RULES file '%s': bad field '%s' of rule %s",
                     path, k, rule->name);
            return TDS_E_INVALID;
        }
    }
    return 0;
}

int tds_alert_rules_load_json(struct tds_alert_rules *r, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    struct stat st;
    json_t *root, *rules, *v;
    const char *k;
    int rc = 0;

    /* jansson reads a folder as an empty file ("'[' or '{' expected") */
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "invalid TDS_ALERT_RULES file '%s': a folder, not a file", path);
        return TDS_E_INVALID;
    }
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (je.line > 0)
            snprintf(err, errlen, "invalid TDS_ALERT_RULES file '%s': %s (line %d)", path, je.text,
                     je.line);
        else /* could not open or read it: no line to point at */
            snprintf(err, errlen, "invalid TDS_ALERT_RULES file '%s': %s", path, je.text);
        return TDS_E_INVALID;
    }
    rules = json_object_get(root, "rules");
    if (!rules)
        rules = root;
    if (!json_is_object(rules)) {
        snprintf(err, errlen, "invalid TDS_ALERT_RULES file '%s': expected an object of rules",
                 path);
        rc = TDS_E_INVALID;
        goto out;
    }
    json_object_foreach(rules, k, v) {
        struct tds_alert_rule *rule = find_mut(r, k);

        if (!rule) {
            snprintf(err, errlen, "invalid TDS_ALERT_RULES file '%s': unknown rule '%s'", path, k);
            rc = TDS_E_INVALID;
            goto out;
        }
        if ((rc = json_rule(rule, v, path, err, errlen)) != 0)
            goto out;
    }
out:
    json_decref(root);
    return rc;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(d))
        return TDS_E_INVALID;
    *out = d;
    return 0;
}

int tds_alert_rules_apply_env(struct tds_alert_rules *r, const char *(*get)(const char *name),
                              char *err, size_t errlen)
{
    static const char *const fields[] = {"THRESHOLD", "FOR_S", "SEVERITY", "ESCALATE",
                                         "ESCALATE_SEVERITY", "WINDOW_S", "ENABLED"};

    for (size_t i = 0; i < N_RULES; i++) {
        struct tds_alert_rule *rule = &r->r[i];
        char upper[sizeof(rule->name)];
        size_t j;

        for (j = 0; rule->name[j] && j + 1 < sizeof(upper); j++)
            upper[j] = (char)toupper((unsigned char)rule->name[j]);
        upper[j] = '\0';
        for (size_t f = 0; f < TDS_ARRAY_SIZE(fields); f++) {
            char name[96];
            const char *v;
            int64_t n;
            int bad;

            snprintf(name, sizeof(name), "TDS_ALERT_%s_%s", upper, fields[f]);
            v = get(name);
            if (!v)
                continue;
            switch (f) {
            case 0:
                bad = parse_double(v, &rule->threshold);
                break;
            case 1:
                bad = tds_parse_i64(v, 0, 7 * 86400, &n);
                if (!bad)
                    rule->for_s = n;
                break;
            case 2:
                bad = tds_alert_sev_parse(v, &rule->severity);
                break;
            case 3:
                if (strcmp(v, "none") == 0) {
                    rule->escalate = NAN;
                    bad = 0;
                } else {
                    bad = parse_double(v, &rule->escalate);
                }
                break;
            case 4:
                bad = tds_alert_sev_parse(v, &rule->escalate_severity);
                break;
            case 5:
                bad = tds_parse_i64(v, 1, 30 * 86400, &n);
                if (!bad)
                    rule->window_s = n;
                break;
            default:
                bad = tds_parse_bool(v, &rule->enabled);
                break;
            }
            if (bad) {
                snprintf(err, errlen, "invalid %s: '%s'", name, v);
                return TDS_E_INVALID;
            }
        }
    }
    /* after the file and the environment both: a limit its value cannot
     * pass (journal_bytes was in bytes before it became a share) would
     * switch the rule off without a word */
    for (size_t i = 0; i < N_RULES; i++) {
        const struct tds_alert_rule *rule = &r->r[i];

        if (rule->value_max > 0 &&
            (rule->threshold >= rule->value_max ||
             (!isnan(rule->escalate) && rule->escalate >= rule->value_max))) {
            snprintf(err, errlen,
                     "alert rule %s: threshold %g, escalate %g: its value never passes %g (a "
                     "share), so the rule would never fire",
                     rule->name, rule->threshold, rule->escalate, rule->value_max);
            return TDS_E_INVALID;
        }
    }
    return 0;
}

static bool crosses(enum tds_alert_op op, double value, double limit)
{
    if (isnan(value) || isnan(limit))
        return false;
    return op == TDS_ALERT_BELOW ? value < limit : value > limit;
}

int tds_alert_rule_judge(const struct tds_alert_rule *rule, double value)
{
    if (!rule || !rule->enabled || !crosses(rule->op, value, rule->threshold))
        return TDS_SEV_NONE;
    if (crosses(rule->op, value, rule->escalate) && rule->escalate_severity > rule->severity)
        return rule->escalate_severity;
    return rule->severity;
}

/* ---- state machine ---- */

struct tds_alertsm {
    const struct tds_alert_rules *rules;
    struct tds_alert **a;
    size_t n, cap;
    char **unknown; /* rules whose input failed this cycle */
    size_t n_unknown, cap_unknown;
};

static void alert_free(struct tds_alert *a)
{
    if (!a)
        return;
    free(a->rule);
    free(a->key);
    free(a->org);
    free(a->entity);
    free(a->summary);
    free(a->details);
    free(a);
}

static int set_str(char **dst, const char *src)
{
    char *c = NULL;

    if (src && !(c = strdup(src)))
        return -ENOMEM;
    free(*dst);
    *dst = c;
    return 0;
}

int tds_alertsm_new(struct tds_alertsm **out, const struct tds_alert_rules *rules)
{
    struct tds_alertsm *sm = calloc(1, sizeof(*sm));

    *out = NULL;
    if (!sm)
        return -ENOMEM;
    sm->rules = rules;
    *out = sm;
    return 0;
}

static void clear_unknown(struct tds_alertsm *sm)
{
    for (size_t i = 0; i < sm->n_unknown; i++)
        free(sm->unknown[i]);
    sm->n_unknown = 0;
}

void tds_alertsm_clear(struct tds_alertsm *sm)
{
    for (size_t i = 0; i < sm->n; i++)
        alert_free(sm->a[i]);
    sm->n = 0;
    clear_unknown(sm);
}

struct tds_alertsm *tds_alertsm_free(struct tds_alertsm *sm)
{
    if (!sm)
        return NULL;
    tds_alertsm_clear(sm);
    free(sm->a);
    free(sm->unknown);
    free(sm);
    return NULL;
}

static struct tds_alert *find(struct tds_alertsm *sm, const char *rule, const char *key)
{
    for (size_t i = 0; i < sm->n; i++)
        if (strcmp(sm->a[i]->rule, rule) == 0 && strcmp(sm->a[i]->key, key) == 0)
            return sm->a[i];
    return NULL;
}

static struct tds_alert *add(struct tds_alertsm *sm, const char *rule, const char *key,
                             const char *org, const char *entity)
{
    struct tds_alert *a;

    if (sm->n == sm->cap) {
        size_t nc = sm->cap ? sm->cap * 2 : 16;
        struct tds_alert **p = realloc(sm->a, nc * sizeof(*p));

        if (!p)
            return NULL;
        sm->a = p;
        sm->cap = nc;
    }
    a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    if (set_str(&a->rule, rule) || set_str(&a->key, key) || set_str(&a->org, org) ||
        set_str(&a->entity, entity)) {
        alert_free(a);
        return NULL;
    }
    sm->a[sm->n++] = a;
    return a;
}

int tds_alertsm_load(struct tds_alertsm *sm, const char *rule, const char *key, const char *org,
                     const char *entity, const char *summary, int64_t id, int severity,
                     int notified_severity, int64_t fired_wall_ms, bool acknowledged)
{
    struct tds_alert *a = find(sm, rule, key);

    if (!a && !(a = add(sm, rule, key, org, entity)))
        return -ENOMEM;
    if (set_str(&a->summary, summary) != 0)
        return -ENOMEM;
    a->state = TDS_ALERT_FIRING;
    a->id = id;
    a->severity = severity;
    a->notified_severity = notified_severity;
    a->fired_wall_ms = fired_wall_ms;
    a->acknowledged = acknowledged;
    return 0;
}

void tds_alertsm_set_ack(struct tds_alertsm *sm, int64_t id, bool acknowledged)
{
    for (size_t i = 0; i < sm->n; i++)
        if (sm->a[i]->id == id && id != 0)
            sm->a[i]->acknowledged = acknowledged;
}

void tds_alertsm_begin(struct tds_alertsm *sm)
{
    for (size_t i = 0; i < sm->n; i++)
        sm->a[i]->seen = false;
    clear_unknown(sm);
}

int tds_alertsm_observe(struct tds_alertsm *sm, const char *rule, const char *key, const char *org,
                        const char *entity, double value, const char *summary, const char *details)
{
    const struct tds_alert_rule *r = tds_alert_rules_find(sm->rules, rule);
    int sev = tds_alert_rule_judge(r, value);
    struct tds_alert *a;

    if (sev == TDS_SEV_NONE)
        return 0;
    a = find(sm, rule, key);
    if (!a) {
        if (!(a = add(sm, rule, key, org, entity)))
            return -ENOMEM;
        a->state = TDS_ALERT_PENDING;
        a->pending_since_ms = -1; /* set by eval with its clock */
    }
    if (set_str(&a->summary, summary) != 0 || set_str(&a->details, details) != 0)
        return -ENOMEM;
    a->value = value;
    a->severity = sev;
    a->seen = true;
    return 0;
}

void tds_alertsm_rule_unknown(struct tds_alertsm *sm, const char *rule)
{
    char *c;

    if (sm->n_unknown == sm->cap_unknown) {
        size_t nc = sm->cap_unknown ? sm->cap_unknown * 2 : 8;
        char **p = realloc(sm->unknown, nc * sizeof(*p));

        if (!p)
            return; /* treated as known: at worst an alert resolves and fires again */
        sm->unknown = p;
        sm->cap_unknown = nc;
    }
    if ((c = strdup(rule)))
        sm->unknown[sm->n_unknown++] = c;
}

static bool is_unknown(const struct tds_alertsm *sm, const char *rule)
{
    for (size_t i = 0; i < sm->n_unknown; i++)
        if (strcmp(sm->unknown[i], rule) == 0)
            return true;
    return false;
}

bool tds_alertsm_rule_is_unknown(const struct tds_alertsm *sm, const char *rule)
{
    return is_unknown(sm, rule);
}

static void remove_at(struct tds_alertsm *sm, size_t i)
{
    alert_free(sm->a[i]);
    memmove(&sm->a[i], &sm->a[i + 1], (sm->n - i - 1) * sizeof(sm->a[0]));
    sm->n--;
}

size_t tds_alertsm_eval(struct tds_alertsm *sm, int64_t now_ms, int64_t wall_ms,
                        tds_alert_action_cb cb, void *ud)
{
    size_t firing = 0;

    for (size_t i = 0; i < sm->n;) {
        struct tds_alert *a = sm->a[i];
        const struct tds_alert_rule *r = tds_alert_rules_find(sm->rules, a->rule);

        if (!a->seen && is_unknown(sm, a->rule)) {
            /* input unreadable: neither resolve nor advance */
            if (a->state == TDS_ALERT_FIRING)
                firing++;
            i++;
            continue;
        }
        if (!a->seen) {
            if (a->state == TDS_ALERT_FIRING && a->id != 0) {
                enum tds_alert_notice n = a->notified_severity ? TDS_NOTICE_RESOLVED
                                                               : TDS_NOTICE_NONE;

                if (cb(TDS_ALERT_ACT_RESOLVE, n, a, ud) != 0) {
                    firing++;
                    i++;
                    continue;
                }
            }
            remove_at(sm, i);
            continue;
        }
        if (a->state == TDS_ALERT_PENDING) {
            if (a->pending_since_ms < 0)
                a->pending_since_ms = now_ms;
            if (!r || now_ms - a->pending_since_ms < r->for_s * 1000) {
                i++;
                continue;
            }
            a->state = TDS_ALERT_FIRING;
            a->fired_wall_ms = wall_ms;
        }
        if (a->id == 0) {
            /* not yet in the table (new, or the insert failed last cycle) */
            if (cb(TDS_ALERT_ACT_FIRE, TDS_NOTICE_FIRING, a, ud) == 0 && a->id != 0)
                a->notified_severity = a->severity;
        } else {
            enum tds_alert_notice n = TDS_NOTICE_NONE;

            if (!a->acknowledged && a->notified_severity == TDS_SEV_NONE)
                n = TDS_NOTICE_FIRING;
            else if (!a->acknowledged && a->severity > a->notified_severity)
                n = TDS_NOTICE_ESCALATED;
            if (cb(TDS_ALERT_ACT_UPDATE, n, a, ud) == 0 && n != TDS_NOTICE_NONE)
                a->notified_severity = a->severity;
        }
        firing++;
        i++;
    }
    return firing;
}

size_t tds_alertsm_count(const struct tds_alertsm *sm)
{
    return sm ? sm->n : 0;
}

const struct tds_alert *tds_alertsm_at(const struct tds_alertsm *sm, size_t i)
{
    return sm && i < sm->n ? sm->a[i] : NULL;
}
