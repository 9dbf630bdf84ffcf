/* log — one JSON object per line on stderr.
 *
 * Fields: ts (RFC 3339 UTC with ms), level, stage, msg, then org/entity/run when
 * given. Messages follow PostgreSQL's style: lowercase, no final period. Secrets
 * are never passed here. Thread-safe (one write(2) per line).
 */
#ifndef TDS_LOG_H
#define TDS_LOG_H

#include <stdint.h>

enum tds_log_level { TDS_LOG_DEBUG = 0, TDS_LOG_INFO, TDS_LOG_WARN, TDS_LOG_ERROR };

struct tds_log_ctx {
    const char *org;
    const char *entity;
    const char *run;
};

/* Set the stage name and threshold. Call once from main before anything logs. */
void tds_log_init(const char *stage, enum tds_log_level level);
/* "debug|info|warn|warning|error" → 0, else TDS_E_INVALID. */
int tds_log_level_parse(const char *s, enum tds_log_level *out);
enum tds_log_level tds_log_get_level(void);

void tds_log(enum tds_log_level level, const struct tds_log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define tds_debug(...) tds_log(TDS_LOG_DEBUG, NULL, __VA_ARGS__)
#define tds_info(...) tds_log(TDS_LOG_INFO, NULL, __VA_ARGS__)
#define tds_warn(...) tds_log(TDS_LOG_WARN, NULL, __VA_ARGS__)
#define tds_error(...) tds_log(TDS_LOG_ERROR, NULL, __VA_ARGS__)

/* Rate-limited logging for repeated errors: at most one line per interval_ms;
 * the next line that gets through says how many were suppressed. Zero-init a
 * struct with .interval_ms set (0 means 60 s). Not thread-safe per struct. */
struct tds_log_limit {
    int64_t interval_ms;
    int64_t last_ms;
    uint64_t suppressed;
};
void tds_log_limited(struct tds_log_limit *lim, enum tds_log_level level,
                     const struct tds_log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
