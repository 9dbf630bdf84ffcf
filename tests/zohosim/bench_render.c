/* bench_render — how fast the simulator generates an organization and
 * renders list pages and detail records, without HTTP. Prints figures and
 * never fails on time (meson benchmark). The over-HTTP figure is measured
 * with wrk (README.md). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "data.h"
#include "jw.h"
#include "render.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    size_t items = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    struct zs_org o;
    char err[64];
    zs_org_defaults(&o, 0);
    o.seed = 1;
    o.want[ZS_ITEMS] = items;
    if (zs_org_parse(&o, "groups=5000,contacts=20000,invoices=20000,salesorders=20000", err,
                     sizeof(err)))
        return 1;
    double t0 = now_s();
    if (zs_org_generate(&o, 1735689600))
        return 1;
    double t1 = now_s();
    printf("generate: %zu items and their org in %.3f s\n", items, t1 - t0);
    uint32_t idx[200];
    size_t bytes = 0, pages = 0;
    struct zs_page_req q = {ZS_SORT_MODIFIED, false, false, 0, 1, 200};
    t0 = now_s();
    for (size_t p = 1; p <= 500; p++) {
        size_t n;
        bool more;
        q.page = p;
        if (zs_org_page(&o, ZS_ITEMS, &q, idx, &n, &more))
            return 1;
        struct zs_jw w;
        zs_jw_init(&w, 1 << 19);
        zs_jw_arr(&w);
        for (size_t k = 0; k < n; k++)
            zs_render(&w, &o, ZS_ITEMS, &o.t[ZS_ITEMS].recs[idx[k]], false, false);
        zs_jw_arr_end(&w);
        size_t len;
        free(zs_jw_take(&w, &len));
        bytes += len;
        pages++;
    }
    t1 = now_s();
    printf("item list pages of 200: %.0f pages/s on one thread (%.0f MB/s, incl. first sort)\n",
           (double)pages / (t1 - t0), (double)bytes / 1e6 / (t1 - t0));
    t0 = now_s();
    size_t details = 0;
    for (size_t i = 0; i < o.t[ZS_INVOICES].n && i < 20000; i++, details++) {
        struct zs_jw w;
        zs_jw_init(&w, 8192);
        zs_render(&w, &o, ZS_INVOICES, &o.t[ZS_INVOICES].recs[i], true, false);
        free(zs_jw_take(&w, NULL));
    }
    t1 = now_s();
    printf("invoice details: %.0f records/s on one thread\n", (double)details / (t1 - t0));
    zs_org_deinit(&o);
    return 0;
}
