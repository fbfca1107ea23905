/* A tiny test harness for the C tests of mtipc (header only).
 *
 * Each tests/c/<name>.c is its own program: it calls its test functions with
 * RUN(fn) and returns mt_test_exit() from main, which is nonzero if any
 * CHECK failed. A failed CHECK prints file:line, the condition, and the
 * thread's mt_last_error(), then keeps going with the next statement
 * (REQUIRE instead returns from the current test function).
 *
 * Also: scratch directories (mkdtemp under $TMPDIR or /tmp) removed
 * recursively, file helpers, and a monotonic clock.
 */
#ifndef MT_TEST_H
#define MT_TEST_H

#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700

#include <mtipc.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int mt_test_failures;
static int mt_test_checks;

static inline void mt_test_fail(const char *file, int line, const char *what) {
    mt_test_failures++;
    fprintf(stderr, "%s:%d: CHECK failed: %s\n    (mt_last_error: \"%s\")\n", file, line, what,
            mt_last_error());
}

/* CHECK(cond): records a failure and continues. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        mt_test_checks++;                                                                          \
        if (!(cond)) mt_test_fail(__FILE__, __LINE__, #cond);                                      \
    } while (0)

/* REQUIRE(cond): records a failure and returns from the (void) test function. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        mt_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            mt_test_fail(__FILE__, __LINE__, #cond);                                               \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* CHECK_ST(call, expected): the call returns the expected mt_status; prints both names if not. */
#define CHECK_ST(call, expected)                                                                   \
    do {                                                                                           \
        mt_status mt_got_ = (call);                                                                \
        mt_status mt_want_ = (expected);                                                           \
        mt_test_checks++;                                                                          \
        if (mt_got_ != mt_want_) {                                                                 \
            char mt_buf_[512];                                                                     \
            snprintf(mt_buf_, sizeof mt_buf_, "%s returned %s, expected %s", #call,                \
                     mt_status_str(mt_got_), mt_status_str(mt_want_));                             \
            mt_test_fail(__FILE__, __LINE__, mt_buf_);                                             \
        }                                                                                          \
    } while (0)

/* REQUIRE_OK(call): the call returns MT_OK, else the test function returns. */
#define REQUIRE_OK(call)                                                                           \
    do {                                                                                           \
        mt_status mt_got_ = (call);                                                                \
        mt_test_checks++;                                                                          \
        if (mt_got_ != MT_OK) {                                                                    \
            char mt_buf_[512];                                                                     \
            snprintf(mt_buf_, sizeof mt_buf_, "%s returned %s, expected MT_OK", #call,             \
                     mt_status_str(mt_got_));                                                      \
            mt_test_fail(__FILE__, __LINE__, mt_buf_);                                             \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* CHECK_CONTAINS(haystack, needle): a substring check that prints both strings. */
#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *mt_h_ = (hay);                                                                 \
        const char *mt_n_ = (needle);                                                              \
        mt_test_checks++;                                                                          \
        if (mt_h_ == NULL || strstr(mt_h_, mt_n_) == NULL) {                                       \
            char mt_buf_[1024];                                                                    \
            snprintf(mt_buf_, sizeof mt_buf_, "\"%.400s\" does not contain \"%.400s\"",            \
                     mt_h_ ? mt_h_ : "(null)", mt_n_);                                             \
            mt_test_fail(__FILE__, __LINE__, mt_buf_);                                             \
        }                                                                                          \
    } while (0)

/* RUN(fn): runs one test function and says whether it passed. */
#define RUN(fn)                                                                                    \
    do {                                                                                           \
        int mt_before_ = mt_test_failures;                                                         \
        fn();                                                                                      \
        printf("%s %s\n", mt_test_failures == mt_before_ ? "ok  " : "FAIL", #fn);                  \
        fflush(stdout);                                                                            \
    } while (0)

/* SKIP(reason): says that the current test function did not run its checks
 * and why, on stdout and as a line appended to $MTIPC_SKIP_LOG if it is set
 * (`make test` lists that file in its summary). The caller then returns. */
#define SKIP(reason) mt_test_skip(__FILE__, __func__, (reason))

static inline void mt_test_skip(const char *file, const char *fn, const char *reason) {
    printf("    skipped: %s\n", reason);
    const char *log = getenv("MTIPC_SKIP_LOG");
    if (log == NULL || log[0] == '\0') return;
    char line[1024];
    int n = snprintf(line, sizeof line, "C %s %s: %s\n", file, fn, reason);
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT, 0644);
    /* One write(2) per line; a log that cannot be written fails the test. */
    if (fd < 0 || n < 0 || write(fd, line, (size_t)n) != (ssize_t)n) {
        mt_test_failures++;
        fprintf(stderr, "%s: cannot append to MTIPC_SKIP_LOG %s: %s\n", file, log, strerror(errno));
    }
    if (fd >= 0) close(fd);
}

/* The exit status for main: 0 if every check passed. */
static inline int mt_test_exit(const char *program) {
    if (mt_test_failures) {
        fprintf(stderr, "%s: %d of %d checks FAILED\n", program, mt_test_failures, mt_test_checks);
        return 1;
    }
    printf("%s: all %d checks passed\n", program, mt_test_checks);
    return 0;
}

/* A fresh scratch directory (mode 0700), as a malloc'ed path. Aborts if it cannot. */
static inline char *scratch_new(const char *tag) {
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') base = "/tmp";
    size_t n = strlen(base) + strlen(tag) + 32;
    char *p = malloc(n);
    if (p == NULL) abort();
    snprintf(p, n, "%s/mtipc-ctest-%s-XXXXXX", base, tag);
    if (mkdtemp(p) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", p, strerror(errno));
        abort();
    }
    return p;
}

static inline int scratch_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* Removes a scratch directory and everything under it (not following links), frees the path. */
static inline void scratch_free(char *dir) {
    if (dir == NULL) return;
    if (nftw(dir, scratch_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "warning: could not remove %s: %s\n", dir, strerror(errno));
    free(dir);
}

/* "<dir>/<name>" as a malloc'ed string. */
static inline char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p == NULL) abort();
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Replaces `path` with an owner-only file holding `len` bytes of `data`. 0 on success. */
static inline int write_private(const char *path, const void *data, size_t len) {
    if (unlink(path) != 0 && errno != ENOENT) return -1;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (fd < 0) return -1;
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            close(fd);
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return close(fd);
}

/* Reads at most `cap` bytes of `path` into `buf`; returns the length or -1. */
static inline ssize_t read_file(const char *path, void *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, (char *)buf + got, cap - got);
        if (r < 0) {
            close(fd);
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    return (ssize_t)got;
}

/* Milliseconds on the monotonic clock. */
static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#endif /* MT_TEST_H */
