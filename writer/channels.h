/* channels — where alert notices go: the log (always), a webhook with a
 * Slack-compatible JSON body, and email over SMTP (libcurl).
 *
 * The engine posts a notice and returns at once: the log line is written on
 * the caller's thread, webhook and email deliveries run on the channels' own
 * thread from a bounded queue (full → the oldest notice is dropped and
 * counted). A failing channel is retried with backoff (1 s doubling to 5 min,
 * at most 10 attempts) without holding up other notices or the caller.
 * Secrets (SMTP password, webhook URL) never appear in logs.
 */
#ifndef TDS_CHANNELS_H
#define TDS_CHANNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tds_metrics;

enum tds_notice_kind { TDS_NOTICE_KIND_FIRING = 1, TDS_NOTICE_KIND_ESCALATED,
                       TDS_NOTICE_KIND_RESOLVED };

/* A notice as posted; tds_channels_post copies every string. */
struct tds_notice {
    enum tds_notice_kind kind;
    int64_t id;            /* tds.alerts id */
    const char *rule;
    const char *severity;  /* "info" … "critical" */
    const char *org, *entity; /* may be NULL */
    const char *summary;
    const char *details;   /* JSON object text or NULL */
    double value;
    const char *instance;  /* the writer instance that evaluated it */
    int64_t fired_wall_ms; /* epoch ms */
    int64_t wall_ms;       /* when this notice was made, epoch ms */
};

struct tds_channels_cfg {
    const char *webhook_url;   /* NULL/"" = off */
    const char *smtp_url;      /* smtp://host:port or smtps://host:port; NULL/"" = off */
    const char *smtp_from;
    const char *smtp_to;       /* comma-separated */
    const char *smtp_user, *smtp_password; /* optional */
    int64_t timeout_ms;        /* per attempt, default 10000 */
    size_t queue_max;          /* default 256 */
    int64_t retry_min_ms;      /* default 1000 */
    int64_t retry_max_ms;      /* default 300000 */
    int max_attempts;          /* default 10 */
};

/* ---- pure helpers (unit-tested) ---- */

/* The webhook body: {"text": "...", "attachments": [{"color", "title", "text",
 * "fields": [...], "ts"}]}. Returns a new string or NULL on ENOMEM. */
char *tds_channels_slack_body(const struct tds_notice *n);
/* The subject line: "[tds FIRING error] sync_failed: …". New string or NULL. */
char *tds_channels_subject(const struct tds_notice *n);
/* A complete RFC 5322 message (CRLF line ends, headers then plain text body).
 * `to` is the comma-separated list. New string or NULL. */
char *tds_channels_email(const struct tds_notice *n, const char *from, const char *to);

/* ---- delivery ---- */

struct tds_channels;

/* Copies cfg strings. Starts the delivery thread when webhook or SMTP is set.
 * Returns 0, TDS_E_INVALID (bad SMTP settings, message in err) or -errno. */
int tds_channels_new(struct tds_channels **out, const struct tds_channels_cfg *cfg,
                     struct tds_metrics *metrics, char *err, size_t errlen);
/* Stops the thread; deliveries still queued get up to 2 s, then are dropped. */
struct tds_channels *tds_channels_free(struct tds_channels *ch);
/* Log the notice and queue it for the other channels. Never blocks on I/O. */
void tds_channels_post(struct tds_channels *ch, const struct tds_notice *n);
/* Deliveries waiting or being retried (for tests and /status). */
size_t tds_channels_backlog(struct tds_channels *ch);

#endif
