/* channels — alert notices to log, webhook and SMTP (see channels.h).
 *
 * Owns one delivery thread per channel configured, and one queue. Each
 * queued item remembers which channels still owe a delivery and when the
 * next attempt is due; each channel's thread takes only its own, so a dead
 * SMTP server delays only email, and only by its own backoff. libcurl easy
 * handles are used on their thread alone; the loop thread never waits here.
 */
#include "channels.h"

#include <errno.h>
#include <jansson.h>
#include <curl/curl.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

enum { CH_WEBHOOK = 0, CH_EMAIL, N_CH };
static const char *const ch_names[N_CH] = {"webhook", "email"};

struct item {
    char *subject;      /* for logs */
    char *body[N_CH];   /* NULL = nothing (more) to deliver on that channel */
    int attempts[N_CH];
    int64_t due_ms[N_CH];
    bool busy[N_CH];    /* being delivered by that channel's thread: never dropped */
};

struct tds_channels {
    char *webhook_url, *smtp_url, *smtp_from, *smtp_to, *smtp_user, *smtp_password;
    int64_t timeout_ms, retry_min_ms, retry_max_ms;
    int max_attempts;
    size_t queue_max;
    struct tds_metrics *metrics;
    struct tds_series *m_sent[N_CH], *m_failed[N_CH], *m_dropped;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread[N_CH];
    struct worker {
        struct tds_channels *ch;
        int c;
    } worker[N_CH];
    bool running[N_CH];  /* that channel's thread was started */
    bool started, stop, curl_inited;
    atomic_bool stopping; /* read by a delivery in progress: ends it */
    struct item **q;
    size_t n, cap;
    struct tds_log_limit fail_limit;
};

/* ---- pure helpers ---- */

static const char *kind_word(enum tds_notice_kind k)
{
    return k == TDS_NOTICE_KIND_RESOLVED ? "RESOLVED"
           : k == TDS_NOTICE_KIND_ESCALATED ? "ESCALATED"
                                            : "FIRING";
}

static const char *color_for(const struct tds_notice *n)
{
    if (n->kind == TDS_NOTICE_KIND_RESOLVED)
        return "good";
    if (!n->severity)
        return "#439FE0";
    if (strcmp(n->severity, "critical") == 0)
        return "#7B0000";
    if (strcmp(n->severity, "error") == 0)
        return "danger";
    if (strcmp(n->severity, "warning") == 0)
        return "warning";
    return "#439FE0";
}

static void fmt_time(int64_t wall_ms, char *buf, size_t len)
{
    time_t t = (time_t)(wall_ms / 1000);
    struct tm tm;

    if (wall_ms <= 0 || !gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "-");
}

static void fmt_value(double v, char *buf, size_t len)
{
    if (isfinite(v) && v == (double)(long long)v && fabs(v) < 1e15)
        snprintf(buf, len, "%lld", (long long)v);
    else
        snprintf(buf, len, "%.4g", v);
}

