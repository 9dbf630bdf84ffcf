/* test_alerts — rules (defaults, JSON and environment overrides, judging)
 * and the alert state machine under a fake clock: pending, firing after
 * `for`, no repeats, escalation, acknowledgement, resolve, unknown input,
 * failed persistence and takeover from the table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alerts.h"
#include "assert.h"
#include "util.h"

/* ---- a recording action callback ---- */

struct rec {
    int fire, update, resolve;
    int notices[8];
    int n_notices;
    enum tds_alert_notice last_notice;
    int next_id;
    int fail; /* make the next N callbacks fail */
};

static int on_action(enum tds_alert_action act, enum tds_alert_notice notice, struct tds_alert *a,
                     void *ud)
{
    struct rec *r = ud;

    if (r->fail > 0) {
        r->fail--;
        return -5;
    }
    if (act == TDS_ALERT_ACT_FIRE) {
        r->fire++;
        a->id = ++r->next_id;
    } else if (act == TDS_ALERT_ACT_UPDATE) {
        r->update++;
    } else {
        r->resolve++;
    }
    if (notice != TDS_NOTICE_NONE && r->n_notices < 8)
        r->notices[r->n_notices++] = notice;
    r->last_notice = notice;
    return 0;
}

static struct tds_alert_rules *rules_with(const char *name, double thr, int64_t for_s)
{
    struct tds_alert_rules *r = NULL;
    char path[] = "/tmp/test_alerts_rules_XXXXXX";
    int fd = mkstemp(path);
    char err[256] = "";
    FILE *f;

    T_INT(tds_alert_rules_new(&r), ==, 0);
    T_TRUE(fd >= 0);
    f = fdopen(fd, "w");
    fprintf(f, "{\"rules\": {\"%s\": {\"threshold\": %g, \"for_s\": %lld}}}", name, thr,
            (long long)for_s);
    fclose(f);
    if (tds_alert_rules_load_json(r, path, err, sizeof(err)) != 0)
        T_FAIL("load: %s", err);
    unlink(path);
    return r;
}

static void cycle(struct tds_alertsm *sm, struct rec *rec, int64_t now, const char *key,
                  double value)
{
    tds_alertsm_begin(sm);
    if (key)
        T_INT(tds_alertsm_observe(sm, "sync_failed", key, "600", "items", value, "sync failed",
                                  "{\"run_id\":\"r1\"}"),
              ==, 0);
    tds_alertsm_eval(sm, now, 1700000000000 + now, on_action, rec);
}

static void test_defaults_and_judge(void)
{
    struct tds_alert_rules *r = NULL;
    const struct tds_alert_rule *rule;

    T_INT(tds_alert_rules_new(&r), ==, 0);
    T_INT(tds_alert_rules_count(r), >=, 12);
    rule = tds_alert_rules_find(r, "quota_low");
    T_TRUE(rule && rule->op == TDS_ALERT_BELOW && rule->threshold == 500);
    T_INT(tds_alert_rule_judge(rule, 600), ==, TDS_SEV_NONE);
    T_INT(tds_alert_rule_judge(rule, 499), ==, TDS_SEV_WARNING);
    T_INT(tds_alert_rule_judge(rule, 10), ==, TDS_SEV_ERROR);
    T_INT(tds_alert_rule_judge(rule, NAN), ==, TDS_SEV_NONE);
    rule = tds_alert_rules_find(r, "sync_failed");
    T_INT(tds_alert_rule_judge(rule, 0), ==, TDS_SEV_NONE);
    T_INT(tds_alert_rule_judge(rule, 1), ==, TDS_SEV_ERROR);
    T_INT(tds_alert_rule_judge(rule, 3), ==, TDS_SEV_CRITICAL);
    T_NULL(tds_alert_rules_find(r, "nope"));
    for (size_t i = 0; i < tds_alert_rules_count(r); i++) {
        rule = tds_alert_rules_at(r, i);
        T_TRUE(tds_alert_sev_name(rule->severity) != NULL);
        T_TRUE(rule->help && rule->help[0]);
    }
    int sev = 0;
    T_INT(tds_alert_sev_parse("critical", &sev), ==, 0);
    T_INT(sev, ==, TDS_SEV_CRITICAL);
    T_INT(tds_alert_sev_parse("fatal", &sev), ==, TDS_E_INVALID);
    tds_alert_rules_free(r);
}

