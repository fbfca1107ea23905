/* Opening domains: a fresh one is created owner-only with its files, it can
 * be opened again (also while open), a NULL path means $MTIPC_DOMAIN, and
 * mt_domain_path follows its buffer-size protocol. */
#include "mt_test.h"

static void fresh_domain_is_created_owner_only(void) {
    char *dir = scratch_new("fresh");
    char *dom = path_join(dir, "dom");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    CHECK(d != NULL);

    struct stat st;
    CHECK(lstat(dom, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 07777) == 0700);
    CHECK(st.st_uid == geteuid());

    char *layout = path_join(dom, "layout");
    char *sem = path_join(dom, "notify.sem");
    CHECK(lstat(layout, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) == 0);
    CHECK(lstat(sem, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) == 0);
    char text[64] = {0};
    CHECK(read_file(layout, text, sizeof text - 1) > 0);
    CHECK_CONTAINS(text, "mtipc domain");

    uint32_t v = 99;
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0);

    mt_domain_free(d);
    free(layout);
    free(sem);
    free(dom);
    scratch_free(dir);
}

static void existing_empty_directory_is_adopted(void) {
    /* mkdtemp made it 0700 and ours: it becomes a domain. */
    char *dir = scratch_new("adopt");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dir, &d));
    char *layout = path_join(dir, "layout");
    CHECK(access(layout, F_OK) == 0);
    mt_domain_free(d);
    free(layout);
    scratch_free(dir);
}

static void reopen_sees_the_same_domain(void) {
    char *dir = scratch_new("reopen");
    char *dom = path_join(dir, "dom");
    mt_domain *a = NULL, *b = NULL;
    REQUIRE_OK(mt_domain_open(dom, &a));
    CHECK_ST(mt_sem_post(a, 3), MT_OK);

    /* A second handle while the first is open: the same semaphore. */
    REQUIRE_OK(mt_domain_open(dom, &b));
    CHECK(a != b);
    uint32_t v = 0;
    CHECK_ST(mt_sem_value(b, &v), MT_OK);
    CHECK(v == 3);
    CHECK_ST(mt_sem_wait(b, 0), MT_OK);
    CHECK_ST(mt_sem_value(a, &v), MT_OK);
    CHECK(v == 2);
    mt_domain_free(a);
    mt_domain_free(b);

    /* Closed and opened again: the count is kept in the domain, not the handle. */
    mt_domain *c = NULL;
    REQUIRE_OK(mt_domain_open(dom, &c));
    CHECK_ST(mt_sem_value(c, &v), MT_OK);
    CHECK(v == 2);
    mt_domain_free(c);

    /* Many open/close cycles leak nothing and always succeed. */
    for (int i = 0; i < 50; i++) {
        mt_domain *e = NULL;
        CHECK_ST(mt_domain_open(dom, &e), MT_OK);
        mt_domain_free(e);
    }
    free(dom);
    scratch_free(dir);
}

static void path_buffer_protocol(void) {
    char *dir = scratch_new("pathbuf");
    char *dom = path_join(dir, "dom");
    size_t want = strlen(dom);
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));

    /* Size query: no buffer at all. */
    size_t len = 0;
    CHECK_ST(mt_domain_path(d, NULL, 0, &len), MT_ERR_INVALID);
    CHECK(len == want);
    CHECK_CONTAINS(mt_last_error(), "too small");

    /* One byte short (no room for the NUL): refused, buffer untouched, length given. */
    char *buf = malloc(want + 8);
    REQUIRE(buf != NULL);
    memset(buf, '#', want + 8);
    len = 0;
    CHECK_ST(mt_domain_path(d, buf, want, &len), MT_ERR_INVALID);
    CHECK(len == want);
    CHECK(buf[0] == '#' && buf[want - 1] == '#');

    /* A non-NULL buffer with cap 0. */
    len = 0;
    CHECK_ST(mt_domain_path(d, buf, 0, &len), MT_ERR_INVALID);
    CHECK(len == want);

    /* Exactly enough: the path and its NUL. */
    len = 0;
    CHECK_ST(mt_domain_path(d, buf, want + 1, &len), MT_OK);
    CHECK(len == want);
    CHECK(buf[want] == '\0');
    CHECK(strcmp(buf, dom) == 0);
    CHECK(buf[want + 1] == '#'); /* nothing written past cap */

    /* Plenty of room. */
    char big[8192];
    len = 0;
    CHECK_ST(mt_domain_path(d, big, sizeof big, &len), MT_OK);
    CHECK(len == want && strcmp(big, dom) == 0);

    mt_domain_free(d);
    free(buf);
    free(dom);
    scratch_free(dir);
}

static void null_path_means_mtipc_domain(void) {
    char *dir = scratch_new("envdefault");
    char *dom = path_join(dir, "from-env");
    REQUIRE(setenv("MTIPC_DOMAIN", dom, 1) == 0);
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(NULL, &d));
    char buf[4096];
    size_t len = 0;
    CHECK_ST(mt_domain_path(d, buf, sizeof buf, &len), MT_OK);
    CHECK(strcmp(buf, dom) == 0);
    struct stat st;
    CHECK(lstat(dom, &st) == 0 && S_ISDIR(st.st_mode));
    mt_domain_free(d);
    unsetenv("MTIPC_DOMAIN");
    free(dom);
    scratch_free(dir);
}

int main(void) {
    RUN(fresh_domain_is_created_owner_only);
    RUN(existing_empty_directory_is_adopted);
    RUN(reopen_sees_the_same_domain);
    RUN(path_buffer_protocol);
    RUN(null_path_means_mtipc_domain);
    return mt_test_exit("test_domain");
}
