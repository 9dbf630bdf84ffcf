/* customers — contacts with their addresses and contact persons.
 *
 * zoho.contacts gets the header (type, sub type, primary person's flattened
 * name/email/phone, currency, payment terms, credit limit, receivables and
 * payables, unused credits); a detail contact also replaces its
 * zoho.contact_addresses (billing, shipping, then any `addresses[]` as
 * 'other', each with a 1-based position) and zoho.contact_persons.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tx.h"
#include "value.h"

#define TRY(x)                                                                       \
    do {                                                                             \
        int rc_ = (x);                                                               \
        if (rc_)                                                                     \
            return rc_;                                                              \
    } while (0)

/* A webhook's contact is a DETAIL, whose child rows replace the stored ones
 * and whose columns all replace the stored ones (NULL where it says
 * nothing), only when it carries what Zoho's contact detail always carries:
 * its name, type, status and modified time (the list record has them too,
 * ZOHO.md §5.4), its persons and both addresses. Anything less (a custom
 * webhook body: Zoho lets a workflow send any fields) is written as LIST,
 * which sets only the columns it carries, leaves every child row alone and
 * has the detail fetched. As DETAIL, {"contact_id", "contact_persons",
 * "billing_address"} emptied the stored shipping address, every column it
 * lacked (email, phone, company_name…) and, being a current detail, was
 * never fetched again.
 * An empty list of persons is allowed: a contact may have none (one entered
 * by its name alone). An address must have its fields: Zoho's detail always
 * writes them (attention, address, city…, "" when unset), so `{}` is no
 * detail's. The header fields are what tells a whole contact from a body
 * with `"contact_persons": []` and two `{}`, which as DETAIL deleted every
 * person and address and NULLed status, email and the rest. */
bool tx_contacts_looks_detail(const struct tds_pjson *rec)
{
    static const char *const always[] = {"contact_name", "contact_type", "status",
                                         "last_modified_time", "contact_persons", NULL};

    /* null is not there: a null list of persons would empty the stored ones */
    return tx_has_all(rec, always) && tx_has_some(rec, "billing_address") &&
           tx_has_some(rec, "shipping_address");
}

/* contact_type / customer_sub_type: Zoho's values lower-cased ("Customer" and
 * "customer" are one thing); blank is NULL. */
static int lower_enum(struct tx *t, size_t row, const char *col, const struct tds_pjson *rec)
{
    const struct tds_pjson *v = tds_pjson_get(rec, col);
    char *o;

    if (!v)
        return 0;
    if (v->type != TDS_PJ_STRING)
        return tx_col_value(t, row, col, v, col, true);
    size_t b = 0, e = v->n;
    while (b < e && v->s[b] == ' ')
        b++;
    while (e > b && v->s[e - 1] == ' ')
        e--;
    if (b == e) {
        tx_set(t, row, col, NULL, 0);
        return 0;
    }
    if (!(o = tx_dup(t, v->s + b, e - b)))
        return -ENOMEM;
    for (size_t i = 0; i < e - b; i++)
        if (o[i] >= 'A' && o[i] <= 'Z')
            o[i] = (char)(o[i] - 'A' + 'a');
    tx_set(t, row, col, o, e - b);
    return 0;
}

static const char *const address_skip[] = {"address_type", "position", "address_id", NULL};

static int address(struct tx *t, size_t top, const struct tds_pjson *a, const char *type,
                   const char *key, int position, const char *path, uint32_t idx)
{
    size_t row;
    char pos[16];
    int n;

    if (!a || a->type == TDS_PJ_NULL)
        return 0;
    if (path)
        tx_path_set(t, path, idx);
    else
        tx_path_key(t, key);
    if (a->type != TDS_PJ_OBJECT && path)
        return tx_fail(t, "wrong_type", "invalid address in field '%s[%u]': expected an object",
                       path, idx);
    if (a->type != TDS_PJ_OBJECT)
        return tx_fail(t, "wrong_type", "invalid address in field '%s': expected an object", key);
    TRY(tx_child(t, "contact_addresses", top, &row));
    tx_set(t, row, "address_type", type, strlen(type));
    n = snprintf(pos, sizeof(pos), "%d", position);
    char *p = tx_dup(t, pos, (size_t)n);
    if (!p)
        return -ENOMEM;
    tx_set(t, row, "position", p, (size_t)n);
    TRY(tx_col(t, row, "address_id", a, "address_id"));
    TRY(tx_cols(t, row, a, address_skip));
    tx_path_clear(t);
    return 0;
}

