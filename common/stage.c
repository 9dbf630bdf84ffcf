/* stage — the standard command line and start-up of a stage binary.
 *
 * Owns the help format generated from a config table, the -h/-V/--print-config
 * parse and the exit-2 lines for bad arguments and settings, so that the four
 * stages cannot drift apart again. Never logs (logging is not set up yet when
 * most of this runs) and never exits: it returns the status for main().
 */
#include "stage.h"

#include <getopt.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

void tds_stage_usage(const struct tds_stage *st, FILE *f)
{
    int width = 0;

    for (size_t i = 0; i < st->n; i++) {
        size_t l = strlen(st->table[i].env);

        if (l > (size_t)width)
            width = (int)l;
    }
    fprintf(f, "%sEnvironment:\n", st->usage ? st->usage : "");
    for (size_t i = 0; i < st->n; i++) {
        const struct tds_config_entry *e = &st->table[i];

        fprintf(f, "  %-*s  %s", width, e->env, e->help ? e->help : "");
        if (e->flags & TDS_CFG_REQUIRED)
            fputs(" (required)", f);
        if (e->flags & TDS_CFG_SECRET)
            fputs(" (secret)", f);
        if (e->def && e->def[0])
            fprintf(f, " (default %s)", e->def);
        fputc('\n', f);
    }
}

int tds_stage_args(const struct tds_stage *st, int argc, char **argv, unsigned flags,
                   struct tds_stage_cmdline *out)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"print-config", no_argument, NULL, 'p'},
        {NULL, 0, NULL, 0},
    };
    /* "+": with commands, the first operand ends option parsing so that the
     * command's own options are left to it. */
    const char *shortopts = (flags & TDS_STAGE_COMMANDS) ? "+hVp" : "hVp";
    int c;

    out->print_config = false;
    out->next = argc;
    opterr = 0;
    optind = 0; /* glibc: full reset, so a second call starts afresh */
    while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            tds_stage_usage(st, stdout);
            return 0;
        case 'V':
            printf("tds-%s %s\n", st->name, TDS_VERSION);
            return 0;
        case 'p':
            out->print_config = true;
            break;
        default:
            /* an unknown letter in a bundle (-xp) leaves optind on the bundle */
            if (optopt > 0 && optopt < 0x7f)
                fprintf(stderr, "tds-%s: unknown argument '-%c'\n", st->name, optopt);
            else
                fprintf(stderr, "tds-%s: unknown argument '%s'\n", st->name, argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc && !(flags & TDS_STAGE_COMMANDS)) {
        fprintf(stderr, "tds-%s: unexpected argument '%s'\n", st->name, argv[optind]);
        return 2;
    }
    out->next = optind;
    return TDS_STAGE_CONTINUE;
}

int tds_stage_config(const struct tds_stage *st, void *settings, enum tds_log_level *level)
{
    char err[512];

    *level = TDS_LOG_INFO;
    if (tds_config_load(st->table, st->n, settings, err, sizeof(err)) != 0) {
        fprintf(stderr, "tds-%s: %s\n", st->name, err);
        goto fail;
    }
    for (size_t i = 0; i < st->n; i++) {
        const struct tds_config_entry *e = &st->table[i];
        const char *v;

        if (e->type != TDS_CFG_STR || strcmp(e->env, "TDS_LOG_LEVEL") != 0)
            continue;
        v = *(char **)((char *)settings + e->offset);
        if (!v || tds_log_level_parse(v, level) != 0) {
            fprintf(stderr, "tds-%s: invalid TDS_LOG_LEVEL: '%s'\n", st->name, v ? v : "");
            goto fail;
        }
    }
    tds_log_init(st->name, *level);
    return 0;
fail:
    tds_config_free(st->table, st->n, settings);
    return 2;
}

void tds_stage_instance(const char *configured, char *out, size_t n)
{
    if (n == 0)
        return;
    if (configured && configured[0]) {
        snprintf(out, n, "%s", configured);
        return;
    }
    if (gethostname(out, n) != 0)
        snprintf(out, n, "unknown");
    out[n - 1] = '\0';
}
