/* Unit tests for ingress/verify.c: the documented Zoho string-to-sign with a
 * digest computed independently by Python's hmac module, rotation, case,
 * missing/malformed/mismatch, base64 digests, the t= form's age check, and
 * webhook tokens. */
#include <stdio.h>
#include <string.h>

#include "assert.h"
#include "verify.h"

/* python3: hmac.new(b'abcdefghijkl12', b'namebasicsubscription_id90343' + body, sha256) */
static const char body[] = "{\"created_date\":\"2019-03-06\",\"event_id\":\"5675\"}";
static const char vec[] = "1818d5bea13d2c1f10de3ab576c2758872ac254852c3f38a9aed351ca10cc9f4";
static const struct tds_verify_kv params[] = {
    {"subscription_id", 15, "90343", 5},
    {"name", 4, "basic", 5},
};

static void test_known_vector(void)
{
    const char *secrets[] = {"abcdefghijkl12"};
    char hex[65];

    T_INT(tds_verify_sign(secrets[0], NULL, params, 2, body, strlen(body), hex), ==, 0);
    T_STR(hex, vec);
    T_INT(tds_verify_check(secrets, 1, vec, params, 2, body, strlen(body), 0, 0), ==, 0);
}

static void test_upper_case_and_prefix(void)
{
    const char *secrets[] = {"abcdefghijkl12"};
    char up[80] = "sha256=";

    for (size_t i = 0; vec[i]; i++)
        up[7 + i] = (char)(vec[i] >= 'a' && vec[i] <= 'f' ? vec[i] - 32 : vec[i]);
    T_INT(tds_verify_check(secrets, 1, up + 7, params, 2, body, strlen(body), 0, 0), ==, 0);
    T_INT(tds_verify_check(secrets, 1, up, params, 2, body, strlen(body), 0, 0), ==, 0);
}

/* The same digest in base64 (python3: base64.b64encode / urlsafe_b64encode of
 * the vector's bytes), padded or not, with the prefix, and inside t=,v=. */
static void test_base64(void)
{
    const char *secrets[] = {"abcdefghijkl12"};
    static const char *ok[] = {
        "GBjVvqE9LB8Q3jq1dsJ1iHKsJUhSw/OKmu01HKEMyfQ=",
        "GBjVvqE9LB8Q3jq1dsJ1iHKsJUhSw/OKmu01HKEMyfQ",
        "GBjVvqE9LB8Q3jq1dsJ1iHKsJUhSw_OKmu01HKEMyfQ=",
        "GBjVvqE9LB8Q3jq1dsJ1iHKsJUhSw_OKmu01HKEMyfQ",
        " sha256=GBjVvqE9LB8Q3jq1dsJ1iHKsJUhSw/OKmu01HKEMyfQ=\t",
    };
    static const char *malformed[] = {
        "GBjVvqE9LB8Q3jq1dsJ1iHKsJUhSw/OKmu01HKEMyfQ==",  /* padding twice */
        "GBjVvqE9LB8Q3jq1dsJ1iHKsJUhSw/OKmu01HKEMyfR=",   /* low bits set: another spelling */
        "GBjVvqE9LB8Q3jq1dsJ1iHKsJUhSw/OKmu01HKEMyf=",    /* 42 characters */
        "GBjVvqE9LB8Q3jq1dsJ1iHKs-UhSw/OKmu01HKEMyfQ=",   /* two alphabets */
        "GBjVvqE9LB8Q3jq1dsJ1iHKs UhSw/OKmu01HKEMyfQ=",   /* a blank inside */
        "GBjVvqE9LB8Q3jq1dsJ1iHKs.UhSw/OKmu01HKEMyfQ=",
    };
    const char *b = "{\"a\":1}";

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        T_INT(tds_verify_check(secrets, 1, ok[i], params, 2, body, strlen(body), 0, 0), ==, 0);
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
        T_INT(tds_verify_check(secrets, 1, malformed[i], params, 2, body, strlen(body), 0, 0), ==,
              TDS_VERIFY_E_MALFORMED);
    /* A well-formed digest of other bytes (one character changed). */
    T_INT(tds_verify_check(secrets, 1, "GBjVvqE9LB8Q3jq1dsJ1iHKsJUhSw/OKmu01HKEMyfA=", params, 2,
                           body, strlen(body), 0, 0), ==, TDS_VERIFY_E_MISMATCH);
    /* python3: base64.b64encode(hmac.new(b'abcdefghijkl12', b'1700000000000.{"a":1}',
     * sha256).digest()) */
    T_INT(tds_verify_check(secrets, 1,
                           "t=1700000000000,v=uVZtZTUiXhfgxr7KobB69tczx1Szvs2FYlWypHJOdMU=", NULL,
                           0, b, strlen(b), 1700000001000, 300000), ==, 0);
}

