/* test_zoho — Zoho time text with offsets, envelope and OAuth response
 * classification, and record spans sliced from response bodies. */
#include <stdlib.h>
#include <string.h>

#include "assert.h"
#include "util.h"
#include "zoho.h"

static void test_time_parse(void)
{
    int64_t t;
    T_INT(tds_ztime_parse("1970-01-01T00:00:00+0000", &t), ==, 0);
    T_INT(t, ==, 0);
    T_INT(tds_ztime_parse("2024-02-01T08:00:00+0530", &t), ==, 0);
    T_INT(t, ==, 1706754600); /* 2024-02-01T02:30:00Z */
    T_INT(tds_ztime_parse("2026-06-09T09:45:21-0400", &t), ==, 0);
    T_INT(t, ==, 1781012721); /* 2026-06-09T13:45:21Z */
    int64_t t2;
    T_INT(tds_ztime_parse("2026-06-09T13:45:21Z", &t2), ==, 0);
    T_INT(t2, ==, t);
    T_INT(tds_ztime_parse("2026-06-09T16:45:21+03:00", &t2), ==, 0);
    T_INT(t2, ==, t);
    T_INT(tds_ztime_parse("2026-06-09T13:45:21.250Z", &t2), ==, 0);
    T_INT(t2, ==, t);
    T_INT(tds_ztime_parse("2013-08-05", &t), ==, 0);
    T_INT(t, ==, 1375660800);
    T_INT(tds_ztime_parse("1969-12-31T23:59:59+0000", &t), ==, 0);
    T_INT(t, ==, -1);
    T_INT(tds_ztime_parse("2024-02-30x", &t), ==, TDS_E_INVALID);
    T_INT(tds_ztime_parse("2024-13-01T00:00:00+0000", &t), ==, TDS_E_INVALID);
    T_INT(tds_ztime_parse("2024-01-01T00:00:00+03", &t), ==, 0);
    T_INT(tds_ztime_parse("2024-01-01T00:00:00 0300", &t), ==, TDS_E_INVALID);
    T_INT(tds_ztime_parse("", &t), ==, TDS_E_INVALID);
    T_INT(tds_ztime_parse(NULL, &t), ==, TDS_E_INVALID);
    T_INT(tds_ztime_parse("2024-01-01T25:00:00+0000", &t), ==, TDS_E_INVALID);
    /* the offset as written, for the incremental filter */
    int off = 0;
    T_INT(tds_ztime_parse_at("2026-06-09T09:45:21-0400", &t, &off), ==, 0);
    T_INT(off, ==, -240);
    T_INT(tds_ztime_parse_at("2026-06-09T16:45:21+03:00", &t2, &off), ==, 0);
    T_INT(off, ==, 180);
    T_INT(t2, ==, t);
    T_INT(tds_ztime_parse_at("2026-06-09T13:45:21Z", &t2, &off), ==, 0);
    T_INT(off, ==, 0);
    T_INT(tds_ztime_parse_at("2026-06-09T13:45:21", &t2, &off), ==, 0);
    T_INT(off, ==, TDS_ZTIME_NO_OFFSET);
    T_INT(tds_ztime_parse_at("2013-08-05", &t2, &off), ==, 0);
    T_INT(off, ==, TDS_ZTIME_NO_OFFSET);
    T_INT(tds_ztime_parse_at("2024-02-30x", &t2, &off), ==, TDS_E_INVALID);
}