static const char *fake_env(const char *name)
{
    if (strcmp(name, "TDS_ALERT_QUOTA_LOW_THRESHOLD") == 0)
        return "1000";
    if (strcmp(name, "TDS_ALERT_QUOTA_LOW_FOR_S") == 0)
        return "5";
    if (strcmp(name, "TDS_ALERT_QUOTA_LOW_SEVERITY") == 0)
        return "error";
    if (strcmp(name, "TDS_ALERT_QUOTA_LOW_ESCALATE") == 0)
        return "none";
    if (strcmp(name, "TDS_ALERT_SYNC_STUCK_ENABLED") == 0)
        return "false";
    return NULL;
}

static const char *bad_env(const char *name)
{
    return strcmp(name, "TDS_ALERT_REJECTS_SPIKE_FOR_S") == 0 ? "soon" : NULL;
}

static void test_overrides(void)
{
    struct tds_alert_rules *r = NULL;
    const struct tds_alert_rule *rule;
    char err[256] = "", path[] = "/tmp/test_alerts_bad_XXXXXX";
    int fd;
    FILE *f;

    T_INT(tds_alert_rules_new(&r), ==, 0);
    T_INT(tds_alert_rules_apply_env(r, fake_env, err, sizeof(err)), ==, 0);
    rule = tds_alert_rules_find(r, "quota_low");
    T_TRUE(rule->threshold == 1000);
    T_INT(rule->for_s, ==, 5);
    T_INT(rule->severity, ==, TDS_SEV_ERROR);
    T_INT(tds_alert_rule_judge(rule, 0), ==, TDS_SEV_ERROR); /* escalation off */
    T_TRUE(!tds_alert_rules_find(r, "sync_stuck")->enabled);
    T_INT(tds_alert_rule_judge(tds_alert_rules_find(r, "sync_stuck"), 1e9), ==, TDS_SEV_NONE);

    T_INT(tds_alert_rules_apply_env(r, bad_env, err, sizeof(err)), ==, TDS_E_INVALID);
    T_STR(err, "invalid TDS_ALERT_REJECTS_SPIKE_FOR_S: 'soon'");

    fd = mkstemp(path);
    f = fdopen(fd, "w");
    fprintf(f, "{\"quota_low\": {\"severity\": \"loud\"}}");
    fclose(f);
    T_INT(tds_alert_rules_load_json(r, path, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "severity") != NULL);
    f = fopen(path, "w");
    fprintf(f, "{\"rules\": {\"no_such_rule\": {}}}");
    fclose(f);
    T_INT(tds_alert_rules_load_json(r, path, err, sizeof(err)), ==, TDS_E_INVALID);
    T_TRUE(strstr(err, "no_such_rule") != NULL);
    f = fopen(path, "w");
    fprintf(f, "{\"rules\": {\"quota_low\": {\"escalate\": null, \"window_s\": 60, \"enabled\": false}}}");
    fclose(f);
    T_INT(tds_alert_rules_load_json(r, path, err, sizeof(err)), ==, 0);
    T_TRUE(!tds_alert_rules_find(r, "quota_low")->enabled);
    T_INT(tds_alert_rules_find(r, "quota_low")->window_s, ==, 60);
    unlink(path);
    tds_alert_rules_free(r);
}

