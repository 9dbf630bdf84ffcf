/* test_customers — contacts (list and detail) with addresses and persons. */
#include "helpers.h"

static const char *CONTACT =
    "{\"contact_id\":\"260815000000098001\",\"contact_name\":\"مؤسسة النور التجارية\","
    "\"customer_name\":\"مؤسسة النور التجارية\",\"company_name\":\"Al Noor Trading\","
    "\"contact_type\":\"Customer\",\"customer_sub_type\":\"business\",\"status\":\"active\","
    "\"first_name\":\"Sara\",\"last_name\":\"Haddad\",\"email\":\"sara@alnoor.example\","
    "\"phone\":\"+966110000000\",\"mobile\":\"\",\"website\":\"https://alnoor.example\","
    "\"language_code\":\"ar\",\"currency_id\":\"260815000000000097\",\"currency_code\":\"SAR\","
    "\"payment_terms\":30,\"payment_terms_label\":\"Net 30\",\"credit_limit\":\"50000.00\","
    "\"outstanding_receivable_amount\":1369.66,\"outstanding_payable_amount\":0,"
    "\"unused_credits_receivable_amount\":\"\",\"unused_credits_payable_amount\":\" \","
    "\"custom_fields\":[{\"label\":\"Region\",\"value\":\"الرياض\",\"index\":1},"
    "{\"api_name\":\"cf_vip\",\"value\":true}],"
    "\"billing_address\":{\"address_id\":\"260815000000098010\",\"attention\":\"Sara\","
    "\"address\":\"King Fahd Rd\",\"street2\":\"Floor 3\",\"city\":\"Riyadh\",\"state\":\"Riyadh\","
    "\"state_code\":\"RD\",\"country_code\":\"SA\",\"zip\":94588,\"country\":\"Saudi Arabia\",\"phone\":\"\",\"fax\":\"\"},"
    "\"shipping_address\":{\"attention\":\"\",\"address\":\"Warehouse 4\",\"street2\":\"\","
    "\"city\":\"Jeddah\",\"state\":\"\",\"zip\":\"\",\"country\":\"Saudi Arabia\",\"phone\":\"\",\"fax\":\"\"},"
    "\"addresses\":[{\"address_id\":\"260815000000098020\",\"attention\":\"Branch\",\"address\":\"Dammam Rd\","
    "\"city\":\"Dammam\",\"country\":\"Saudi Arabia\"}],"
    "\"contact_persons\":[{\"contact_person_id\":\"260815000000098003\",\"salutation\":\"Ms.\","
    "\"first_name\":\"Sara\",\"last_name\":\"Haddad\",\"email\":\"sara@alnoor.example\","
    "\"phone\":\"+966110000000\",\"mobile\":\"\",\"designation\":\"CFO\",\"department\":\"Finance\","
    "\"skype\":\"\",\"is_primary_contact\":true,\"enable_portal\":false},"
    "{\"contact_person_id\":260815000000098004,\"first_name\":\"عمر\",\"last_name\":\"\","
    "\"email\":\"\",\"is_primary_contact\":false}],"
    "\"created_time\":\"2013-10-07T18:24:51+0530\",\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}";

