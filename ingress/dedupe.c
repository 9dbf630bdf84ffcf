/* dedupe — ring buffer in arrival order plus an open-addressing index.
 *
 * The ring holds entries oldest first, so expiry and eviction both pop its
 * head; the index (linear probing, backward-shift deletion, load ≤ 1/2) maps
 * a key hash to its ring slot. Keys are hashed with SHA-256 so an id chosen
 * by a sender cannot be made to collide with another organization's.
 */
#include "dedupe.h"

#include <errno.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY UINT32_MAX

struct entry {
    uint64_t h1, h2;
    int64_t at_ms;
    uint64_t seq;
};

struct tds_dedupe {
    pthread_mutex_t mu;
    struct entry *ring;
    size_t cap, head, n;     /* ring: oldest at head */
    uint32_t *idx;           /* ring slot or EMPTY */
    size_t mask;
    int64_t window_ms;
    uint64_t evicted_early;
};

static void hash_key(const void *key, size_t len, uint64_t *h1, uint64_t *h2)
{
    unsigned char d[SHA256_DIGEST_LENGTH];

    SHA256(key, len, d);
    memcpy(h1, d, 8);
    memcpy(h2, d + 8, 8);
}

int tds_dedupe_new(struct tds_dedupe **out, size_t max_entries, int64_t window_ms)
{
    struct tds_dedupe *d;
    size_t slots = 2;

    if (max_entries == 0 || max_entries >= EMPTY / 2)
        return -EINVAL;
    while (slots < 2 * max_entries)
        slots *= 2;
    d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->ring = calloc(max_entries, sizeof(*d->ring));
    d->idx = malloc(slots * sizeof(*d->idx));
    if (!d->ring || !d->idx) {
        free(d->ring);
        free(d->idx);
        free(d);
        return -ENOMEM;
    }
    memset(d->idx, 0xff, slots * sizeof(*d->idx));
    d->cap = max_entries;
    d->mask = slots - 1;
    d->window_ms = window_ms;
    pthread_mutex_init(&d->mu, NULL);
    *out = d;
    return 0;
}

struct tds_dedupe *tds_dedupe_free(struct tds_dedupe *d)
{
    if (!d)
        return NULL;
    pthread_mutex_destroy(&d->mu);
    free(d->ring);
    free(d->idx);
    free(d);
    return NULL;
}

/* Index position of (h1, h2), or of the empty slot where it would go. */
static size_t find(const struct tds_dedupe *d, uint64_t h1, uint64_t h2, bool *found)
{
    size_t i = h1 & d->mask;

    for (;;) {
        uint32_t s = d->idx[i];

        if (s == EMPTY) {
            *found = false;
            return i;
        }
        if (d->ring[s].h1 == h1 && d->ring[s].h2 == h2) {
            *found = true;
            return i;
        }
        i = (i + 1) & d->mask;
    }
}

/* Remove index slot i, shifting later members of its cluster back. */
static void idx_delete(struct tds_dedupe *d, size_t i)
{
    size_t j = i;

    d->idx[i] = EMPTY;
    for (;;) {
        size_t home;

        j = (j + 1) & d->mask;
        if (d->idx[j] == EMPTY)
            return;
        home = d->ring[d->idx[j]].h1 & d->mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            d->idx[i] = d->idx[j];
            d->idx[j] = EMPTY;
            i = j;
        }
    }
}

static void pop_oldest(struct tds_dedupe *d)
{
    struct entry *e = &d->ring[d->head];
    bool found;
    size_t i = find(d, e->h1, e->h2, &found);

    /* A refreshed key leaves a stale copy behind in the ring; only the index
     * entry that points at this very slot is removed. */
    if (found && d->idx[i] == d->head)
        idx_delete(d, i);
    d->head = (d->head + 1) % d->cap;
    d->n--;
}

static void expire(struct tds_dedupe *d, int64_t now_ms)
{
    while (d->n && now_ms - d->ring[d->head].at_ms > d->window_ms)
        pop_oldest(d);
}

bool tds_dedupe_seen(struct tds_dedupe *d, const void *key, size_t len, int64_t now_ms,
                     uint64_t *seq)
{
    uint64_t h1, h2;
    bool found;
    size_t i;

    hash_key(key, len, &h1, &h2);
    pthread_mutex_lock(&d->mu);
    i = find(d, h1, h2, &found);
    if (found) {
        const struct entry *e = &d->ring[d->idx[i]];

        found = now_ms - e->at_ms <= d->window_ms;
        if (found && seq)
            *seq = e->seq;
    }
    pthread_mutex_unlock(&d->mu);
    return found;
}

void tds_dedupe_insert(struct tds_dedupe *d, const void *key, size_t len, int64_t at_ms,
                       uint64_t seq)
{
    uint64_t h1, h2;
    size_t i, slot;
    bool found;

    hash_key(key, len, &h1, &h2);
    pthread_mutex_lock(&d->mu);
    expire(d, at_ms);
    if (d->n == d->cap) {
        if (at_ms - d->ring[d->head].at_ms <= d->window_ms)
            d->evicted_early++;
        pop_oldest(d);
    }
    slot = (d->head + d->n) % d->cap;
    d->ring[slot] = (struct entry){h1, h2, at_ms, seq};
    d->n++;
    i = find(d, h1, h2, &found);
    d->idx[i] = (uint32_t)slot;
    pthread_mutex_unlock(&d->mu);
}

size_t tds_dedupe_size(struct tds_dedupe *d)
{
    size_t n;

    pthread_mutex_lock(&d->mu);
    n = d->n;
    pthread_mutex_unlock(&d->mu);
    return n;
}

uint64_t tds_dedupe_evicted_early(struct tds_dedupe *d)
{
    uint64_t n;

    pthread_mutex_lock(&d->mu);
    n = d->evicted_early;
    pthread_mutex_unlock(&d->mu);
    return n;
}