char *tds_channels_subject(const struct tds_notice *n)
{
    struct tds_buf b = {0};
    char *out;

    if (tds_buf_addf(&b, "[tds %s %s] %s: %s", kind_word(n->kind),
                     n->severity ? n->severity : "-", n->rule ? n->rule : "-",
                     n->summary ? n->summary : "") != 0 ||
        tds_buf_add(&b, "", 1) != 0) {
        tds_buf_deinit(&b);
        return NULL;
    }
    out = b.p;
    /* a subject is one header line, whatever the summary holds */
    for (char *p = out; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    /* and ends with a word: folded, trailing blanks made a line of blanks */
    for (size_t n = strlen(out); n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\t'); n--)
        out[n - 1] = '\0';
    return out;
}

static int add_field(json_t *fields, const char *title, const char *value, bool is_short)
{
    json_t *f;

    if (!value)
        return 0;
    f = json_pack("{s:s, s:s, s:b}", "title", title, "value", value, "short", is_short);
    return f ? json_array_append_new(fields, f) : -1;
}

char *tds_channels_slack_body(const struct tds_notice *n)
{
    char value[64], fired[32], idbuf[32];
    json_t *root = NULL, *att, *fields = json_array();
    char *title = tds_channels_subject(n), *out = NULL;

    if (!fields || !title)
        goto out;
    fmt_value(n->value, value, sizeof(value));
    fmt_time(n->fired_wall_ms, fired, sizeof(fired));
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)n->id);
    if (add_field(fields, "Severity", n->severity, true) || add_field(fields, "Rule", n->rule, true) ||
        add_field(fields, "Organization", n->org, true) ||
        add_field(fields, "Entity", n->entity, true) ||
        add_field(fields, "Value", n->kind == TDS_NOTICE_KIND_RESOLVED ? NULL : value, true) ||
        add_field(fields, "Fired at", fired, true) || add_field(fields, "Alert id", idbuf, true) ||
        add_field(fields, "Evaluated by", n->instance, true))
        goto out;
    att = json_pack("{s:s, s:s, s:s, s:s, s:O, s:I}", "fallback", title, "color", color_for(n),
                    "title", title, "text", n->summary ? n->summary : "", "fields", fields, "ts",
                    (json_int_t)(n->wall_ms / 1000));
    if (!att)
        goto out;
    root = json_pack("{s:s, s:[o]}", "text", title, "attachments", att);
    if (!root)
        goto out;
    out = json_dumps(root, JSON_COMPACT);
out:
    json_decref(root);
    json_decref(fields);
    free(title);
    return out;
}

static bool ascii_only(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* RFC 2047 encoded words of at most 42 bytes of UTF-8 each (56 base64
 * characters, 68 with the markers: under the 75 allowed, and 77 after
 * "Subject: "), cut between characters, each on a line of its own. */
#define WORD_BYTES 42

static int add_encoded_words(struct tds_buf *b, const char *s)
{
    size_t n = strlen(s);
    unsigned char out[4 * ((WORD_BYTES + 2) / 3) + 1];

    for (size_t i = 0; i < n;) {
        size_t k = n - i < WORD_BYTES ? n - i : WORD_BYTES;
        /* never end a word inside a character: back off its continuation bytes */
        while (k > 1 && i + k < n && ((unsigned char)s[i + k] & 0xC0) == 0x80)
            k--;
        int len = EVP_EncodeBlock(out, (const unsigned char *)s + i, (int)k);
        if (tds_buf_addf(b, "%s=?UTF-8?B?%.*s?=", i ? "\r\n " : "", len, (const char *)out) != 0)
            return -ENOMEM;
        i += k;
    }
    return 0;
}

/* A header line should hold at most 78 characters (RFC 5322 §2.1.1): an
 * ASCII subject is folded before a space that would pass it (a word longer
 * than a line stays whole, up to the 998 a line may hold). Returns 1 when a
 * word is too long even for that. */
#define HEADER_LINE_MAX 78

static int add_folded_ascii(struct tds_buf *b, const char *s, size_t col)
{
    for (const char *w = s; *w;) {
        /* the next piece: its spaces, then a word */
        const char *e = w;
        while (*e == ' ')
            e++;
        while (*e && *e != ' ')
            e++;
        size_t n = (size_t)(e - w);
        if (n > 900)
            return 1;
        if (w != s && *w == ' ' && col + n > HEADER_LINE_MAX) {
            if (tds_buf_add(b, "\r\n", 2) != 0)
                return -ENOMEM;
            col = 0;
        }
        if (tds_buf_add(b, w, n) != 0)
            return -ENOMEM;
        col += n;
        w = e;
    }
    return 0;
}

/* The body goes as 8bit text, whose lines SMTP takes up to 998 bytes (RFC
 * 5321 §4.5.3.1.6): a longer one (an error or details that never end) goes
 * on over lines that begin with a space, each cut between characters. */
#define BODY_LINE_MAX 998

static int fold_body_lines(struct tds_buf *out, const char *m, size_t n)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m[i];
        if (c == '\n') {
            col = 0;
        } else if (c != '\r' && col >= BODY_LINE_MAX - 8 &&
                   ((c & 0xC0) != 0x80 || col >= BODY_LINE_MAX - 4)) {
            /* between characters; a run of stray continuation bytes (text
             * that is not UTF-8) is cut anyway before the limit */
            if (tds_buf_add(out, "\r\n ", 3) != 0)
                return -ENOMEM;
            col = 1;
        }
        if (tds_buf_add(out, m + i, 1) != 0)
            return -ENOMEM;
        if (c != '\n')
            col++;
    }
    return 0;
}

