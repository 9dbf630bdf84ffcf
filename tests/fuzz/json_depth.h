/* json_depth — shared by the fuzz targets that use jansson as an oracle
 * (fuzz_pjson.c, fuzz_zoho.c): how deep a jansson tree nests, to set aside
 * the texts a reader under test refuses for its depth limit alone.
 */
#ifndef FUZZ_JSON_DEPTH_H
#define FUZZ_JSON_DEPTH_H

#include <jansson.h>
#include <stddef.h>

/* Containers nested in v, v itself counted (a scalar: 0). */
static size_t fuzz_json_depth(const json_t *v)
{
    size_t d = 0, c, i;
    const char *k;
    json_t *m;

    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, m) {
            if ((c = fuzz_json_depth(m)) > d)
                d = c;
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        json_array_foreach(v, i, m) {
            if ((c = fuzz_json_depth(m)) > d)
                d = c;
        }
        return d + 1;
    }
    return 0;
}

#endif
