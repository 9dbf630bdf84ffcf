/* render — records to Zoho JSON; see render.h.
 *
 * Everything here is a pure function of (org seed, record id, version), and
 * for an item's stock also of what documents moved (the org's stock deltas):
 * the same record renders byte for byte the same in a list page, a detail
 * call, a webhook and the truth endpoint. Values that other records copy (an
 * item's name and rate on a line item, a contact's name on an invoice) come
 * from the referenced record's base (version 0) data, so changing one record
 * never silently changes another. Money is in cents, printed with 2 places.
 */
#include "render.h"

#include <stdio.h>
#include <string.h>

#define E16 10000000000000000ULL
#define E18 1000000000000000000ULL
#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char *const adj_en[] = {"Classic", "Premium", "Eco", "Ultra", "Smart", "Vintage",
                                     "Compact", "Deluxe", "Basic", "Pro"};
static const char *const noun_en[] = {"Tee", "Mug", "Backpack", "Lamp", "Chair", "Notebook",
                                      "Bottle", "Headphones", "Sneakers", "Watch", "Scarf",
                                      "Jacket"};
static const char *const noun_ar[] = {"قميص", "كوب", "حقيبة", "مصباح", "كرسي", "دفتر",
                                      "زجاجة", "سماعات", "حذاء", "ساعة"};
static const char *const adj_ar[] = {"كلاسيكي", "فاخر", "ذكي", "صغير", "أزرق"};
static const char *const emoji[] = {"🚀", "☕", "🎧", "👟", "⌚", "🌟"};
static const char *const colors[] = {"Red", "Blue", "Black", "White", "Green", "أحمر"};
static const char *const sizes[] = {"S", "M", "L", "XL"};
static const char *const first_en[] = {"John", "Maria", "Ahmed", "Li", "Sara", "Omar", "Anna",
                                       "Ravi"};
static const char *const last_en[] = {"Smith", "Garcia", "Haddad", "Chen", "Kumar", "O'Neil",
                                      "Novak", "Rossi"};
static const char *const first_ar[] = {"محمد", "فاطمة", "خالد", "ليلى"};
static const char *const last_ar[] = {"العلي", "الحسن", "المصري", "الشامي"};
static const char *const cities[] = {"Riyadh", "Dubai", "Cairo", "Bengaluru", "London", "الرياض"};
static const char *const units[] = {"pcs", "box", "kg", "m"};
static const char *const brands[] = {"Acme", "Globex", "Initech", "نجمة", "Umbrella", ""};

struct tax {
    uint64_t id_low;
    const char *name;
    int pct;
};
static const struct tax taxes[] = {{11, "VAT 15", 15}, {12, "GST 5", 5}, {13, "Zero Rated", 0}};

static uint64_t org_digit(const struct zs_org *o)
{
    return (1 + (uint64_t)(o->org_index % 8)) * E18;
}

/* Ids of things that are not records (taxes, accounts, custom fields): slot 0. */
static uint64_t misc_id(const struct zs_org *o, uint64_t low)
{
    return org_digit(o) + 1000 * low + 7;
}

/* Ids are JSON strings, as Zoho sends them; an org with ids=bare sends
 * them as bare numbers like Zoho's documentation examples do. */
static void kid(struct zs_jw *w, const struct zs_org *o, const char *k, uint64_t id)
{
    if (o->bare_ids && id) {
        zs_jw_key(w, k);
        zs_jw_uint(w, id);
    } else {
        zs_jw_kid(w, k, id);
    }
}

static void k_idtext(struct zs_jw *w, const struct zs_org *o, const char *k,
                     const struct zs_rec *r)
{
    if (r->invalid == ZS_BAD_UTF8_ID) {
        /* digits, then a byte that starts no UTF-8 sequence, sent raw */
        char id[40];
        int n = snprintf(id, sizeof(id), "%llu\xff", (unsigned long long)r->id);
        zs_jw_key(w, k);
        zs_jw_strn(w, id, (size_t)n);
        return;
    }
    if (r->invalid != ZS_BAD_ID) {
        kid(w, o, k, r->id);
        return;
    }
    char id[32];
    zs_render_id(id, r);
    zs_jw_kstr(w, k, id);
}

static uint64_t seq_of(const struct zs_rec *r) { return (r->id % E16) / 1000; }

static uint64_t h(const struct zs_org *o, const struct zs_rec *r, uint64_t salt)
{
    return zs_h(o->seed ^ r->id, r->version, salt);
}

/* Base (version 0) hash: for what other records copy. */
static uint64_t h0(const struct zs_org *o, const struct zs_rec *r, uint64_t salt)
{
    return zs_h(o->seed ^ r->id, 0, salt);
}

void zs_render_id(char out[32], const struct zs_rec *r)
{
    if (r->invalid == ZS_BAD_ID)
        snprintf(out, 32, "%llu-x!", (unsigned long long)(r->id / 10));
    else
        snprintf(out, 32, "%llu", (unsigned long long)r->id);
}

static void group_base_name(const struct zs_org *o, const struct zs_rec *g, char *buf, size_t len)
{
    uint64_t x = h0(o, g, 0x61);
    if (x % 5 == 0)
        snprintf(buf, len, "%s %s %llu", noun_ar[x / 5 % N(noun_ar)],
                 adj_ar[x / 50 % N(adj_ar)], (unsigned long long)seq_of(g));
    else
        snprintf(buf, len, "%s %s Collection %llu", adj_en[x / 5 % N(adj_en)],
                 noun_en[x / 50 % N(noun_en)], (unsigned long long)seq_of(g));
}

static int group_attrs(const struct zs_org *o, const struct zs_rec *g)
{
    return 1 + (int)(h0(o, g, 0x62) % 2);
}

static const char *variant_opt(int attr, int nattr, unsigned v)
{
    if (nattr == 1)
        return attr == 1 ? colors[v % N(colors)] : "";
    return attr == 1 ? colors[(v / 2) % N(colors)] : sizes[v % 2];
}

static const struct zs_rec *item_group(const struct zs_org *o, const struct zs_rec *it)
{
    if (it->link < 0)
        return NULL;
    return &o->t[ZS_ITEM_GROUPS].recs[it->link];
}

static void item_base_name(const struct zs_org *o, const struct zs_rec *r, char *buf, size_t len)
{
    const struct zs_rec *g = item_group(o, r);
    if (g) {
        char gn[128];
        group_base_name(o, g, gn, sizeof(gn));
        int na = group_attrs(o, g);
        if (na == 1)
            snprintf(buf, len, "%s - %s", gn, variant_opt(1, na, r->count));
        else
            snprintf(buf, len, "%s - %s/%s", gn, variant_opt(1, na, r->count),
                     variant_opt(2, na, r->count));
        return;
    }
    uint64_t x = h0(o, r, 0x11);
    unsigned k = (unsigned)(x % 100);
    unsigned long long s = (unsigned long long)seq_of(r);
    const char *a = adj_en[x / 100 % N(adj_en)], *n = noun_en[x / 1000 % N(noun_en)];
    if (k < 60)
        snprintf(buf, len, "%s %s %llu", a, n, s);
    else if (k < 75)
        snprintf(buf, len, "%s %s %llu", noun_ar[x / 100 % N(noun_ar)],
                 adj_ar[x / 1000 % N(adj_ar)], s);
    else if (k < 85)
        snprintf(buf, len, "%s %s %llu", n, emoji[x / 100 % N(emoji)], s);
    else if (k < 92)
        snprintf(buf, len, "%s 3/4\" \"Heavy\" %llu", n, s);
    else if (k < 97)
        snprintf(buf, len, "Tools\\%s %llu", n, s);
    else
        snprintf(buf, len, "%s %s\nLine 2 %llu", a, n, s);
}

