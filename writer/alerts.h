/* alerts — the alert rules (defaults and overrides) and the state machine
 * that turns observations into firing, escalation and resolve actions.
 *
 * Pure: no database, no network, no clock of its own (the caller passes
 * now_ms, a monotonic time), so the state machine is tested with a fake
 * clock. The engine (alertd.c) gathers observations, hands them here once per
 * cycle, and carries out the actions this module decides: persist in
 * tds.alerts and notify. It never logs.
 *
 * Per alert instance (rule + key):
 *   (none) --condition--> PENDING --held for `for_s`--> FIRING --cleared--> resolved (gone)
 *   PENDING --cleared--> (none)
 * A FIRING alert is notified once; again only when its severity rises above
 * the one last notified (escalation) and it is not acknowledged. A resolve
 * notice goes out when an alert that was notified clears.
 */
#ifndef TDS_ALERTS_H
#define TDS_ALERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tds_alert_sev { TDS_SEV_NONE = 0, TDS_SEV_INFO, TDS_SEV_WARNING, TDS_SEV_ERROR, TDS_SEV_CRITICAL };

/* "info" … "critical"; NULL for an unknown value. */
const char *tds_alert_sev_name(int sev);
/* Returns 0, or TDS_E_INVALID. */
int tds_alert_sev_parse(const char *s, int *out);

enum tds_alert_op { TDS_ALERT_ABOVE = 0, TDS_ALERT_BELOW };

struct tds_alert_rule {
    char name[32];        /* "sync_failed"; env overrides use TDS_ALERT_<NAME>_* */
    const char *source;   /* "database" or "metrics" (documentation) */
    enum tds_alert_op op; /* fire when value > threshold (ABOVE) or < threshold (BELOW) */
    double threshold;
    double escalate;      /* same comparison; NAN = never escalates */
    int severity, escalate_severity;
    int64_t for_s;        /* condition must hold this long before firing */
    int64_t window_s;     /* look-back of rates and counts (rule-specific) */
    bool enabled;
    const char *help;     /* what the value is */
    double value_max;     /* the value's upper end (a share: 1), 0 = none: a threshold
                           * or escalation past it is refused, as it could never fire */
};

struct tds_alert_rules;

/* A new rule set holding the built-in defaults. */
int tds_alert_rules_new(struct tds_alert_rules **out);
struct tds_alert_rules *tds_alert_rules_free(struct tds_alert_rules *r);
size_t tds_alert_rules_count(const struct tds_alert_rules *r);
const struct tds_alert_rule *tds_alert_rules_at(const struct tds_alert_rules *r, size_t i);
/* NULL for an unknown name. Disabled rules are found too. */
const struct tds_alert_rule *tds_alert_rules_find(const struct tds_alert_rules *r, const char *name);

/* Overrides from a JSON file: {"rules": {"<name>": {"threshold": 1, "for_s": 60,
 * "severity": "error", "escalate": 3, "escalate_severity": "critical",
 * "window_s": 300, "enabled": true}}} (the top-level "rules" wrapper is
 * optional). Unknown rule names and fields are errors. Returns 0 or
 * TDS_E_INVALID with one line in err. */
int tds_alert_rules_load_json(struct tds_alert_rules *r, const char *path, char *err, size_t errlen);
/* Overrides from variables TDS_ALERT_<NAME>_THRESHOLD, _FOR_S, _SEVERITY,
 * _ESCALATE ("none" = never), _ESCALATE_SEVERITY, _WINDOW_S, _ENABLED, read
 * through `get` (getenv in production). Applied after the JSON file. Returns 0
 * or TDS_E_INVALID with "invalid TDS_ALERT_…: '…'" in err. */
int tds_alert_rules_apply_env(struct tds_alert_rules *r, const char *(*get)(const char *name),
                              char *err, size_t errlen);

/* Severity a value deserves under a rule, TDS_SEV_NONE when it does not
 * cross the threshold. */