static void test_time_format(void)
{
    char b[TDS_ZTIME_LEN];
    tds_ztime_format(1706754600, 330, b);
    T_STR(b, "2024-02-01T08:00:00+0530");
    tds_ztime_format(1781012721, -240, b);
    T_STR(b, "2026-06-09T09:45:21-0400");
    tds_ztime_format(0, 0, b);
    T_STR(b, "1970-01-01T00:00:00+0000");
    /* crossing midnight backwards and a leap day */
    tds_ztime_format(1709164800, -60, b); /* 2024-02-29T00:00:00Z */
    T_STR(b, "2024-02-28T23:00:00-0100");
    tds_ztime_format(-1, 0, b);
    T_STR(b, "1969-12-31T23:59:59+0000");
    /* round trip across offsets */
    for (int64_t s = 0; s < 4000000000LL; s += 86400 * 37 + 3671) {
        for (int off = -720; off <= 840; off += 195) {
            int64_t back;
            tds_ztime_format(s, off, b);
            T_INT(tds_ztime_parse(b, &back), ==, 0);
            T_INT(back, ==, s);
        }
    }
    int m;
    T_INT(tds_ztime_parse_offset("+0300", &m), ==, 0);
    T_INT(m, ==, 180);
    T_INT(tds_ztime_parse_offset("-04:30", &m), ==, 0);
    T_INT(m, ==, -270);
    T_INT(tds_ztime_parse_offset("Z", &m), ==, 0);
    T_INT(m, ==, 0);
    T_INT(tds_ztime_parse_offset("0300", &m), ==, TDS_E_INVALID);
    T_INT(tds_ztime_parse_offset("+2500", &m), ==, TDS_E_INVALID);
}

#define CL(ok, st, body, c) tds_zoho_classify(ok, st, body, strlen(body), c)

static void test_classify(void)
{
    int64_t c;
    T_INT(CL(true, 200, "{\"code\":0,\"message\":\"success\",\"items\":[]}", &c), ==, TDS_ZAPI_OK);
    T_INT(c, ==, 0);
    T_INT(CL(false, 0, "", &c), ==, TDS_ZAPI_RETRY);
    T_INT(CL(true, 200, "{\"code\":0,\"items\":[{\"a\":1}", &c), ==, TDS_ZAPI_RETRY); /* truncated */
    T_INT(CL(true, 502, "<html>bad gateway</html>", &c), ==, TDS_ZAPI_RETRY);
    T_INT(CL(true, 500, "{\"code\":1000,\"message\":\"Internal error\"}", &c), ==, TDS_ZAPI_RETRY);
    T_INT(CL(true, 429, "{\"code\":44,\"message\":\"blocked\"}", &c), ==, TDS_ZAPI_RATE_MINUTE);
    T_INT(CL(true, 429, "{\"code\":1070,\"message\":\"in process\"}", &c), ==,
          TDS_ZAPI_RATE_CONCURRENCY);
    T_INT(CL(true, 429, "{\"code\":45,\"message\":\"daily\"}", &c), ==, TDS_ZAPI_RATE_DAILY);
    T_INT(CL(true, 200, "{\"code\":45,\"message\":\"daily\"}", &c), ==, TDS_ZAPI_RATE_DAILY);
    T_INT(CL(true, 429, "", &c), ==, TDS_ZAPI_RATE_MINUTE);
    T_INT(CL(true, 401, "{\"code\":57,\"message\":\"not authorized\"}", &c), ==, TDS_ZAPI_AUTH);
    T_INT(CL(true, 400, "{\"code\":57,\"message\":\"not authorized\"}", &c), ==, TDS_ZAPI_AUTH);
    T_INT(CL(true, 401, "", &c), ==, TDS_ZAPI_AUTH);
    T_INT(CL(true, 404, "{\"code\":1002,\"message\":\"Item does not exist.\"}", &c), ==,
          TDS_ZAPI_NOTFOUND);
    T_INT(c, ==, 1002);
    T_INT(CL(true, 200, "{\"code\":1038,\"message\":\"JSON is not well formed\"}", &c), ==,
          TDS_ZAPI_FATAL);
    T_INT(CL(true, 400, "{\"code\":\"2\",\"message\":\"x\"}", &c), ==, TDS_ZAPI_FATAL);
    T_INT(c, ==, 2);
}

#define OA(ok, st, body, o) tds_zoauth_parse(ok, st, body, strlen(body), o)

