/* bus — ZeroMQ sockets the way every stage uses them: bounded queues,
 * ZMQ_IMMEDIATE on connecting sockets, bounded linger, reconnect backoff, a
 * frame size limit on receiving sockets, and connect lists whose DNS names fan
 * out to every address they resolve to.
 *
 * Owns the zmq context (one per process) and each socket it creates. It never
 * logs and never decides what a failure means: the stage does.
 *
 * Connect bookkeeping: the list given to tds_bus_connect is kept as specs
 * (one per comma-separated entry). A spec is either passed to zmq as is
 * (inproc://, ipc://, tcp:// with an IP literal or "*") or is a tcp:// name that
 * is resolved with getaddrinfo into "tcp://<ip>:<port>" endpoints, each
 * connected once. tds_bus_refresh re-resolves names, connects new addresses
 * and disconnects vanished ones. The first lookup (tds_bus_connect) waits;
 * later ones run on the bus's resolver thread, so a resolver that takes
 * seconds to answer (a DNS outage: timeouts and retries for each search
 * domain) never holds up the stage's loop: tds_bus_refresh applies the
 * lookups that finished since its last call and asks for new ones. When a
 * name does not resolve at the moment
 * (DNS hiccup, Service not created yet) its previous addresses are kept: a
 * resolver outage must not disconnect a healthy pipeline. The bus keeps a list
 * of the sockets it made, so that tds_bus_refresh_all reaches sockets that
 * another module owns (the ingress's live in forward.c).
 *
 * CURVE (tds_bus_set_curve): the options are set on the socket right before
 * each zmq_bind / zmq_connect, because libzmq takes the security mechanism of
 * a connection from the options in force when it is bound or connected. Key
 * text is wiped when the bus is freed.
 */
#include "bus.h"
#include "msg.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <zmq.h>

#define RECONNECT_MAX_MS 5000
#define MAX_SPECS 64       /* entries in one endpoint list */
#define MAX_ADDRS 64       /* addresses kept per resolved name */

#define Z85_KEY_LEN 40      /* a 32-byte CURVE key as Z85 text */

/* ZMQ_MAXMSGSIZE of receiving sockets: a peer that sends a larger frame is
 * disconnected by libzmq before the frame is buffered. The limit applies to
 * the frame on the wire, which CURVE makes 33 bytes longer than the message:
 * the slack keeps a message of exactly TDS_MSG_MAX_FRAME bytes deliverable
 * (tds_bus_recv still refuses what is over its max_len). */
#define MAX_WIRE_FRAME ((int64_t)TDS_MSG_MAX_FRAME + 4096)

/* A name the resolver thread looks up for one spec. Owned by the bus's list
 * (under rmu) and freed once its spec is gone (orphan) and no lookup of it
 * runs, or with the bus. */
struct rname {
    struct rname *next;
    char *host, *port;     /* fixed from creation: read by the thread without rmu */
    bool wanted;           /* a lookup is asked for */
    bool busy;             /* the thread is looking it up */
    bool orphan;           /* its spec is gone */
    bool done;             /* a result waits for tds_bus_refresh */
    int n;                 /* the result: count of addrs, or a negative errno */
    char **addrs;
};

struct tds_bus {
    void *ctx;
    /* bytes of tds_bus_send_counted frames not let go yet; lives until the
     * context's end, after which ZeroMQ frees none */
    _Atomic size_t queued;
    struct tds_bus_sock *socks; /* every socket made and not yet freed */
    /* The resolver thread and its names (rmu guards the list and flags). */
    pthread_mutex_t rmu;
    pthread_cond_t rcond;
    pthread_t rthread;
    bool rthread_on, rstop;
    bool rleft;            /* tds_bus_free left the rest to the thread */
    bool rdone;            /* the thread is past its last use of the names */
    struct rname *names;
    bool curve;
    char server_secret[Z85_KEY_LEN + 1];
    char server_public[Z85_KEY_LEN + 1];
    char client_secret[Z85_KEY_LEN + 1];
    char client_public[Z85_KEY_LEN + 1];
};

struct peer {
    char *endpoint;        /* as given to zmq_connect */
};

struct spec {
    char *text;            /* the entry as configured */
    bool resolve;          /* tcp:// with a DNS name */
    char *host;            /* resolve only */
    char *port;            /* resolve only */
    struct rname *name;    /* resolve only, once refreshed: its lookups */
    struct peer *peers;
    size_t n_peers;
};

