/* copytext — values in PostgreSQL's COPY text format, and array literals.
 *
 * The COPY text format treats backslash as the escape character and tab and
 * newline as delimiters; a carriage return must be escaped too or the server
 * takes it for an end-of-line. Everything else passes byte for byte, so the
 * server's input functions see exactly what the processor produced. Runs of
 * plain bytes are appended in one memcpy: this is the writer's hot path.
 */
#include "copytext.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int tds_copytext_add(struct tds_buf *b, const char *p, size_t n)
{
    size_t start = 0;
    int rc;

    if (!p)
        return tds_buf_add(b, "\\N", 2);
    for (size_t i = 0; i < n; i++) {
        const char *esc;

        switch (p[i]) {
        case '\\': esc = "\\\\"; break;
        case '\t': esc = "\\t"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        default: continue;
        }
        if (i > start && (rc = tds_buf_add(b, p + start, i - start)) != 0)
            return rc;
        if ((rc = tds_buf_add(b, esc, 2)) != 0)
            return rc;
        start = i + 1;
    }
    if (n > start)
        return tds_buf_add(b, p + start, n - start);
    return 0;
}

bool tds_copytext_storable(const char *p, size_t n)
{
    return !p || memchr(p, '\0', n) == NULL;
}

int tds_copytext_array_begin(struct tds_buf *b) { return tds_buf_add(b, "{", 1); }

int tds_copytext_array_end(struct tds_buf *b) { return tds_buf_add(b, "}", 1); }

int tds_copytext_array_elem(struct tds_buf *b, bool first, const char *p, size_t n)
{
    size_t start = 0;
    int rc;

    if (!first && (rc = tds_buf_add(b, ",", 1)) != 0)
        return rc;
    if (!p)
        return tds_buf_add(b, "NULL", 4);
    if ((rc = tds_buf_add(b, "\"", 1)) != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '"' && p[i] != '\\')
            continue;
        if (i > start && (rc = tds_buf_add(b, p + start, i - start)) != 0)
            return rc;
        if ((rc = tds_buf_add(b, "\\", 1)) != 0)
            return rc;
        start = i;
    }
    if (n > start && (rc = tds_buf_add(b, p + start, n - start)) != 0)
        return rc;
    return tds_buf_add(b, "\"", 1);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    size_t len;

    if (s[0] < 0x80)
        return s[0] ? 1 : 0;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (len > n || !tds_utf8_valid((const char *)s, len))
        return 0;
    return len;
}

char *tds_copytext_sanitize(const char *s, size_t n, size_t max)
{
    size_t cap = (max && max < n) ? max : n;
    char *out = malloc(cap + 1);
    size_t o = 0, i = 0;

    if (!out)
        return NULL;
    while (i < n) {
        size_t len = utf8_seq((const unsigned char *)s + i, n - i);

        if (o + (len ? len : 1) > cap)
            break;
        if (len == 0) {
            out[o++] = '?';
            i++;
        } else {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        }
    }
    out[o] = '\0';
    return out;
}
