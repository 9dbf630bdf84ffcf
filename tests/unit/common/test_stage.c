/* test_stage — the standard command line of a stage: the one help format
 * generated from the config table, -h/-V/--print-config, the exit-2 lines for
 * bad arguments and bad settings, commands left to the stage, TDS_LOG_LEVEL. */
#include "assert.h"
#include "stage.h"
#include "util.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct settings {
    char *url;
    char *bind;
    char *token;
    char *log_level;
    int64_t rate;
};

static const struct tds_config_entry table[] = {
    {"TDS_S_URL", TDS_CFG_STR, NULL, TDS_CFG_REQUIRED, 0, 0, offsetof(struct settings, url),
     "database URL"},
    {"TDS_S_BIND", TDS_CFG_STR, "tcp://*:5558", 0, 0, 0, offsetof(struct settings, bind),
     "PULL endpoint"},
    {"TDS_S_TOKEN", TDS_CFG_STR, "", TDS_CFG_SECRET, 0, 0, offsetof(struct settings, token),
     "api token"},
    {"TDS_LOG_LEVEL", TDS_CFG_STR, "info", 0, 0, 0, offsetof(struct settings, log_level),
     "debug, info, warn or error"},
    {"TDS_S_RATE", TDS_CFG_INT, "100", 0, 1, 1000, offsetof(struct settings, rate), "rate"},
};

static const struct tds_stage stage = {
    .name = "demo",
    .usage = "usage: tds-demo [--help]\n\nDoes demo things.\n\n",
    .table = table,
    .n = TDS_ARRAY_SIZE(table),
};

/* Run fn with stdout or stderr (fd) sent to a temporary file; return what it wrote. */
static char captured[4096];

static int capture(int fd, int (*fn)(void *), void *arg)
{
    FILE *tmp = tmpfile();
    int saved, rc;
    size_t n;

    T_TRUE(tmp != NULL);
    fflush(stdout);
    fflush(stderr);
    saved = dup(fd);
    T_TRUE(saved >= 0);
    T_INT(dup2(fileno(tmp), fd), ==, fd);
    rc = fn(arg);
    fflush(stdout);
    fflush(stderr);
    T_INT(dup2(saved, fd), ==, fd);
    close(saved);
    rewind(tmp);
    n = fread(captured, 1, sizeof(captured) - 1, tmp);
    captured[n] = '\0';
    fclose(tmp);
    return rc;
}

struct args_call {
    char *argv[8];
    int argc;
    unsigned flags;
    struct tds_stage_cmdline cl;
};

static int call_args(void *p)
{
    struct args_call *a = p;

    return tds_stage_args(&stage, a->argc, a->argv, a->flags, &a->cl);
}

static int run_args(int fd, struct args_call *a)
{
    a->argc = 0;
    while (a->argv[a->argc])
        a->argc++;
    return capture(fd, call_args, a);
}

static void test_usage_format(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    T_TRUE(f != NULL);
    tds_stage_usage(&stage, f);
    fclose(f);
    T_STR(buf, "usage: tds-demo [--help]\n\nDoes demo things.\n\n"
               "Environment:\n"
               "  TDS_S_URL      database URL (required)\n"
               "  TDS_S_BIND     PULL endpoint (default tcp://*:5558)\n"
               "  TDS_S_TOKEN    api token (secret)\n"
               "  TDS_LOG_LEVEL  debug, info, warn or error (default info)\n"
               "  TDS_S_RATE     rate (default 100)\n");
    free(buf);
}

static void test_help_and_version(void)
{
    struct args_call a = {.argv = {"tds-demo", "--help", "--bogus", NULL}};

    T_INT(run_args(STDOUT_FILENO, &a), ==, 0);
    T_TRUE(strncmp(captured, "usage: tds-demo", 15) == 0);
    T_TRUE(strstr(captured, "\nEnvironment:\n  TDS_S_URL ") != NULL);

    struct args_call b = {.argv = {"tds-demo", "-h", NULL}};
    T_INT(run_args(STDOUT_FILENO, &b), ==, 0);
    T_TRUE(strncmp(captured, "usage: tds-demo", 15) == 0);

    struct args_call c = {.argv = {"tds-demo", "-V", NULL}};
    T_INT(run_args(STDOUT_FILENO, &c), ==, 0);
    T_STR(captured, "tds-demo " TDS_VERSION "\n");

    struct args_call d = {.argv = {"tds-demo", "--version", NULL}};
    T_INT(run_args(STDOUT_FILENO, &d), ==, 0);
    T_STR(captured, "tds-demo " TDS_VERSION "\n");
}

static void test_print_config_and_run(void)
{
    struct args_call a = {.argv = {"tds-demo", NULL}};

    T_INT(run_args(STDERR_FILENO, &a), ==, TDS_STAGE_CONTINUE);
    T_TRUE(!a.cl.print_config);
    T_INT(a.cl.next, ==, 1);
    T_STR(captured, "");

    struct args_call b = {.argv = {"tds-demo", "--print-config", NULL}};
    T_INT(run_args(STDERR_FILENO, &b), ==, TDS_STAGE_CONTINUE);
    T_TRUE(b.cl.print_config);
    T_INT(b.cl.next, ==, 2);
}