static void test_contact_detail(void)
{
    const struct tds_msg_rowset *s, *a, *p;

    h_reset();
    T_TRUE(!h_record("contacts", CONTACT, TDS_FORM_DETAIL));
    T_TRUE((s = h_set("contacts", TDS_ROWS_DETAIL, 0)) != NULL);
    h_check_columns(s);
    T_V(s, 0, "contact_id", "260815000000098001");
    T_V(s, 0, "modified_time", "2026-06-09 09:45:21-04:00");
    T_V(s, 0, "contact_name", "مؤسسة النور التجارية");
    T_V(s, 0, "company_name", "Al Noor Trading");
    T_V(s, 0, "contact_type", "customer");
    T_V(s, 0, "customer_sub_type", "business");
    T_V(s, 0, "status", "active");
    T_V(s, 0, "first_name", "Sara");
    T_V(s, 0, "last_name", "Haddad");
    T_V(s, 0, "email", "sara@alnoor.example");
    T_V(s, 0, "phone", "+966110000000");
    T_V(s, 0, "mobile", "");
    T_V(s, 0, "website", "https://alnoor.example");
    T_V(s, 0, "language_code", "ar");
    T_V(s, 0, "currency_id", "260815000000000097");
    T_V(s, 0, "currency_code", "SAR");
    T_V(s, 0, "payment_terms", "30");
    T_V(s, 0, "payment_terms_label", "Net 30");
    T_V(s, 0, "credit_limit", "50000.00");
    T_V(s, 0, "outstanding_receivable_amount", "1369.66");
    T_V(s, 0, "outstanding_payable_amount", "0");
    T_VNULL(s, 0, "unused_credits_receivable_amount");
    T_VNULL(s, 0, "unused_credits_payable_amount");
    T_V(s, 0, "custom_fields", "{\"Region\":\"الرياض\",\"cf_vip\":true}");
    T_V(s, 0, "created_time", "2013-10-07 18:24:51+05:30");

    T_TRUE((a = h_set("contact_addresses", TDS_ROWS_CHILD, 0)) != NULL);
    h_check_columns(a);
    T_INT(a->n_rows, ==, 3);
    T_V(a, 0, "contact_id", "260815000000098001");
    T_V(a, 0, "address_type", "billing");
    T_V(a, 0, "position", "1");
    T_V(a, 0, "address_id", "260815000000098010");
    T_V(a, 0, "attention", "Sara");
    T_V(a, 0, "address", "King Fahd Rd");
    T_V(a, 0, "street2", "Floor 3");
    T_V(a, 0, "city", "Riyadh");
    T_V(a, 0, "state", "Riyadh");
    T_V(a, 0, "state_code", "RD");
    T_V(a, 0, "country_code", "SA");
    T_V(a, 0, "zip", "94588");
    T_V(a, 0, "country", "Saudi Arabia");
    T_V(a, 0, "phone", "");
    T_V(a, 0, "fax", "");
    T_V(a, 1, "address_type", "shipping");
    T_V(a, 1, "position", "1");
    T_VNULL(a, 1, "address_id");
    T_V(a, 1, "city", "Jeddah");
    T_V(a, 2, "address_type", "other");
    T_V(a, 2, "position", "1");
    T_V(a, 2, "address_id", "260815000000098020");
    T_V(a, 2, "city", "Dammam");
    T_VNULL(a, 2, "street2");

    T_TRUE((p = h_set("contact_persons", TDS_ROWS_CHILD, 0)) != NULL);
    h_check_columns(p);
    T_INT(p->n_rows, ==, 2);
    T_V(p, 0, "contact_person_id", "260815000000098003");
    T_V(p, 0, "salutation", "Ms.");
    T_V(p, 0, "first_name", "Sara");
    T_V(p, 0, "last_name", "Haddad");
    T_V(p, 0, "email", "sara@alnoor.example");
    T_V(p, 0, "phone", "+966110000000");
    T_V(p, 0, "mobile", "");
    T_V(p, 0, "designation", "CFO");
    T_V(p, 0, "department", "Finance");
    T_V(p, 0, "is_primary_contact", "true");
    T_V(p, 1, "contact_person_id", "260815000000098004");
    T_V(p, 1, "first_name", "عمر");
    T_VNULL(p, 1, "salutation");
    T_V(p, 1, "is_primary_contact", "false");
}

