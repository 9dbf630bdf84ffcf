/* hook — webhook deliveries; see hook.h.
 *
 * One queue ordered by due time: fresh deliveries are due now and go to the
 * tail, retries are inserted at their due time, so the sender thread always
 * takes the head. A full queue drops new deliveries and counts them (Zoho
 * itself is reported to drop webhooks under load). One thread delivers one
 * request at a time, reusing its curl handle and connection.
 */
#include "hook.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct param {
    char *name, *value;
};

struct target {
    bool on;
    char *base;               /* url without query */
    char *secret;
    bool base64;
    int retries;
    int64_t retry_delay_ms, timeout_ms;
    size_t n;
    struct param p[ZS_HOOK_MAX_PARAMS + 1];
    uint64_t gen;             /* bumped on reconfigure: queued items keep their target copy */
    struct zs_hook_stats st;
};

struct delivery {
    struct delivery *next;
    size_t org;
    int attempt;
    int64_t due_ms;
    char *url;                /* full url with query */
    char *body;
    size_t len;
    char sig[65];
    int retries;
    int64_t retry_delay_ms, timeout_ms;
};

struct zs_hooks {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool stop, started;
    atomic_bool abort;        /* read by curl's progress callback without the lock */
    struct target *t;
    size_t n_orgs;
    struct delivery *head, *tail;
    size_t pending;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void free_delivery(struct delivery *d)
{
    if (!d)
        return;
    free(d->url);
    free(d->body);
    free(d);
}

static void clear_target(struct target *t)
{
    free(t->base);
    free(t->secret);
    for (size_t i = 0; i < t->n; i++) {
        free(t->p[i].name);
        free(t->p[i].value);
    }
    t->base = t->secret = NULL;
    t->n = 0;
    t->on = false;
}

void zs_hook_sign(const char *secret, const char *const *names, const char *const *values,
                  size_t n, const char *body, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    size_t order[ZS_HOOK_MAX_PARAMS + 1];
    if (n > ZS_HOOK_MAX_PARAMS + 1)
        n = ZS_HOOK_MAX_PARAMS + 1;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = 1; i < n; i++) /* insertion sort by name: n is tiny */
        for (size_t j = i; j > 0 && strcmp(names[order[j - 1]], names[order[j]]) > 0; j--) {
            size_t x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    out[0] = '\0';
    size_t total = len + 1;
    for (size_t i = 0; i < n; i++)
        total += strlen(names[i]) + strlen(values[i]);
    unsigned char *msg = malloc(total), *p = msg;
    if (!msg)
        return;
    for (size_t i = 0; i < n; i++) {
        size_t a = strlen(names[order[i]]), b = strlen(values[order[i]]);
        memcpy(p, names[order[i]], a);
        p += a;
        memcpy(p, values[order[i]], b);
        p += b;
    }
    memcpy(p, body, len);
    p += len;
    unsigned char *ok = HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, (size_t)(p - msg),
                             md, &mdlen);
    free(msg);
    if (!ok || mdlen != 32)
        return;
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static char *urldecode(const char *s, size_t n)
{
    char *o = malloc(n + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            *p++ = ' ';
        } else if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
                   hexval(s[i + 2]) >= 0) {
            *p++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            *p++ = s[i];
        }
    }
    *p = '\0';
    return o;
}

/* Appends s url-encoded to the buffer at *p (room is guaranteed by caller). */
static char *urlencode_into(char *p, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    return p;
}

/* The hex digest in sig again in base64 (44 characters), in place. */
static void to_base64(char sig[65])
{
    unsigned char raw[32];

    if (strlen(sig) != 64)
        return;
    for (size_t i = 0; i < 32; i++) {
        unsigned v = 0;
        sscanf(sig + 2 * i, "%2x", &v);
        raw[i] = (unsigned char)v;
    }
    EVP_EncodeBlock((unsigned char *)sig, raw, 32);
}