struct tds_bus_sock {
    struct tds_bus *bus;
    struct tds_bus_sock *prev, *next; /* the bus's list */
    void *z;
    int type;
    bool immediate_set;
    struct spec *specs;
    size_t n_specs;
};

int tds_bus_new(struct tds_bus **out)
{
    struct tds_bus *bus = calloc(1, sizeof(*bus));

    if (!bus)
        return -ENOMEM;
    bus->ctx = zmq_ctx_new();
    if (!bus->ctx) {
        int r = -errno;

        free(bus);
        return r ? r : -ENOMEM;
    }
    pthread_mutex_init(&bus->rmu, NULL);
    pthread_cond_init(&bus->rcond, NULL);
    *out = bus;
    return 0;
}

static void free_list(char **list, size_t n);

static void rname_free(struct rname *nm)
{
    if (nm->done && nm->n > 0)
        free_list(nm->addrs, (size_t)nm->n);
    free(nm->host);
    free(nm->port);
    free(nm);
}

static void keys_wipe(struct tds_bus *bus)
{
    /* volatile so the wipe of key text is not optimised away */
    volatile char *p = (volatile char *)bus->server_secret;

    for (size_t i = 0; i < sizeof(bus->server_secret); i++)
        p[i] = 0;
    p = (volatile char *)bus->client_secret;
    for (size_t i = 0; i < sizeof(bus->client_secret); i++)
        p[i] = 0;
}

/* The resolver's part of the bus, and the bus: by tds_bus_free, or by the
 * resolver thread that it left to finish a lookup. */
static void bus_release(struct tds_bus *bus)
{
    while (bus->names) {
        struct rname *nm = bus->names;

        bus->names = nm->next;
        rname_free(nm);
    }
    pthread_cond_destroy(&bus->rcond);
    pthread_mutex_destroy(&bus->rmu);
    free(bus);
}

/* How long tds_bus_free waits for a lookup in hand. */
#define RESOLVER_JOIN_MS 1000

struct tds_bus *tds_bus_free(struct tds_bus *bus)
{
    bool joined = true;

    if (!bus)
        return NULL;
    if (bus->rthread_on) {
        struct timespec until;

        pthread_mutex_lock(&bus->rmu);
        bus->rstop = true;
        pthread_cond_signal(&bus->rcond);
        pthread_mutex_unlock(&bus->rmu);
        /* After the lookup in hand, if any, within a second: in a DNS outage
         * one getaddrinfo can take tens of seconds (timeouts, attempts, a
         * search list), and the stage's exit is due within 10 s of SIGTERM.
         * Past that the thread is left to finish its lookup on its own and
         * to free the bus (below): the process is ending. */
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)RESOLVER_JOIN_MS % 1000 * 1000000L;
        until.tv_sec += RESOLVER_JOIN_MS / 1000 + until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        joined = pthread_timedjoin_np(bus->rthread, NULL, &until) == 0;
    }
    /* Blocks until every socket is closed and its linger has passed. */
    while (zmq_ctx_term(bus->ctx) < 0 && errno == EINTR)
        ;
    keys_wipe(bus);
    if (!joined) {
        /* Nothing of the bus is touched here after the hand-over: once
         * rleft is set, the thread may free it at any moment. */
        pthread_mutex_lock(&bus->rmu);
        bool left = !bus->rdone; /* else it is exiting: joined below */
        bus->rleft = left;
        pthread_t t = bus->rthread;
        pthread_mutex_unlock(&bus->rmu);
        if (left) {
            pthread_detach(t);
            return NULL;
        }
        pthread_join(t, NULL);
    }
    bus_release(bus);
    return NULL;
}

static int set_int(void *z, int opt, int v)
{
    return zmq_setsockopt(z, opt, &v, sizeof(v)) < 0 ? -errno : 0;
}

static int set_max_msg(void *z, int64_t v)
{
    return zmq_setsockopt(z, ZMQ_MAXMSGSIZE, &v, sizeof(v)) < 0 ? -errno : 0;
}

static bool z85_key_ok(const char *k, uint8_t bin[32])
{
    return strlen(k) == Z85_KEY_LEN && zmq_z85_decode(bin, k) != NULL;
}