char *tds_channels_email(const struct tds_notice *n, const char *from, const char *to)
{
    char *subject = tds_channels_subject(n), value[64], fired[32], date[64];
    struct tds_buf b = {0};
    time_t t = (time_t)(n->wall_ms / 1000);
    struct tm tm;
    int rc = 0;

    if (!subject)
        return NULL;
    fmt_value(n->value, value, sizeof(value));
    fmt_time(n->fired_wall_ms, fired, sizeof(fired));
    if (!gmtime_r(&t, &tm) || strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm) == 0)
        snprintf(date, sizeof(date), "Thu, 01 Jan 1970 00:00:00 +0000");
    rc |= tds_buf_addf(&b, "Date: %s\r\nFrom: %s\r\nTo: %s\r\nSubject: ", date, from, to);
    if (!ascii_only(subject)) {
        rc |= add_encoded_words(&b, subject);
    } else {
        size_t mark = b.len;
        int f = add_folded_ascii(&b, subject, sizeof("Subject: ") - 1);
        if (f == 1) {
            b.len = mark;
            f = add_encoded_words(&b, subject);
        }
        rc |= f;
    }
    rc |= tds_buf_addf(&b,
                       "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                       "Content-Transfer-Encoding: 8bit\r\nX-Tds-Alert-Id: %lld\r\n\r\n",
                       (long long)n->id);
    rc |= tds_buf_addf(&b, "%s\r\n\r\n", n->summary ? n->summary : "");
    rc |= tds_buf_addf(&b, "state:        %s\r\nseverity:     %s\r\nrule:         %s\r\n",
                       kind_word(n->kind), n->severity ? n->severity : "-",
                       n->rule ? n->rule : "-");
    if (n->org)
        rc |= tds_buf_addf(&b, "organization: %s\r\n", n->org);
    if (n->entity)
        rc |= tds_buf_addf(&b, "entity:       %s\r\n", n->entity);
    if (n->kind != TDS_NOTICE_KIND_RESOLVED)
        rc |= tds_buf_addf(&b, "value:        %s\r\n", value);
    rc |= tds_buf_addf(&b, "fired at:     %s\r\nalert id:     %lld\r\n", fired, (long long)n->id);
    if (n->instance)
        rc |= tds_buf_addf(&b, "evaluated by: %s\r\n", n->instance);
    if (n->details)
        rc |= tds_buf_addf(&b, "details:      %s\r\n", n->details);
    rc |= tds_buf_addf(&b, "\r\nAcknowledge with: tds-writer alerts ack %lld --by <name>\r\n",
                       (long long)n->id);
    rc |= tds_buf_add(&b, "", 1);
    free(subject);
    if (rc != 0) {
        tds_buf_deinit(&b);
        return NULL;
    }
    /* no bare LF may reach SMTP: a summary or details with newlines were
     * written with %s, turn them into spaces */
    for (size_t i = 0; i + 1 < b.len; i++)
        if (b.p[i] == '\n' && (i == 0 || b.p[i - 1] != '\r'))
            b.p[i] = ' ';
    /* only the body: the header lines are folded where they are written */
    struct tds_buf folded = {0};
    const char *sep = strstr(b.p, "\r\n\r\n");
    size_t head = sep ? (size_t)(sep - b.p) + 4 : 0;
    if (tds_buf_add(&folded, b.p, head) != 0 ||
        fold_body_lines(&folded, b.p + head, b.len - head) != 0) {
        tds_buf_deinit(&folded);
        tds_buf_deinit(&b);
        return NULL;
    }
    tds_buf_deinit(&b);
    return folded.p;
}

