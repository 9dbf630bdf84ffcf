/* bench_transform — detail items per second through the transform alone.
 *
 * Builds pages of 200 realistic detail items (two stock locations, custom
 * fields, variant attributes, Arabic names), encodes each as a `page`
 * message and times tds_worker_handle (decode, parse, validate, transform,
 * hash, encode the rows message) on one thread. Prints figures; never fails
 * on time. Usage: bench_processor_transform [pages] (default 250).
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "msg.h"
#include "transform.h"
#include "worker.h"

#define PER_PAGE 200

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this thread: on a shared machine wall time measures the
 * neighbours too; "items/s on one core" is items per CPU second. */
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }

static int item(char *buf, size_t len, long id)
{
    return snprintf(buf, len,
        "{\"item_id\":\"4815%015ld\",\"name\":\"قميص قطني %ld - أزرق / M\",\"sku\":\"TEE-%ld\","
        "\"status\":\"active\",\"unit\":\"pcs\",\"description\":\"Cotton tee, 180 gsm\","
        "\"item_type\":\"inventory\",\"product_type\":\"goods\",\"source\":\"user\","
        "\"is_combo_product\":false,\"rate\":19.99,\"purchase_rate\":\"7.50\","
        "\"group_id\":\"4815000000044100\",\"group_name\":\"Tee\",\"attribute_id1\":\"11\","
        "\"attribute_name1\":\"Color\",\"attribute_option_id1\":\"21\",\"attribute_option_name1\":\"Blue\","
        "\"attribute_id2\":\"12\",\"attribute_name2\":\"Size\",\"attribute_option_id2\":\"22\","
        "\"attribute_option_name2\":\"M\",\"attribute_name3\":\"\",\"attribute_option_name3\":\"\","
        "\"brand\":\"Acme\",\"manufacturer\":\"Acme Textiles\",\"reorder_level\":\"\","
        "\"tax_id\":\"4815000000012001\",\"tax_name\":\"VAT\",\"tax_percentage\":15,\"is_taxable\":true,"
        "\"purchase_account_id\":\"4815000000000509\",\"purchase_account_name\":\"Cost of Goods Sold\","
        "\"account_id\":\"4815000000000388\",\"account_name\":\"Sales\","
        "\"upc\":\"012345678905\",\"ean\":\"\",\"isbn\":\"\",\"part_number\":\"P-%ld\","
        "\"image_name\":\"tee.jpg\",\"image_type\":\"jpg\",\"image_document_id\":\"4815000000051001\","
        "\"stock_on_hand\":12,\"available_stock\":12,\"actual_available_stock\":12,"
        "\"committed_stock\":2,\"actual_committed_stock\":2,\"available_for_sale_stock\":10,"
        "\"actual_available_for_sale_stock\":10,\"length\":\"\",\"width\":\"\",\"height\":\"\","
        "\"weight\":\"0.2\",\"weight_unit\":\"kg\",\"dimension_unit\":\"cm\","
        "\"custom_fields\":[{\"customfield_id\":\"4815000000060001\",\"api_name\":\"cf_season\","
        "\"label\":\"Season\",\"value\":\"SS24\",\"index\":1,\"data_type\":\"string\"},"
        "{\"customfield_id\":\"4815000000060002\",\"api_name\":\"cf_origin\",\"label\":\"Origin\","
        "\"value\":\"مصر\",\"index\":2,\"data_type\":\"string\"}],"
        "\"custom_field_hash\":{\"cf_season\":\"SS24\",\"cf_origin\":\"مصر\"},"
        "\"locations\":[{\"location_id\":\"4815000000000331\",\"location_name\":\"Main WH\","
        "\"status\":\"active\",\"is_primary\":true,\"location_stock_on_hand\":10,"
        "\"location_available_stock\":10,\"location_actual_available_stock\":10,"
        "\"location_committed_stock\":2,\"location_actual_committed_stock\":2,"
        "\"location_available_for_sale_stock\":8,\"location_actual_available_for_sale_stock\":8},"
        "{\"location_id\":\"4815000000000335\",\"location_name\":\"المستودع الثاني\","
        "\"status\":\"active\",\"is_primary\":false,\"location_stock_on_hand\":\"2\","
        "\"location_available_stock\":2,\"location_actual_available_stock\":2,"
        "\"location_committed_stock\":0,\"location_actual_committed_stock\":0,"
        "\"location_available_for_sale_stock\":2,\"location_actual_available_for_sale_stock\":2}],"
        "\"created_time\":\"2024-01-15T10:20:30+0530\",\"last_modified_time\":\"2024-02-01T08:00:%02ld+0530\"}",
        id, id, id, id, id % 60);
}

int main(int argc, char **argv)
{
    long pages = argc > 1 ? strtol(argv[1], NULL, 10) : 250;
    struct tds_worker *w = NULL;
    struct tds_bytes recs[PER_PAGE];
    char *frames[16];
    size_t lens[16];
    size_t bytes = 0;

    /* as tds-processor's main does: keep freed message buffers for reuse */
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    if (pages <= 0 || tds_worker_new(&w, NULL, "processor.bench") != 0)
        return 1;
    /* 16 distinct pages, cycled */
    for (int p = 0; p < 16; p++) {
        struct tds_msg m;
        memset(&m, 0, sizeof(m));
        for (int i = 0; i < PER_PAGE; i++) {
            char *b = malloc(8192);
            if (!b)
                return 1;
            recs[i].n = (size_t)item(b, 8192, (long)p * PER_PAGE + i);
            recs[i].p = b;
            bytes += recs[i].n;
        }
        m.type = TDS_MSG_PAGE;
        m.v = TDS_MSG_VERSION;
        m.id = "pg-bench";
        m.u.page = (struct tds_msg_page){.org = "60001", .entity = "items", .run = "r",
                                         .mode = "full", .origin = "fetcher.bench", .page = p + 1,
                                         .detail = true, .records = recs, .n_records = PER_PAGE};
        if (tds_msg_encode(&m, &frames[p], &lens[p]) != 0)
            return 1;
        for (int i = 0; i < PER_PAGE; i++)
            free(recs[i].p);
    }
    /* warm up, then time */
    double t0 = 0, c0 = 0;
    size_t out_bytes = 0;
    for (long p = -16; p < pages; p++) {
        char *out = NULL;
        size_t out_len = 0;
        if (p == 0) {
            t0 = now();
            c0 = cpu();
        }
        if (tds_worker_handle(w, frames[(p + 16) % 16], lens[(p + 16) % 16], &out, &out_len) != 0)
            return 1;
        if (p >= 0)
            out_bytes += out_len;
        free(out);
    }
    double dt = now() - t0, dc = cpu() - c0;
    struct tds_worker_stats st;
    tds_worker_stats(w, &st);
    printf("processor-transform: %ld pages x %d detail items: %.0f items/s per CPU second "
           "(%.3f s CPU; %.0f items/s wall over %.3f s), avg record %zu bytes, "
           "rows out %.1f MB per CPU second, rejects %llu\n",
           pages, PER_PAGE, (double)pages * PER_PAGE / dc, dc, (double)pages * PER_PAGE / dt, dt,
           bytes / (16 * PER_PAGE), (double)out_bytes / dc / 1e6, (unsigned long long)st.rejects);
    for (int p = 0; p < 16; p++)
        free(frames[p]);
    tds_worker_free(w);
    return st.rejects ? 1 : 0;
}