int tds_bus_set_curve(struct tds_bus *bus, const char *server_secret_z85,
                      const char *server_public_z85)
{
    bool has_secret = server_secret_z85 && *server_secret_z85;
    bool has_public = server_public_z85 && *server_public_z85;
    uint8_t sec[32], pub[32];

    if (!has_secret && !has_public) {
        bus->curve = false;
        return 0;
    }
    if (!has_secret || !has_public)
        return TDS_E_INVALID;
    if (!zmq_has("curve"))
        return -ENOTSUP;
    if (!z85_key_ok(server_secret_z85, sec) || !z85_key_ok(server_public_z85, pub)) {
        memset(sec, 0, sizeof(sec));
        return TDS_E_INVALID;
    }
    memset(sec, 0, sizeof(sec));
#if ZMQ_VERSION >= ZMQ_MAKE_VERSION(4, 2, 1)
    {
        char derived[Z85_KEY_LEN + 1];

        /* A public key from another pair would make every client fail its
         * handshake with no error anywhere: catch it at start-up. */
        if (zmq_curve_public(derived, server_secret_z85) != 0)
            return TDS_E_INVALID;
        if (strcmp(derived, server_public_z85) != 0)
            return TDS_E_INVALID;
    }
#endif
    if (zmq_curve_keypair(bus->client_public, bus->client_secret) != 0)
        return -errno;
    memcpy(bus->server_secret, server_secret_z85, Z85_KEY_LEN + 1);
    memcpy(bus->server_public, server_public_z85, Z85_KEY_LEN + 1);
    bus->curve = true;
    return 0;
}

static int set_key(void *z, int opt, const char *z85)
{
    return zmq_setsockopt(z, opt, z85, Z85_KEY_LEN) < 0 ? -errno : 0;
}

static int curve_server(struct tds_bus_sock *s)
{
    int r;

    if (!s->bus->curve)
        return 0;
    if ((r = set_int(s->z, ZMQ_CURVE_SERVER, 1)) ||
        (r = set_key(s->z, ZMQ_CURVE_SECRETKEY, s->bus->server_secret)))
        return r;
    return 0;
}

static int curve_client(struct tds_bus_sock *s)
{
    int r;

    if (!s->bus->curve)
        return 0;
    if ((r = set_int(s->z, ZMQ_CURVE_SERVER, 0)) ||
        (r = set_key(s->z, ZMQ_CURVE_SERVERKEY, s->bus->server_public)) ||
        (r = set_key(s->z, ZMQ_CURVE_PUBLICKEY, s->bus->client_public)) ||
        (r = set_key(s->z, ZMQ_CURVE_SECRETKEY, s->bus->client_secret)))
        return r;
    return 0;
}

int tds_bus_sock_new(struct tds_bus *bus, int type, const struct tds_bus_opts *opts,
                     struct tds_bus_sock **out)
{
    struct tds_bus_opts o = {.hwm = 1000, .linger_ms = 1000, .reconnect_ms = 100};
    struct tds_bus_sock *s;
    int r;

