/* replay — a small stand-in for libFuzzer's driver, linked with any target
 * that defines LLVMFuzzerTestOneInput (see tests/fuzz/meson.build).
 *
 *   replay [--seconds S] [--runs N] [--seed X] [--max-len L] [--crash FILE] PATH...
 *
 * Feeds every file named, and every regular file in every directory named
 * (not recursive), through the target once, then mutated copies of them
 * (byte flips, msgpack markers, length fields set to edge values, inserts,
 * deletions, truncation, splices, plus some purely random inputs) until S
 * seconds (default 5) or N runs have passed. The same seed gives the same
 * sequence of inputs. Each input sits in a buffer of exactly its length, so
 * ASan sees any over-read. If the target crashes, the input is written to
 * FILE (default replay-crash.bin in the working directory) and can be
 * replayed alone with `replay --runs 0 FILE`. It owns no knowledge of any input format
 * beyond a few byte values worth trying; it never retries a failure.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Present when linked with a sanitizer runtime: called before it exits. */
extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

struct input {
    uint8_t *p;
    size_t n;
};

static struct input *corpus;
static size_t n_corpus, cap_corpus;

/* The input being run, for the crash handlers. */
static const uint8_t *volatile cur_p;
static volatile size_t cur_n;
static const char *crash_path = "replay-crash.bin";

static void save_current(void)
{
    int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return;
    size_t off = 0;
    while (off < cur_n) {
        ssize_t w = write(fd, cur_p + off, cur_n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fd);
    static const char msg[] = "replay: crashing input saved\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) {
        /* nothing left to do */
    }
}

static void on_signal(int sig)
{
    save_current();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* splitmix64: small, seedable, good enough to pick mutations */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static int add_input(uint8_t *p, size_t n)
{
    if (n_corpus == cap_corpus) {
        size_t nc = cap_corpus ? cap_corpus * 2 : 16;
        struct input *v = realloc(corpus, nc * sizeof(*v));
        if (!v)
            return -ENOMEM;
        corpus = v;
        cap_corpus = nc;
    }
    corpus[n_corpus++] = (struct input){ p, n };
    return 0;
}

static int load_file(const char *path, size_t max_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: could not open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *p = malloc(max_len ? max_len : 1);
    size_t n = p ? fread(p, 1, max_len, f) : 0;
    int bad = !p || ferror(f);
    if (!bad && n == max_len && fgetc(f) != EOF)
        fprintf(stderr, "replay: '%s' cut to %zu bytes\n", path, max_len);
    fclose(f);
    if (!bad && n < max_len) {
        uint8_t *fit = realloc(p, n ? n : 1);
        if (fit)
            p = fit;
    }
    if (bad || add_input(p, n) != 0) {
        fprintf(stderr, "replay: could not read '%s'\n", path);
        free(p);
        return -1;
    }
    return 0;
}

static int load_path(const char *path, size_t max_len)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: could not stat '%s': %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return load_file(path, max_len);
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "replay: could not open directory '%s': %s\n", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        char *full = malloc(len);
        if (!full) {
            rc = -1;
            break;
        }
        snprintf(full, len, "%s/%s", path, e->d_name);
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode))
            rc = load_file(full, max_len);
        free(full);
    }
    closedir(d);
    return rc;
}

/* Run one input from an allocation of exactly its size. */
static void run(const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) {
        fprintf(stderr, "replay: out of memory\n");
        exit(1);
    }
    if (n)
        memcpy(copy, p, n);
    cur_p = copy;
    cur_n = n;
    LLVMFuzzerTestOneInput(copy, n);
    free(copy);
}

static const uint8_t interesting8[] = {
    0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xca, 0xcb, 0xcc, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9,
    0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff,
};
static const uint32_t interesting32[] = {
    0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 100000, 100001,
    16u * 1024 * 1024, 16u * 1024 * 1024 + 1, 0x7fffffff, 0x80000000, 0xffffffff,
};

