/* Status names, the version, and bad arguments: every NULL, empty, oversized
 * or non-UTF-8 argument gives MT_ERR_INVALID with a message, never a crash,
 * and leaves the out-parameters alone. */
#include "mt_test.h"

static void status_names_for_every_code(void) {
    static const struct {
        uint32_t code;
        const char *name;
    } codes[] = {
        {MT_OK, "MT_OK"},
        {MT_ERR_INVALID, "MT_ERR_INVALID"},
        {MT_ERR_NOT_FOUND, "MT_ERR_NOT_FOUND"},
        {MT_ERR_EXISTS, "MT_ERR_EXISTS"},
        {MT_ERR_DENIED, "MT_ERR_DENIED"},
        {MT_ERR_VERSION, "MT_ERR_VERSION"},
        {MT_ERR_CORRUPT, "MT_ERR_CORRUPT"},
        {MT_ERR_TIMEOUT, "MT_ERR_TIMEOUT"},
        {MT_ERR_FULL, "MT_ERR_FULL"},
        {MT_ERR_CLOSED, "MT_ERR_CLOSED"},
        {MT_ERR_DEFERRED, "MT_ERR_DEFERRED"},
        {MT_ERR_IO, "MT_ERR_IO"},
        {MT_ERR_PANIC, "MT_ERR_PANIC"},
        {MT_ERR_UNAVAILABLE, "MT_ERR_UNAVAILABLE"},
        {MT_ERR_FENCED, "MT_ERR_FENCED"},
    };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        /* The codes are dense and stable: 0, 1, 2, ... */
        CHECK(codes[i].code == i);
        const char *s = mt_status_str(codes[i].code);
        CHECK(s != NULL);
        CHECK(s != NULL && strcmp(s, codes[i].name) == 0);
        /* A static string: the same pointer every time. */
        CHECK(mt_status_str(codes[i].code) == s);
    }
    CHECK(MT_OK == 0);
}

static void status_names_out_of_range(void) {
    const uint32_t bad[] = {MT_ERR_FENCED + 1, 15, 100, 999, 0x7fffffffu, 0x80000000u,
                            UINT32_MAX - 1, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *s = mt_status_str(bad[i]);
        CHECK(s != NULL && strcmp(s, "MT_ERR_UNKNOWN") == 0);
    }
}

static void version_matches_header(void) {
    const char *v = mt_version();
    REQUIRE(v != NULL);
    CHECK(strcmp(v, MTIPC_VERSION_STRING) == 0);
    char expect[64];
    snprintf(expect, sizeof expect, "%d.%d.%d", MTIPC_VERSION_MAJOR, MTIPC_VERSION_MINOR,
             MTIPC_VERSION_PATCH);
    CHECK(strcmp(v, expect) == 0);
    CHECK(MTIPC_VERSION_NUMBER ==
          MTIPC_VERSION_MAJOR * 10000 + MTIPC_VERSION_MINOR * 100 + MTIPC_VERSION_PATCH);
    CHECK(MTIPC_ABI_VERSION == MTIPC_VERSION_MAJOR);
    CHECK(mt_version() == v);
}

static void last_error_is_empty_before_any_failure(void) {
    /* Runs first in this program: nothing has failed on this thread yet. */
    const char *e = mt_last_error();
    CHECK(e != NULL && e[0] == '\0');
    /* Successful calls do not set it. */
    CHECK(mt_status_str(3) != NULL);
    CHECK(mt_version() != NULL);
    CHECK(mt_last_error()[0] == '\0');
}

/* A pointer value that is not NULL and never a real handle. */
#define SENTINEL ((mt_domain *)(uintptr_t)0x5eed)

