/* fuzz_inventory — fuzz target for the processor's inventory transforms (warehouses).
 *
 * The input format and the checks are in transform_fuzz.h, shared by every
 * transform target; this file only names the entities it covers.
 */
#define TRANSFORM_FUZZ_NAME "fuzz_inventory"

static const char *const entities[] = {"warehouses"};

#include "transform_fuzz.h"