static const char *const person_skip[] = {"contact_person_id", NULL};

static int persons(struct tx *t, size_t top, const struct tds_pjson *arr)
{
    size_t first = t->n_rows;

    if (!arr || arr->type == TDS_PJ_NULL)
        return 0;
    if (arr->type != TDS_PJ_ARRAY)
        return tx_fail(t, "wrong_type",
                       "invalid contact persons in field 'contact_persons': expected an array");
    for (uint32_t i = 0; i < arr->n; i++) {
        const struct tds_pjson *p = &arr->u.items[i];
        size_t row;
        tx_path_set(t, "contact_persons", i);
        if (p->type != TDS_PJ_OBJECT)
            return tx_fail(t, "wrong_type",
                           "invalid contact person in field 'contact_persons[%u]': expected an object", i);
        TRY(tx_child(t, "contact_persons", top, &row));
        TRY(tx_child_id(t, row, "contact_person_id", p, "contact_person_id"));
        TRY(tx_cols(t, row, p, person_skip));
    }
    tx_path_clear(t);
    return tx_check_unique(t, first, "contact_person_id", "contact_persons");
}

static const char *const contact_skip[] = {"contact_type", "customer_sub_type", "custom_fields",
                                           NULL};

/* The contact's first_name, last_name, email, phone and mobile are its
 * primary contact person's, flattened (ZOHO.md §5.4: the list record has
 * them). A detail is not known to repeat them at the top: one without a key
 * takes it from the person marked is_primary_contact, since a DETAIL row
 * sets every column, and a missing one would empty what the list wrote.
 * A key the detail has (null included) is the detail's own; with no primary
 * person the columns stay empty, as the contact has no such person. */
static const char *const primary_cols[] = {"first_name", "last_name", "email", "phone", "mobile",
                                           NULL};

static int primary_person(struct tx *t, size_t row, const struct tds_pjson *rec)
{
    const struct tds_pjson *arr = tds_pjson_get(rec, "contact_persons");

    if (!arr || arr->type != TDS_PJ_ARRAY)
        return 0;
    for (uint32_t i = 0; i < arr->n; i++) {
        const struct tds_pjson *p = &arr->u.items[i];
        char why[160]; /* the reason is not used: such a person is no primary */
        struct tds_value_err e = {why, sizeof(why)};
        struct tds_bytes b;

        /* primary as its column reads it: true or "true" (Zoho sends
         * booleans as strings in places); not a boolean, no primary */
        if (p->type != TDS_PJ_OBJECT ||
            tds_value_bool(tds_pjson_get(p, "is_primary_contact"), &b, "is_primary_contact",
                           &e) != 0 ||
            !b.p || b.n != 4)
            continue;
        tx_path_set(t, "contact_persons", i);
        for (const char *const *c = primary_cols; *c; c++)
            if (!tds_pjson_get(rec, *c) && tds_pjson_get(p, *c))
                TRY(tx_col(t, row, *c, p, *c));
        tx_path_clear(t);
        break;
    }
    return 0;
}

int tx_contacts(struct tx *t, const struct tds_pjson *rec)
{
    size_t row;

    TRY(tx_top(t, "contacts", t->detail ? TDS_ROWS_DETAIL : TDS_ROWS_LIST, rec, "contact_id",
               "last_modified_time", &row));
    TRY(tx_cols(t, row, rec, contact_skip));
    TRY(lower_enum(t, row, "contact_type", rec));
    TRY(lower_enum(t, row, "customer_sub_type", rec));
    TRY(tx_custom_fields(t, row, rec));
    if (!t->detail)
        return 0;
    TRY(primary_person(t, row, rec));
    TRY(address(t, row, tds_pjson_get(rec, "billing_address"), "billing", "billing_address", 1, NULL, 0));
    TRY(address(t, row, tds_pjson_get(rec, "shipping_address"), "shipping", "shipping_address", 1, NULL, 0));
    const struct tds_pjson *others = tds_pjson_get(rec, "addresses");
    if (others && others->type != TDS_PJ_NULL) {
        if (others->type != TDS_PJ_ARRAY)
            return tx_fail(t, "wrong_type", "invalid addresses in field 'addresses': expected an array");
        for (uint32_t i = 0; i < others->n; i++)
            TRY(address(t, row, &others->u.items[i], "other", NULL, (int)i + 1, "addresses", i));
    }
    return persons(t, row, tds_pjson_get(rec, "contact_persons"));
}