static void contact_base_name(const struct zs_org *o, const struct zs_rec *r, char *first,
                              char *last, char *company, size_t len)
{
    uint64_t x = h0(o, r, 0x21);
    unsigned long long s = (unsigned long long)seq_of(r);
    if (x % 4 == 0) {
        snprintf(first, len, "%s", first_ar[x / 4 % N(first_ar)]);
        snprintf(last, len, "%s", last_ar[x / 16 % N(last_ar)]);
        snprintf(company, len, "شركة %s %llu", last_ar[x / 64 % N(last_ar)], s);
    } else {
        snprintf(first, len, "%s", first_en[x / 4 % N(first_en)]);
        snprintf(last, len, "%s", last_en[x / 32 % N(last_en)]);
        if (x % 7 == 1)
            snprintf(company, len, "\"Best\" Traders \\ Co %s %llu", emoji[x / 8 % N(emoji)], s);
        else
            snprintf(company, len, "%s %s Ltd %llu", last_en[x / 32 % N(last_en)],
                     adj_en[x / 256 % N(adj_en)], s);
    }
}

/* A renamed record carries its version in the name: updates change names
 * now and then, like people do. */
static void add_rename(const struct zs_rec *r, char *buf, size_t len)
{
    if (r->version % 4 != 3)
        return;
    size_t l = strlen(buf);
    if (l + 16 < len)
        snprintf(buf + l, len - l, " (rev %u)", r->version);
}

static void warehouse_name(const struct zs_org *o, const struct zs_rec *r, char *buf, size_t len)
{
    unsigned long long s = (unsigned long long)seq_of(r);
    if (s == 1)
        snprintf(buf, len, "Main Warehouse");
    else if (s % 3 == 2)
        snprintf(buf, len, "مستودع %s %llu", cities[s % N(cities)], s);
    else
        snprintf(buf, len, "%s Store %llu", cities[s % N(cities)], s);
    (void)o;
}

static void doc_number(enum zs_ent e, const struct zs_rec *r, char *buf, size_t len)
{
    snprintf(buf, len, "%s-%06llu", e == ZS_INVOICES ? "INV" : "SO",
             (unsigned long long)seq_of(r));
}

void zs_rec_name(const struct zs_org *o, enum zs_ent e, const struct zs_rec *r, char *buf,
                 size_t len)
{
    char f[64], l[64], c[128];
    switch (e) {
    case ZS_WAREHOUSES:
        warehouse_name(o, r, buf, len);
        break;
    case ZS_ITEM_GROUPS:
        group_base_name(o, r, buf, len);
        break;
    case ZS_ITEMS:
        item_base_name(o, r, buf, len);
        break;
    case ZS_CONTACTS:
        contact_base_name(o, r, f, l, c, sizeof(f));
        if (h0(o, r, 0x22) % 3 == 0)
            snprintf(buf, len, "%s %s", f, l);
        else
            snprintf(buf, len, "%s", c);
        break;
    case ZS_SALESORDERS:
    case ZS_INVOICES:
        doc_number(e, r, buf, len);
        return;
    case ZS_ENT_COUNT:
        buf[0] = '\0';
        return;
    }
    add_rename(r, buf, len);
}

/* ---- shared pieces ---- */

static void k_time(struct zs_jw *w, const struct zs_org *o, const char *k, int64_t s)
{
    char t[32];
    zs_fmt_time(t, s, o->tz_min);
    zs_jw_kstr(w, k, t);
}

static void times(struct zs_jw *w, const struct zs_org *o, const struct zs_rec *r)
{
    if (r->invalid == ZS_BAD_DATE)
        zs_jw_kstr(w, "created_time", "2024-13-45T25:61:00+0300");
    else
        k_time(w, o, "created_time", r->created_s);
    if (r->invalid == ZS_BAD_MODIFIED)
        zs_jw_kstr(w, "last_modified_time", "yesterday at noon");
    else
        k_time(w, o, "last_modified_time", r->modified_s);
}


/* A money or quantity field that Zoho sometimes sends as "" or " ". */
static void k_dec_or_blank(struct zs_jw *w, const char *k, int64_t v, int places, uint64_t x)
{
    if (x % 7 == 0)
        zs_jw_kstr(w, k, "");
    else if (x % 7 == 1)
        zs_jw_kstr(w, k, " ");
    else
        zs_jw_kdec(w, k, v, places);
}

struct cf_def {
    uint64_t low;
    const char *api, *label, *type;
};

static const struct cf_def cf_defs[ZS_ENT_COUNT][2] = {
    [ZS_WAREHOUSES] = {{0}, {0}},
    [ZS_ITEM_GROUPS] = {{201, "cf_season", "Season", "string"}, {0}},
    [ZS_ITEMS] = {{101, "cf_season", "Season", "string"}, {102, "cf_shelf_life", "Shelf Life", "number"}},
    [ZS_CONTACTS] = {{301, "cf_segment", "Segment", "string"}, {302, "cf_since", "Customer Since", "date"}},
    [ZS_SALESORDERS] = {{401, "cf_channel", "Channel", "string"}, {0}},
    [ZS_INVOICES] = {{501, "cf_po_ref", "PO Reference", "string"}, {502, "cf_branch", "الفرع", "string"}},
};

static void cf_value(const struct zs_org *o, const struct zs_rec *r, const struct cf_def *d,
                     char *buf, size_t len)
{
    uint64_t x = h(o, r, 0x700 + d->low);
    if (!strcmp(d->type, "number"))
        snprintf(buf, len, "%llu", (unsigned long long)(x % 720));
    else if (!strcmp(d->type, "date"))
        zs_fmt_date(buf, r->created_s - (int64_t)(x % 2000) * 86400, o->tz_min);
    else if (x % 5 == 0)
        snprintf(buf, len, "موسم %llu", (unsigned long long)(x % 9));
    else
        snprintf(buf, len, "%s-%llu", d->label, (unsigned long long)(x % 1000));
}