int tds_alert_rule_judge(const struct tds_alert_rule *rule, double value);

/* ---- state machine ---- */

enum tds_alert_state { TDS_ALERT_PENDING = 1, TDS_ALERT_FIRING };

struct tds_alert {
    char *rule, *key;          /* identity */
    char *org, *entity;        /* may be NULL */
    char *summary;             /* latest one-line description */
    char *details;             /* latest JSON object text, may be NULL */
    double value;
    int severity;              /* current */
    int notified_severity;     /* highest severity notified, 0 = never notified */
    enum tds_alert_state state;
    int64_t id;                /* tds.alerts id once persisted, else 0 */
    int64_t pending_since_ms;
    int64_t fired_wall_ms;     /* wall clock of firing, for notices */
    bool acknowledged;
    bool seen;                 /* observed in the current cycle (internal) */
};

/* What the engine must do for one alert. notify says which notice to send
 * (NONE, FIRING, ESCALATED, RESOLVED). */
enum tds_alert_action { TDS_ALERT_ACT_FIRE = 1, TDS_ALERT_ACT_UPDATE, TDS_ALERT_ACT_RESOLVE };
enum tds_alert_notice { TDS_NOTICE_NONE = 0, TDS_NOTICE_FIRING, TDS_NOTICE_ESCALATED,
                        TDS_NOTICE_RESOLVED };

/* Carry out an action. FIRE must set a->id (persist); return 0 on success,
 * anything else to have the state machine try again next cycle (nothing is
 * marked notified then). The alert stays valid for the call only. */
typedef int (*tds_alert_action_cb)(enum tds_alert_action act, enum tds_alert_notice notice,
                                   struct tds_alert *a, void *ud);

struct tds_alertsm;

int tds_alertsm_new(struct tds_alertsm **out, const struct tds_alert_rules *rules);
struct tds_alertsm *tds_alertsm_free(struct tds_alertsm *sm);

/* Forget everything (leadership lost: the next leader reloads from the table). */
void tds_alertsm_clear(struct tds_alertsm *sm);
/* A firing alert read back from tds.alerts when taking over. Returns 0 or -ENOMEM. */
int tds_alertsm_load(struct tds_alertsm *sm, const char *rule, const char *key, const char *org,
                     const char *entity, const char *summary, int64_t id, int severity,
                     int notified_severity, int64_t fired_wall_ms, bool acknowledged);
/* Acknowledgement state of a persisted alert, as read from the table. */
void tds_alertsm_set_ack(struct tds_alertsm *sm, int64_t id, bool acknowledged);

/* One cycle: begin, observe every value, mark rules whose input could not be
 * read (their alerts are left as they are), then eval. */
void tds_alertsm_begin(struct tds_alertsm *sm);
/* Observe a value for rule/key; strings are copied. Values that do not cross
 * the rule's threshold count as "cleared". Unknown or disabled rules are
 * ignored. Returns 0 or -ENOMEM. */
int tds_alertsm_observe(struct tds_alertsm *sm, const char *rule, const char *key, const char *org,
                        const char *entity, double value, const char *summary, const char *details);
void tds_alertsm_rule_unknown(struct tds_alertsm *sm, const char *rule);
/* True when the rule was marked unknown in the current cycle. */
bool tds_alertsm_rule_is_unknown(const struct tds_alertsm *sm, const char *rule);
/* Run the transitions at now_ms (monotonic) with wall_ms for notices,
 * calling cb for each action. Returns the number of alerts firing after it. */
size_t tds_alertsm_eval(struct tds_alertsm *sm, int64_t now_ms, int64_t wall_ms,
                        tds_alert_action_cb cb, void *ud);

/* Inspect current alerts (pending and firing), e.g. for /status. */
size_t tds_alertsm_count(const struct tds_alertsm *sm);
const struct tds_alert *tds_alertsm_at(const struct tds_alertsm *sm, size_t i);

#endif
