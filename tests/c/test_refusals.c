/* Domains mtipc refuses, through the C ABI: each gives its own status, a
 * message naming the path, leaves *out alone, and changes nothing on disk.
 * The on-disk names and expected statuses follow tests/domain_refusals.rs. */
#include "mt_test.h"

#define SEM_SIZE 128

#define SENTINEL ((mt_domain *)(uintptr_t)0x5eed)

/* What is on disk at a domain path: the directory's type and mode, and the
 * kind, mode and bytes of its layout and notify.sem files. */
struct snapshot {
    int exists;
    mode_t mode;
    ssize_t layout_len, sem_len;
    mode_t layout_mode, sem_mode;
    char layout[512], sem[512];
};

static void snap_file(const char *dir, const char *name, mode_t *mode, ssize_t *len, char *buf,
                      size_t cap) {
    char *p = path_join(dir, name);
    struct stat st;
    *mode = lstat(p, &st) == 0 ? st.st_mode : 0;
    *len = S_ISREG(*mode) ? read_file(p, buf, cap) : -1;
    free(p);
}

static void take_snapshot(const char *dom, struct snapshot *s) {
    memset(s, 0, sizeof *s);
    struct stat st;
    s->exists = lstat(dom, &st) == 0;
    s->mode = s->exists ? st.st_mode : 0;
    if (s->exists && S_ISDIR(st.st_mode)) {
        snap_file(dom, "layout", &s->layout_mode, &s->layout_len, s->layout, sizeof s->layout);
        snap_file(dom, "notify.sem", &s->sem_mode, &s->sem_len, s->sem, sizeof s->sem);
    }
}

static int same_snapshot(const struct snapshot *a, const struct snapshot *b) {
    return a->exists == b->exists && a->mode == b->mode && a->layout_len == b->layout_len &&
           a->sem_len == b->sem_len && a->layout_mode == b->layout_mode &&
           a->sem_mode == b->sem_mode && memcmp(a->layout, b->layout, sizeof a->layout) == 0 &&
           memcmp(a->sem, b->sem, sizeof a->sem) == 0;
}

/* Opening `dom` gives `want`, names `needle` in the message, writes nothing
 * to *out and leaves the domain as it was. */
#define EXPECT_REFUSAL(dom, want, needle)                                                          \
    do {                                                                                           \
        struct snapshot before_, after_;                                                           \
        take_snapshot((dom), &before_);                                                            \
        mt_domain *d_ = SENTINEL;                                                                  \
        CHECK_ST(mt_domain_open((dom), &d_), (want));                                              \
        CHECK(d_ == SENTINEL);                                                                     \
        CHECK_CONTAINS(mt_last_error(), (needle));                                                 \
        take_snapshot((dom), &after_);                                                             \
        CHECK(same_snapshot(&before_, &after_));                                                   \
        if (d_ != SENTINEL) mt_domain_free(d_);                                                    \
    } while (0)

/* A scratch directory holding a good, freshly created domain at <scratch>/dom. */
static char *good_domain(const char *tag, char **dom) {
    char *dir = scratch_new(tag);
    *dom = path_join(dir, "dom");
    mt_domain *d = NULL;
    if (mt_domain_open(*dom, &d) != MT_OK) {
        fprintf(stderr, "cannot create a good domain at %s: %s\n", *dom, mt_last_error());
        abort();
    }
    mt_domain_free(d);
    return dir;
}

static void path_is_a_regular_file(void) {
    char *dir = scratch_new("file");
    char *p = path_join(dir, "dom");
    REQUIRE(write_private(p, "not a directory\n", 16) == 0);
    EXPECT_REFUSAL(p, MT_ERR_INVALID, p);
    CHECK_CONTAINS(mt_last_error(), "not a directory");
    free(p);
    scratch_free(dir);
}

static void path_is_a_symlink_to_a_directory(void) {
    char *dom;
    char *dir = good_domain("symlink", &dom);
    char *link = path_join(dir, "link");
    REQUIRE(symlink(dom, link) == 0);
    /* Even though it points to a perfectly good domain. */
    EXPECT_REFUSAL(link, MT_ERR_DENIED, link);
    CHECK_CONTAINS(mt_last_error(), "symbolic link");

    /* A dangling link is refused too, and nothing is created through it. */
    char *dangling = path_join(dir, "dangling");
    char *nowhere = path_join(dir, "nowhere");
    REQUIRE(symlink(nowhere, dangling) == 0);
    EXPECT_REFUSAL(dangling, MT_ERR_DENIED, "symbolic link");
    CHECK(access(nowhere, F_OK) != 0);

    free(nowhere);
    free(dangling);
    free(link);
    free(dom);
    scratch_free(dir);
}

