/* fuzz_customers — fuzz target for the processor's customers transforms (contacts).
 *
 * The input format and the checks are in transform_fuzz.h, shared by every
 * transform target; this file only names the entities it covers.
 */
#define TRANSFORM_FUZZ_NAME "fuzz_customers"

static const char *const entities[] = {"contacts"};

#include "transform_fuzz.h"
