/* ztime — Zoho's time format: "yyyy-MM-ddTHH:mm:ss+hhmm" in the
 * organization's offset, parsed and formatted (the fetcher's cursors and
 * filters, the writer's observed times). Pure functions, no state.
 */
#ifndef TDS_ZTIME_H
#define TDS_ZTIME_H

#include <stdint.h>

#define TDS_ZTIME_LEN 64 /* room for a formatted time plus NUL */

/* "+0300", "-04:00", "+05", "Z" → minutes east of UTC. 0 or TDS_E_INVALID. */
int tds_ztime_parse_offset(const char *s, int *minutes);
/* Parse a Zoho time to seconds since the epoch. Accepts "±hhmm", "±hh:mm",
 * "Z", optional fractional seconds, and a date only ("2013-08-05", taken as
 * midnight UTC). 0 or TDS_E_INVALID. */
int tds_ztime_parse(const char *s, int64_t *epoch_s);
/* As tds_ztime_parse, and *offset_min (unless NULL) gets the offset written
 * in s, or TDS_ZTIME_NO_OFFSET when s has none (a date, or a time without
 * one). */
#define TDS_ZTIME_NO_OFFSET INT32_MIN
int tds_ztime_parse_at(const char *s, int64_t *epoch_s, int *offset_min);
/* Format epoch seconds in the given offset without a colon:
 * "2026-06-09T09:45:21-0400". out must hold TDS_ZTIME_LEN bytes. */
void tds_ztime_format(int64_t epoch_s, int offset_min, char out[TDS_ZTIME_LEN]);

#endif