static void test_contact_list(void)
{
    const struct tds_msg_rowset *s;
    const char *c = "{\"contact_id\":\"260815000000098001\",\"contact_name\":\"Al Noor\","
                    "\"contact_type\":\"vendor\",\"customer_sub_type\":\"individual\",\"status\":\"inactive\","
                    "\"payment_terms\":\"\",\"outstanding_payable_amount\":\"12.5\","
                    "\"contact_type_formatted\":\"Vendor\","
                    "\"custom_fields\":[],\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}";

    h_reset();
    T_TRUE(!h_record("contacts", c, TDS_FORM_LIST));
    T_INT(h_nsets("contact_addresses", TDS_ROWS_CHILD), ==, 0);
    T_INT(h_nsets("contact_persons", TDS_ROWS_CHILD), ==, 0);
    T_TRUE((s = h_set("contacts", TDS_ROWS_LIST, 0)) != NULL);
    h_check_columns(s);
    T_INT(s->n_cols, ==, 6 + 7);
    T_V(s, 0, "contact_type", "vendor");
    T_V(s, 0, "customer_sub_type", "individual");
    T_V(s, 0, "status", "inactive");
    T_VNULL(s, 0, "payment_terms");
    T_V(s, 0, "outstanding_payable_amount", "12.5");
    T_V(s, 0, "custom_fields", "{}");
    T_NOCOL(s, "credit_limit");
}

/* Fill the stack below the caller with non-zero bytes, so that a local
 * left unset by a function called next holds garbage, not zeros. */
static __attribute__((noinline)) void dirty_stack(void)
{
    volatile unsigned char junk[16384];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = 0xA5;
}

/* A detail without the flattened primary person at the top (a contact's
 * detail is not known to carry it) takes it from the person marked
 * is_primary_contact: a DETAIL row sets every column, so before, each
 * detail write emptied the name, email and phone the list had written. */
static void test_contact_detail_primary_person(void)
{
    const struct tds_msg_rowset *s;
    const char *head = "{\"contact_id\":\"5001\",\"contact_name\":\"Al Noor\","
                       "\"contact_type\":\"customer\",\"status\":\"active\","
                       "\"billing_address\":{\"city\":\"Riyadh\"},"
                       "\"shipping_address\":{\"city\":\"Jeddah\"},";
    const char *persons =
        "\"contact_persons\":[{\"contact_person_id\":\"5002\",\"first_name\":\"عمر\","
        "\"last_name\":\"\",\"email\":\"omar@example.com\",\"is_primary_contact\":false},"
        "{\"contact_person_id\":\"5003\",\"first_name\":\"Sara\",\"last_name\":\"Haddad\","
        "\"email\":\"sara@example.com\",\"phone\":\"+966110000000\",\"mobile\":\"\","
        "\"is_primary_contact\":true}],"
        "\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}";
    char rec[2048];

    h_reset();
    snprintf(rec, sizeof(rec), "%s%s", head, persons);
    T_TRUE(!h_record("contacts", rec, TDS_FORM_DETAIL));
    T_TRUE((s = h_set("contacts", TDS_ROWS_DETAIL, 0)) != NULL);
    T_V(s, 0, "first_name", "Sara");
    T_V(s, 0, "last_name", "Haddad");
    T_V(s, 0, "email", "sara@example.com");
    T_V(s, 0, "phone", "+966110000000");
    T_V(s, 0, "mobile", "");

    /* the flag as a string, as Zoho sends booleans in places */
    h_reset();
    snprintf(rec, sizeof(rec), "%s%s", head,
             "\"contact_persons\":[{\"contact_person_id\":\"31\",\"first_name\":\"أحمد\","
             "\"email\":\"a@example.com\",\"is_primary_contact\":\"true\"}],"
             "\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}");
    T_TRUE(!h_record("contacts", rec, TDS_FORM_DETAIL));
    T_TRUE((s = h_set("contacts", TDS_ROWS_DETAIL, 0)) != NULL);
    T_V(s, 0, "first_name", "أحمد");
    T_V(s, 0, "email", "a@example.com");

    /* a key at the top is the detail's own, null included */
    h_reset();
    snprintf(rec, sizeof(rec), "%s\"email\":null,\"first_name\":\"S.\",%s", head, persons);
    T_TRUE(!h_record("contacts", rec, TDS_FORM_DETAIL));
    T_TRUE((s = h_set("contacts", TDS_ROWS_DETAIL, 0)) != NULL);
    T_VNULL(s, 0, "email");
    T_V(s, 0, "first_name", "S.");
    T_V(s, 0, "last_name", "Haddad");

    /* no primary person: nothing to take */
    h_reset();
    snprintf(rec, sizeof(rec), "%s%s", head,
             "\"contact_persons\":[{\"contact_person_id\":\"5002\",\"first_name\":\"عمر\","
             "\"is_primary_contact\":false}],\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}");
    T_TRUE(!h_record("contacts", rec, TDS_FORM_DETAIL));
    T_TRUE((s = h_set("contacts", TDS_ROWS_DETAIL, 0)) != NULL);
    T_VNULL(s, 0, "first_name");
    T_VNULL(s, 0, "email");

    /* a flag that is no boolean (1, "yes") is no primary, and the person's
     * own column rejects the record, naming the field. Before, the check
     * wrote its reason through an unset buffer: the processor crashed on
     * such a record, at every redelivery (found by fuzz-customers). The
     * stack is dirtied first so that an unset buffer points somewhere. */
    const char *flags[] = {"1", "\"yes\""};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        h_reset();
        snprintf(rec, sizeof(rec), "%s\"contact_persons\":[{\"contact_person_id\":\"5003\","
                 "\"first_name\":\"Sara\",\"is_primary_contact\":%s}],"
                 "\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}", head, flags[i]);
        dirty_stack();
        T_TRUE(h_record("contacts", rec, TDS_FORM_DETAIL));
        T_TRUE(strstr(h_reject_reason(0), "contact_persons[0].is_primary_contact") != NULL);
    }

    /* a primary person's wrong type is a reject naming the field */
    h_reset();
    snprintf(rec, sizeof(rec), "%s%s", head,
             "\"contact_persons\":[{\"contact_person_id\":\"5003\",\"email\":{},"
             "\"is_primary_contact\":true}],\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}");
    T_TRUE(h_record("contacts", rec, TDS_FORM_DETAIL) != 0);
}