static void test_bad_arguments(void)
{
    struct args_call a = {.argv = {"tds-demo", "--bogus", NULL}};

    T_INT(run_args(STDERR_FILENO, &a), ==, 2);
    T_STR(captured, "tds-demo: unknown argument '--bogus'\n");

    struct args_call b = {.argv = {"tds-demo", "-x", NULL}};
    T_INT(run_args(STDERR_FILENO, &b), ==, 2);
    T_STR(captured, "tds-demo: unknown argument '-x'\n");

    /* an unknown letter in a bundle is named, not the program */
    struct args_call b2 = {.argv = {"tds-demo", "-xp", NULL}};
    T_INT(run_args(STDERR_FILENO, &b2), ==, 2);
    T_STR(captured, "tds-demo: unknown argument '-x'\n");

    struct args_call c = {.argv = {"tds-demo", "migrate", NULL}};
    T_INT(run_args(STDERR_FILENO, &c), ==, 2);
    T_STR(captured, "tds-demo: unexpected argument 'migrate'\n");

    /* Options after an operand are still parsed without commands. */
    struct args_call d = {.argv = {"tds-demo", "extra", "--print-config", NULL}};
    T_INT(run_args(STDERR_FILENO, &d), ==, 2);
    T_STR(captured, "tds-demo: unexpected argument 'extra'\n");
}

static void test_commands_left_to_stage(void)
{
    struct args_call a = {.argv = {"tds-demo", "--print-config", "alerts", "list", "--all", NULL},
                          .flags = TDS_STAGE_COMMANDS};

    T_INT(run_args(STDERR_FILENO, &a), ==, TDS_STAGE_CONTINUE);
    T_STR(captured, "");
    T_TRUE(a.cl.print_config);
    T_INT(a.cl.next, ==, 2);
    T_STR(a.argv[a.cl.next], "alerts");
    T_STR(a.argv[a.cl.next + 2], "--all");

    struct args_call b = {.argv = {"tds-demo", NULL}, .flags = TDS_STAGE_COMMANDS};
    T_INT(run_args(STDERR_FILENO, &b), ==, TDS_STAGE_CONTINUE);
    T_INT(b.cl.next, ==, 1);

    struct args_call c = {.argv = {"tds-demo", "--nope", "status", NULL},
                          .flags = TDS_STAGE_COMMANDS};
    T_INT(run_args(STDERR_FILENO, &c), ==, 2);
    T_STR(captured, "tds-demo: unknown argument '--nope'\n");
}

struct config_call {
    struct settings s;
    enum tds_log_level level;
};

static int call_config(void *p)
{
    struct config_call *c = p;

    return tds_stage_config(&stage, &c->s, &c->level);
}

static void clear_env(void)
{
    for (size_t i = 0; i < stage.n; i++)
        unsetenv(table[i].env);
}

static void test_config(void)
{
    struct config_call c;

    clear_env();
    memset(&c, 0, sizeof(c));
    T_INT(capture(STDERR_FILENO, call_config, &c), ==, 2);
    T_STR(captured, "tds-demo: missing required setting TDS_S_URL\n");
    T_NULL(c.s.bind); /* freed on failure */

    setenv("TDS_S_URL", "postgresql://x/y", 1);
    setenv("TDS_S_RATE", "abc", 1);
    memset(&c, 0, sizeof(c));
    T_INT(capture(STDERR_FILENO, call_config, &c), ==, 2);
    T_TRUE(strncmp(captured, "tds-demo: invalid TDS_S_RATE: 'abc'", 35) == 0);
    T_TRUE(strchr(captured, '\n') == captured + strlen(captured) - 1);

    unsetenv("TDS_S_RATE");
    setenv("TDS_LOG_LEVEL", "loud", 1);
    memset(&c, 0, sizeof(c));
    T_INT(capture(STDERR_FILENO, call_config, &c), ==, 2);
    T_STR(captured, "tds-demo: invalid TDS_LOG_LEVEL: 'loud'\n");
    T_NULL(c.s.url);

    setenv("TDS_LOG_LEVEL", "warn", 1);
    memset(&c, 0, sizeof(c));
    T_INT(capture(STDERR_FILENO, call_config, &c), ==, 0);
    T_STR(captured, "");
    T_INT(c.level, ==, TDS_LOG_WARN);
    T_INT(tds_log_get_level(), ==, TDS_LOG_WARN);
    T_STR(c.s.url, "postgresql://x/y");
    T_STR(c.s.bind, "tcp://*:5558");
    T_INT(c.s.rate, ==, 100);
    tds_config_free(table, stage.n, &c.s);

    unsetenv("TDS_LOG_LEVEL");
    memset(&c, 0, sizeof(c));
    T_INT(capture(STDERR_FILENO, call_config, &c), ==, 0);
    T_INT(c.level, ==, TDS_LOG_INFO);
    tds_config_free(table, stage.n, &c.s);
    clear_env();
}

static void test_instance(void)
{
    char buf[64], host[64];

    tds_stage_instance("pod-1", buf, sizeof(buf));
    T_STR(buf, "pod-1");
    tds_stage_instance("a-rather-long-name", buf, 7);
    T_STR(buf, "a-rath");
    T_INT(gethostname(host, sizeof(host)), ==, 0);
    host[sizeof(host) - 1] = '\0';
    tds_stage_instance("", buf, sizeof(buf));
    T_STR(buf, host);
    tds_stage_instance(NULL, buf, sizeof(buf));
    T_STR(buf, host);
}

int main(void)
{
    T_RUN(test_usage_format);
    T_RUN(test_help_and_version);
    T_RUN(test_print_config_and_run);
    T_RUN(test_bad_arguments);
    T_RUN(test_commands_left_to_stage);
    T_RUN(test_config);
    T_RUN(test_instance);
    return 0;
}