static void test_token(void)
{
    const char *tokens[] = {"tk-0123456789abcdef", "tk-previous-0001x"};

    T_INT(tds_verify_token(tokens, 2, "tk-0123456789abcdef"), ==, 0);
    T_INT(tds_verify_token(tokens, 2, "tk-previous-0001x"), ==, 0);
    T_INT(tds_verify_token(tokens, 2, "tk-0123456789abcde"), ==, TDS_VERIFY_E_TOKEN);
    T_INT(tds_verify_token(tokens, 2, "tk-0123456789abcdefg"), ==, TDS_VERIFY_E_TOKEN);
    T_INT(tds_verify_token(tokens, 2, "TK-0123456789ABCDEF"), ==, TDS_VERIFY_E_TOKEN);
    T_INT(tds_verify_token(tokens, 0, "tk-0123456789abcdef"), ==, TDS_VERIFY_E_TOKEN);
    T_INT(tds_verify_token(tokens, 2, ""), ==, TDS_VERIFY_E_MISSING);
    T_INT(tds_verify_token(tokens, 2, NULL), ==, TDS_VERIFY_E_MISSING);
    T_STR(tds_verify_reason(TDS_VERIFY_E_TOKEN), "token");
}

static void test_rotation(void)
{
    const char *both[] = {"newsecret000001", "abcdefghijkl12"};
    const char *only_new[] = {"newsecret000001"};

    T_INT(tds_verify_check(both, 2, vec, params, 2, body, strlen(body), 0, 0), ==, 0);
    T_INT(tds_verify_check(only_new, 1, vec, params, 2, body, strlen(body), 0, 0), ==,
          TDS_VERIFY_E_MISMATCH);
}

static void test_failures(void)
{
    const char *secrets[] = {"abcdefghijkl12"};
    char bad[65];

    T_INT(tds_verify_check(secrets, 1, NULL, params, 2, body, strlen(body), 0, 0), ==,
          TDS_VERIFY_E_MISSING);
    T_INT(tds_verify_check(secrets, 1, "", params, 2, body, strlen(body), 0, 0), ==,
          TDS_VERIFY_E_MISSING);
    T_INT(tds_verify_check(secrets, 1, "xyz", params, 2, body, strlen(body), 0, 0), ==,
          TDS_VERIFY_E_MALFORMED);
    memcpy(bad, vec, sizeof(bad));
    bad[10] = bad[10] == '0' ? '1' : '0';
    T_INT(tds_verify_check(secrets, 1, bad, params, 2, body, strlen(body), 0, 0), ==,
          TDS_VERIFY_E_MISMATCH);
    /* Params are signed: dropping one breaks the signature. */
    T_INT(tds_verify_check(secrets, 1, vec, params, 1, body, strlen(body), 0, 0), ==,
          TDS_VERIFY_E_MISMATCH);
    /* One body byte changed. */
    T_INT(tds_verify_check(secrets, 1, vec, params, 2, body, strlen(body) - 1, 0, 0), ==,
          TDS_VERIFY_E_MISMATCH);
    T_INT(tds_verify_check(secrets, 0, vec, params, 2, body, strlen(body), 0, 0), ==,
          TDS_VERIFY_E_MISMATCH);
}

