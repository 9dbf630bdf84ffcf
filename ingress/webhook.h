/* webhook — what ingress reads out of a verified webhook body (DESIGN.md §4, §6).
 *
 * Decides the body's kind from Content-Type (JSON, or form-encoded: a
 * JSONString field, or else the form's fields as one JSON object of strings),
 * checks UTF-8 and JSON, finds the entity (the payload's
 * one top-level key that names an entity, or ?entity=), the record id and
 * modified time, whether it is a delete, whether the record itself is there
 * (→ `event`) or only its id (→ `fetch`), and the event id used for dedupe.
 * Never maps fields to columns (the processor does) and never logs.
 */
#ifndef TDS_INGRESS_WEBHOOK_H
#define TDS_INGRESS_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

#include "verify.h"

struct tds_entity;

enum tds_webhook_kind { TDS_WEBHOOK_UNSUPPORTED = 0, TDS_WEBHOOK_JSON, TDS_WEBHOOK_FORM };

enum {
    TDS_WEBHOOK_E_UTF8 = 1,   /* 400: body is not UTF-8 */
    TDS_WEBHOOK_E_JSON = 2,   /* 400: not JSON / no JSONString field / not an object */
    TDS_WEBHOOK_E_ENTITY = 3, /* 400: no entity, or more than one */
    TDS_WEBHOOK_E_ID = 4,     /* 400: no usable record id */
    TDS_WEBHOOK_E_TOO_LARGE = 5, /* 413: JSON text over the reader's 1 MiB (a JSONString) */
    TDS_WEBHOOK_E_NUMBER = 6, /* 400: a number PostgreSQL's numeric cannot hold */
    TDS_WEBHOOK_E_FORM = 7,   /* 400: no field (nor body), or more than 64 */
};

#define TDS_WEBHOOK_MAX_ID 64       /* longest zoho id or event id taken from a payload */

struct tds_webhook {
    const struct tds_entity *entity;
    bool is_delete;
    bool has_record;                 /* the payload carries the record itself */
    char zoho_id[TDS_WEBHOOK_MAX_ID + 1];
    char event_id[TDS_WEBHOOK_MAX_ID + 1];
    const char *json;                /* the JSON text: into the body, or `owned` */
    size_t json_len;
    char *owned;                     /* decoded JSONString, or the fields (a form's,
                                        the query's) as JSON; freed by clear */
};

/* application/json (any parameters) → JSON; application/x-www-form-urlencoded → FORM. */
enum tds_webhook_kind tds_webhook_kind(const char *content_type);
/* The kind of body (len bytes) sent as kind: a FORM body that is a JSON
 * object (its first byte past blanks a '{', which form encoding writes
 * %7B) is JSON. Zoho Commerce labels the JSON of its webhooks so (ZOHO.md
 * §6.2); read as a form it was a 400 at every retry. */
enum tds_webhook_kind tds_webhook_body_kind(enum tds_webhook_kind kind, const char *body,
                                            size_t len);

/* Parse body. entity_param / event_param are the ?entity= and ?event= values
 * or NULL. On success w->json may point into body: keep body alive. The event
 * id is Zoho's when the payload has one, else a hash of the delivery (the
 * same for a retry), except for an id-only payload to fetch with no modified
 * time: an id of its own for each delivery, as each may be a new change.
 * Returns 0 or a TDS_WEBHOOK_E_* code; -ENOMEM, -EIO (no random bytes). Call
 * tds_webhook_clear after either. */
int tds_webhook_parse(struct tds_webhook *w, enum tds_webhook_kind kind, const char *body,
                      size_t len, const char *entity_param, const char *event_param);
/* The same for a request without a body, its data in the URL's query
 * parameters (kv[0..n), decoded): they stand for one JSON object of strings,
 * read like a custom payload (?entity= names the entity). No parameter, or
 * more than TDS_VERIFY_MAX_PARAMS, is TDS_WEBHOOK_E_FORM. */
int tds_webhook_parse_fields(struct tds_webhook *w, const struct tds_verify_kv *kv, size_t n,
                             const char *entity_param, const char *event_param);
void tds_webhook_clear(struct tds_webhook *w);

/* The fields of a form-encoded body, names and values URL-decoded into
 * `scratch` (at least len bytes), appended to kv[*n] onwards: what Zoho's
 * signature scheme sorts in with the query parameters when the body is a
 * form. Returns 0, or TDS_VERIFY_E_PARAMS when kv would hold over max. */
int tds_webhook_form_fields(const char *body, size_t len, char *scratch,
                            struct tds_verify_kv *kv, size_t max, size_t *n);
/* Whether the signed parameters kv[0..n) (the query's, and a form's fields
 * when the form scheme matched) could be split again into a delete of e.
 * Zoho's signature joins names and values with no separator, so the bytes
 * of "?event=deleted" also sign "?eventdeleted" or "?even=tdeleted" (and a
 * form's "event" may move between query and body): a captured delete sent
 * so would verify and be taken for an update. True when, in the sorted
 * fields' bytes, "event" is followed by a word that means a delete of e and
 * then the end or bytes a later name could start with (fields named
 * JSONString, whose value is JSON, are not looked into or across). For a webhook that is not a delete; -ENOMEM is reported as
 * true (refuse rather than guess). */
bool tds_webhook_hides_delete(const struct tds_verify_kv *kv, size_t n,
                              const struct tds_entity *e);
const char *tds_webhook_strerror(int code);

#endif