/* Two custom fields with one label: the second is keyed by its api_name,
 * or its customfield_id when it has none, so neither hides the other in
 * jsonb. With neither, the contact is rejected: before, the review's
 * contact became {"Seg":1.50,"Seg":"x"}, which jsonb stores as {"Seg":"x"},
 * 1.50 lost without a reject or a log line. */
static void test_custom_fields_same_label(void)
{
    const struct tds_msg_rowset *s;
    const char *c = "{\"contact_id\":\"1\",\"contact_name\":\"Al Noor\","
                    "\"custom_fields\":[{\"customfield_id\":\"9\",\"api_name\":\"cf_a\",\"label\":\"اللون\","
                    "\"value\":\"أحمر\"},{\"customfield_id\":\"10\",\"api_name\":\"cf_b\","
                    "\"label\":\"اللون\",\"value\":\"أزرق\"},{\"label\":\"Size\",\"value\":1},"
                    "{\"label\":\"Size\",\"customfield_id\":12,\"value\":2}],"
                    "\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}";
    const char *review = "{\"contact_id\":\"1\",\"contact_name\":\"Al Noor\","
                         "\"custom_fields\":[{\"label\":\"Seg\",\"value\":1.50,\"api_name\":\"cf_a\"},"
                         "{\"label\":\"Seg\",\"value\":\"x\"}],"
                         "\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}";

    h_reset();
    T_TRUE(!h_record("contacts", c, TDS_FORM_LIST));
    T_TRUE((s = h_set("contacts", TDS_ROWS_LIST, 0)) != NULL);
    /* without an api_name, the customfield_id (a bare number, quoted) */
    T_V(s, 0, "custom_fields", "{\"اللون\":\"أحمر\",\"cf_b\":\"أزرق\",\"Size\":1,\"12\":2}");

    h_reset();
    T_TRUE(h_record("contacts", review, TDS_FORM_DETAIL));
    T_STR(h_res.reason_class, "duplicate_key");
    T_INT(h_rows.n_sets, ==, 0);
    T_INT(h_rows.n_rejects, ==, 1);
    T_STR(h_rows.rejects[0].zoho_id, "1");
    T_STR(h_reject_reason(0), "duplicate custom field key 'Seg' in field 'custom_fields[1]': "
                              "no api_name or customfield_id that no other field has");
}