int zs_hooks_configure(struct zs_hooks *h, size_t org, const struct zs_hook_cfg *cfg)
{
    if (org >= h->n_orgs)
        return -EINVAL;
    struct target nt;
    memset(&nt, 0, sizeof(nt));
    if (cfg && cfg->url && *cfg->url) {
        if (strncmp(cfg->url, "http://", 7) && strncmp(cfg->url, "https://", 8))
            return -EINVAL;
        if (cfg->n_params > ZS_HOOK_MAX_PARAMS)
            return -EINVAL;
        const char *q = strchr(cfg->url, '?');
        nt.base = q ? strndup(cfg->url, (size_t)(q - cfg->url)) : strdup(cfg->url);
        nt.secret = strdup(cfg->secret ? cfg->secret : "");
        if (!nt.base || !nt.secret)
            goto nomem;
        /* parameters already in the url are sent and signed like the extra ones */
        for (const char *s = q ? q + 1 : NULL; s && *s;) {
            const char *amp = strchr(s, '&');
            size_t l = amp ? (size_t)(amp - s) : strlen(s);
            const char *eq = memchr(s, '=', l);
            if (l && nt.n < ZS_HOOK_MAX_PARAMS) {
                size_t kl = eq ? (size_t)(eq - s) : l;
                nt.p[nt.n].name = urldecode(s, kl);
                nt.p[nt.n].value = eq ? urldecode(eq + 1, l - kl - 1) : strdup("");
                if (!nt.p[nt.n].name || !nt.p[nt.n].value) {
                    nt.n++;
                    goto nomem;
                }
                nt.n++;
            } else if (l) {
                clear_target(&nt);
                return -EINVAL;
            }
            s = amp ? amp + 1 : NULL;
        }
        for (size_t i = 0; i < cfg->n_params; i++) {
            if (nt.n >= ZS_HOOK_MAX_PARAMS) {
                clear_target(&nt);
                return -EINVAL;
            }
            nt.p[nt.n].name = strdup(cfg->param_names[i]);
            nt.p[nt.n].value = strdup(cfg->param_values[i]);
            nt.n++;
            if (!nt.p[nt.n - 1].name || !nt.p[nt.n - 1].value)
                goto nomem;
        }
        nt.on = true;
        nt.base64 = cfg->base64;
        /* bounded so the doubling delay cannot overflow */
        nt.retries = cfg->retries < 0 ? 0 : cfg->retries > 100 ? 100 : cfg->retries;
        nt.retry_delay_ms = cfg->retry_delay_ms <= 0        ? 100
                            : cfg->retry_delay_ms > 3600000 ? 3600000
                                                             : cfg->retry_delay_ms;
        nt.timeout_ms = cfg->timeout_ms <= 0       ? 5000
                        : cfg->timeout_ms > 600000 ? 600000
                                                   : cfg->timeout_ms;
    }
    pthread_mutex_lock(&h->lock);
    struct target *t = &h->t[org];
    nt.st = t->st;
    nt.gen = t->gen + 1;
    clear_target(t);
    *t = nt;
    pthread_mutex_unlock(&h->lock);
    return 0;
nomem:
    clear_target(&nt);
    return -ENOMEM;
}

bool zs_hooks_enabled(struct zs_hooks *h, size_t org)
{
    pthread_mutex_lock(&h->lock);
    bool on = org < h->n_orgs && h->t[org].on;
    pthread_mutex_unlock(&h->lock);
    return on;
}

static void insert_sorted(struct zs_hooks *h, struct delivery *d)
{
    d->next = NULL;
    if (!h->head) {
        h->head = h->tail = d;
        return;
    }
    if (h->tail->due_ms <= d->due_ms) {
        h->tail->next = d;
        h->tail = d;
        return;
    }
    struct delivery **pp = &h->head;
    while (*pp && (*pp)->due_ms <= d->due_ms)
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
}

int zs_hooks_post(struct zs_hooks *h, size_t org, const char *event, char *body, size_t len)
{
    struct delivery *d = calloc(1, sizeof(*d));
    if (!d) {
        free(body);
        return -ENOMEM;
    }
    d->org = org;
    d->body = body;
    d->len = len;
    pthread_mutex_lock(&h->lock);
    struct target *t = org < h->n_orgs ? &h->t[org] : NULL;
    if (!t || !t->on) {
        pthread_mutex_unlock(&h->lock);
        free_delivery(d);
        return 0;
    }
    if (h->pending >= ZS_HOOK_MAX_PENDING) {
        t->st.dropped++;
        pthread_mutex_unlock(&h->lock);
        free_delivery(d);
        return 0;
    }
    const char *names[ZS_HOOK_MAX_PARAMS + 1], *values[ZS_HOOK_MAX_PARAMS + 1];
    size_t n = 0, room = strlen(t->base) + 16;
    for (size_t i = 0; i < t->n; i++, n++) {
        names[n] = t->p[i].name;
        values[n] = t->p[i].value;
        room += 3 * (strlen(names[n]) + strlen(values[n])) + 2;
    }
    names[n] = "event";
    values[n] = event;
    room += 3 * strlen(event) + 8;
    n++;
    d->url = malloc(room);
    if (!d->url) {
        pthread_mutex_unlock(&h->lock);
        free_delivery(d);
        return -ENOMEM;
    }
    char *p = d->url;
    memcpy(p, t->base, strlen(t->base));
    p += strlen(t->base);
    for (size_t i = 0; i < n; i++) {
        *p++ = i ? '&' : '?';
        p = urlencode_into(p, names[i]);
        *p++ = '=';
        p = urlencode_into(p, values[i]);
    }
    *p = '\0';
    if (t->secret[0]) {
        zs_hook_sign(t->secret, names, values, n, body, len, d->sig);
        if (t->base64)
            to_base64(d->sig);
    }
    d->retries = t->retries;
    d->retry_delay_ms = t->retry_delay_ms;
    d->timeout_ms = t->timeout_ms;
    d->due_ms = mono_ms();
    insert_sorted(h, d);
    h->pending++;
    t->st.queued++;
    t->st.pending++;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->lock);
    return 0;
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

