/* resolve_shim — getaddrinfo() for the integration tests, preloaded into a
 * stage with LD_PRELOAD.
 *
 * Names under the test domain ".tds-test" resolve from the file that
 * TDS_TEST_HOSTS names, read again on every call: one "name address" per line,
 * a name listed several times gets every address, a name not listed (or no
 * file) does not resolve (EAI_NONAME). Every other name goes to the C library
 * unchanged. A test can so make a connect name appear, move to another address
 * or vanish while a stage runs, as a Kubernetes headless Service does, without
 * touching /etc/hosts. Never built into a stage.
 */
#include <dlfcn.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TEST_DOMAIN ".tds-test"

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static bool in_test_domain(const char *node)
{
    size_t n = node ? strlen(node) : 0, d = strlen(TEST_DOMAIN);

    return n > d && strcasecmp(node + n - d, TEST_DOMAIN) == 0;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    struct addrinfo *head = NULL, **tail = &head;
    char line[512], name[256], addr[64];
    const char *path;
    FILE *f;

    if (!real)
        return EAI_SYSTEM;
    if (!in_test_domain(node))
        return real(node, service, hints, res);
    path = getenv("TDS_TEST_HOSTS");
    f = path ? fopen(path, "re") : NULL;
    while (f && fgets(line, sizeof(line), f)) {
        struct addrinfo h = hints ? *hints : (struct addrinfo){.ai_family = AF_UNSPEC};
        struct addrinfo *r = NULL;

        if (sscanf(line, "%255s %63s", name, addr) != 2 || strcasecmp(name, node) != 0)
            continue;
        /* glibc allocates each node on its own, so lists can be chained and
         * freed by one freeaddrinfo() */
        h.ai_flags |= AI_NUMERICHOST;
        if (real(addr, service, &h, &r) != 0)
            continue;
        *tail = r;
        while (*tail)
            tail = &(*tail)->ai_next;
    }
    if (f)
        fclose(f);
    if (!head)
        return EAI_NONAME;
    *res = head;
    return 0;
}
