/* transform — one Zoho record in, rows (or one reject) out.
 *
 * The pure core of the processor: no sockets, no clocks, no logging. It parses
 * a record's JSON, hands it to the entity's transform (processor/entities/),
 * and appends the resulting rows to a `rows` message through msg.h's
 * builders — or, if anything about the record is invalid, exactly one reject
 * naming the field and value. A record's rows are staged first and appended
 * only when the whole record (children included) is valid, so a bad line item
 * never leaves a half-written invoice behind.
 *
 * Sets are shared across the records of one rows message: a page of 200 items
 * becomes one `items` DETAIL set and one `item_stock` CHILD set. LIST records
 * are grouped by the exact set of columns they carry, so an abbreviated record
 * never writes NULL over a column it did not mention.
 */
#ifndef TDS_TRANSFORM_H
#define TDS_TRANSFORM_H

#include <stdbool.h>
#include <stddef.h>

#include "entities.h"
#include "msg.h"

struct tds_transform;

/* How complete a record is. AUTO (webhook bodies): detail when the record
 * carries the entity's detail-only parts (stock sites, line items, contact
 * persons, group items), else list. Entities whose list is complete
 * (detail_path NULL: warehouses) are always DETAIL. */
enum tds_form { TDS_FORM_LIST = 0, TDS_FORM_DETAIL = 1, TDS_FORM_AUTO = 2 };

/* Outcome of one record, for metrics and logs. */
struct tds_transform_result {
    bool rejected;
    const char *reason_class; /* "invalid_number", ... (static string) when rejected */
    size_t rows;              /* rows appended (all tables) */
};

int tds_transform_new(struct tds_transform **out);
struct tds_transform *tds_transform_free(struct tds_transform *t);

/* Start filling r (a rows message owned by the caller): forgets the set
 * lookup of the previous message. Call before the first record of each r. */
void tds_transform_begin(struct tds_transform *t, struct tds_msg_rows *r);
/* The organization's UTC offset ("+0300", checked by tds_value_tz_ok) for
 * the message's records from now on: a date-only time is midnight there.
 * NULL: UTC. The string must outlive the records' transforms. */
void tds_transform_set_tz(struct tds_transform *t, const char *tz);

/* Transform one record of entity e. Returns 0 whether the record became rows
 * or a reject (see res), or -ENOMEM (r may then hold part of the record's
 * sets and must be discarded). */
int tds_transform_record(struct tds_transform *t, struct tds_msg_rows *r,
                         const struct tds_entity *e, const char *org, const char *json,
                         size_t len, enum tds_form form, struct tds_transform_result *res);

/* A webhook body: `{"<detail_key>": {...}}` (or the bare record). e is the
 * event's entity (authoritative). Same contract as tds_transform_record. */
int tds_transform_event_body(struct tds_transform *t, struct tds_msg_rows *r,
                             const struct tds_entity *e, const char *org, const char *body,
                             size_t len, struct tds_transform_result *res);

/* A DELETE row for id (validated like any id; an invalid id is a reject).
 * When zoho_id is NULL the id is read from the body (webhook delete). */
int tds_transform_delete(struct tds_transform *t, struct tds_msg_rows *r,
                         const struct tds_entity *e, const char *org, const char *zoho_id,
                         const char *body, size_t body_len, struct tds_transform_result *res);

#endif