    if (opts) {
        if (opts->hwm > 0)
            o.hwm = opts->hwm;
        /* 0 means "default" for every field, so a zeroed struct is the defaults;
         * a negative linger means none (zmq's -1, wait forever, is never wanted). */
        if (opts->linger_ms > 0)
            o.linger_ms = opts->linger_ms;
        else if (opts->linger_ms < 0)
            o.linger_ms = 0;
        if (opts->reconnect_ms > 0)
            o.reconnect_ms = opts->reconnect_ms;
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->bus = bus;
    s->type = type;
    s->z = zmq_socket(bus->ctx, type);
    if (!s->z) {
        r = -errno;
        free(s);
        return r;
    }
    if ((r = set_int(s->z, ZMQ_SNDHWM, o.hwm)) || (r = set_int(s->z, ZMQ_RCVHWM, o.hwm)) ||
        (r = set_int(s->z, ZMQ_LINGER, o.linger_ms)) ||
        (r = set_int(s->z, ZMQ_RECONNECT_IVL, o.reconnect_ms)) ||
        (r = set_int(s->z, ZMQ_RECONNECT_IVL_MAX,
                     o.reconnect_ms > RECONNECT_MAX_MS ? o.reconnect_ms : RECONNECT_MAX_MS)) ||
        /* Dual stack: "*" binds IPv6 and IPv4 (libzmq falls back to IPv4 where
         * IPv6 is off), and resolved IPv6 peers can be connected. */
        (r = set_int(s->z, ZMQ_IPV6, 1)) ||
        ((type == ZMQ_PULL || type == ZMQ_SUB) && (r = set_max_msg(s->z, MAX_WIRE_FRAME)))) {
        zmq_close(s->z);
        free(s);
        return r;
    }
    s->next = bus->socks;
    if (bus->socks)
        bus->socks->prev = s;
    bus->socks = s;
    *out = s;
    return 0;
}

static void spec_clear(struct tds_bus *bus, struct spec *sp)
{
    if (sp->name) {
        /* freed by the next sweep (reap_names) or with the bus */
        pthread_mutex_lock(&bus->rmu);
        sp->name->orphan = true;
        pthread_mutex_unlock(&bus->rmu);
    }
    for (size_t i = 0; i < sp->n_peers; i++)
        free(sp->peers[i].endpoint);
    free(sp->peers);
    free(sp->text);
    free(sp->host);
    free(sp->port);
    memset(sp, 0, sizeof(*sp));
}

struct tds_bus_sock *tds_bus_sock_free(struct tds_bus_sock *s)
{
    if (!s)
        return NULL;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->bus->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    zmq_close(s->z);
    for (size_t i = 0; i < s->n_specs; i++)
        spec_clear(s->bus, &s->specs[i]);
    free(s->specs);
    free(s);
    return NULL;
}

void *tds_bus_sock_raw(struct tds_bus_sock *s) { return s->z; }

/* Split a comma-separated list into trimmed, non-empty entries. Calls fn for
 * each; stops at the first error. */
static int for_each_entry(const char *list, int (*fn)(struct tds_bus_sock *, const char *),
                          struct tds_bus_sock *s)
{
    const char *p = list;
    size_t count = 0;

    if (!list)
        return -EINVAL;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *a = p, *b = p + n;
        char *entry;
        int r;

        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            if (++count > MAX_SPECS)
                return -E2BIG;
            entry = strndup(a, (size_t)(b - a));
            if (!entry)
                return -ENOMEM;
            r = fn(s, entry);
            free(entry);
            if (r)
                return r;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return count ? 0 : -EINVAL;
}

static int bind_one(struct tds_bus_sock *s, const char *ep)
{
    return zmq_bind(s->z, ep) < 0 ? -errno : 0;
}

int tds_bus_bind(struct tds_bus_sock *s, const char *endpoints)
{
    int r = curve_server(s);

    if (r)
        return r;
    return for_each_entry(endpoints, bind_one, s);
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Split "tcp://host:port" into host and port when host is a DNS name that
 * needs resolving; false for everything zmq should get verbatim. */
static bool parse_resolvable(const char *ep, char **host, char **port)
{
    const char *hp, *colon;

    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    hp = ep + 6;
    /* "[v6]:port", "*:port", source-address forms ("a;b:port") pass through. */
    if (hp[0] == '[' || hp[0] == '*' || strchr(hp, ';'))
        return false;
    colon = strrchr(hp, ':');
    if (!colon || colon == hp || colon[1] == '\0')
        return false;
    *host = strndup(hp, (size_t)(colon - hp));
    *port = strdup(colon + 1);
    if (!*host || !*port || is_ip_literal(*host)) {
        free(*host);
        free(*port);
        *host = *port = NULL;
        return false;
    }
    return true;
}

static bool peers_have(const struct peer *p, size_t n, const char *ep)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(p[i].endpoint, ep) == 0)
            return true;
    return false;
}

/* Resolve host:port into a list of "tcp://ip:port" strings. Returns the
 * count (≥ 0) or a negative errno; 0 addresses is reported as -ENOENT. */
