/* cut_shim — makes a journal segment shorter just before a stage reads its
 * tail, as the running ingress does when it cuts a full segment's prefilled
 * zero tail while `tds-ingress replay` reads beside it. Preloaded with
 * LD_PRELOAD into the replay command by the integration tests.
 *
 * A pread() of exactly 4096 bytes at an offset past 0 of a file in the
 * directory TDS_TEST_CUT_DIR names (the zero-tail check reads in 4096-byte
 * pieces, the records in other sizes) first truncates that file to the
 * offset, so the read comes up short. Without TDS_TEST_CUT_DIR every call
 * goes to the C library unchanged. Never built into a stage.
 */
/* Both symbols are defined here, so neither may be renamed to the other. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);

static void maybe_cut(int fd, size_t n, off_t off)
{
    const char *dir = getenv("TDS_TEST_CUT_DIR");
    char link[64], path[4096];
    size_t dl;
    ssize_t pl;
    int w;

    if (!dir || n != 4096 || off <= 0)
        return;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    pl = readlink(link, path, sizeof(path) - 1);
    if (pl <= 0)
        return;
    path[pl] = '\0';
    dl = strlen(dir);
    if (strncmp(path, dir, dl) != 0 || path[dl] != '/')
        return;
    w = open(path, O_WRONLY | O_CLOEXEC);
    if (w < 0)
        return;
    if (ftruncate(w, off) < 0)
        perror("cut_shim");
    close(w);
}

static ssize_t call(const char *name, int fd, void *buf, size_t n, off_t off)
{
    pread_fn real = (pread_fn)dlsym(RTLD_NEXT, name);

    maybe_cut(fd, n, off);
    return real ? real(fd, buf, n, off) : -1;
}

ssize_t pread(int fd, void *buf, size_t n, off_t off) { return call("pread", fd, buf, n, off); }
ssize_t pread64(int fd, void *buf, size_t n, off_t off) { return call("pread64", fd, buf, n, off); }