/* ---- delivery ---- */

static void item_free(struct item *it)
{
    if (!it)
        return;
    free(it->subject);
    for (int c = 0; c < N_CH; c++)
        free(it->body[c]);
    free(it);
}

static char *dup_or_null(const char *s)
{
    return s && s[0] ? strdup(s) : NULL;
}

struct upload {
    const char *p;
    size_t left;
};

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct upload *u = ud;
    size_t n = size * nmemb;

    if (n > u->left)
        n = u->left;
    memcpy(buf, u->p, n);
    u->p += n;
    u->left -= n;
    return n;
}

static size_t discard_cb(char *buf, size_t size, size_t nmemb, void *ud)
{
    (void)buf;
    (void)ud;
    return size * nmemb;
}

/* One attempt; 0 on success, else a short reason in err. */
/* libcurl's progress callback: a delivery in progress ends at shutdown. */
static int xfer_cb(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return atomic_load(&((struct tds_channels *)ud)->stopping) ? 1 : 0;
}

static int deliver(struct tds_channels *ch, int c, const char *body, char *err, size_t errlen)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL, *rcpt = NULL;
    struct upload up = {body, strlen(body)};
    CURLcode cc;
    long code = 0;
    int rc = -1;

    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xfer_cb);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, ch);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)ch->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(ch->timeout_ms < 5000 ? ch->timeout_ms : 5000));
    if (c == CH_WEBHOOK) {
        hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_URL, ch->webhook_url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard_cb);
    } else {
        char addr[512];
        const char *p = ch->smtp_to;

        while (*p) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);

            while (l && (*p == ' ')) {
                p++;
                l--;
            }
            while (l && p[l - 1] == ' ')
                l--;
            if (l && l + 3 < sizeof(addr)) {
                snprintf(addr, sizeof(addr), "<%.*s>", (int)l, p);
                rcpt = curl_slist_append(rcpt, addr);
            }
            p = e ? e + 1 : p + strlen(p);
        }
        snprintf(addr, sizeof(addr), "<%s>", ch->smtp_from);
        curl_easy_setopt(h, CURLOPT_URL, ch->smtp_url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
        curl_easy_setopt(h, CURLOPT_MAIL_FROM, addr);
        curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(h, CURLOPT_READDATA, &up);
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_INFILESIZE, (long)up.left);
        /* smtps:// is TLS from the start; smtp:// upgrades with STARTTLS,
         * which it must do before credentials go out: a server that does
         * not offer it (or a man in the middle who strips the offer) would
         * get the password in the clear. Without credentials, STARTTLS
         * when offered. */
        bool creds = ch->smtp_user || ch->smtp_password;
        curl_easy_setopt(h, CURLOPT_USE_SSL,
                         strncmp(ch->smtp_url, "smtps://", 8) == 0 || creds ? (long)CURLUSESSL_ALL
                                                                            : (long)CURLUSESSL_TRY);
        if (ch->smtp_user)
            curl_easy_setopt(h, CURLOPT_USERNAME, ch->smtp_user);
        if (ch->smtp_password)
            curl_easy_setopt(h, CURLOPT_PASSWORD, ch->smtp_password);
    }
    cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (cc != CURLE_OK)
        snprintf(err, errlen, "%s", curl_easy_strerror(cc));
    else if (c == CH_WEBHOOK && (code < 200 || code > 299))
        snprintf(err, errlen, "HTTP status %ld", code);
    else
        rc = 0;
    curl_slist_free_all(hdrs);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(h);
    return rc;
}

