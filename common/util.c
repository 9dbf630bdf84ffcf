/* util — clocks, strict number parsing, secret references, small string helpers.
 *
 * Owns no global state and never logs; every function here is a leaf that the
 * other common/ modules and the stages build on. Nothing in this file aborts
 * on bad input or out-of-memory: callers get a code and decide.
 */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A secret file bigger than this is a mistake (wrong path, a whole bundle). */
#define SECRET_FILE_MAX (64 * 1024)

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tds_now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

int64_t tds_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t tds_wall_ms(void) { return clock_ms(CLOCK_REALTIME); }

int tds_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    const char *p = s;
    char *end = NULL;
    long long v;

    if (!s)
        return TDS_E_INVALID;
    /* strtoll would skip leading blanks; a setting with a blank is junk. */
    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return TDS_E_INVALID;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno == ERANGE || end == s || *end != '\0')
        return TDS_E_INVALID;
    if (v < min || v > max)
        return TDS_E_INVALID;
    *out = v;
    return 0;
}

int tds_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};

    if (!s)
        return TDS_E_INVALID;
    for (size_t i = 0; i < TDS_ARRAY_SIZE(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return TDS_E_INVALID;
}

static int read_secret_file(const char *path, char **out)
{
    char *buf = NULL;
    size_t len = 0;
    int fd, r;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? TDS_E_NOTFOUND : -errno;
    /* One byte over the limit tells "exactly at the limit" from "over it". */
    buf = malloc(SECRET_FILE_MAX + 2);
    if (!buf) {
        r = -ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, SECRET_FILE_MAX + 1 - len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > SECRET_FILE_MAX) {
            r = TDS_E_TOO_LARGE;
            goto out;
        }
    }
    /* one trailing line ending, as an editor or `echo` leaves it (\n or \r\n) */
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    *out = buf;
    buf = NULL;
    r = 0;
out:
    free(buf);
    close(fd);
    return r;
}

int tds_secret_resolve(const char *spec, char **out)
{
    char *v;

    if (!spec)
        return TDS_E_NOTFOUND;
    if (strncmp(spec, "env:", 4) == 0) {
        const char *e = getenv(spec + 4);
        size_t len;

        if (!e)
            return TDS_E_NOTFOUND;
        /* one trailing line ending, as for a file: a Kubernetes Secret made
         * from `echo value | base64` carries one into the variable */
        len = strlen(e);
        if (len > 0 && e[len - 1] == '\n')
            len--;
        if (len > 0 && e[len - 1] == '\r')
            len--;
        v = strndup(e, len);
        if (!v)
            return -ENOMEM;
        *out = v;
        return 0;
    }
    if (strncmp(spec, "file:", 5) == 0)
        return read_secret_file(spec + 5, out);
    v = strdup(spec);
    if (!v)
        return -ENOMEM;
    *out = v;
    return 0;
}

/* Random bytes for ids, drawn from getrandom() 256 at a time per thread: a
 * stage names every message it sends, and one system call per message was
 * ~4 µs of the processor's ~26 per webhook (measured on the 2-vCPU VM). A
 * forked child starts with an empty pool, so it never repeats its parent's
 * ids. */
#define UID_POOL 256

static _Thread_local unsigned char uid_pool[UID_POOL];
static _Thread_local size_t uid_left;
static pthread_once_t uid_once = PTHREAD_ONCE_INIT;

static void uid_after_fork(void)
{
    uid_left = 0;
}

static void uid_register(void)
{
    pthread_atfork(NULL, NULL, uid_after_fork);
}

static int uid_random(unsigned char *out, size_t n)
{
    pthread_once(&uid_once, uid_register);
    if (uid_left < n) {
        size_t got = 0;

        while (got < UID_POOL) {
            ssize_t r = getrandom(uid_pool + got, UID_POOL - got, 0);

            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            got += (size_t)r;
        }
        uid_left = UID_POOL;
    }
    memcpy(out, uid_pool + UID_POOL - uid_left, n);
    uid_left -= n;
    return 0;
}

char *tds_uid(const char *prefix)
{
    unsigned char rnd[8];
    char hex[2 * sizeof(rnd) + 1];
    size_t plen = prefix ? strlen(prefix) : 0;
    char *s;

    if (uid_random(rnd, sizeof(rnd)))
        return NULL;
    tds_hex(rnd, sizeof(rnd), hex);
    s = malloc(plen + 1 + sizeof(hex));
    if (!s)
        return NULL;
    if (plen)
        memcpy(s, prefix, plen);
    s[plen] = '-';
    memcpy(s + plen + 1, hex, sizeof(hex));
    return s;
}

void tds_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

int tds_bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

bool tds_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char diff = 0;

    /* Lengths of signatures are public; only the contents must not leak. */
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        diff |= x[i] ^ y[i];
    return diff == 0;
}

/* inline in tds_utf8_valid, which the ingress runs on every string with a
 * byte >= 0x80 */
static inline size_t utf8_char(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned char c = p[0];
    size_t need;
    uint32_t cp, min;

    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        need = 1;
        cp = c & 0x1f;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        need = 2;
        cp = c & 0x0f;
        min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        need = 3;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n <= need)
        return 0;
    for (size_t k = 1; k <= need; k++) {
        if ((p[k] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return need + 1;
}

size_t tds_utf8_char(const char *s, size_t n) { return utf8_char(s, n); }

bool tds_utf8_valid(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_char(s + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

size_t tds_utf8_prefix(const char *s, size_t n, size_t max)
{
    size_t k = max;

    if (n <= max)
        return n;
    /* s[k] is the first byte left out: back up while it continues a sequence */
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
        k--;
    return k;
}

const char *tds_term_text(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    if (!cap)
        return out;
    for (size_t i = 0; i < n && s[i] && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
            (unsigned char)s[i + 1] <= 0x9f) {
            out[o++] = '?';
            i++;
        } else {
            out[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
        }
    }
    out[o] = '\0';
    tds_utf8_trim(out);
    return out;
}

void tds_utf8_trim(char *s)
{
    size_t n = strlen(s), i = n, have;
    unsigned char lead;

    while (i > 0 && n - i < 3 && ((unsigned char)s[i - 1] & 0xc0) == 0x80)
        i--;
    if (i == 0)
        return;
    lead = (unsigned char)s[i - 1];
    have = n - i + 1;
    if ((lead >= 0xc0 && lead < 0xe0 && have < 2) || (lead >= 0xe0 && lead < 0xf0 && have < 3) ||
        (lead >= 0xf0 && have < 4))
        s[i - 1] = '\0';
}

static int buf_reserve(struct tds_buf *b, size_t n)
{
    size_t want, cap;
    char *p;

    if (n > SIZE_MAX - b->len - 1)
        return TDS_E_TOO_LARGE;
    if (b->max && b->len + n > b->max)
        return TDS_E_TOO_LARGE;
    want = b->len + n + 1; /* room for a NUL so text users can print p */
    if (want <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    if (b->max && cap > b->max + 1)
        cap = b->max + 1;
    if (cap < want)
        cap = want;
    p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tds_buf_add(struct tds_buf *b, const void *data, size_t n)
{
    int r = buf_reserve(b, n);

    if (r)
        return r;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int tds_buf_addf(struct tds_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n, r;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    r = buf_reserve(b, (size_t)n);
    if (r)
        return r;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void tds_buf_reset(struct tds_buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

void tds_buf_deinit(struct tds_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
}