static void custom_fields(struct zs_jw *w, const struct zs_org *o, enum zs_ent e,
                          const struct zs_rec *r)
{
    char v[64];
    zs_jw_key(w, "custom_fields");
    zs_jw_arr(w);
    for (int i = 0; i < 2; i++) {
        const struct cf_def *d = &cf_defs[e][i];
        if (!d->api)
            continue;
        cf_value(o, r, d, v, sizeof(v));
        zs_jw_obj(w);
        kid(w, o, "customfield_id", misc_id(o, d->low));
        zs_jw_kstr(w, "api_name", d->api);
        zs_jw_kstr(w, "label", d->label);
        zs_jw_key(w, "value");
        if (!strcmp(d->type, "number"))
            zs_jw_raw(w, v, strlen(v));
        else
            zs_jw_str(w, v);
        zs_jw_kint(w, "index", i + 1);
        zs_jw_kstr(w, "data_type", d->type);
        zs_jw_kbool(w, "is_active", true);
        zs_jw_kbool(w, "show_on_pdf", false);
        zs_jw_obj_end(w);
    }
    zs_jw_arr_end(w);
    zs_jw_key(w, "custom_field_hash");
    zs_jw_obj(w);
    for (int i = 0; i < 2; i++) {
        const struct cf_def *d = &cf_defs[e][i];
        if (!d->api)
            continue;
        cf_value(o, r, d, v, sizeof(v));
        zs_jw_kstr(w, d->api, v);
    }
    zs_jw_obj_end(w);
}

static void address(struct zs_jw *w, const char *key, const struct zs_org *o, uint64_t id,
                    uint64_t x, const char *attention)
{
    char a[96], z[16];
    zs_jw_key(w, key);
    zs_jw_obj(w);
    kid(w, o, "address_id", id);
    zs_jw_kstr(w, "attention", attention);
    snprintf(a, sizeof(a), "%llu King Fahd Rd", (unsigned long long)(x % 900 + 1));
    zs_jw_kstr(w, "address", x % 5 == 0 ? "شارع الملك فهد" : a);
    zs_jw_kstr(w, "street2", x % 3 == 0 ? "Suite 5\nBuilding \"B\"" : "");
    zs_jw_kstr(w, "city", cities[x / 7 % N(cities)]);
    zs_jw_kstr(w, "state", x % 2 ? "Riyadh Province" : "");
    zs_jw_kstr(w, "state_code", x % 2 ? "RP" : "");
    snprintf(z, sizeof(z), "%05llu", (unsigned long long)(x / 11 % 100000));
    zs_jw_kstr(w, "zip", z);
    zs_jw_kstr(w, "country", o->tz_min == 330 ? "India" : "Saudi Arabia");
    zs_jw_kstr(w, "phone", x % 4 ? "+966 11 555 0101" : "");
    zs_jw_kstr(w, "fax", "");
    zs_jw_obj_end(w);
}

/* ---- stock ---- */

