/* log — one JSON object per line on stderr.
 *
 * Owns the process-wide stage name and level threshold (set once by main).
 * Each line is built in memory and written under one process-wide lock, so
 * lines from several threads never interleave (one write(2) is not enough:
 * a pipe, a container's stderr, takes at most PIPE_BUF bytes at once, and a
 * line may be 8 KiB and more). It never allocates without a bound: a
 * message longer than LOG_MSG_MAX is cut and marked with "...".
 */
#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_MSG_MAX 8192   /* formatted message text, before escaping */
#define LOG_FIELD_MAX 256  /* org/entity/run values */
#define LOG_STAGE_MAX 64

static _Atomic int log_level = TDS_LOG_INFO;
static char log_stage[LOG_STAGE_MAX] = "tds";

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void tds_log_init(const char *stage, enum tds_log_level level)
{
    if (stage)
        snprintf(log_stage, sizeof(log_stage), "%s", stage);
    atomic_store(&log_level, (int)level);
}

int tds_log_level_parse(const char *s, enum tds_log_level *out)
{
    static const struct {
        const char *name;
        enum tds_log_level level;
    } map[] = {
        {"debug", TDS_LOG_DEBUG}, {"info", TDS_LOG_INFO},   {"warn", TDS_LOG_WARN},
        {"warning", TDS_LOG_WARN}, {"error", TDS_LOG_ERROR},
    };

    if (!s)
        return TDS_E_INVALID;
    for (size_t i = 0; i < TDS_ARRAY_SIZE(map); i++) {
        if (strcasecmp(s, map[i].name) == 0) {
            *out = map[i].level;
            return 0;
        }
    }
    return TDS_E_INVALID;
}

enum tds_log_level tds_log_get_level(void) { return (enum tds_log_level)atomic_load(&log_level); }

/* JSON string body of s[0..n): quotes, backslashes and control characters
 * escaped; UTF-8 characters pass through, and a byte that does not start one
 * (text from outside cut or mis-encoded) becomes U+FFFD, so that every line
 * stays valid JSON text. */
static void json_escape(struct tds_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];

        switch (c) {
        case '"':
            tds_buf_add(b, "\\\"", 2);
            break;
        case '\\':
            tds_buf_add(b, "\\\\", 2);
            break;
        case '\n':
            tds_buf_add(b, "\\n", 2);
            break;
        case '\r':
            tds_buf_add(b, "\\r", 2);
            break;
        case '\t':
            tds_buf_add(b, "\\t", 2);
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                esc[0] = '\\';
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0xf];
                tds_buf_add(b, esc, 6);
            } else if (c < 0x80) {
                tds_buf_add(b, &s[i], 1);
            } else {
                size_t k = tds_utf8_char(s + i, n - i);
                unsigned cp = 0;
                if (k == 2)
                    cp = (c & 0x1fu) << 6 | ((unsigned char)s[i + 1] & 0x3fu);
                else if (k == 3)
                    cp = (c & 0x0fu) << 12 | ((unsigned char)s[i + 1] & 0x3fu) << 6 |
                         ((unsigned char)s[i + 2] & 0x3fu);
                if (k == 0) {
                    tds_buf_add(b, "\\ufffd", 6);
                } else if ((cp >= 0x80 && cp <= 0x9f) || cp == 0x061c || cp == 0x200e ||
                           cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
                           (cp >= 0x2066 && cp <= 0x2069)) {
                    /* C1 controls, direction marks and overrides, and the
                     * line and paragraph separators, from a name in Zoho's
                     * data say, would act on the terminal that shows the
                     * log, reorder what it shows, or look like a new line:
                     * escaped like C0 */
                    esc[0] = '\\';
                    esc[1] = 'u';
                    esc[2] = hex[cp >> 12];
                    esc[3] = hex[(cp >> 8) & 0xf];
                    esc[4] = hex[(cp >> 4) & 0xf];
                    esc[5] = hex[cp & 0xf];
                    tds_buf_add(b, esc, 6);
                    i += k - 1;
                } else {
                    tds_buf_add(b, &s[i], k);
                    i += k - 1;
                }
            }
        }
    }
}