/* One channel's deliveries, in the queue's order as they fall due. */
static void *thread_main(void *ud)
{
    struct worker *wk = ud;
    struct tds_channels *ch = wk->ch;
    const int c = wk->c;

    pthread_mutex_lock(&ch->mu);
    for (;;) {
        int64_t now = tds_now_ms(), next = -1;
        struct item *it = NULL;

        if (ch->stop)
            break;
        for (size_t i = 0; i < ch->n && !it; i++) {
            if (!ch->q[i]->body[c])
                continue;
            if (ch->q[i]->due_ms[c] <= now)
                it = ch->q[i];
            else if (next < 0 || ch->q[i]->due_ms[c] < next)
                next = ch->q[i]->due_ms[c];
        }
        if (!it) {
            if (next < 0) {
                pthread_cond_wait(&ch->cv, &ch->mu);
            } else {
                struct timespec ts;
                int64_t wait = next - now;

                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += wait / 1000;
                ts.tv_nsec += (wait % 1000) * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&ch->cv, &ch->mu, &ts);
            }
            continue;
        }
        /* deliver without the lock; the item stays queued meanwhile, marked
         * busy so that an overflowing queue drops another one */
        char *body = it->body[c], err[256] = "";
        it->body[c] = NULL;
        it->busy[c] = true;
        it->attempts[c]++;
        pthread_mutex_unlock(&ch->mu);
        int rc = deliver(ch, c, body, err, sizeof(err));
        pthread_mutex_lock(&ch->mu);
        if (rc == 0) {
            free(body);
            if (ch->m_sent[c])
                tds_series_inc(ch->m_sent[c], 1);
        } else {
            int64_t backoff = ch->retry_min_ms;

            for (int k = 1; k < it->attempts[c] && backoff < ch->retry_max_ms; k++)
                backoff *= 2;
            if (backoff > ch->retry_max_ms)
                backoff = ch->retry_max_ms;
            if (it->attempts[c] >= ch->max_attempts || ch->stop) {
                /* once per notice and channel: never left out for the
                 * retries' warnings logged just before */
                tds_log(TDS_LOG_ERROR, NULL,
                        "could not deliver alert notice '%s' by %s: %s, giving up after %d attempts",
                        it->subject, ch_names[c], err, it->attempts[c]);
                free(body);
            } else {
                tds_log_limited(&ch->fail_limit, TDS_LOG_WARN, NULL,
                                "could not deliver alert notice '%s' by %s: %s, retrying in "
                                "%lld ms", it->subject, ch_names[c], err, (long long)backoff);
                it->body[c] = body;
                it->due_ms[c] = tds_now_ms() + backoff;
            }
            /* after the log: a failure counted is logged */
            if (ch->m_failed[c])
                tds_series_inc(ch->m_failed[c], 1);
        }
        it->busy[c] = false;
        bool left = false;
        for (int k = 0; k < N_CH; k++)
            left = left || it->body[k] || it->busy[k];
        for (size_t i = 0; !left && i < ch->n; i++)
            if (ch->q[i] == it) {
                item_free(it);
                memmove(&ch->q[i], &ch->q[i + 1], (ch->n - i - 1) * sizeof(ch->q[0]));
                ch->n--;
                break;
            }
    }
    pthread_mutex_unlock(&ch->mu);
    return NULL;
}

int tds_channels_new(struct tds_channels **out, const struct tds_channels_cfg *cfg,
                     struct tds_metrics *metrics, char *err, size_t errlen)
{
    struct tds_channels *ch = calloc(1, sizeof(*ch));
    int rc;