void zs_item_base_stock(const struct zs_org *o, const struct zs_rec *it, size_t site,
                        struct zs_stock *s)
{
    uint64_t x = h(o, it, 0x5100 + site);
    s->soh = (int64_t)(x % 120);
    int64_t d = (int64_t)((x >> 16) % 5) - 2;
    s->a_soh = s->soh + d < 0 ? 0 : s->soh + d;
    s->avail = s->soh;
    s->a_avail = s->a_soh;
    s->committed = (int64_t)((x >> 24) % (uint64_t)(s->soh / 4 + 1));
    s->a_committed = (int64_t)((x >> 32) % (uint64_t)(s->a_soh / 4 + 1));
    s->afs = s->soh - s->committed;
    s->a_afs = s->a_soh - s->a_committed;
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void zs_item_site_stock(const struct zs_org *o, const struct zs_rec *it, size_t site,
                        struct zs_stock *s)
{
    zs_item_base_stock(o, it, site, s);
    const struct zs_stock_delta *d =
        zs_org_stock_delta(o, zs_rec_index(&o->t[ZS_ITEMS], it), site);
    if (!d)
        return;
    /* the deltas were taken against an older version's values when the item
     * changed since: the clamps keep the invariants whatever the base */
    s->soh = clamp(s->soh + d->soh, 0, INT64_MAX);
    s->committed = clamp(s->committed + d->committed, 0, s->soh);
    s->a_soh = clamp(s->a_soh + d->a_soh, 0, INT64_MAX);
    s->a_committed = clamp(s->a_committed + d->a_committed, 0, s->a_soh);
    s->avail = s->soh;
    s->a_avail = s->a_soh;
    s->afs = s->soh - s->committed;
    s->a_afs = s->a_soh - s->a_committed;
}

static void item_totals(const struct zs_org *o, const struct zs_rec *it, struct zs_stock *t)
{
    memset(t, 0, sizeof(*t));
    const struct zs_table *wt = &o->t[ZS_WAREHOUSES];
    for (size_t i = 0; i < wt->n; i++) {
        struct zs_stock s;
        zs_item_site_stock(o, it, i, &s);
        t->soh += s.soh;
        t->avail += s.avail;
        t->committed += s.committed;
        t->afs += s.afs;
        t->a_soh += s.a_soh;
        t->a_avail += s.a_avail;
        t->a_committed += s.a_committed;
        t->a_afs += s.a_afs;
    }
}

static void stock_sites(struct zs_jw *w, const struct zs_org *o, const struct zs_rec *it)
{
    const struct zs_table *wt = &o->t[ZS_WAREHOUSES];
    bool loc = o->locations;
    const char *p = loc ? "location_" : "warehouse_";
    char k[64], name[128];
#define K(suffix) (snprintf(k, sizeof(k), "%s%s", p, suffix), k)
    zs_jw_key(w, loc ? "locations" : "warehouses");
    zs_jw_arr(w);
    for (size_t i = 0; i < wt->n; i++) {
        const struct zs_rec *wr = &wt->recs[i];
        struct zs_stock s;
        zs_item_site_stock(o, it, i, &s);
        /* the base name: renaming a site must not change every item */
        warehouse_name(o, wr, name, sizeof(name));
        zs_jw_obj(w);
        kid(w, o, K("id"), wr->id);
        zs_jw_kstr(w, K("name"), name);
        zs_jw_kstr(w, "status", "active");
        zs_jw_kbool(w, "is_primary", i == 0);
        if (loc)
            zs_jw_kbool(w, "is_primary_location", i == 0);
        zs_jw_kint(w, K("stock_on_hand"), s.soh);
        zs_jw_kint(w, K("available_stock"), s.avail);
        zs_jw_kint(w, K("actual_stock_on_hand"), s.a_soh);
        zs_jw_kint(w, K("actual_available_stock"), s.a_avail);
        zs_jw_kint(w, K("committed_stock"), s.committed);
        zs_jw_kint(w, K("actual_committed_stock"), s.a_committed);
        zs_jw_kint(w, K("available_for_sale_stock"), s.afs);
        zs_jw_kint(w, K("actual_available_for_sale_stock"), s.a_afs);
        zs_jw_kint(w, "initial_stock", 0);
        zs_jw_kint(w, "initial_stock_rate", 0);
        if (loc) {
            zs_jw_kint(w, "location_quantity_in_transit", 0);
            zs_jw_kbool(w, "is_item_mapped", true);
            zs_jw_kbool(w, "is_storage_location_enabled", false);
        } else {
            zs_jw_kbool(w, "is_fba_warehouse", false);
        }
        zs_jw_key(w, "batches");
        zs_jw_arr(w);
        zs_jw_arr_end(w);
        zs_jw_obj_end(w);
    }
    zs_jw_arr_end(w);
#undef K
}

/* ---- items ---- */

static int64_t item_base_rate(const struct zs_org *o, const struct zs_rec *it)
{
    return 100 + (int64_t)(h0(o, it, 0x12) % 50000); /* cents */
}

static int64_t item_rate(const struct zs_org *o, const struct zs_rec *it)
{
    int64_t b = item_base_rate(o, it);
    if (it->version == 0)
        return b;
    return b * (90 + (int64_t)(h(o, it, 0x13) % 21)) / 100;
}

static const struct tax *item_tax(const struct zs_org *o, const struct zs_rec *it)
{
    return &taxes[h0(o, it, 0x14) % N(taxes)];
}

static void item_fields(struct zs_jw *w, const struct zs_org *o, const struct zs_rec *r,
                        bool detail, bool in_group_detail, bool stock)
{
    char name[192], buf[160];
    uint64_t x = h(o, r, 0x15), x0 = h0(o, r, 0x16);
    const struct zs_rec *g = item_group(o, r);
    item_base_name(o, r, name, sizeof(name));
    add_rename(r, name, sizeof(name));
    bool bad = r->invalid == ZS_BAD_NUMBER;
    k_idtext(w, o, "item_id", r);
    zs_jw_kstr(w, "name", name);
    zs_jw_kstr(w, "item_name", name);
    zs_jw_kstr(w, "unit", units[x0 % N(units)]);
    zs_jw_kstr(w, "status", x % 10 == 0 ? "inactive" : "active");
    zs_jw_kstr(w, "source", "user");
    zs_jw_kbool(w, "is_combo_product", false);
    zs_jw_kbool(w, "is_linked_with_zohocrm", false);
    zs_jw_kstr(w, "zcrm_product_id", "");
    if (x % 6 == 0)
        snprintf(buf, sizeof(buf), "Line one\nLine \"two\" with \\ and %s (v%u)",
                 emoji[x / 6 % N(emoji)], r->version);
    else if (x % 6 == 1)
        snprintf(buf, sizeof(buf), "وصف المنتج رقم %u", r->version);
    else
        snprintf(buf, sizeof(buf), "Description version %u", r->version);
    zs_jw_kstr(w, "description", buf);
    zs_jw_kstr(w, "brand", brands[x0 / 7 % N(brands)]);
    zs_jw_kstr(w, "manufacturer", x0 % 3 ? "Made Co" : "");
    if (bad)
        zs_jw_kstr(w, "rate", "12,34abc");
    else
        zs_jw_kdec(w, "rate", item_rate(o, r), 2);
    const struct tax *t = item_tax(o, r);
    kid(w, o, "tax_id", misc_id(o, t->id_low));
    zs_jw_kstr(w, "tax_name", t->name);
    zs_jw_kint(w, "tax_percentage", t->pct);
    zs_jw_kbool(w, "is_taxable", t->pct > 0);
    kid(w, o, "purchase_account_id", misc_id(o, 31));
    zs_jw_kstr(w, "purchase_account_name", "Cost of Goods Sold");
    kid(w, o, "account_id", misc_id(o, 32));
    zs_jw_kstr(w, "account_name", "Sales");
    zs_jw_kstr(w, "purchase_description", "");
    k_dec_or_blank(w, "purchase_rate", item_base_rate(o, r) * 6 / 10, 2, x0 >> 3);
    zs_jw_kstr(w, "item_type", "inventory");
    zs_jw_kstr(w, "product_type", "goods");
    zs_jw_kbool(w, "has_attachment", false);
    zs_jw_kbool(w, "is_returnable", true);
    zs_jw_kprefnum(w, "sku", "SKU-", seq_of(r), 6);
    if (x0 % 2)
        zs_jw_kprefnum(w, "upc", "", x0 % 1000000000000ULL, 12);
    else
        zs_jw_kstr(w, "upc", "");
    zs_jw_kstr(w, "ean", "");
    zs_jw_kstr(w, "isbn", "");
    zs_jw_kprefnum(w, "part_number", "PN-", x0 % 99999, 0);
    if (x0 % 4 == 0) {
        snprintf(buf, sizeof(buf), "item_%llu.jpg", (unsigned long long)seq_of(r));
        zs_jw_kstr(w, "image_name", buf);
        zs_jw_kstr(w, "image_type", "jpg");
        kid(w, o, "image_document_id", r->id + 1);
    } else {
        zs_jw_kstr(w, "image_name", "");
        zs_jw_kstr(w, "image_type", "");
        zs_jw_kstr(w, "image_document_id", "");
    }
    zs_jw_kbool(w, "show_in_storefront", false);
    k_dec_or_blank(w, "length", (int64_t)(x0 % 100), 0, x0 >> 5);
    zs_jw_kstr(w, "width", "");
    zs_jw_kstr(w, "height", "");
    k_dec_or_blank(w, "weight", (int64_t)(x0 % 5000), 3, x0 >> 7);
    zs_jw_kstr(w, "weight_unit", "kg");
    zs_jw_kstr(w, "dimension_unit", "cm");
    k_dec_or_blank(w, "reorder_level", (int64_t)(x0 % 20), 0, x0 >> 9);
    struct zs_stock s;
    item_totals(o, r, &s);
    if (bad)
        zs_jw_kstr(w, "stock_on_hand", "n/a");
    else
        zs_jw_kint(w, "stock_on_hand", s.soh);
    zs_jw_kint(w, "available_stock", s.avail);
    zs_jw_kint(w, "actual_available_stock", s.a_avail);
    zs_jw_kint(w, "committed_stock", s.committed);
    zs_jw_kint(w, "actual_committed_stock", s.a_committed);
    zs_jw_kint(w, "available_for_sale_stock", s.afs);
    zs_jw_kint(w, "actual_available_for_sale_stock", s.a_afs);
    if (g) {
        char gn[128];
        group_base_name(o, g, gn, sizeof(gn)); /* base: a group rename is not an item change */
        int na = group_attrs(o, g);
        k_idtext(w, o, "group_id", g);
        zs_jw_kstr(w, "group_name", gn);
        for (int a = 1; a <= 3; a++) {
            char k[48];
            snprintf(k, sizeof(k), "attribute_id%d", a);
            if (a <= na)
                kid(w, o, k, misc_id(o, 600 + (uint64_t)a));
            else
                zs_jw_kstr(w, k, "");
            snprintf(k, sizeof(k), "attribute_name%d", a);
            zs_jw_kstr(w, k, a > na ? "" : a == 1 ? "Color" : "Size");
            snprintf(k, sizeof(k), "attribute_option_id%d", a);
            if (a <= na)
                kid(w, o, k, misc_id(o, 610 + 10 * (uint64_t)a + r->count));
            else
                zs_jw_kstr(w, k, "");
            snprintf(k, sizeof(k), "attribute_option_name%d", a);
            zs_jw_kstr(w, k, a > na ? "" : variant_opt(a, na, r->count));
        }
    } else {
        zs_jw_kstr(w, "group_id", "");
        zs_jw_kstr(w, "group_name", "");
    }
    times(w, o, r);
    if (!detail)
        return;
    kid(w, o, "category_id", misc_id(o, 40 + x0 % 4));
    zs_jw_kstr(w, "category_name", x0 % 4 == 0 ? "ملابس" : "General");
    zs_jw_kstr(w, "tax_type", "tax");
    zs_jw_kbool(w, "is_default_tax_applied", true);
    zs_jw_kdec(w, "sales_rate", item_rate(o, r), 2);
    zs_jw_kdec(w, "pricebook_rate", item_rate(o, r), 2);
    kid(w, o, "inventory_account_id", misc_id(o, 33));
    zs_jw_kstr(w, "inventory_account_name", "Inventory Asset");
    zs_jw_kstr(w, "minimum_order_quantity", "");
    zs_jw_kstr(w, "maximum_order_quantity", "");
    zs_jw_kint(w, "initial_stock", 0);
    zs_jw_kint(w, "initial_stock_rate", 0);
    zs_jw_kstr(w, "vendor_id", "");
    zs_jw_kstr(w, "vendor_name", "");
    zs_jw_kbool(w, "is_fulfillable", true);
    zs_jw_key(w, "documents");
    zs_jw_arr(w);
    zs_jw_arr_end(w);
    zs_jw_key(w, "tags");
    zs_jw_arr(w);
    zs_jw_arr_end(w);
    zs_jw_key(w, "sales_channels");
    zs_jw_arr(w);
    zs_jw_arr_end(w);
    zs_jw_key(w, "preferred_vendors");
    zs_jw_arr(w);
    zs_jw_arr_end(w);
    zs_jw_key(w, "package_details");
    zs_jw_obj(w);
    zs_jw_kstr(w, "length", "");
    zs_jw_kstr(w, "width", "");
    zs_jw_kstr(w, "height", "");
    zs_jw_kdec(w, "weight", (int64_t)(x0 % 5000), 3);
    zs_jw_kstr(w, "weight_unit", "kg");
    zs_jw_kstr(w, "dimension_unit", "cm");
    zs_jw_obj_end(w);
    if (!in_group_detail)
        custom_fields(w, o, ZS_ITEMS, r);
    if (stock)
        stock_sites(w, o, r);
}

/* ---- item groups ---- */

static void group_fields(struct zs_jw *w, const struct zs_org *o, const struct zs_rec *g,
                         bool detail)
{
    char name[160], buf[96];
    uint64_t x0 = h0(o, g, 0x63), x = h(o, g, 0x64);
    group_base_name(o, g, name, sizeof(name));
    add_rename(g, name, sizeof(name));
    int na = group_attrs(o, g);
    const struct zs_table *it = &o->t[ZS_ITEMS];
    size_t live = 0;
    for (uint16_t v = 0; g->link >= 0 && v < g->count; v++) {
        const struct zs_rec *x2 = &it->recs[g->link + v];
        if (!x2->deleted && x2->link == (int32_t)(g - o->t[ZS_ITEM_GROUPS].recs))
            live++;
    }
    k_idtext(w, o, "group_id", g);
    zs_jw_kstr(w, "group_name", name);
    zs_jw_kstr(w, "brand", brands[x0 / 7 % N(brands)]);
    zs_jw_kstr(w, "manufacturer", x0 % 3 ? "Made Co" : "");
    zs_jw_kstr(w, "unit", units[x0 % N(units)]);
    snprintf(buf, sizeof(buf), "Group description v%u", g->version);
    zs_jw_kstr(w, "description", buf);
    zs_jw_kstr(w, "status", x % 12 == 0 ? "inactive" : "active");
    const struct tax *t = &taxes[x0 / 3 % N(taxes)];
    kid(w, o, "tax_id", misc_id(o, t->id_low));
    zs_jw_kstr(w, "tax_name", t->name);
    zs_jw_kint(w, "tax_percentage", t->pct);
    zs_jw_kstr(w, "product_type", "goods");
    zs_jw_kstr(w, "image_name", "");
    zs_jw_kstr(w, "image_type", "");
    zs_jw_kint(w, "item_count", (int64_t)live);
    for (int a = 1; a <= 3; a++) {
        char k[32];
        snprintf(k, sizeof(k), "attribute_name%d", a);
        zs_jw_kstr(w, k, a > na ? "" : a == 1 ? "Color" : "Size");
    }
    times(w, o, g);
    if (!detail)
        return;
    zs_jw_key(w, "attributes");
    zs_jw_arr(w);
    for (int a = 1; a <= na; a++) {
        zs_jw_obj(w);
        kid(w, o, "id", misc_id(o, 600 + (uint64_t)a));
        zs_jw_kstr(w, "name", a == 1 ? "Color" : "Size");
        zs_jw_key(w, "options");
        zs_jw_arr(w);
        unsigned nopt = a == 1 ? (na == 1 ? g->count : (g->count + 1u) / 2) : (g->count > 1 ? 2 : 1);
        for (unsigned v = 0; v < nopt; v++) {
            unsigned vv = na == 1 || a == 2 ? v : v * 2;
            zs_jw_obj(w);
            kid(w, o, "id", misc_id(o, 610 + 10 * (uint64_t)a + vv));
            zs_jw_kstr(w, "name", variant_opt(a, na, vv));
            zs_jw_obj_end(w);
        }
        zs_jw_arr_end(w);
        zs_jw_obj_end(w);
    }
    zs_jw_arr_end(w);
    custom_fields(w, o, ZS_ITEM_GROUPS, g);
    zs_jw_key(w, "items");
    zs_jw_arr(w);
    for (uint16_t v = 0; g->link >= 0 && v < g->count; v++) {
        const struct zs_rec *ir = &it->recs[g->link + v];
        if (ir->deleted || ir->link != (int32_t)(g - o->t[ZS_ITEM_GROUPS].recs))
            continue;
        zs_jw_obj(w);
        item_fields(w, o, ir, false, true, true);
        zs_jw_obj_end(w);
    }
    zs_jw_arr_end(w);
}

/* ---- warehouses ---- */

static void warehouse_fields(struct zs_jw *w, const struct zs_org *o, const struct zs_rec *r,
                             bool as_location)
{
    char name[128], buf[96];
    size_t i = zs_rec_index(&o->t[ZS_WAREHOUSES], r);
    uint64_t x = h(o, r, 0x71);
    warehouse_name(o, r, name, sizeof(name));
    add_rename(r, name, sizeof(name));
    k_idtext(w, o, as_location ? "location_id" : "warehouse_id", r);
    zs_jw_kstr(w, as_location ? "location_name" : "warehouse_name", name);
    if (as_location) {
        zs_jw_kstr(w, "type", "warehouse");
        zs_jw_kstr(w, "parent_location_id", "");
        zs_jw_kbool(w, "is_primary_location", i == 0);
    }
    zs_jw_kstr(w, "status", x % 9 == 0 && i != 0 ? "inactive" : "active");
    zs_jw_kbool(w, "is_primary", i == 0);
    zs_jw_kstr(w, "attention", "Store Manager");
    snprintf(buf, sizeof(buf), "%llu Industrial Area, v%u", (unsigned long long)(x % 90 + 1),
             r->version);
    zs_jw_kstr(w, "address", buf);
    zs_jw_kstr(w, "address1", buf);
    zs_jw_kstr(w, "address2", i % 2 ? "Gate \"3\"" : "");
    zs_jw_kstr(w, "city", cities[i % N(cities)]);
    zs_jw_kstr(w, "state", "");
    snprintf(buf, sizeof(buf), "%05llu", (unsigned long long)(x % 100000));
    zs_jw_kstr(w, "zip", buf);
    zs_jw_kstr(w, "country", o->tz_min == 330 ? "India" : "Saudi Arabia");
    zs_jw_kstr(w, "phone", "+966 11 555 0199");
    snprintf(buf, sizeof(buf), "wh%llu@example.com", (unsigned long long)(i + 1));
    zs_jw_kstr(w, "email", buf);
}

/* ---- contacts ---- */

static void contact_fields(struct zs_jw *w, const struct zs_org *o, const struct zs_rec *r,
                           bool detail)
{
    char f[64], l[64], c[128], name[192], buf[128];
    uint64_t x = h(o, r, 0x23), x0 = h0(o, r, 0x24);
    contact_base_name(o, r, f, l, c, sizeof(f));
    zs_rec_name(o, ZS_CONTACTS, r, name, sizeof(name));
    bool vendor = x0 % 5 == 0;
    bool bad = r->invalid == ZS_BAD_NUMBER;
    k_idtext(w, o, "contact_id", r);
    zs_jw_kstr(w, "contact_name", name);
    zs_jw_kstr(w, "customer_name", vendor ? "" : name);
    zs_jw_kstr(w, "vendor_name", vendor ? name : "");
    zs_jw_kstr(w, "company_name", c);
    snprintf(buf, sizeof(buf), "https://example.com/c/%llu", (unsigned long long)seq_of(r));
    zs_jw_kstr(w, "website", x0 % 3 ? buf : "");
    zs_jw_kstr(w, "language_code", x0 % 4 == 0 ? "ar" : "en");
    zs_jw_kstr(w, "contact_type", vendor ? "vendor" : "customer");
    zs_jw_kstr(w, "customer_sub_type", x0 % 3 == 0 ? "individual" : "business");
    zs_jw_kstr(w, "status", x % 11 == 0 ? "inactive" : "active");
    zs_jw_kstr(w, "source", "user");
    zs_jw_kbool(w, "is_linked_with_zohocrm", false);
    int terms = (int)(x0 / 9 % 4) * 15;
    zs_jw_kint(w, "payment_terms", terms);
    snprintf(buf, sizeof(buf), terms ? "Net %d" : "Due on Receipt", terms);
    zs_jw_kstr(w, "payment_terms_label", buf);
    kid(w, o, "currency_id", misc_id(o, o->tz_min == 330 ? 51 : 52));
    zs_jw_kstr(w, "currency_code", o->tz_min == 330 ? "INR" : "SAR");
    int64_t recv = vendor ? 0 : (int64_t)(x % 500000);
    int64_t pay = vendor ? (int64_t)(x % 300000) : 0;
    if (bad)
        zs_jw_kstr(w, "outstanding_receivable_amount", "1.2.3");
    else
        zs_jw_kdec(w, "outstanding_receivable_amount", recv, 2);
    zs_jw_kdec(w, "outstanding_receivable_amount_bcy", recv, 2);
    zs_jw_kdec(w, "outstanding_payable_amount", pay, 2);
    zs_jw_kdec(w, "outstanding_payable_amount_bcy", pay, 2);
    zs_jw_kdec(w, "unused_credits_receivable_amount", (int64_t)(x / 7 % 3) * 1000, 2);
    zs_jw_kdec(w, "unused_credits_receivable_amount_bcy", (int64_t)(x / 7 % 3) * 1000, 2);
    zs_jw_kdec(w, "unused_credits_payable_amount", 0, 2);
    zs_jw_kdec(w, "unused_credits_payable_amount_bcy", 0, 2);
    zs_jw_kstr(w, "first_name", f);
    zs_jw_kstr(w, "last_name", l);
    snprintf(buf, sizeof(buf), "contact%llu.v%u@example.com", (unsigned long long)seq_of(r),
             r->version);
    zs_jw_kstr(w, "email", buf);
    snprintf(buf, sizeof(buf), "+966 5%08llu", (unsigned long long)(x % 100000000));
    zs_jw_kstr(w, "phone", buf);
    zs_jw_kstr(w, "mobile", x % 3 ? buf : "");
    zs_jw_kstr(w, "portal_status", "disabled");
    zs_jw_kbool(w, "has_attachment", false);
    zs_jw_kbool(w, "ach_supported", false);
    times(w, o, r);
    if (!detail)
        return;
    k_dec_or_blank(w, "credit_limit", (int64_t)(x0 % 100) * 100000, 2, x >> 4);
    zs_jw_kbool(w, "is_portal_enabled", false);
    zs_jw_kstr(w, "currency_symbol", o->tz_min == 330 ? "₹" : "SR");
    zs_jw_kdec(w, "exchange_rate", 100, 2);
    zs_jw_kdec(w, "opening_balance_amount", 0, 2);
    zs_jw_kstr(w, "facebook", "");
    zs_jw_kstr(w, "twitter", "");
    zs_jw_kstr(w, "notes", x % 4 == 0 ? "Prefers \"morning\" calls\nوقت الصباح" : "");
    zs_jw_kstr(w, "owner_id", "");
    uint64_t pid = org_digit(o) + 9 * E16 + (seq_of(r) * 8) * 100 + 1;
    kid(w, o, "primary_contact_id", pid);
    address(w, "billing_address", o, org_digit(o) + 9 * E16 + (seq_of(r) * 8 + 4) * 100 + 1,
            h(o, r, 0x25), name);
    address(w, "shipping_address", o, org_digit(o) + 9 * E16 + (seq_of(r) * 8 + 5) * 100 + 1,
            h(o, r, 0x26), name);
    zs_jw_key(w, "contact_persons");
    zs_jw_arr(w);
    unsigned np = 1 + (unsigned)(x % 3);
    for (unsigned k = 0; k < np; k++) {
        uint64_t y = zs_h(r->id, r->version, 0x2700 + k);
        zs_jw_obj(w);
        kid(w, o, "contact_person_id", pid + (uint64_t)k * 100);
        zs_jw_kstr(w, "salutation", k == 0 ? "Mr." : y % 2 ? "Ms." : "");
        zs_jw_kstr(w, "first_name", k == 0 ? f : first_en[y % N(first_en)]);
        zs_jw_kstr(w, "last_name", k == 0 ? l : last_en[y / 8 % N(last_en)]);
        snprintf(buf, sizeof(buf), "p%u.%llu@example.com", k, (unsigned long long)seq_of(r));
        zs_jw_kstr(w, "email", buf);
        zs_jw_kstr(w, "phone", "+966 11 555 0102");
        zs_jw_kstr(w, "mobile", "");
        zs_jw_kstr(w, "designation", k == 0 ? "Owner" : "Buyer");
        zs_jw_kstr(w, "department", y % 3 ? "Purchasing" : "");
        zs_jw_kstr(w, "skype", "");
        zs_jw_kbool(w, "is_primary_contact", k == 0);
        zs_jw_kbool(w, "enable_portal", false);
        zs_jw_obj_end(w);
    }
    zs_jw_arr_end(w);
    zs_jw_key(w, "default_templates");
    zs_jw_obj(w);
    zs_jw_obj_end(w);
    custom_fields(w, o, ZS_CONTACTS, r);
}

/* ---- sales documents ---- */

struct doc_totals {
    int64_t sub, tax, discount, shipping, adjustment, total;
};

static unsigned doc_lines(const struct zs_org *o, const struct zs_rec *r)
{
    if (!o->gen_n[ZS_ITEMS])
        return 0;
    return 1 + (unsigned)(h(o, r, 0x31) % ZS_MAX_LINES);
}

/* One line: the item comes from the records generated at start so that a
 * later create cannot change the choice. */
static const struct zs_rec *line_item(const struct zs_org *o, const struct zs_rec *r, unsigned k,
                                      int64_t *qty, int64_t *rate, int64_t *disc,
                                      int64_t *total, int64_t *tax, const struct tax **tx)
{
    uint64_t y = h(o, r, 0x3200 + k);
    const struct zs_rec *it = &o->t[ZS_ITEMS].recs[y % o->gen_n[ZS_ITEMS]];
    *qty = 1 + (int64_t)(y / 7 % 10);
    *rate = item_base_rate(o, it);
    *disc = y / 70 % 4 == 0 ? *qty * *rate / 20 : 0;
    *total = *qty * *rate - *disc;
    *tx = item_tax(o, it);
    *tax = *total * (*tx)->pct / 100;
    return it;
}

/* The site (warehouse or location index) line k ships from. */
static size_t line_site(const struct zs_org *o, const struct zs_rec *r, unsigned k)
{
    return h(o, r, 0x3300 + k) % o->t[ZS_WAREHOUSES].n;
}

unsigned zs_doc_stock_lines(const struct zs_org *o, const struct zs_rec *doc,
                            struct zs_line out[ZS_MAX_LINES])
{
    unsigned n = o->t[ZS_WAREHOUSES].n ? doc_lines(o, doc) : 0;
    for (unsigned k = 0; k < n; k++) {
        int64_t rt, d, tot, tax;
        const struct tax *tx;
        const struct zs_rec *it = line_item(o, doc, k, &out[k].qty, &rt, &d, &tot, &tax, &tx);
        out[k].item = zs_rec_index(&o->t[ZS_ITEMS], it);
        out[k].site = line_site(o, doc, k);
    }
    return n;
}

static void doc_sums(const struct zs_org *o, const struct zs_rec *r, struct doc_totals *t)
{
    memset(t, 0, sizeof(*t));
    unsigned n = doc_lines(o, r);
    for (unsigned k = 0; k < n; k++) {
        int64_t q, rt, d, tot, tax;
        const struct tax *tx;
        line_item(o, r, k, &q, &rt, &d, &tot, &tax, &tx);
        t->sub += tot;
        t->tax += tax;
        t->discount += d;
    }
    uint64_t y = h(o, r, 0x33);
    t->shipping = y % 3 == 0 ? (int64_t)(y % 5000) : 0;
    t->adjustment = y % 11 == 0 ? -(int64_t)(y % 300) : 0;
    t->total = t->sub + t->tax + t->shipping + t->adjustment;
}

static void doc_fields(struct zs_jw *w, const struct zs_org *o, enum zs_ent e,
                       const struct zs_rec *r, bool detail)
{
    char num[32], buf[160], date[16];
    bool inv = e == ZS_INVOICES;
    uint64_t x = h(o, r, 0x34), x0 = h0(o, r, 0x35);
    const struct zs_rec *cust = r->link >= 0 ? &o->t[ZS_CONTACTS].recs[r->link] : NULL;
    struct doc_totals t;
    doc_sums(o, r, &t);
    doc_number(e, r, num, sizeof(num));
    bool bad = r->invalid == ZS_BAD_NUMBER;
    k_idtext(w, o, inv ? "invoice_id" : "salesorder_id", r);
    zs_jw_kstr(w, inv ? "invoice_number" : "salesorder_number", num);
    static const char *const inv_status[] = {"draft", "sent", "viewed", "partially_paid",
                                             "paid", "overdue", "void"};
    static const char *const so_status[] = {"draft", "confirmed", "fulfilled", "void"};
    const char *status = inv ? inv_status[x % N(inv_status)] : so_status[x % N(so_status)];
    zs_jw_kstr(w, "status", status);
    if (cust) {
        char cn[192];
        struct zs_rec base = *cust;
        base.version = 0;
        zs_rec_name(o, ZS_CONTACTS, &base, cn, sizeof(cn));
        k_idtext(w, o, "customer_id", cust);
        zs_jw_kstr(w, "customer_name", cn);
    } else {
        zs_jw_kstr(w, "customer_id", "");
        zs_jw_kstr(w, "customer_name", "");
    }
    if (x0 % 3)
        snprintf(buf, sizeof(buf), "REF-%llu", (unsigned long long)(x0 % 100000));
    else
        buf[0] = '\0';
    zs_jw_kstr(w, "reference_number", buf);
    if (r->invalid == ZS_BAD_DATE)
        zs_jw_kstr(w, "date", "31/02/2024");
    else {
        zs_fmt_date(date, r->created_s, o->tz_min);
        zs_jw_kstr(w, "date", date);
    }
    zs_fmt_date(date, r->created_s + (int64_t)(x0 % 4) * 15 * 86400, o->tz_min);
    zs_jw_kstr(w, inv ? "due_date" : "shipment_date", date);
    kid(w, o, "currency_id", misc_id(o, o->tz_min == 330 ? 51 : 52));
    zs_jw_kstr(w, "currency_code", o->tz_min == 330 ? "INR" : "SAR");
    if (bad)
        zs_jw_kstr(w, "total", "1.2.3");
    else
        zs_jw_kdec(w, "total", t.total, 2);
    if (inv) {
        int64_t bal = !strcmp(status, "paid") || !strcmp(status, "void") ? 0
                      : !strcmp(status, "partially_paid") ? t.total / 2 : t.total;
        zs_jw_kdec(w, "balance", bal, 2);
        zs_jw_kbool(w, "is_emailed", x % 2);
        zs_jw_kint(w, "reminders_sent", (int64_t)(x % 3));
    } else {
        zs_jw_kstr(w, "order_status", status);
        zs_jw_kstr(w, "invoiced_status", x % 3 == 0 ? "invoiced" : x % 3 == 1 ? "not_invoiced"
                                                                              : "partially_invoiced");
        zs_jw_kstr(w, "paid_status", x % 2 ? "paid" : "unpaid");
        zs_jw_kstr(w, "shipped_status", x % 4 == 0 ? "shipped" : "pending");
        zs_jw_kstr(w, "delivery_method", x0 % 2 ? "Courier" : "");
    }
    zs_jw_kstr(w, "salesperson_name", x0 % 4 == 0 ? "سالم" : x0 % 4 == 1 ? "Dana" : "");
    zs_jw_kbool(w, "has_attachment", false);
    times(w, o, r);
    if (!detail)
        return;
    if (x0 % 5 == 0)
        zs_jw_kstr(w, "salesperson_id", " ");
    else
        kid(w, o, "salesperson_id", misc_id(o, 70 + x0 % 4));
    zs_jw_kdec(w, "sub_total", t.sub, 2);
    zs_jw_kdec(w, "tax_total", t.tax, 2);
    zs_jw_kdec(w, "discount", t.discount, 2);
    zs_jw_kbool(w, "is_inclusive_tax", false);
    zs_jw_kdec(w, "exchange_rate", 100, 2);
    zs_jw_kint(w, "price_precision", 2);
    if (t.shipping == 0 && x % 2)
        zs_jw_kstr(w, "shipping_charge", "");
    else
        zs_jw_kdec(w, "shipping_charge", t.shipping, 2);
    zs_jw_kdec(w, "adjustment", t.adjustment, 2);
    zs_jw_kint(w, "payment_terms", (int64_t)(x0 % 4) * 15);
    zs_jw_kstr(w, "notes", x % 3 == 0 ? "Thank you!\nشكراً لكم" : "");
    zs_jw_kstr(w, "terms", "");
    kid(w, o, "template_id", misc_id(o, inv ? 81 : 82));
    if (inv) {
        if (o->gen_n[ZS_SALESORDERS] && x0 % 3 == 0) {
            const struct zs_rec *so =
                &o->t[ZS_SALESORDERS].recs[x0 / 3 % o->gen_n[ZS_SALESORDERS]];
            k_idtext(w, o, "salesorder_id", so);
        } else {
            zs_jw_kstr(w, "salesorder_id", "");
        }
        snprintf(buf, sizeof(buf), "https://books.example.com/inv/%llu",
                 (unsigned long long)r->id);
        zs_jw_kstr(w, "invoice_url", buf);
    }
    if (cust) {
        char cn[192];
        struct zs_rec base = *cust;
        base.version = 0;
        zs_rec_name(o, ZS_CONTACTS, &base, cn, sizeof(cn));
        address(w, "billing_address", o, 0, h0(o, cust, 0x25), cn);
        address(w, "shipping_address", o, 0, h0(o, cust, 0x26), cn);
    }
    zs_jw_key(w, "line_items");
    zs_jw_arr(w);
    unsigned n = doc_lines(o, r);
    const struct zs_table *wt = &o->t[ZS_WAREHOUSES];
    for (unsigned k = 0; k < n; k++) {
        int64_t q, rt, d, tot, tax;
        const struct tax *tx;
        const struct zs_rec *it = line_item(o, r, k, &q, &rt, &d, &tot, &tax, &tx);
        char name[192];
        zs_jw_obj(w);
        kid(w, o, "line_item_id",
                  org_digit(o) + (inv ? 7 : 8) * E16 + (seq_of(r) * 16 + k) * 100 + 3);
        k_idtext(w, o, "item_id", it);
        zs_jw_kprefnum(w, "sku", "SKU-", seq_of(it), 6);
        item_base_name(o, it, name, sizeof(name));
        zs_jw_kstr(w, "name", name);
        zs_jw_kstr(w, "description", k % 2 ? "" : "Line note \"fragile\"");
        zs_jw_kint(w, "item_order", k + 1);
        zs_jw_kint(w, "quantity", q);
        zs_jw_kstr(w, "unit", units[h0(o, it, 0x16) % N(units)]);
        zs_jw_kdec(w, "rate", rt, 2);
        zs_jw_kdec(w, "discount", d, 2);
        kid(w, o, "tax_id", misc_id(o, tx->id_low));
        zs_jw_kstr(w, "tax_name", tx->name);
        zs_jw_kstr(w, "tax_type", "tax");
        zs_jw_kint(w, "tax_percentage", tx->pct);
        zs_jw_kdec(w, "item_total", tot, 2);
        kid(w, o, "account_id", misc_id(o, 32));
        zs_jw_kstr(w, "product_type", "goods");
        if (wt->n) {
            const struct zs_rec *wr = &wt->recs[line_site(o, r, k)];
            char wn[128];
            warehouse_name(o, wr, wn, sizeof(wn));
            k_idtext(w, o, o->locations ? "location_id" : "warehouse_id", wr);
            zs_jw_kstr(w, o->locations ? "location_name" : "warehouse_name", wn);
        }
        if (!inv) {
            int64_t qi = x % 3 == 0 ? q : 0;
            zs_jw_kint(w, "quantity_invoiced", qi);
            zs_jw_kint(w, "quantity_packed", x % 4 == 0 ? q : 0);
            zs_jw_kint(w, "quantity_shipped", x % 4 == 0 ? q : 0);
        }
        zs_jw_obj_end(w);
    }
    zs_jw_arr_end(w);
    custom_fields(w, o, e, r);
}

void zs_render_item_without_stock(struct zs_jw *w, const struct zs_org *o, const struct zs_rec *r)
{
    zs_jw_obj(w);
    item_fields(w, o, r, true, false, false);
    zs_jw_obj_end(w);
}

void zs_render(struct zs_jw *w, const struct zs_org *o, enum zs_ent e, const struct zs_rec *r,
               bool detail, bool as_location)
{
    zs_jw_obj(w);
    switch (e) {
    case ZS_WAREHOUSES:
        warehouse_fields(w, o, r, as_location);
        break;
    case ZS_ITEM_GROUPS:
        group_fields(w, o, r, detail);
        break;
    case ZS_ITEMS:
        item_fields(w, o, r, detail, false, true);
        break;
    case ZS_CONTACTS:
        contact_fields(w, o, r, detail);
        break;
    case ZS_SALESORDERS:
    case ZS_INVOICES:
        doc_fields(w, o, e, r, detail);
        break;
    case ZS_ENT_COUNT:
        break;
    }
    zs_jw_obj_end(w);
}