static void null_arguments_are_invalid(void) {
    char *dir = scratch_new("null");
    char *dom = path_join(dir, "dom");
    mt_domain *d = NULL;
    CHECK_ST(mt_domain_open(dom, &d), MT_OK);
    CHECK(d != NULL);

    CHECK_ST(mt_domain_open(dom, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "out");
    CHECK_ST(mt_domain_open(NULL, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "NULL");

    char buf[64];
    size_t len = 12345;
    CHECK_ST(mt_domain_path(NULL, buf, sizeof buf, &len), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "NULL");
    CHECK(len == 12345);
    CHECK_ST(mt_domain_path(d, buf, sizeof buf, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "NULL");

    CHECK_ST(mt_sem_post(NULL, 1), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "mt_domain");
    CHECK_ST(mt_sem_wait(NULL, 0), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "mt_domain");
    CHECK_ST(mt_sem_wait(NULL, MT_WAIT_FOREVER), MT_ERR_INVALID); /* must not block */
    CHECK_ST(mt_sem_reset(NULL, NULL), MT_ERR_INVALID);
    uint32_t prev = 77;
    CHECK_ST(mt_sem_reset(NULL, &prev), MT_ERR_INVALID);
    CHECK(prev == 77);
    uint32_t v = 77;
    CHECK_ST(mt_sem_value(NULL, &v), MT_ERR_INVALID);
    CHECK(v == 77);
    CHECK_ST(mt_sem_value(d, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "NULL");

    /* NULL is fine for the free function. */
    mt_domain_free(NULL);
    mt_domain_free(d);
    free(dom);
    scratch_free(dir);
}

static void bad_paths_are_invalid(void) {
    char *dir = scratch_new("badpath");
    mt_domain *d = SENTINEL;

    /* Empty. */
    CHECK_ST(mt_domain_open("", &d), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "empty");
    CHECK(d == SENTINEL);

    /* Not UTF-8: a lone continuation byte, an overlong encoding, a truncated sequence. */
    const char *bad_utf8[] = {"/\x80", "/\xc0\xaf", "/\xe2\x82", "/\xff\xfe"};
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        size_t n = strlen(dir) + strlen(bad_utf8[i]) + 1;
        char *p = malloc(n);
        REQUIRE(p != NULL);
        snprintf(p, n, "%s%s", dir, bad_utf8[i]);
        CHECK_ST(mt_domain_open(p, &d), MT_ERR_INVALID);
        CHECK_CONTAINS(mt_last_error(), "UTF-8");
        CHECK(d == SENTINEL);
        /* Nothing was created. */
        struct stat st;
        CHECK(lstat(p, &st) != 0 && errno == ENOENT);
        free(p);
    }

    /* Oversized (more than the library's limit of 4000 bytes, less than PATH_MAX). */
    size_t big = 4090;
    char *p = malloc(big + 1);
    REQUIRE(p != NULL);
    memset(p, 'a', big);
    p[0] = '/';
    p[big] = '\0';
    CHECK_ST(mt_domain_open(p, &d), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "at most");
    CHECK(d == SENTINEL);
    free(p);

    /* A missing parent directory. */
    char *missing = path_join(dir, "no/such/parent");
    CHECK_ST(mt_domain_open(missing, &d), MT_ERR_NOT_FOUND);
    CHECK_CONTAINS(mt_last_error(), "no/such");
    CHECK(d == SENTINEL);
    free(missing);

    scratch_free(dir);
}

static void error_message_is_kept_until_next_failure(void) {
    mt_domain *d = SENTINEL;
    CHECK_ST(mt_domain_open("", &d), MT_ERR_INVALID);
    char first[256];
    snprintf(first, sizeof first, "%s", mt_last_error());
    CHECK(first[0] != '\0');
    /* Successes do not clear it (like errno). */
    (void)mt_status_str(0);
    (void)mt_version();
    CHECK(strcmp(mt_last_error(), first) == 0);
    /* A later failure replaces it. */
    CHECK_ST(mt_sem_post(NULL, 1), MT_ERR_INVALID);
    CHECK(strcmp(mt_last_error(), first) != 0);
}

int main(void) {
    RUN(last_error_is_empty_before_any_failure);
    RUN(status_names_for_every_code);
    RUN(status_names_out_of_range);
    RUN(version_matches_header);
    RUN(null_arguments_are_invalid);
    RUN(bad_paths_are_invalid);
    RUN(error_message_is_kept_until_next_failure);
    return mt_test_exit("test_status");
}
