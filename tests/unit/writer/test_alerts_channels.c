/* test_alerts_channels — the notice bodies: Slack-compatible webhook JSON,
 * the subject line and the email message; and that posting without any
 * remote channel only logs. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "assert.h"
#include "channels.h"

static struct tds_notice sample(enum tds_notice_kind kind)
{
    struct tds_notice n = {
        .kind = kind,
        .id = 42,
        .rule = "sync_failed",
        .severity = "error",
        .org = "600",
        .entity = "items",
        .summary = "sync of items for org 600 failed 1 time in a row: \"boom\"\nsecond line",
        .details = "{\"run_id\":\"r1\"}",
        .value = 1,
        .instance = "writer-a",
        .fired_wall_ms = 1700000000000,
        .wall_ms = 1700000060000,
    };
    return n;
}

static const char *field(json_t *fields, const char *title)
{
    size_t i;
    json_t *f;

    json_array_foreach(fields, i, f) {
        if (strcmp(json_string_value(json_object_get(f, "title")), title) == 0)
            return json_string_value(json_object_get(f, "value"));
    }
    return NULL;
}

static void test_slack_body(void)
{
    struct tds_notice n = sample(TDS_NOTICE_KIND_FIRING);
    char *body = tds_channels_slack_body(&n);
    json_error_t je;
    json_t *root, *att, *fields;

    T_TRUE(body != NULL);
    root = json_loads(body, 0, &je);
    if (!root)
        T_FAIL("not JSON: %s: %s", je.text, body);
    T_STR(json_string_value(json_object_get(root, "text")),
          "[tds FIRING error] sync_failed: sync of items for org 600 failed 1 time in a row: "
          "\"boom\" second line");
    att = json_array_get(json_object_get(root, "attachments"), 0);
    T_TRUE(att != NULL);
    T_INT(json_array_size(json_object_get(root, "attachments")), ==, 1);
    T_STR(json_string_value(json_object_get(att, "color")), "danger");
    T_TRUE(strstr(json_string_value(json_object_get(att, "text")), "\"boom\"\nsecond") != NULL);
    T_INT(json_integer_value(json_object_get(att, "ts")), ==, 1700000060);
    fields = json_object_get(att, "fields");
    T_STR(field(fields, "Severity"), "error");
    T_STR(field(fields, "Organization"), "600");
    T_STR(field(fields, "Entity"), "items");
    T_STR(field(fields, "Value"), "1");
    T_STR(field(fields, "Alert id"), "42");
    T_STR(field(fields, "Fired at"), "2023-11-14T22:13:20Z");
    T_STR(field(fields, "Evaluated by"), "writer-a");
    json_decref(root);
    free(body);

    /* resolved: green, no value; missing org/entity leave their fields out */
    n = sample(TDS_NOTICE_KIND_RESOLVED);
    n.org = NULL;
    n.entity = NULL;
    n.severity = "critical";
    body = tds_channels_slack_body(&n);
    root = json_loads(body, 0, &je);
    T_TRUE(root != NULL);
    att = json_array_get(json_object_get(root, "attachments"), 0);
    T_STR(json_string_value(json_object_get(att, "color")), "good");
    fields = json_object_get(att, "fields");
    T_NULL(field(fields, "Value"));
    T_NULL(field(fields, "Organization"));
    T_TRUE(strncmp(json_string_value(json_object_get(root, "text")), "[tds RESOLVED critical]", 23) ==
           0);
    json_decref(root);
    free(body);
}

static void test_email(void)
{
    struct tds_notice n = sample(TDS_NOTICE_KIND_ESCALATED);
    char *m = tds_channels_email(&n, "tds@example.com", "ops@example.com, oncall@example.com");
    char *body;

    T_TRUE(m != NULL);
    T_TRUE(strncmp(m, "Date: Tue, 14 Nov 2023 22:14:20 +0000\r\n", 39) == 0);
    T_TRUE(strstr(m, "\r\nFrom: tds@example.com\r\n") != NULL);
    T_TRUE(strstr(m, "\r\nTo: ops@example.com, oncall@example.com\r\n") != NULL);
    T_TRUE(strstr(m, "\r\nSubject: [tds ESCALATED error] sync_failed: sync of items") != NULL);
    T_TRUE(strstr(m, "X-Tds-Alert-Id: 42\r\n") != NULL);
    body = strstr(m, "\r\n\r\n");
    T_TRUE(body != NULL);
    T_TRUE(strstr(body, "organization: 600\r\n") != NULL);
    T_TRUE(strstr(body, "tds-writer alerts ack 42 --by") != NULL);
    /* no bare LF anywhere: the summary's newline became a space */
    for (char *p = m; *p; p++)
        if (*p == '\n' && (p == m || p[-1] != '\r'))
            T_FAIL("bare LF at offset %td", p - m);
    free(m);

    /* non-ASCII subjects are encoded words */
    n.summary = "stock of Größe failed";
    m = tds_channels_email(&n, "a@b", "c@d");
    T_TRUE(strstr(m, "\r\nSubject: =?UTF-8?B?") != NULL);
    free(m);
}

static void test_post_log_only(void)
{
    struct tds_channels *ch = NULL;
    struct tds_channels_cfg cfg = {0};
    struct tds_notice n = sample(TDS_NOTICE_KIND_FIRING);
    char err[256] = "";

    T_INT(tds_channels_new(&ch, &cfg, NULL, err, sizeof(err)), ==, 0);
    tds_channels_post(ch, &n);
    T_INT(tds_channels_backlog(ch), ==, 0);
    tds_channels_free(ch);

    cfg.smtp_url = "smtp://127.0.0.1:1";
    T_INT(tds_channels_new(&ch, &cfg, NULL, err, sizeof(err)), !=, 0);
    T_TRUE(strstr(err, "TDS_ALERT_SMTP_FROM") != NULL);
    cfg.smtp_url = "imap://x";
    T_INT(tds_channels_new(&ch, &cfg, NULL, err, sizeof(err)), !=, 0);
    T_TRUE(strstr(err, "invalid TDS_ALERT_SMTP_URL") != NULL);
    cfg.smtp_url = NULL;
    cfg.webhook_url = "ftp://x";
    T_INT(tds_channels_new(&ch, &cfg, NULL, err, sizeof(err)), !=, 0);
    T_TRUE(strstr(err, "invalid TDS_ALERT_WEBHOOK_URL") != NULL);
}

int main(void)
{
    T_RUN(test_slack_body);
    T_RUN(test_email);
    T_RUN(test_post_log_only);
    return 0;
}
