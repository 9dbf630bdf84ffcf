/* test_alerts_channels — the notice bodies: Slack-compatible webhook JSON,
 * the subject line and the email message; and that posting without any
 * remote channel only logs. */
#include <jansson.h>
#include <openssl/evp.h>
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

/* The header's value from "Subject: " to its end, unfolded (CRLF before a
 * space removed); each line checked against 78 characters. */
static char *subject_of(const char *m)
{
    const char *p = strstr(m, "\r\nSubject: ");
    T_TRUE(p != NULL);
    p += 11;
    const char *end = p;
    for (;;) {
        const char *eol = strstr(end, "\r\n");
        T_TRUE(eol != NULL);
        const char *line = end == p ? p - 9 : end;
        if (eol - line > 78)
            T_FAIL("a subject line of %td characters", eol - line);
        end = eol + 2;
        if (*end != ' ' && *end != '\t')
            break;
    }
    char *out = calloc(1, (size_t)(end - p) + 1);
    size_t k = 0;
    for (const char *q = p; q < end - 2; q++) {
        if (q[0] == '\r' && q[1] == '\n')
            q++;
        else
            out[k++] = *q;
    }
    return out;
}

/* RFC 2047 words of one line, decoded and joined: words separated by
 * folding whitespace only join without it. */
static char *decode_words(const char *v)
{
    char *out = calloc(1, strlen(v) + 1);
    size_t k = 0;
    for (const char *w = strstr(v, "=?UTF-8?B?"); w; w = strstr(w, "=?UTF-8?B?")) {
        w += 10;
        const char *e = strstr(w, "?=");
        T_TRUE(e != NULL);
        T_TRUE(e - w + 12 <= 75); /* an encoded word holds at most 75 characters */
        unsigned char buf[128];
        int n = EVP_DecodeBlock(buf, (const unsigned char *)w, (int)(e - w));
        T_TRUE(n >= 0);
        while (n > 0 && e[-1] == '=' && e - w > 0) { /* EVP_DecodeBlock counts the padding */
            n--;
            e--;
        }
        /* each word decodes to whole characters */
        T_TRUE(n > 0 && (buf[0] & 0xC0) != 0x80);
        memcpy(out + k, buf, (size_t)n);
        k += (size_t)n;
        w = strstr(w, "?=") + 2;
    }
    return out;
}

static void test_email_long_lines(void)
{
    struct tds_notice n = sample(TDS_NOTICE_KIND_FIRING);
    /* an Arabic summary, 2 bytes a letter, much longer than a line */
    const char *ar = "مزامنة الأصناف للمؤسسة ٦٠٠ فشلت مرة واحدة متتالية بسبب خطأ في الخادم ";
    char summary[1024] = "", want[1200];
    for (int i = 0; i < 5; i++)
        strcat(summary, ar);
    n.summary = summary;
    char *m = tds_channels_email(&n, "a@b", "c@d");
    T_TRUE(m != NULL);
    char *v = subject_of(m);
    char *got = decode_words(v);
    snprintf(want, sizeof(want), "[tds FIRING error] sync_failed: %s", summary);
    want[strlen(want) - 1] = '\0'; /* the summary's last space: a subject ends with a word */
    T_STR(got, want);
    free(got);
    free(v);
    free(m);

    /* a long ASCII subject is folded before spaces, and reads back whole */
    n.summary = "sync of items for org 600 failed 3 times in a row: the last error was a "
                "timeout after 30 s waiting for www.zohoapis.com to answer the list page";
    m = tds_channels_email(&n, "a@b", "c@d");
    v = subject_of(m);
    snprintf(want, sizeof(want), "[tds FIRING error] sync_failed: %s", n.summary);
    T_STR(v, want);
    T_TRUE(strstr(m, "=?UTF-8?") == NULL);
    free(v);
    free(m);

    /* blanks at the end of a long subject make no line of blanks */
    n.summary = "a summary that ends in many blanks                                            "
                "                                                                            ";
    m = tds_channels_email(&n, "a@b", "c@d");
    v = subject_of(m);
    T_STR(v, "[tds FIRING error] sync_failed: a summary that ends in many blanks");
    free(v);
    free(m);

    /* details of 5,000 bytes (Arabic and ASCII): no line over 998 bytes, no
     * character cut, and the text reads back once the folds are taken out */
    char *details = calloc(1, 6000);
    while (strlen(details) < 5000)
        strcat(details, strlen(details) % 3 ? ar : "{\"error\":\"x\"} ");
    n.summary = "short";
    n.details = details;
    m = tds_channels_email(&n, "a@b", "c@d");
    T_TRUE(m != NULL);
    for (const char *l = m; *l;) {
        const char *eol = strstr(l, "\r\n");
        size_t len = eol ? (size_t)(eol - l) : strlen(l);
        if (len > 998)
            T_FAIL("a line of %zu bytes", len);
        if (eol && (((unsigned char)eol[2]) & 0xC0) == 0x80)
            T_FAIL("a character cut at a fold");
        l = eol ? eol + 2 : l + len;
    }
    char *flat = calloc(1, strlen(m) + 1);
    size_t k = 0;
    /* no line of the body begins with a space but a fold's */
    for (const char *q = strstr(m, "\r\n\r\n"); *q; q++) {
        if (q[0] == '\r' && q[1] == '\n' && q[2] == ' ')
            q += 2; /* a fold: CRLF and the space it added */
        else
            flat[k++] = *q;
    }
    char line[6100];
    snprintf(line, sizeof(line), "details:      %s\r\n", details);
    T_TRUE(strstr(flat, line) != NULL);
    free(flat);
    free(details);
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
    T_RUN(test_email_long_lines);
    T_RUN(test_post_log_only);
    return 0;
}
