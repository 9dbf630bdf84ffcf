/* fuzz_orgs — fuzz target for the organizations file (TDS_CONFIG), read by
 * every stage at start-up: tds_orgs_load and its two narrower forms.
 *
 * The input is the file's text, put in a memory file and read by path. Any
 * input must load or be refused with one line, without a crash, leak or
 * sanitizer report, and the three loaders must agree on what they refuse
 * for shape. A refusal never quotes a secret: no inline value of
 * client_id, client_secret, refresh_token, webhook_secrets or
 * webhook_tokens (8 bytes or more, with an '@' that no fixed text of an
 * error has, and in no other string of the file) appears in the error
 * line once the file's other strings, which it may quote, are blanked
 * out. What loads
 * has every organization found by its id, a known product, and rates
 * inside their documented ranges.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "fuzz_orgs: check failed: %s (line %d)\n", #c,   \
                    __LINE__);                                                \
            abort();                                                          \
        }                                                                     \
    } while (0)

static const char *const secret_keys[] = {"client_id", "client_secret", "refresh_token",
                                          "webhook_secrets", "webhook_tokens"};

/* How many strings of the tree (keys and values) hold s. */
static size_t holders(const json_t *v, const char *s)
{
    size_t n = 0;
    if (json_is_string(v))
        return strstr(json_string_value(v), s) != NULL;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) n += holders(e, s);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e) n += (strstr(k, s) != NULL) + holders(e, s);
    }
    return n;
}

/* Blank out of text every string of the tree but s: what an error may
 * quote. */
static void scrub_one(char *text, const char *t, const char *s)
{
    size_t n = strlen(t);
    if (n == 0 || strcmp(t, s) == 0)
        return;
    for (char *p = strstr(text, t); p; p = strstr(p + n, t))
        memset(p, '\x01', n);
}

static void scrub(char *text, const json_t *v, const char *s)
{
    if (json_is_string(v)) {
        scrub_one(text, json_string_value(v), s);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) scrub(text, e, s);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e) {
            scrub_one(text, k, s);
            scrub(text, e, s);
        }
    }
}

/* A secret worth looking for in err: inline (not env: or file:), 8 bytes
 * or more, with an '@' (no fixed text of an error has one) and held by no
 * other string of the file; looked for once the other strings, which an
 * error may quote, are blanked out. */
static void no_secret_in(const char *err, const json_t *root, const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (json_string_length(v) >= 8 && strlen(s) == json_string_length(v) &&
            strchr(s, '@') && strncmp(s, "env:", 4) != 0 && strncmp(s, "file:", 5) != 0 &&
            holders(root, s) == 1) {
            char *text = strdup(err);
            CHECK(text != NULL);
            scrub(text, root, s);
            if (strstr(text, s))
                fprintf(stderr, "fuzz_orgs: the error quotes a secret: %s\n", err);
            CHECK(strstr(text, s) == NULL);
            free(text);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) no_secret_in(err, root, e);
    }
}

/* The error line quotes none of the inline secrets the text holds. */
static void check_error(const char *err, const uint8_t *data, size_t size)
{
    CHECK(err[0] != '\0');
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, size, 0, &jerr);
    json_t *orgs = json_object_get(root, "organizations");
    size_t i;
    json_t *org;
    json_array_foreach(orgs, i, org) {
        for (size_t k = 0; k < sizeof(secret_keys) / sizeof(secret_keys[0]); k++)
            no_secret_in(err, root, json_object_get(org, secret_keys[k]));
    }
    json_decref(root);
}

static void check_loaded(const struct tds_orgs *o)
{
    for (size_t i = 0; i < o->n; i++) {
        const struct tds_org *org = &o->orgs[i];
        CHECK(org->org_id && org->org_id[0]);
        CHECK(tds_orgs_find(o, org->org_id) == org);
        CHECK(org->product && (!strcmp(org->product, "inventory") || !strcmp(org->product, "books")));
        CHECK(org->rate_per_min >= 1);
        CHECK(org->max_concurrency >= 1);
        CHECK(org->n_webhook_secrets <= TDS_ORG_MAX_SECRETS);
        CHECK(org->n_webhook_tokens <= TDS_ORG_MAX_SECRETS);
        (void)tds_org_books(org);
    }
    size_t a, b;
    if (tds_orgs_shared_secret(o, &a, &b))
        CHECK(a < b && b < o->n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-orgs", 0);
        if (fd < 0)
            return 0;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        return 0;

    int (*const loaders[])(const char *, struct tds_orgs **, char *, size_t) = {
        tds_orgs_load, tds_orgs_load_webhooks, tds_orgs_load_api};
    int rcs[3];
    for (size_t l = 0; l < 3; l++) {
        struct tds_orgs *o = NULL;
        char err[512] = "";
        rcs[l] = loaders[l](path, &o, err, sizeof(err));
        if (rcs[l] == 0) {
            CHECK(o != NULL);
            check_loaded(o);
            tds_orgs_free(o);
        } else {
            CHECK(o == NULL);
            check_error(err, data, size);
        }
    }
    /* the narrower loaders skip resolving some secrets, so they may take
     * what the full one refuses (an env: source unset here), never the
     * reverse */
    if (rcs[0] == 0)
        CHECK(rcs[1] == 0 && rcs[2] == 0);
    return 0;
}