static void test_pending_firing_resolve(void)
{
    struct tds_alert_rules *r = rules_with("sync_failed", 0, 60);
    struct tds_alertsm *sm = NULL;
    struct rec rec = {0};

    T_INT(tds_alertsm_new(&sm, r), ==, 0);
    cycle(sm, &rec, 0, "org=600,entity=items", 1);
    T_INT(tds_alertsm_count(sm), ==, 1);
    T_INT(tds_alertsm_at(sm, 0)->state, ==, TDS_ALERT_PENDING);
    T_INT(rec.fire, ==, 0);
    cycle(sm, &rec, 59999, "org=600,entity=items", 1);
    T_INT(rec.fire, ==, 0);
    /* held for `for`: fires and notifies once */
    cycle(sm, &rec, 60000, "org=600,entity=items", 1);
    T_INT(rec.fire, ==, 1);
    T_INT(rec.n_notices, ==, 1);
    T_INT(rec.notices[0], ==, TDS_NOTICE_FIRING);
    T_INT(tds_alertsm_at(sm, 0)->state, ==, TDS_ALERT_FIRING);
    T_INT(tds_alertsm_at(sm, 0)->notified_severity, ==, TDS_SEV_ERROR);
    T_TRUE(tds_alertsm_at(sm, 0)->fired_wall_ms == 1700000060000);
    /* still firing: updates, no repeat */
    for (int i = 1; i <= 5; i++)
        cycle(sm, &rec, 60000 + i * 15000, "org=600,entity=items", 1);
    T_INT(rec.update, ==, 5);
    T_INT(rec.n_notices, ==, 1);
    /* a value under the threshold clears it: resolve notice */
    cycle(sm, &rec, 200000, "org=600,entity=items", 0);
    T_INT(rec.resolve, ==, 1);
    T_INT(rec.n_notices, ==, 2);
    T_INT(rec.notices[1], ==, TDS_NOTICE_RESOLVED);
    T_INT(tds_alertsm_count(sm), ==, 0);
    /* a pending alert that clears before `for` never fires */
    cycle(sm, &rec, 300000, "org=600,entity=items", 1);
    cycle(sm, &rec, 330000, NULL, 0);
    cycle(sm, &rec, 400000, "org=600,entity=items", 1);
    T_INT(rec.fire, ==, 1);
    T_INT(tds_alertsm_at(sm, 0)->pending_since_ms, ==, 400000);
    tds_alertsm_free(sm);
    tds_alert_rules_free(r);
}

static void test_escalation_and_ack(void)
{
    struct tds_alert_rules *r = rules_with("sync_failed", 0, 0);
    struct tds_alertsm *sm = NULL;
    struct rec rec = {0};
    const char *k = "org=600,entity=items";

    T_INT(tds_alertsm_new(&sm, r), ==, 0);
    cycle(sm, &rec, 0, k, 1); /* for 0: fires at once */
    T_INT(rec.fire, ==, 1);
    T_INT(rec.n_notices, ==, 1);
    /* worse: escalates (error → critical) and notifies once */
    cycle(sm, &rec, 1000, k, 3);
    T_INT(rec.n_notices, ==, 2);
    T_INT(rec.notices[1], ==, TDS_NOTICE_ESCALATED);
    T_INT(tds_alertsm_at(sm, 0)->severity, ==, TDS_SEV_CRITICAL);
    cycle(sm, &rec, 2000, k, 4);
    T_INT(rec.n_notices, ==, 2);
    /* better then worse again: no new notice, critical was told already */
    cycle(sm, &rec, 3000, k, 1);
    T_INT(tds_alertsm_at(sm, 0)->severity, ==, TDS_SEV_ERROR);
    cycle(sm, &rec, 4000, k, 3);
    T_INT(rec.n_notices, ==, 2);
    tds_alertsm_free(sm);

    /* acknowledged: escalation is not notified, the resolve notice is */
    T_INT(tds_alertsm_new(&sm, r), ==, 0);
    memset(&rec, 0, sizeof(rec));
    cycle(sm, &rec, 0, k, 1);
    T_INT(rec.n_notices, ==, 1);
    tds_alertsm_set_ack(sm, tds_alertsm_at(sm, 0)->id, true);
    T_TRUE(tds_alertsm_at(sm, 0)->acknowledged);
    cycle(sm, &rec, 1000, k, 5);
    T_INT(rec.n_notices, ==, 1);
    T_INT(rec.update, ==, 1);
    cycle(sm, &rec, 2000, NULL, 0);
    T_INT(rec.n_notices, ==, 2);
    T_INT(rec.notices[1], ==, TDS_NOTICE_RESOLVED);
    tds_alertsm_free(sm);
    tds_alert_rules_free(r);
}