static int resolve(const char *host, const char *port, char ***out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL, *ai;
    char **list = NULL;
    size_t n = 0;
    int r;

    r = getaddrinfo(host, port, &hints, &res);
    if (r != 0)
        return r == EAI_MEMORY ? -ENOMEM : -ENOENT;
    list = calloc(MAX_ADDRS, sizeof(*list));
    if (!list) {
        freeaddrinfo(res);
        return -ENOMEM;
    }
    for (ai = res; ai && n < MAX_ADDRS; ai = ai->ai_next) {
        char ip[INET6_ADDRSTRLEN], ep[INET6_ADDRSTRLEN + 32];
        const void *addr;
        bool dup = false;

        if (ai->ai_family == AF_INET)
            addr = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            addr = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        else
            continue;
        if (!inet_ntop(ai->ai_family, addr, ip, sizeof(ip)))
            continue;
        snprintf(ep, sizeof(ep), ai->ai_family == AF_INET6 ? "tcp://[%s]:%s" : "tcp://%s:%s", ip,
                 port);
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(list[i], ep) == 0;
        if (dup)
            continue;
        list[n] = strdup(ep);
        if (!list[n]) {
            r = -ENOMEM;
            goto fail;
        }
        n++;
    }
    freeaddrinfo(res);
    if (n == 0) {
        free(list);
        return -ENOENT;
    }
    *out = list;
    return (int)n;
fail:
    freeaddrinfo(res);
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
    return r;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

/* Bring a spec's peers in line with the resolver: connect new addresses,
 * disconnect vanished ones. */
static int apply_addrs(struct tds_bus_sock *s, struct spec *sp, char **addrs, int n);

static int sync_spec(struct tds_bus_sock *s, struct spec *sp)
{
    char **addrs = NULL;
    int n, r = 0;

    if (!sp->resolve) {
        if (sp->n_peers)
            return 0;
        sp->peers = calloc(1, sizeof(*sp->peers));
        if (!sp->peers)
            return -ENOMEM;
        if (zmq_connect(s->z, sp->text) < 0) {
            r = -errno;
            free(sp->peers);
            sp->peers = NULL;
            return r;
        }
        sp->peers[0].endpoint = strdup(sp->text);
        if (!sp->peers[0].endpoint) {
            zmq_disconnect(s->z, sp->text);
            free(sp->peers);
            sp->peers = NULL;
            return -ENOMEM;
        }
        sp->n_peers = 1;
        return 0;
    }

    n = resolve(sp->host, sp->port, &addrs);
    return apply_addrs(s, sp, addrs, n);
}

/* Connect what addrs[0..n) adds to sp's peers and disconnect what it lacks;
 * takes addrs. n < 0: the lookup failed; -ENOENT (no address now) keeps the
 * peers as they are. */
static int apply_addrs(struct tds_bus_sock *s, struct spec *sp, char **addrs, int n)
{
    struct peer *np;
    size_t n_new = 0;
    int r = 0;

    if (n == -ENOENT)
        return 0; /* keep what we have; retried on the next refresh */
    if (n < 0)
        return n;

    np = calloc((size_t)n, sizeof(*np));
    if (!np) {
        free_list(addrs, (size_t)n);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        if (!peers_have(sp->peers, sp->n_peers, addrs[i]) && zmq_connect(s->z, addrs[i]) < 0) {
            r = -errno;
            free(addrs[i]);
            continue; /* others still get connected */
        }
        np[n_new++].endpoint = addrs[i];
    }
    free(addrs);
    for (size_t i = 0; i < sp->n_peers; i++) {
        if (!peers_have(np, n_new, sp->peers[i].endpoint))
            zmq_disconnect(s->z, sp->peers[i].endpoint);
        free(sp->peers[i].endpoint);
    }
    free(sp->peers);
    sp->peers = np;
    sp->n_peers = n_new;
    return r;
}

static int add_spec(struct tds_bus_sock *s, const char *entry)
{
    struct spec *sp;
    struct spec *p;

    for (size_t i = 0; i < s->n_specs; i++)
        if (strcmp(s->specs[i].text, entry) == 0)
            return 0; /* listed twice: connect once */
    p = realloc(s->specs, (s->n_specs + 1) * sizeof(*p));
    if (!p)
        return -ENOMEM;
    s->specs = p;
    sp = &s->specs[s->n_specs];
    memset(sp, 0, sizeof(*sp));
    sp->text = strdup(entry);
    if (!sp->text)
        return -ENOMEM;
    sp->resolve = parse_resolvable(entry, &sp->host, &sp->port);
    s->n_specs++;
    return sync_spec(s, sp);
}

int tds_bus_connect(struct tds_bus_sock *s, const char *endpoints)
{
    int r;

    if (!s->immediate_set) {
        /* Without this a PUSH would queue messages for a peer that is not
         * there, and they would sit in that pipe instead of going to a live one. */
        r = set_int(s->z, ZMQ_IMMEDIATE, 1);
        if (r)
            return r;
        s->immediate_set = true;
    }
    r = curve_client(s);
    if (r)
        return r;
    return for_each_entry(endpoints, add_spec, s);
}

/* The resolver thread: looks up the names asked for, one at a time, and
 * leaves each result for the spec's next tds_bus_refresh. */
static void *resolver_main(void *arg)
{
    struct tds_bus *bus = arg;

    pthread_mutex_lock(&bus->rmu);
    for (;;) {
        struct rname *nm = NULL;
        char **addrs = NULL;
        int n;

        while (!bus->rstop) {
            for (nm = bus->names; nm && !(nm->wanted && !nm->orphan); nm = nm->next)
                ;
            if (nm)
                break;
            pthread_cond_wait(&bus->rcond, &bus->rmu);
        }
        if (bus->rstop)
            break;
        nm->wanted = false;
        nm->busy = true;
        pthread_mutex_unlock(&bus->rmu);
        n = resolve(nm->host, nm->port, &addrs); /* host and port never change */
        pthread_mutex_lock(&bus->rmu);
        nm->busy = false;
        if (nm->done && nm->n > 0)
            free_list(nm->addrs, (size_t)nm->n); /* not taken: this one is newer */
        nm->addrs = n > 0 ? addrs : NULL;
        nm->n = n;
        nm->done = true;
    }
    bool left = bus->rleft;
    bus->rdone = true;
    pthread_mutex_unlock(&bus->rmu);
    if (left)
        bus_release(bus);
    return NULL;
}

/* Free the names whose spec is gone; under rmu. */
static void reap_names(struct tds_bus *bus)
{
    for (struct rname **pp = &bus->names; *pp;) {
        struct rname *nm = *pp;

        if (nm->orphan && !nm->busy) {
            *pp = nm->next;
            rname_free(nm);
        } else {
            pp = &nm->next;
        }
    }
}

/* sp's lookup by the resolver thread: the result of the last one, if it has
 * finished (*n then set, addrs taken), and a new one asked for. 0, or
 * -ENOMEM / the thread's start error. */
static int ask_resolver(struct tds_bus *bus, struct spec *sp, char ***addrs, int *n, bool *got)
{
    int r = 0;

    *got = false;
    if (!sp->name) {
        struct rname *nm = calloc(1, sizeof(*nm));

        if (!nm || !(nm->host = strdup(sp->host)) || !(nm->port = strdup(sp->port))) {
            if (nm) {
                free(nm->host);
                free(nm);
            }
            return -ENOMEM;
        }
        pthread_mutex_lock(&bus->rmu);
        nm->next = bus->names;
        bus->names = nm;
        pthread_mutex_unlock(&bus->rmu);
        sp->name = nm;
    }
    pthread_mutex_lock(&bus->rmu);
    if (!bus->rthread_on) {
        r = -pthread_create(&bus->rthread, NULL, resolver_main, bus);
        bus->rthread_on = r == 0;
    }
    if (sp->name->done) {
        *addrs = sp->name->addrs;
        *n = sp->name->n;
        *got = true;
        sp->name->addrs = NULL;
        sp->name->done = false;
    }
    sp->name->wanted = true;
    pthread_cond_signal(&bus->rcond);
    reap_names(bus);
    pthread_mutex_unlock(&bus->rmu);
    return r;
}

int tds_bus_refresh(struct tds_bus_sock *s)
{
    for (size_t i = 0; i < s->n_specs; i++) {
        struct spec *sp = &s->specs[i];
        char **addrs = NULL;
        bool got;
        int n;

        if (!sp->resolve)
            continue;
        if (ask_resolver(s->bus, sp, &addrs, &n, &got) != 0 && !got) {
            /* no thread (or no memory for its name): look it up here, as at
             * connect time */
            sync_spec(s, sp);
            continue;
        }
        if (got)
            apply_addrs(s, sp, addrs, n); /* per-spec failures leave that spec as it was */
    }
    return (int)tds_bus_peer_count(s);
}

void tds_bus_refresh_all(struct tds_bus *bus)
{
    for (struct tds_bus_sock *s = bus->socks; s; s = s->next)
        tds_bus_refresh(s);
}

size_t tds_bus_peer_count(const struct tds_bus_sock *s)
{
    size_t n = 0;

    for (size_t i = 0; i < s->n_specs; i++)
        n += s->specs[i].n_peers;
    return n;
}

int tds_bus_subscribe(struct tds_bus_sock *s, const char *topic)
{
    if (s->type != ZMQ_SUB)
        return -EINVAL;
    if (!topic)
        topic = "";
    return zmq_setsockopt(s->z, ZMQ_SUBSCRIBE, topic, strlen(topic)) < 0 ? -errno : 0;
}

int tds_bus_send(struct tds_bus_sock *s, const void *buf, size_t len, int flags)
{
    while (zmq_send(s->z, buf, len, flags) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

/* A counted frame's copy: the counter and the length to give back. */
struct counted {
    _Atomic size_t *queued;
    size_t len;
    max_align_t data[];
};

size_t tds_bus_queued(struct tds_bus *bus)
{
    return atomic_load(&bus->queued);
}

static void counted_free(void *data, void *hint)
{
    struct counted *c = hint;

    (void)data;
    atomic_fetch_sub(c->queued, c->len);
    free(c);
}

int tds_bus_send_counted(struct tds_bus_sock *s, const void *buf, size_t len, int flags)
{
    _Atomic size_t *queued = &s->bus->queued;
    struct counted *c = malloc(sizeof(*c) + (len ? len : 1));
    zmq_msg_t msg;

    if (!c)
        return -ENOMEM;
    c->queued = queued;
    c->len = len;
    memcpy(c->data, buf, len);
    atomic_fetch_add(queued, len);
    if (zmq_msg_init_data(&msg, c->data, len, counted_free, c) != 0) {
        int e = errno;
        counted_free(c->data, c);
        return -e;
    }
    while (zmq_msg_send(&msg, s->z, flags) < 0) {
        if (errno != EINTR) {
            int e = errno;
            zmq_msg_close(&msg); /* frees the copy, and gives its bytes back */
            return -e;
        }
    }
    return 0;
}

int tds_bus_recv(struct tds_bus_sock *s, char **buf, size_t *len, size_t max_len, int flags,
                 int *more)
{
    zmq_msg_t msg;
    size_t n;
    char *p;
    int r;

    *buf = NULL;
    *len = 0;
    if (more)
        *more = 0;
    zmq_msg_init(&msg);
    while (zmq_msg_recv(&msg, s->z, flags) < 0) {
        if (errno != EINTR) {
            r = -errno;
            zmq_msg_close(&msg);
            return r;
        }
    }
    n = zmq_msg_size(&msg);
    if (more)
        *more = zmq_msg_more(&msg);
    if (n > max_len) {
        *len = n; /* for the dead-letter count: how big it was */
        zmq_msg_close(&msg);
        return TDS_E_TOO_LARGE;
    }
    /* NUL-terminated for callers that treat topics and JSON as text. */
    p = malloc(n + 1);
    if (!p) {
        zmq_msg_close(&msg);
        return -ENOMEM;
    }
    if (n)
        memcpy(p, zmq_msg_data(&msg), n);
    p[n] = '\0';
    zmq_msg_close(&msg);
    *buf = p;
    *len = n;
    return 0;
}

int tds_bus_skip_rest(struct tds_bus_sock *s)
{
    int more = 0, n = 0;
    size_t optlen = sizeof(more);

    if (zmq_getsockopt(s->z, ZMQ_RCVMORE, &more, &optlen) < 0)
        return -errno;
    while (more) {
        zmq_msg_t msg;

        /* The parts of a message arrive together: the rest is there already. */
        zmq_msg_init(&msg);
        while (zmq_msg_recv(&msg, s->z, ZMQ_DONTWAIT) < 0) {
            if (errno != EINTR) {
                int r = -errno;

                zmq_msg_close(&msg);
                return r;
            }
        }
        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
        n++;
    }
    return n;
}

int tds_bus_send_msg(struct tds_bus_sock *s, const struct tds_msg *m, int flags)
{
    char *buf = NULL;
    size_t len = 0;
    int r;

    if (m->type == TDS_MSG_ACK && !m->u.ack.origin)
        return TDS_MSG_E_MALFORMED;
    r = tds_msg_encode(m, &buf, &len);
    if (r)
        return r;
    if (m->type == TDS_MSG_ACK) {
        /* [origin][map]: the topic frame lets each subscriber filter on its own
         * origin. Once the first frame is accepted, zmq delivers both or none. */
        r = tds_bus_send(s, m->u.ack.origin, strlen(m->u.ack.origin), flags | ZMQ_SNDMORE);
        if (r)
            goto out;
    }
    r = tds_bus_send(s, buf, len, flags);
out:
    free(buf);
    return r;
}