static void add_field(struct tds_buf *b, const char *key, const char *value)
{
    size_t n;

    if (!value)
        return;
    n = strnlen(value, LOG_FIELD_MAX + 1);
    if (n > LOG_FIELD_MAX)
        n = tds_utf8_prefix(value, n, LOG_FIELD_MAX);
    tds_buf_addf(b, ",\"%s\":\"", key);
    json_escape(b, value, n);
    tds_buf_add(b, "\"", 1);
}

static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static void write_all(int fd, const char *p, size_t n)
{
    pthread_mutex_lock(&write_lock);
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            break; /* nowhere left to report a failing stderr */
        }
        p += w;
        n -= (size_t)w;
    }
    pthread_mutex_unlock(&write_lock);
}

static void vlog(enum tds_log_level level, const struct tds_log_ctx *ctx, uint64_t suppressed,
                 const char *fmt, va_list ap)
{
    struct tds_buf b = {0};
    char *msg;
    int n;
    int64_t wall = tds_wall_ms();
    time_t secs = (time_t)(wall / 1000);
    struct tm tm;
    size_t mlen;

    msg = malloc(LOG_MSG_MAX + 1);
    if (!msg)
        return;
    n = vsnprintf(msg, LOG_MSG_MAX + 1, fmt, ap);
    if (n < 0) {
        free(msg);
        return;
    }
    mlen = (size_t)n;
    if (mlen > LOG_MSG_MAX) {
        /* cut between characters, then the mark */
        mlen = tds_utf8_prefix(msg, LOG_MSG_MAX, LOG_MSG_MAX - 3);
        memcpy(msg + mlen, "...", 3);
        mlen += 3;
    }

    gmtime_r(&secs, &tm);
    if ((unsigned)level >= TDS_ARRAY_SIZE(level_names))
        level = TDS_LOG_ERROR;
    tds_buf_addf(&b, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\"",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(wall % 1000), level_names[level]);
    add_field(&b, "stage", log_stage);
    tds_buf_add(&b, ",\"msg\":\"", 8);
    json_escape(&b, msg, mlen);
    tds_buf_add(&b, "\"", 1);
    if (ctx) {
        add_field(&b, "org", ctx->org);
        add_field(&b, "entity", ctx->entity);
        add_field(&b, "run", ctx->run);
    }
    if (suppressed)
        tds_buf_addf(&b, ",\"suppressed\":%llu", (unsigned long long)suppressed);
    if (tds_buf_add(&b, "}\n", 2) == 0)
        write_all(STDERR_FILENO, b.p, b.len);
    tds_buf_deinit(&b);
    free(msg);
}

void tds_log(enum tds_log_level level, const struct tds_log_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    if ((int)level < atomic_load(&log_level))
        return;
    va_start(ap, fmt);
    vlog(level, ctx, 0, fmt, ap);
    va_end(ap);
}

void tds_log_limited(struct tds_log_limit *lim, enum tds_log_level level,
                     const struct tds_log_ctx *ctx, const char *fmt, ...)
{
    int64_t interval = lim->interval_ms > 0 ? lim->interval_ms : 60000;
    int64_t now = tds_now_ms();
    uint64_t suppressed;
    va_list ap;

    if ((int)level < atomic_load(&log_level))
        return;
    if (lim->last_ms != 0 && now - lim->last_ms < interval) {
        lim->suppressed++;
        return;
    }
    /* 0 means "never logged"; the monotonic clock is far past 0 after boot. */
    lim->last_ms = now ? now : 1;
    suppressed = lim->suppressed;
    lim->suppressed = 0;
    va_start(ap, fmt);
    vlog(level, ctx, suppressed, fmt, ap);
    va_end(ap);
}
