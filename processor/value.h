/* value — conversion of one JSON value into PostgreSQL input text.
 *
 * Each function takes a parsed value (NULL = key absent) and yields the text
 * for one column (out->p == NULL for SQL NULL) allocated in the record's
 * arena, or a positive TDS_VALUE_E_* code with a precise reason naming the
 * field and the offending value. Money and quantities are copied as exact
 * decimal text, never through a double. Zoho's "" and " " in number, date,
 * time and id fields are NULL. It never logs.
 */
#ifndef TDS_VALUE_H
#define TDS_VALUE_H

#include <stdbool.h>
#include <stddef.h>

#include "msg.h"
#include "pjson.h"

enum {
    TDS_VALUE_E_TYPE = 1,     /* wrong JSON type for the column */
    TDS_VALUE_E_NUMBER,
    TDS_VALUE_E_INTEGER,
    TDS_VALUE_E_BOOL,
    TDS_VALUE_E_TIMESTAMP,
    TDS_VALUE_E_DATE,
    TDS_VALUE_E_ID,
};

/* Longest numeric text accepted (digits, sign, point, exponent). */
#define TDS_VALUE_MAX_NUMBER 100
#define TDS_VALUE_MAX_ID 64

/* The reason sink: field is the dotted path shown in messages ("rate",
 * "locations[0].location_stock_on_hand"). */
struct tds_value_err {
    char *buf;
    size_t len;
};

struct tds_pjson_arena;

/* Whether s[0..n) is empty or only spaces, tabs and line breaks: what every
 * check for a missing value takes as blank. */
bool tds_value_blank(const char *s, size_t n);

/* is_id_ref: a reference to another record (*_id): blank strings are NULL,
 * and a JSON number must be an integer id as tds_value_id takes it (digits
 * only), else TDS_VALUE_E_ID. Other text columns keep a number as written. */
int tds_value_text(const struct tds_pjson *v, bool is_id_ref, struct tds_bytes *out,
                   const char *field, struct tds_value_err *e);
int tds_value_numeric(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                      struct tds_value_err *e);
int tds_value_int(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                  struct tds_value_err *e);
int tds_value_bool(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                   struct tds_value_err *e);
/* "yyyy-MM-ddTHH:mm:ss[.fff](Z|±hh:mm|±hhmm|±hh)" or a bare date; written
 * back as "yyyy-MM-dd HH:mm:ss[.fff]±hh:mm". A bare date is midnight in the
 * organization's offset tz ("+0300", as tds_value_tz_ok accepts; NULL:
 * UTC): Zoho's times are in the organization's time zone. */
int tds_value_timestamp(struct tds_pjson_arena *a, const struct tds_pjson *v, const char *tz,
                        struct tds_bytes *out, const char *field, struct tds_value_err *e);
/* Whether tz is an offset as the organizations file normalizes it: "±HHMM",
 * HH at most 14, MM at most 59. */
bool tds_value_tz_ok(const char *tz);
int tds_value_date(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                   struct tds_value_err *e);
/* A record or child id: a non-blank string of [0-9A-Za-z_.-] (at most 64) or a
 * JSON integer. Absent/null/blank gives out->p == NULL and 0: the caller
 * decides whether that is "missing". */
int tds_value_id(const struct tds_pjson *v, struct tds_bytes *out, const char *field,
                 struct tds_value_err *e);

/* Describe v for a reason: 'text' (quoted, truncated at 60 bytes on a UTF-8
 * boundary), a number/true/false/null as written, "an object", "an array". */
void tds_value_describe(const struct tds_pjson *v, char *buf, size_t len);

#endif