/* Aborts a transfer in progress when the sender is stopping, so shutdown
 * never waits for a slow receiver's timeout. */
static int progress(void *u, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return atomic_load((atomic_bool *)u) ? 1 : 0;
}

static bool deliver(struct zs_hooks *h, CURL *c, struct delivery *d)
{
    struct curl_slist *hd = NULL, *nh;
    char sigh[128];
    nh = curl_slist_append(hd, "Content-Type: application/json");
    if (!nh)
        return false;
    hd = nh;
    if (d->sig[0]) {
        memcpy(sigh, "X-Zoho-Webhook-Signature: ", 26);
        memcpy(sigh + 26, d->sig, 65);
        nh = curl_slist_append(hd, sigh);
        if (!nh) {
            curl_slist_free_all(hd);
            return false;
        }
        hd = nh;
    }
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, d->url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)d->len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)d->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)d->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "ZohoWebhook/sim");
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &h->abort);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hd);
    return rc == CURLE_OK && code >= 200 && code < 300;
}

static void *sender(void *arg)
{
    struct zs_hooks *h = arg;
    CURL *c = curl_easy_init();
    pthread_mutex_lock(&h->lock);
    while (!h->stop) {
        int64_t now = mono_ms();
        if (!h->head || h->head->due_ms > now) {
            if (!h->head) {
                pthread_cond_wait(&h->cond, &h->lock);
            } else {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                int64_t wait = h->head->due_ms - now;
                ts.tv_sec += wait / 1000;
                ts.tv_nsec += (wait % 1000) * 1000000;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&h->cond, &h->lock, &ts);
            }
            continue;
        }
        struct delivery *d = h->head;
        h->head = d->next;
        if (!h->head)
            h->tail = NULL;
        pthread_mutex_unlock(&h->lock);
        bool ok = c && deliver(h, c, d);
        pthread_mutex_lock(&h->lock);
        struct target *t = &h->t[d->org];
        t->st.attempts++;
        if (ok) {
            t->st.delivered++;
            t->st.pending--;
            h->pending--;
            free_delivery(d);
        } else {
            t->st.failed_attempts++;
            if (d->attempt < d->retries && !h->stop) {
                int shift = d->attempt < 10 ? d->attempt : 10;
                d->due_ms = mono_ms() + (d->retry_delay_ms << shift);
                d->attempt++;
                insert_sorted(h, d);
            } else {
                t->st.given_up++;
                t->st.pending--;
                h->pending--;
                free_delivery(d);
            }
        }
    }
    pthread_mutex_unlock(&h->lock);
    if (c)
        curl_easy_cleanup(c);
    return NULL;
}

int zs_hooks_new(struct zs_hooks **out, size_t n_orgs)
{
    struct zs_hooks *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->n_orgs = n_orgs;
    h->t = calloc(n_orgs ? n_orgs : 1, sizeof(*h->t));
    if (!h->t) {
        zs_hooks_free(h);
        return -ENOMEM;
    }
    int rc = pthread_create(&h->thread, NULL, sender, h);
    if (rc) {
        zs_hooks_free(h);
        return -rc;
    }
    h->started = true;
    *out = h;
    return 0;
}

struct zs_hooks *zs_hooks_free(struct zs_hooks *h)
{
    if (!h)
        return NULL;
    if (h->started) {
        pthread_mutex_lock(&h->lock);
        h->stop = true;
        atomic_store(&h->abort, true);
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
    }
    while (h->head) {
        struct delivery *d = h->head;
        h->head = d->next;
        free_delivery(d);
    }
    for (size_t i = 0; h->t && i < h->n_orgs; i++)
        clear_target(&h->t[i]);
    free(h->t);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    free(h);
    return NULL;
}

void zs_hooks_stats(struct zs_hooks *h, size_t org, struct zs_hook_stats *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_lock(&h->lock);
    if (org < h->n_orgs) {
        *s = h->t[org].st; /* pending includes the one being delivered now */
    }
    pthread_mutex_unlock(&h->lock);
}

void zs_hooks_reset_stats(struct zs_hooks *h)
{
    pthread_mutex_lock(&h->lock);
    for (size_t i = 0; i < h->n_orgs; i++) {
        uint64_t p = h->t[i].st.pending;
        memset(&h->t[i].st, 0, sizeof(h->t[i].st));
        h->t[i].st.pending = p;
    }
    pthread_mutex_unlock(&h->lock);
}
