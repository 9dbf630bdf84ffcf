/* cli — the fetcher's administrative subcommands.
 *
 *   tds-fetcher sync --org ORG --entity NAME|all --mode full|incremental|reconcile [--detach]
 *   tds-fetcher auth exchange --org ORG[,ORG...] --code CODE|-
 *   tds-fetcher auth status
 *
 * `sync` inserts a row into tds.sync_requests (any replica that owns the
 * organization takes it) and, unless --detach, follows the runs in
 * tds.sync_runs with a progress line until the request is done. `auth`
 * trades a self-client grant code for a refresh token stored in
 * tds.oauth_tokens, or shows each organization's token state (never a
 * token). Output goes to stdout; errors are one line on stderr.
 */
#ifndef TDS_FETCHER_CLI_H
#define TDS_FETCHER_CLI_H

struct tds_orgs;

struct tds_cli_env {
    const char *database_url;
    const struct tds_orgs *orgs;
    const char *admin_listen;  /* to read the running fetcher's quota figures */
    const char *instance;
    long long token_timeout_ms;
};

/* argv[0] is the subcommand. Returns the process exit status (0 ok, 1
 * failed, 2 usage). */
int tds_cli_main(int argc, char **argv, const struct tds_cli_env *env);
/* A request for a subcommand's usage (--help or -h among its arguments, or
 * `auth` alone): prints it and returns the exit status, without settings or
 * a database; -1 when argv asks for something else. */
int tds_cli_help(int argc, char **argv);

#endif