static void test_timestamped(void)
{
    /* python3: hmac.new(b'abcdefghijkl12', b'1700000000000.{"a":1}', sha256) */
    static const char sig[] =
        "t=1700000000000,v=b9566d6535225e17e0c6becaa1b07af6d733c754b3becd856255b2a4724e74c5";
    const char *secrets[] = {"abcdefghijkl12"};
    const char *b = "{\"a\":1}";

    T_INT(tds_verify_check(secrets, 1, sig, NULL, 0, b, strlen(b), 1700000001000, 300000), ==, 0);
    T_INT(tds_verify_check(secrets, 1, sig, NULL, 0, b, strlen(b), 1700000400000, 300000), ==,
          TDS_VERIFY_E_STALE);
    T_INT(tds_verify_check(secrets, 1, "t=abc,v=00", NULL, 0, b, strlen(b), 0, 0), ==,
          TDS_VERIFY_E_MALFORMED);
    T_INT(tds_verify_check(secrets, 1, "t=1", NULL, 0, b, strlen(b), 0, 0), ==,
          TDS_VERIFY_E_MALFORMED);
}

/* A stale t= signature sent again as a plain one, with "<t>." moved into the
 * query: the signed bytes are the same, so the digest matches; it is refused
 * as ambiguous, however the "<t>." is split between names and values. A
 * sign on t= (which would make the prefix "+<t>.") is malformed. */
static void test_timestamp_moved_into_the_query(void)
{
    const char *secrets[] = {"abcdefghijkl12"};
    const char *b = "{\"item\":{\"item_id\":\"1\"}}";
    struct tds_verify_kv x = {"x", 1, "1", 1};
    char hex[65], sig[100];
    static const struct tds_verify_kv moved[][2] = {
        {{"1700000000000.", 14, "", 0}, {"x", 1, "1", 1}},
        {{"1700000000000", 13, ".", 1}, {"x", 1, "1", 1}},
        {{"", 0, "1700000000000.", 14}, {"x", 1, "1", 1}},
        {{"17000", 5, "00000000", 8}, {"2.", 2, "", 0}},
    };

    T_INT(tds_verify_sign(secrets[0], "1700000000000.", &x, 1, b, strlen(b), hex), ==, 0);
    snprintf(sig, sizeof(sig), "t=1700000000000,v=%s", hex);
    T_INT(tds_verify_check(secrets, 1, sig, &x, 1, b, strlen(b), 1700003600000, 300000), ==,
          TDS_VERIFY_E_STALE);
    for (size_t i = 0; i < sizeof(moved) / sizeof(moved[0]); i++) {
        char plain[65];

        T_INT(tds_verify_sign(secrets[0], NULL, moved[i], 2, b, strlen(b), plain), ==, 0);
        if (i < 3)
            T_STR(plain, hex); /* the same bytes: the same digest */
        T_INT(tds_verify_check(secrets, 1, plain, moved[i], 2, b, strlen(b), 1700003600000,
                               300000), ==, TDS_VERIFY_E_AMBIGUOUS);
    }
    T_STR(tds_verify_reason(TDS_VERIFY_E_AMBIGUOUS), "ambiguous");
    /* Digits alone, or a dot after a letter, are ordinary parameters. */
    {
        struct tds_verify_kv ok[] = {{"12", 2, "34", 2}, {"a.", 2, "", 0}};

        T_INT(tds_verify_sign(secrets[0], NULL, ok, 2, b, strlen(b), hex), ==, 0);
        T_INT(tds_verify_check(secrets, 1, hex, ok, 2, b, strlen(b), 0, 0), ==, 0);
    }
    T_INT(tds_verify_sign(secrets[0], "+1700000000000.", &x, 1, b, strlen(b), hex), ==, 0);
    snprintf(sig, sizeof(sig), "t=+1700000000000,v=%s", hex);
    T_INT(tds_verify_check(secrets, 1, sig, &x, 1, b, strlen(b), 1700000000000, 300000), ==,
          TDS_VERIFY_E_MALFORMED);
}

int main(void)
{
    T_RUN(test_known_vector);
    T_RUN(test_upper_case_and_prefix);
    T_RUN(test_base64);
    T_RUN(test_token);
    T_RUN(test_rotation);
    T_RUN(test_failures);
    T_RUN(test_timestamped);
    T_RUN(test_timestamp_moved_into_the_query);
    return 0;
}
