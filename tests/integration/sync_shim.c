/* sync_shim — notes every fsync() and fdatasync() of a stage, for the
 * integration tests, preloaded with LD_PRELOAD.
 *
 * After each call returns, one line "<call> <path>" (the path the descriptor
 * names, from /proc/self/fd) is appended to the file TDS_TEST_SYNC_LOG names;
 * without it nothing is written. The call itself goes to the C library
 * unchanged, after TDS_TEST_SYNC_SLEEP_MS milliseconds when that is set (a
 * slow disk, whatever the machine's). A test can so tell which files a
 * stage made durable, and when. Never built into a stage.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef int (*sync_fn)(int);

static void note(const char *call, int fd)
{
    const char *log = getenv("TDS_TEST_SYNC_LOG");
    char link[64], path[4096], line[4200];
    ssize_t n;
    int len, out;

    if (!log)
        return;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    path[n > 0 ? n : 0] = '\0';
    len = snprintf(line, sizeof(line), "%s %s\n", call, path);
    out = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out < 0)
        return;
    if (write(out, line, (size_t)len) < 0)
        perror("sync_shim");
    close(out);
}

static int call(const char *name, int fd)
{
    sync_fn real = (sync_fn)dlsym(RTLD_NEXT, name);
    const char *sleep_ms = getenv("TDS_TEST_SYNC_SLEEP_MS");
    int r;

    if (sleep_ms) {
        long ms = atol(sleep_ms);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
    }
    r = real ? real(fd) : -1;

    note(name, fd);
    return r;
}

int fsync(int fd) { return call("fsync", fd); }
int fdatasync(int fd) { return call("fdatasync", fd); }