/* Apply one mutation to buf[0..*n) (capacity cap); may change *n. */
static void mutate_once(uint8_t *buf, size_t *n, size_t cap)
{
    size_t len = *n;
    switch (below(9)) {
    case 0: /* flip a bit */
        if (len)
            buf[below(len)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* a random byte */
        if (len)
            buf[below(len)] = (uint8_t)rnd();
        break;
    case 2: /* a msgpack marker or edge value */
        if (len)
            buf[below(len)] = interesting8[below(sizeof(interesting8))];
        break;
    case 3: { /* a 1, 2 or 4 byte big-endian length set to an edge value */
        size_t w = (size_t)1 << below(3);
        if (len >= w) {
            size_t at = below(len - w + 1);
            uint32_t v = interesting32[below(sizeof(interesting32) / sizeof(interesting32[0]))];
            for (size_t i = 0; i < w; i++)
                buf[at + i] = (uint8_t)(v >> (8 * (w - 1 - i)));
        }
        break;
    }
    case 4: { /* insert random bytes */
        size_t k = 1 + below(8);
        if (len + k <= cap) {
            size_t at = below(len + 1);
            memmove(buf + at + k, buf + at, len - at);
            for (size_t i = 0; i < k; i++)
                buf[at + i] = (uint8_t)rnd();
            *n = len + k;
        }
        break;
    }
    case 5: { /* delete a range */
        if (len) {
            size_t at = below(len), k = 1 + below(len - at < 16 ? len - at : 16);
            memmove(buf + at, buf + at + k, len - at - k);
            *n = len - k;
        }
        break;
    }
    case 6: /* truncate */
        *n = below(len + 1);
        break;
    case 7: { /* duplicate a range in place */
        if (len) {
            size_t at = below(len), k = 1 + below(len - at < 64 ? len - at : 64);
            if (len + k <= cap) {
                size_t to = below(len + 1);
                uint8_t tmp[64];
                memcpy(tmp, buf + at, k);
                memmove(buf + to + k, buf + to, len - to);
                memcpy(buf + to, tmp, k);
                *n = len + k;
            }
        }
        break;
    }
    case 8: { /* splice: the tail of another input */
        const struct input *o = &corpus[below(n_corpus)];
        if (o->n) {
            size_t at = below(len + 1), from = below(o->n);
            size_t k = o->n - from;
            if (at + k > cap)
                k = cap - at;
            memcpy(buf + at, o->p + from, k);
            *n = at + k;
        }
        break;
    }
    }
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint64_t seconds = 5, runs = UINT64_MAX, seed = 1, max_len = 1024 * 1024;
    int i;
    for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        uint64_t *dst = NULL;
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "replay: %s needs a value\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "--crash") == 0) {
            crash_path = argv[i + 1];
            continue;
        }
        if (strcmp(argv[i], "--seconds") == 0)
            dst = &seconds;
        else if (strcmp(argv[i], "--runs") == 0)
            dst = &runs;
        else if (strcmp(argv[i], "--seed") == 0)
            dst = &seed;
        else if (strcmp(argv[i], "--max-len") == 0)
            dst = &max_len;
        if (!dst || parse_u64(argv[i + 1], dst) != 0 || (dst == &max_len && max_len == 0)) {
            fprintf(stderr, "replay: invalid argument: '%s %s'\n", argv[i], argv[i + 1]);
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "usage: replay [--seconds S] [--runs N] [--seed X] [--max-len L] "
                        "[--crash FILE] PATH...\n");
        return 2;
    }
    for (; i < argc; i++) {
        if (load_path(argv[i], (size_t)max_len) != 0)
            return 2;
    }

    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(save_current);
    signal(SIGABRT, on_signal);
    signal(SIGSEGV, on_signal);
    signal(SIGBUS, on_signal);
    signal(SIGFPE, on_signal);
    signal(SIGILL, on_signal);

    for (size_t k = 0; k < n_corpus; k++)
        run(corpus[k].p, corpus[k].n);

    /* Mutations start from the corpus, or from nothing when it is empty. */
    if (n_corpus == 0 && add_input(NULL, 0) != 0)
        return 1;
    rng_state = seed;
    size_t cap = 0;
    for (size_t k = 0; k < n_corpus; k++)
        cap = corpus[k].n > cap ? corpus[k].n : cap;
    cap = cap * 2 + 256;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return 1;
    double start = now_s(), deadline = start + (double)seconds;
    uint64_t done = 0;
    while (done < runs) {
        if ((done & 63) == 0 && now_s() >= deadline)
            break;
        size_t n;
        if (below(16) == 0) { /* purely random, short */
            n = below(64);
            for (size_t j = 0; j < n; j++)
                buf[j] = (uint8_t)rnd();
        } else {
            const struct input *base = &corpus[below(n_corpus)];
            n = base->n;
            if (n)
                memcpy(buf, base->p, n);
            for (size_t m = 1 + below(6); m > 0; m--)
                mutate_once(buf, &n, cap);
        }
        run(buf, n);
        done++;
    }
    fprintf(stderr, "replay: %zu inputs, %llu mutated runs in %.1f s (seed %llu)\n", n_corpus,
            (unsigned long long)done, now_s() - start, (unsigned long long)seed);
    free(buf);
    for (size_t k = 0; k < n_corpus; k++)
        free(corpus[k].p);
    free(corpus);
    return 0;
}
