/* stage — the standard command line and start-up of a stage binary.
 *
 * Owns what every tds-<stage> does the same way before its own work starts:
 * -h/--help (usage text plus an "Environment:" section generated from the
 * stage's config table, in one format for all stages), -V/--version,
 * --print-config, the one-line errors for a bad argument or a bad setting
 * (exit 2), and the log level from TDS_LOG_LEVEL. It never knows a stage's
 * subcommands: a stage checks argv[1] before calling tds_stage_args(), or asks
 * it to stop at the first operand (TDS_STAGE_COMMANDS) and reads its command
 * from there. Prints only to stdout/stderr; never calls exit().
 */
#ifndef TDS_STAGE_H
#define TDS_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "log.h"

struct tds_stage {
    const char *name;  /* "writer": messages say "tds-writer: ..." */
    const char *usage; /* help text before "Environment:", ends with a blank line */
    const struct tds_config_entry *table;
    size_t n;
};

/* tds_stage_args() return value meaning "no exit status yet, go on". */
#define TDS_STAGE_CONTINUE (-1)

enum {
    /* Stop at the first operand and leave it (and what follows) to the
     * stage, instead of rejecting it as an unexpected argument. */
    TDS_STAGE_COMMANDS = 1u << 0,
};

struct tds_stage_cmdline {
    bool print_config; /* --print-config was given */
    int next;          /* argv index of the first operand (== argc when none) */
};

/* Print the full help: st->usage, then "Environment:" and one line per table
 * entry: "  NAME  help (required) (secret) (default X)", each marker only
 * when it applies; an empty or NULL default is omitted. */
void tds_stage_usage(const struct tds_stage *st, FILE *f);

/* Parse -h/--help, -V/--version and --print-config with getopt_long (state
 * is reset first, so it may be called again). Returns TDS_STAGE_CONTINUE with
 * *out filled, or the exit status to return from main(): 0 after the help or
 * the version was printed on stdout, 2 after one line on stderr naming an
 * unknown option or (without TDS_STAGE_COMMANDS) an unexpected argument. */
int tds_stage_args(const struct tds_stage *st, int argc, char **argv, unsigned flags,
                   struct tds_stage_cmdline *out);

/* Load `settings` from the table and parse the STR entry TDS_LOG_LEVEL (when
 * the table has one; otherwise *level is TDS_LOG_INFO), then tds_log_init()
 * the stage at that level. Returns 0, or 2 (the exit status) after one line
 * "tds-<name>: invalid TDS_X: '…'" (or "missing required setting …") on stderr;
 * on failure the settings' strings are already freed. */
int tds_stage_config(const struct tds_stage *st, void *settings, enum tds_log_level *level);

/* The instance name for origins: `configured` when set and not empty, else
 * the host name ("unknown" when that fails). Always NUL-terminates out. */
void tds_stage_instance(const char *configured, char *out, size_t n);

#endif