static void test_contact_rejects(void)
{
    h_reset();
    T_TRUE(h_record("contacts", "{\"contact_id\":\"1\",\"payment_terms\":30.5}", TDS_FORM_LIST));
    T_STR(h_reject_reason(0), "invalid integer in field 'payment_terms': 30.5");
    T_TRUE(h_record("contacts",
                    "{\"contact_id\":\"1\",\"contact_persons\":[{\"contact_person_id\":\"7\"},"
                    "{\"first_name\":\"x\"}]}", TDS_FORM_DETAIL));
    T_STR(h_reject_reason(1), "missing contact_persons[1].contact_person_id");
    T_STR(h_res.reason_class, "missing_id");
    T_TRUE(h_record("contacts",
                    "{\"contact_id\":\"1\",\"contact_persons\":[{\"contact_person_id\":\"7\"},"
                    "{\"contact_person_id\":7}]}", TDS_FORM_DETAIL));
    T_STR(h_reject_reason(2), "duplicate contact_person_id '7' in contact_persons");
    T_TRUE(h_record("contacts", "{\"contact_id\":\"1\",\"billing_address\":\"Riyadh\"}",
                    TDS_FORM_DETAIL));
    T_STR(h_reject_reason(3), "invalid address in field 'billing_address': expected an object");
    T_INT(h_rows.n_sets, ==, 0);
    T_INT(h_rows.n_rejects, ==, 4);
    T_STR(h_rows.rejects[0].zoho_id, "1");
    T_STR(h_rows.rejects[0].entity, "contacts");
}

/* A webhook body is a DETAIL only with both child sources: with one, its
 * child rows would replace the stored ones of the other table with none. */
static void test_contact_webhook_form(void)
{
    static const char *const partial[] = {
        "{\"contact_id\":\"1\",\"contact_name\":\"A\",\"billing_address\":{\"city\":\"Riyadh\"},"
        "\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}",
        "{\"contact_id\":\"1\",\"contact_name\":\"A\",\"contact_persons\":[],"
        "\"last_modified_time\":\"2026-06-09T09:45:21-0400\"}",
    };

    h_reset();
    T_TRUE(!h_record("contacts", CONTACT, TDS_FORM_AUTO));
    T_TRUE(h_set("contacts", TDS_ROWS_DETAIL, 0) != NULL);
    T_INT(h_nsets("contact_persons", TDS_ROWS_CHILD), ==, 1);
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        h_reset();
        T_TRUE(!h_record("contacts", partial[i], TDS_FORM_AUTO));
        T_TRUE(h_set("contacts", TDS_ROWS_LIST, 0) != NULL);
        T_INT(h_nsets("contacts", TDS_ROWS_DETAIL), ==, 0);
        T_INT(h_nsets("contact_addresses", TDS_ROWS_CHILD), ==, 0);
        T_INT(h_nsets("contact_persons", TDS_ROWS_CHILD), ==, 0);
    }
}

int main(void)
{
    T_RUN(test_contact_detail);
    T_RUN(test_contact_list);
    T_RUN(test_contact_detail_primary_person);
    T_RUN(test_custom_fields_same_label);
    T_RUN(test_contact_rejects);
    T_RUN(test_contact_webhook_form);
    h_done();
    return 0;
}
