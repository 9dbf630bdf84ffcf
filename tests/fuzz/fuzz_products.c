/* fuzz_products — fuzz target for the processor's products transforms (items, item_groups).
 *
 * The input format and the checks are in transform_fuzz.h, shared by every
 * transform target; this file only names the entities it covers.
 */
#define TRANSFORM_FUZZ_NAME "fuzz_products"

static const char *const entities[] = {"items", "item_groups"};

#include "transform_fuzz.h"
