/* ztime — see ztime.h. */
#include "ztime.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return TDS_E_INVALID;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int tds_ztime_parse_offset(const char *s, int *minutes)
{
    int hh = 0, mm = 0;
    if (!s)
        return TDS_E_INVALID;
    if (strcmp(s, "Z") == 0 || strcmp(s, "z") == 0) {
        *minutes = 0;
        return 0;
    }
    if (s[0] != '+' && s[0] != '-')
        return TDS_E_INVALID;
    size_t n = strlen(s);
    if (n == 3) {
        if (digits(s + 1, 2, &hh))
            return TDS_E_INVALID;
    } else if (n == 5) {
        if (digits(s + 1, 2, &hh) || digits(s + 3, 2, &mm))
            return TDS_E_INVALID;
    } else if (n == 6 && s[3] == ':') {
        if (digits(s + 1, 2, &hh) || digits(s + 4, 2, &mm))
            return TDS_E_INVALID;
    } else {
        return TDS_E_INVALID;
    }
    if (hh > 14 || mm > 59)
        return TDS_E_INVALID;
    int v = hh * 60 + mm;
    *minutes = s[0] == '-' ? -v : v;
    return 0;
}

int tds_ztime_parse(const char *s, int64_t *epoch_s) { return tds_ztime_parse_at(s, epoch_s, NULL); }

int tds_ztime_parse_at(const char *s, int64_t *epoch_s, int *offset_min)
{
    int y, mo, d, h = 0, mi = 0, se = 0, off = 0;
    bool has_off = false;
    if (!s || strlen(s) < 10)
        return TDS_E_INVALID;
    if (digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
        digits(s + 8, 2, &d))
        return TDS_E_INVALID;
    const char *p = s + 10;
    if (*p == 'T' || *p == ' ') {
        if (strlen(p) < 9 || digits(p + 1, 2, &h) || p[3] != ':' || digits(p + 4, 2, &mi) ||
            p[6] != ':' || digits(p + 7, 2, &se))
            return TDS_E_INVALID;
        p += 9;
        if (*p == '.') {
            p++;
            if (*p < '0' || *p > '9')
                return TDS_E_INVALID;
            while (*p >= '0' && *p <= '9')
                p++;
        }
        if (*p) {
            if (tds_ztime_parse_offset(p, &off))
                return TDS_E_INVALID;
            has_off = true;
        }
    } else if (*p) {
        return TDS_E_INVALID;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return TDS_E_INVALID;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    *epoch_s = days * 86400 + h * 3600 + mi * 60 + se - (int64_t)off * 60;
    if (offset_min)
        *offset_min = has_off ? off : TDS_ZTIME_NO_OFFSET;
    return 0;
}

void tds_ztime_format(int64_t epoch_s, int offset_min, char out[TDS_ZTIME_LEN])
{
    int64_t t = epoch_s + (int64_t)offset_min * 60;
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    int64_t secs = t - days * 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    int aoff = (offset_min < 0 ? -offset_min : offset_min) % (24 * 60);
    snprintf(out, TDS_ZTIME_LEN, "%04lld-%02u-%02uT%02d:%02d:%02d%c%02d%02d", (long long)y, m, d,
             (int)(secs / 3600 % 24), (int)(secs / 60 % 60), (int)(secs % 60),
             offset_min < 0 ? '-' : '+', aoff / 60, aoff % 60);
}