static void group_or_world_writable_directory(void) {
    char *dom;
    char *dir = good_domain("writable", &dom);
    REQUIRE(chmod(dom, 0770) == 0);
    EXPECT_REFUSAL(dom, MT_ERR_DENIED, dom);
    CHECK_CONTAINS(mt_last_error(), "0770");
    REQUIRE(chmod(dom, 0702) == 0);
    EXPECT_REFUSAL(dom, MT_ERR_DENIED, "0702");
    /* Made safe again, it opens. */
    REQUIRE(chmod(dom, 0700) == 0);
    mt_domain *d = NULL;
    CHECK_ST(mt_domain_open(dom, &d), MT_OK);
    mt_domain_free(d);
    free(dom);
    scratch_free(dir);
}

static void layout_of_another_version(void) {
    char *dom;
    char *dir = good_domain("version", &dom);
    char *layout = path_join(dom, "layout");
    const char *v2 = "mtipc domain\nlayout 2\n";
    REQUIRE(write_private(layout, v2, strlen(v2)) == 0);
    EXPECT_REFUSAL(dom, MT_ERR_VERSION, dom);
    CHECK_CONTAINS(mt_last_error(), "layout version 2");
    const char *vmax = "mtipc domain\nlayout 4294967295\n";
    REQUIRE(write_private(layout, vmax, strlen(vmax)) == 0);
    EXPECT_REFUSAL(dom, MT_ERR_VERSION, "4294967295");
    free(layout);
    free(dom);
    scratch_free(dir);
}

static void corrupt_or_truncated_layout(void) {
    char *dom;
    char *dir = good_domain("layout", &dom);
    char *layout = path_join(dom, "layout");
    static const struct {
        const char *bytes;
        size_t len;
        const char *needle;
    } cases[] = {
        {"\x7f" "ELF\x02\x01\x01\0garbage\xff\xfe", 17, "not UTF-8"},
        {"some other program's file\n", 26, "does not start with"},
        {"mtipc domain\nlayout one\n", 24, "bad version"},
        {"mtipc domain\nlay", 16, "truncated"},
        {"mtipc domain\nlayout 1", 21, "truncated"},
        {"mtipc dom", 9, "does not start with"},
        {"", 0, "is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        REQUIRE(write_private(layout, cases[i].bytes, cases[i].len) == 0);
        EXPECT_REFUSAL(dom, MT_ERR_CORRUPT, layout);
        CHECK_CONTAINS(mt_last_error(), cases[i].needle);
    }
    free(layout);
    free(dom);
    scratch_free(dir);
}

static void truncated_notify_sem(void) {
    char *dom;
    char *dir = good_domain("semtrunc", &dom);
    char *sem = path_join(dom, "notify.sem");
    char good[SEM_SIZE + 1];
    REQUIRE(read_file(sem, good, sizeof good) == SEM_SIZE);
    /* Shorter than a header, empty, and a whole header with the region cut short. */
    const size_t lens[] = {40, 0, 100, SEM_SIZE - 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        REQUIRE(write_private(sem, good, lens[i]) == 0);
        EXPECT_REFUSAL(dom, MT_ERR_CORRUPT, sem);
    }
    /* Garbage of the right size. */
    char noise[SEM_SIZE];
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (char)((i * 2654435761u) >> 13);
    REQUIRE(write_private(sem, noise, sizeof noise) == 0);
    EXPECT_REFUSAL(dom, MT_ERR_CORRUPT, "bad magic");
    /* Restored, it opens again. */
    REQUIRE(write_private(sem, good, SEM_SIZE) == 0);
    mt_domain *d = NULL;
    CHECK_ST(mt_domain_open(dom, &d), MT_OK);
    mt_domain_free(d);
    free(sem);
    free(dom);
    scratch_free(dir);
}

int main(void) {
    RUN(path_is_a_regular_file);
    RUN(path_is_a_symlink_to_a_directory);
    RUN(group_or_world_writable_directory);
    RUN(layout_of_another_version);
    RUN(corrupt_or_truncated_layout);
    RUN(truncated_notify_sem);
    return mt_test_exit("test_refusals");
}