static void test_unknown_input_and_failures(void)
{
    struct tds_alert_rules *r = rules_with("sync_failed", 0, 0);
    struct tds_alertsm *sm = NULL;
    struct rec rec = {0};
    const char *k = "org=600,entity=items";

    T_INT(tds_alertsm_new(&sm, r), ==, 0);
    /* the insert fails: nothing notified, tried again next cycle */
    rec.fail = 1;
    cycle(sm, &rec, 0, k, 1);
    T_INT(rec.fire, ==, 0);
    T_INT(rec.n_notices, ==, 0);
    T_INT(tds_alertsm_at(sm, 0)->id, ==, 0);
    cycle(sm, &rec, 1000, k, 1);
    T_INT(rec.fire, ==, 1);
    T_INT(rec.n_notices, ==, 1);
    /* the rule's input could not be read: the alert stays */
    tds_alertsm_begin(sm);
    tds_alertsm_rule_unknown(sm, "sync_failed");
    T_INT(tds_alertsm_eval(sm, 2000, 0, on_action, &rec), ==, 1);
    T_INT(rec.resolve, ==, 0);
    T_INT(tds_alertsm_count(sm), ==, 1);
    /* the resolve fails: kept, resolved next time */
    rec.fail = 1;
    cycle(sm, &rec, 3000, NULL, 0);
    T_INT(tds_alertsm_count(sm), ==, 1);
    cycle(sm, &rec, 4000, NULL, 0);
    T_INT(rec.resolve, ==, 1);
    T_INT(tds_alertsm_count(sm), ==, 0);
    /* unknown rules and disabled rules are ignored */
    tds_alertsm_begin(sm);
    T_INT(tds_alertsm_observe(sm, "no_such_rule", "k", NULL, NULL, 1e9, "x", NULL), ==, 0);
    T_INT(tds_alertsm_count(sm), ==, 0);
    tds_alertsm_free(sm);
    tds_alert_rules_free(r);
}

static void test_takeover(void)
{
    struct tds_alert_rules *r = rules_with("sync_failed", 0, 0);
    struct tds_alertsm *sm = NULL;
    struct rec rec = {.next_id = 100};
    const char *k = "org=600,entity=items";

    T_INT(tds_alertsm_new(&sm, r), ==, 0);
    /* notified earlier by another replica: no repeat */
    T_INT(tds_alertsm_load(sm, "sync_failed", k, "600", "items", "old", 7, TDS_SEV_ERROR,
                           TDS_SEV_ERROR, 1700000000000, false),
          ==, 0);
    /* the previous leader died before notifying this one */
    T_INT(tds_alertsm_load(sm, "sync_failed", "org=600,entity=invoices", "600", "invoices", "old",
                           8, TDS_SEV_ERROR, TDS_SEV_NONE, 1700000000000, false),
          ==, 0);
    tds_alertsm_begin(sm);
    tds_alertsm_observe(sm, "sync_failed", k, "600", "items", 1, "s", NULL);
    tds_alertsm_observe(sm, "sync_failed", "org=600,entity=invoices", "600", "invoices", 1, "s",
                        NULL);
    T_INT(tds_alertsm_eval(sm, 0, 0, on_action, &rec), ==, 2);
    T_INT(rec.fire, ==, 0);
    T_INT(rec.update, ==, 2);
    T_INT(rec.n_notices, ==, 1);
    T_INT(rec.notices[0], ==, TDS_NOTICE_FIRING);
    /* leadership lost: everything forgotten */
    tds_alertsm_clear(sm);
    T_INT(tds_alertsm_count(sm), ==, 0);
    tds_alertsm_free(sm);
    tds_alert_rules_free(r);
}

int main(void)
{
    T_RUN(test_defaults_and_judge);
    T_RUN(test_overrides);
    T_RUN(test_pending_firing_resolve);
    T_RUN(test_escalation_and_ack);
    T_RUN(test_unknown_input_and_failures);
    T_RUN(test_takeover);
    return 0;
}