    *out = NULL;
    if (!ch)
        return -ENOMEM;
    pthread_mutex_init(&ch->mu, NULL);
    pthread_cond_init(&ch->cv, NULL);
    ch->fail_limit.interval_ms = 10000;
    ch->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 10000;
    ch->queue_max = cfg->queue_max ? cfg->queue_max : 256;
    ch->retry_min_ms = cfg->retry_min_ms > 0 ? cfg->retry_min_ms : 1000;
    ch->retry_max_ms = cfg->retry_max_ms > 0 ? cfg->retry_max_ms : 300000;
    ch->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 10;
    ch->metrics = metrics;
    ch->webhook_url = dup_or_null(cfg->webhook_url);
    ch->smtp_url = dup_or_null(cfg->smtp_url);
    ch->smtp_from = dup_or_null(cfg->smtp_from);
    ch->smtp_to = dup_or_null(cfg->smtp_to);
    ch->smtp_user = dup_or_null(cfg->smtp_user);
    ch->smtp_password = dup_or_null(cfg->smtp_password);
    if ((cfg->webhook_url && cfg->webhook_url[0] && !ch->webhook_url) ||
        (cfg->smtp_url && cfg->smtp_url[0] && !ch->smtp_url)) {
        rc = -ENOMEM;
        goto fail;
    }
    if (ch->webhook_url && strncmp(ch->webhook_url, "http://", 7) != 0 &&
        strncmp(ch->webhook_url, "https://", 8) != 0) {
        snprintf(err, errlen, "invalid TDS_ALERT_WEBHOOK_URL: expected an http:// or https:// URL");
        rc = TDS_E_INVALID;
        goto fail;
    }
    if (ch->smtp_url) {
        if (strncmp(ch->smtp_url, "smtp://", 7) != 0 && strncmp(ch->smtp_url, "smtps://", 8) != 0) {
            snprintf(err, errlen, "invalid TDS_ALERT_SMTP_URL: expected smtp:// or smtps://");
            rc = TDS_E_INVALID;
            goto fail;
        }
        /* The URL is printed (--print-config) and is no secret: credentials
         * in it would be. */
        const char *auth = strstr(ch->smtp_url, "://") + 3;
        if (memchr(auth, '@', strcspn(auth, "/?#"))) {
            snprintf(err, errlen,
                     "invalid TDS_ALERT_SMTP_URL: it carries a user or password; give them in "
                     "TDS_ALERT_SMTP_USER and TDS_ALERT_SMTP_PASSWORD (secrets)");
            rc = TDS_E_INVALID;
            goto fail;
        }
        if (!ch->smtp_from || !ch->smtp_to) {
            snprintf(err, errlen, "missing required setting %s (needed with TDS_ALERT_SMTP_URL)",
                     !ch->smtp_from ? "TDS_ALERT_SMTP_FROM" : "TDS_ALERT_SMTP_TO");
            rc = TDS_E_INVALID;
            goto fail;
        }
    }
    if (metrics) {
        for (int c = 0; c < N_CH; c++) {
            ch->m_sent[c] = tds_metrics_getf(metrics, TDS_COUNTER, "tds_alert_notifications_total",
                                             "Alert notices delivered or failed, by channel",
                                             "channel=\"%s\",result=\"sent\"", ch_names[c]);
            ch->m_failed[c] = tds_metrics_getf(metrics, TDS_COUNTER,
                                               "tds_alert_notifications_total",
                                               "Alert notices delivered or failed, by channel",
                                               "channel=\"%s\",result=\"failed\"", ch_names[c]);
        }
        ch->m_dropped = tds_metrics_get(metrics, TDS_COUNTER, "tds_alert_notices_dropped_total",
                                        "Alert notices dropped because the delivery queue was full",
                                        "", NULL, 0);
    }
    if (ch->webhook_url || ch->smtp_url) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            rc = -ENOMEM;
            goto fail;
        }
        ch->curl_inited = true;
        ch->started = true;
        for (int c = 0; c < N_CH; c++) {
            if (!(c == CH_WEBHOOK ? ch->webhook_url : ch->smtp_url))
                continue;
            ch->worker[c] = (struct worker){ch, c};
            if ((rc = pthread_create(&ch->thread[c], NULL, thread_main, &ch->worker[c])) != 0) {
                rc = -rc;
                goto fail;
            }
            ch->running[c] = true;
        }
    }
    *out = ch;
    return 0;
fail:
    tds_channels_free(ch);
    return rc;
}

