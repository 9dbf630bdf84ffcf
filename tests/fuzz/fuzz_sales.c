/* fuzz_sales — fuzz target for the processor's sales transforms (invoices, sales_orders).
 *
 * The input format and the checks are in transform_fuzz.h, shared by every
 * transform target; this file only names the entities it covers.
 */
#define TRANSFORM_FUZZ_NAME "fuzz_sales"

static const char *const entities[] = {"invoices", "sales_orders"};

#include "transform_fuzz.h"
