/* assert.h — assertions for unit tests: they print both operands and where,
 * and stay active under NDEBUG. A failed check exits the test with status 1. */
#ifndef TDS_TEST_ASSERT_H
#define TDS_TEST_ASSERT_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_FAIL(...)                                                      \
    do {                                                                 \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                  \
        fprintf(stderr, __VA_ARGS__);                                    \
        fputc('\n', stderr);                                             \
        exit(1);                                                         \
    } while (0)

#define T_TRUE(c)                                                        \
    do {                                                                 \
        if (!(c))                                                        \
            T_FAIL("expected true: %s", #c);                             \
    } while (0)

#define T_INT(a, op, b)                                                  \
    do {                                                                 \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);          \
        if (!(t_a_ op t_b_))                                             \
            T_FAIL("expected %s %s %s, got %lld and %lld", #a, #op, #b,  \
                   t_a_, t_b_);                                          \
    } while (0)

#define T_STR(a, b)                                                      \
    do {                                                                 \
        const char *t_a_ = (a), *t_b_ = (b);                             \
        if (!t_a_ || !t_b_ || strcmp(t_a_, t_b_) != 0)                   \
            T_FAIL("expected %s == %s, got \"%s\" and \"%s\"", #a, #b,   \
                   t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");      \
    } while (0)

#define T_NULL(a)                                                        \
    do {                                                                 \
        if ((a) != NULL)                                                 \
            T_FAIL("expected %s to be NULL", #a);                        \
    } while (0)

#define T_RUN(fn)                                                        \
    do {                                                                 \
        fn();                                                            \
        fprintf(stderr, "ok %s\n", #fn);                                 \
    } while (0)

#endif