static void test_oauth(void)
{
    static struct tds_zoauth o;
    T_INT(OA(true, 200,
             "{\"access_token\":\"1000.a.b\",\"api_domain\":\"https://www.zohoapis.eu\","
             "\"token_type\":\"Bearer\",\"expires_in\":3600}", &o), ==, TDS_ZOAUTH_OK);
    T_STR(o.access_token, "1000.a.b");
    T_STR(o.api_domain, "https://www.zohoapis.eu");
    T_INT(o.expires_in_s, ==, 3600);
    T_STR(o.refresh_token, "");
    /* api_domain omitted: empty, the caller keeps the old one */
    T_INT(OA(true, 200, "{\"access_token\":\"x\",\"expires_in\":1800}", &o), ==, TDS_ZOAUTH_OK);
    T_STR(o.api_domain, "");
    T_INT(o.expires_in_s, ==, 1800);
    T_INT(OA(true, 200, "{\"access_token\":\"x\",\"refresh_token\":\"1000.r\"}", &o), ==,
          TDS_ZOAUTH_OK);
    T_STR(o.refresh_token, "1000.r");
    T_INT(o.expires_in_s, ==, 3600); /* none given: an hour */
    /* the older answer: expires_in in milliseconds beside expires_in_sec */
    T_INT(OA(true, 200, "{\"access_token\":\"x\",\"expires_in_sec\":3600,"
                        "\"expires_in\":3600000}", &o), ==, TDS_ZOAUTH_OK);
    T_INT(o.expires_in_s, ==, 3600);
    T_INT(OA(true, 200, "{\"access_token\":\"x\",\"expires_in\":3600000}", &o), ==,
          TDS_ZOAUTH_OK);
    T_INT(o.expires_in_s, ==, 3600);
    T_INT(OA(true, 200, "{\"access_token\":\"x\",\"expires_in\":\"1800000\"}", &o), ==,
          TDS_ZOAUTH_OK);
    T_INT(o.expires_in_s, ==, 1800);
    T_INT(OA(true, 200, "{\"access_token\":\"x\",\"expires_in\":\"3600\"}", &o), ==,
          TDS_ZOAUTH_OK);
    T_INT(o.expires_in_s, ==, 3600);
    /* beyond a week of milliseconds, zero, negative or not a number: an hour */
    T_INT(OA(true, 200, "{\"access_token\":\"x\",\"expires_in\":999999999999}", &o), ==,
          TDS_ZOAUTH_OK);
    T_INT(o.expires_in_s, ==, 3600);
    T_INT(OA(true, 200, "{\"access_token\":\"x\",\"expires_in_sec\":0,\"expires_in\":-5}", &o),
          ==, TDS_ZOAUTH_OK);
    T_INT(o.expires_in_s, ==, 3600);
    T_INT(OA(true, 200, "{\"access_token\":\"x\",\"expires_in\":\"1h\"}", &o), ==,
          TDS_ZOAUTH_OK);
    T_INT(o.expires_in_s, ==, 3600);
    /* errors under HTTP 200 */
    T_INT(OA(true, 200, "{\"error\":\"invalid_client\"}", &o), ==, TDS_ZOAUTH_INVALID);
    T_STR(o.error, "invalid_client");
    T_INT(OA(true, 200, "{\"error\":\"invalid_code\"}", &o), ==, TDS_ZOAUTH_INVALID);
    /* an error without a name still says what happened */
    T_INT(OA(true, 200, "{\"error\":\"\"}", &o), ==, TDS_ZOAUTH_DENIED);
    T_STR(o.error, "token endpoint answered HTTP 200 with an unnamed error");
    T_INT(OA(true, 503, "{\"error\":{\"code\":1}}", &o), ==, TDS_ZOAUTH_RETRY);
    T_STR(o.error, "token endpoint answered HTTP 503 with an unnamed error");
    T_INT(OA(true, 200, "{\"error\":\"invalid_client_secret\"}", &o), ==, TDS_ZOAUTH_INVALID);
    /* the refresh throttle, in English and translated */
    T_INT(OA(true, 400,
             "{\"error_description\":\"You have made too many requests continuously.\","
             "\"error\":\"Access Denied\",\"status\":\"failure\"}", &o), ==, TDS_ZOAUTH_DENIED);
    T_INT(OA(true, 400, "{\"error\":\"\xe6\x8b\x92\xe7\xbb\x9d\xe8\xae\xbf\xe9\x97\xae\"}", &o), ==,
          TDS_ZOAUTH_DENIED);
    T_INT(OA(true, 400, "<html>", &o), ==, TDS_ZOAUTH_DENIED);
    T_INT(OA(false, 0, "", &o), ==, TDS_ZOAUTH_RETRY);
    T_INT(OA(true, 503, "unavailable", &o), ==, TDS_ZOAUTH_RETRY);
    T_INT(OA(true, 200, "{\"access_token\":", &o), ==, TDS_ZOAUTH_RETRY);
}