struct tds_channels *tds_channels_free(struct tds_channels *ch)
{
    if (!ch)
        return NULL;
    if (ch->started) {
        int64_t deadline = tds_now_ms() + 2000;

        /* give what is due a short chance, then stop */
        while (tds_now_ms() < deadline) {
            bool due = false;
            int64_t now = tds_now_ms();

            pthread_mutex_lock(&ch->mu);
            for (size_t i = 0; i < ch->n && !due; i++)
                for (int k = 0; k < N_CH; k++)
                    due = due || (ch->q[i]->body[k] && ch->q[i]->due_ms[k] <= now &&
                                  ch->q[i]->attempts[k] == 0);
            pthread_mutex_unlock(&ch->mu);
            if (!due)
                break;
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&ch->mu);
        ch->stop = true;
        atomic_store(&ch->stopping, true);
        pthread_cond_broadcast(&ch->cv);
        pthread_mutex_unlock(&ch->mu);
        for (int c = 0; c < N_CH; c++)
            if (ch->running[c])
                pthread_join(ch->thread[c], NULL);
    }
    for (size_t i = 0; i < ch->n; i++)
        item_free(ch->q[i]);
    free(ch->q);
    if (ch->curl_inited)
        curl_global_cleanup();
    free(ch->webhook_url);
    free(ch->smtp_url);
    free(ch->smtp_from);
    free(ch->smtp_to);
    free(ch->smtp_user);
    free(ch->smtp_password);
    pthread_cond_destroy(&ch->cv);
    pthread_mutex_destroy(&ch->mu);
    free(ch);
    return NULL;
}

static void log_notice(const struct tds_notice *n)
{
    struct tds_log_ctx ctx = {.org = n->org, .entity = n->entity};
    enum tds_log_level lvl = TDS_LOG_INFO;

    if (n->kind != TDS_NOTICE_KIND_RESOLVED && n->severity) {
        if (strcmp(n->severity, "warning") == 0)
            lvl = TDS_LOG_WARN;
        else if (strcmp(n->severity, "error") == 0 || strcmp(n->severity, "critical") == 0)
            lvl = TDS_LOG_ERROR;
    }
    tds_log(lvl, &ctx, "alert %lld %s: %s [%s, rule %s]", (long long)n->id,
            n->kind == TDS_NOTICE_KIND_RESOLVED    ? "resolved"
            : n->kind == TDS_NOTICE_KIND_ESCALATED ? "escalated"
                                                   : "firing",
            n->summary ? n->summary : "", n->severity ? n->severity : "-", n->rule ? n->rule : "-");
}

void tds_channels_post(struct tds_channels *ch, const struct tds_notice *n)
{
    struct item *it;

    log_notice(n);
    if (!ch || !ch->started)
        return;
    it = calloc(1, sizeof(*it));
    if (!it || !(it->subject = tds_channels_subject(n)))
        goto nomem;
    if (ch->webhook_url && !(it->body[CH_WEBHOOK] = tds_channels_slack_body(n)))
        goto nomem;
    if (ch->smtp_url && !(it->body[CH_EMAIL] = tds_channels_email(n, ch->smtp_from, ch->smtp_to)))
        goto nomem;
    pthread_mutex_lock(&ch->mu);
    for (size_t i = 0; ch->n >= ch->queue_max && i < ch->n; i++) {
        if (ch->q[i]->busy[CH_WEBHOOK] || ch->q[i]->busy[CH_EMAIL])
            continue;
        /* drop the oldest: newer notices describe the present */
        item_free(ch->q[i]);
        memmove(&ch->q[i], &ch->q[i + 1], (ch->n - i - 1) * sizeof(ch->q[0]));
        ch->n--;
        if (ch->m_dropped)
            tds_series_inc(ch->m_dropped, 1);
    }
    if (ch->n == ch->cap) {
        size_t nc = ch->cap ? ch->cap * 2 : 16;
        struct item **q = realloc(ch->q, nc * sizeof(*q));

        if (!q) {
            pthread_mutex_unlock(&ch->mu);
            goto nomem;
        }
        ch->q = q;
        ch->cap = nc;
    }
    ch->q[ch->n++] = it;
    pthread_cond_broadcast(&ch->cv); /* each channel's thread */
    pthread_mutex_unlock(&ch->mu);
    return;
nomem:
    item_free(it);
    tds_error("out of memory queueing an alert notice, skipping its delivery");
}

size_t tds_channels_backlog(struct tds_channels *ch)
{
    size_t n;

    if (!ch)
        return 0;
    pthread_mutex_lock(&ch->mu);
    n = ch->n;
    pthread_mutex_unlock(&ch->mu);
    return n;
}