static void test_spans(void)
{
    const char *b = "{\"code\":0, \"message\":\"success\",\"items\" : [ {\"item_id\":\"1\",\"rate\":"
                    "1369.66,\"n\":{\"a\":[1,2,\"]\"]}} , {\"item_id\":\"2\",\"s\":\"q\\\"}\"} ],"
                    "\"page_context\":{\"has_more_page\":true}}";
    struct tds_span *sp;
    size_t n;
    T_INT(tds_json_array_spans(b, strlen(b), "items", &sp, &n), ==, 0);
    T_INT(n, ==, 2);
    T_TRUE(strncmp(b + sp[0].off, "{\"item_id\":\"1\",\"rate\":1369.66,", 30) == 0);
    T_INT(b[sp[0].off + sp[0].len - 1], ==, '}');
    T_TRUE(strncmp(b + sp[1].off, "{\"item_id\":\"2\",\"s\":\"q\\\"}\"}", sp[1].len) == 0);
    T_INT(sp[1].len, ==, strlen("{\"item_id\":\"2\",\"s\":\"q\\\"}\"}"));
    free(sp);
    T_INT(tds_json_array_spans(b, strlen(b), "contacts", &sp, &n), ==, TDS_E_NOTFOUND);
    T_INT(tds_json_array_spans(b, strlen(b), "code", &sp, &n), ==, TDS_E_NOTFOUND);
    T_INT(tds_json_array_spans(b, strlen(b) - 20, "zzz", &sp, &n), ==, TDS_E_INVALID);
    const char *e = "{\"items\":[]}";
    T_INT(tds_json_array_spans(e, strlen(e), "items", &sp, &n), ==, 0);
    T_INT(n, ==, 0);
    T_NULL(sp);
    struct tds_span one;
    const char *d = "{\"code\":0,\"item\":{\"item_id\":\"9\",\"x\":[{}]},\"z\":1}";
    T_INT(tds_json_member_span(d, strlen(d), "item", &one), ==, 0);
    T_INT(one.len, ==, strlen("{\"item_id\":\"9\",\"x\":[{}]}"));
    /* truncated body */
    T_INT(tds_json_array_spans(b, 60, "items", &sp, &n), ==, TDS_E_INVALID);
    /* deep nesting is refused, not recursed into without bound */
    char deep[1200];
    size_t k = 0;
    k += (size_t)snprintf(deep, sizeof(deep), "{\"items\":[");
    for (int i = 0; i < 500; i++)
        deep[k++] = '[';
    deep[k] = 0;
    T_INT(tds_json_array_spans(deep, k, "items", &sp, &n), ==, TDS_E_INVALID);
}

static void test_id_ok(void)
{
    T_TRUE(tds_zoho_id_ok("460000000012345"));
    T_TRUE(tds_zoho_id_ok("abc_DEF-1.2"));
    T_TRUE(!tds_zoho_id_ok(""));
    T_TRUE(!tds_zoho_id_ok("12\xff"));       /* not UTF-8 */
    T_TRUE(!tds_zoho_id_ok("12\xc3\xa9"));  /* UTF-8, but not an id */
    T_TRUE(!tds_zoho_id_ok("12 34"));
    T_TRUE(!tds_zoho_id_ok("12/34"));
    T_TRUE(!tds_zoho_id_ok("."));  /* dot segments: /items/.. is the API's root */
    T_TRUE(!tds_zoho_id_ok(".."));
    T_TRUE(tds_zoho_id_ok("..."));
    T_TRUE(tds_zoho_id_ok(".5"));
    char big[TDS_ZOHO_ID_MAX + 2];
    memset(big, '1', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    T_TRUE(!tds_zoho_id_ok(big));
    big[TDS_ZOHO_ID_MAX] = '\0';
    T_TRUE(tds_zoho_id_ok(big));
}

int main(void)
{
    T_RUN(test_time_parse);
    T_RUN(test_time_format);
    T_RUN(test_classify);
    T_RUN(test_oauth);
    T_RUN(test_spans);
    T_RUN(test_id_ok);
    return 0;
}
