/* Shared closures through the C ABI: bytes and trees published and read in
 * place, a reader in a child process that keeps its version while a new
 * one is published, every refusal (NULL, bad names, misuse of the builder,
 * wrong kinds, out of range), and out-parameters left alone on failure. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include "mt_test.h"

#include <sys/mman.h>
#include <sys/wait.h>

static int exists(const char *dom, const char *rel) {
    char *p = path_join(dom, rel);
    struct stat st;
    int r = lstat(p, &st) == 0;
    free(p);
    return r;
}

static void test_bytes_round_trip(void) {
    char *dom = scratch_new("closure-bytes");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));

    uint8_t data[5000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7 + 3);
    uint64_t v = 0;
    CHECK_ST(mt_closure_publish_bytes(d, "blob", data, sizeof data, &v), MT_OK);
    CHECK(v == 1);

    mt_closure *c = NULL;
    CHECK_ST(mt_closure_open(d, "blob", &c), MT_OK);
    uint64_t got_v = 0;
    CHECK_ST(mt_closure_version(c, &got_v), MT_OK);
    CHECK(got_v == 1);
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_ST(mt_closure_bytes(c, &p, &n), MT_OK);
    CHECK(n == sizeof data && p != NULL && memcmp(p, data, n) == 0);
    mt_value root;
    CHECK_ST(mt_closure_root(c, &root), MT_OK);
    CHECK(root.kind == MT_VALUE_BYTES);
    const uint8_t *p2 = NULL;
    CHECK_ST(mt_value_bytes(root, &p2, &n), MT_OK);
    CHECK(p2 == p); /* in place: the same mapping, no copy */

    /* An empty byte string, with a NULL buffer. */
    CHECK_ST(mt_closure_publish_bytes(d, "blob", NULL, 0, NULL), MT_OK);
    mt_closure *c2 = NULL;
    CHECK_ST(mt_closure_open(d, "blob", &c2), MT_OK);
    CHECK_ST(mt_closure_bytes(c2, &p, &n), MT_OK);
    CHECK(n == 0);
    CHECK_ST(mt_closure_version(c2, &got_v), MT_OK);
    CHECK(got_v == 2);
    /* v1 is still held by c, unchanged. */
    CHECK(exists(dom, "closures/blob/v1"));
    CHECK_ST(mt_closure_bytes(c, &p, &n), MT_OK);
    CHECK(n == sizeof data && memcmp(p, data, n) == 0);
    mt_closure_free(c);
    CHECK(!exists(dom, "closures/blob/v1")); /* its last reader let go */
    mt_closure_free(c2);
    CHECK(exists(dom, "closures/blob/v2"));
    mt_domain_free(d);
    scratch_free(dom);
}

/* {"id": 42, "name": "routing", "ratio": 0.5, "tags": ["a", "b\0c"],
 *  "raw": <3 bytes>, "nested": {"deep": []}} */
static void build_tree(mt_closure_builder *b) {
    CHECK_ST(mt_closure_builder_begin_map(b), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "name", 4), MT_OK);
    CHECK_ST(mt_closure_builder_add_str(b, "routing", 7), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "id", 2), MT_OK);
    CHECK_ST(mt_closure_builder_add_int(b, 42), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "ratio", 5), MT_OK);
    CHECK_ST(mt_closure_builder_add_float(b, 0.5), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "tags", 4), MT_OK);
    CHECK_ST(mt_closure_builder_begin_list(b), MT_OK);
    CHECK_ST(mt_closure_builder_add_str(b, "a", 1), MT_OK);
    CHECK_ST(mt_closure_builder_add_str(b, "b\0c", 3), MT_OK);
    CHECK_ST(mt_closure_builder_end(b), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "raw", 3), MT_OK);
    CHECK_ST(mt_closure_builder_add_bytes(b, (const uint8_t *)"\x00\xff\x10", 3), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "nested", 6), MT_OK);
    CHECK_ST(mt_closure_builder_begin_map(b), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "deep", 4), MT_OK);
    CHECK_ST(mt_closure_builder_begin_list(b), MT_OK);
    CHECK_ST(mt_closure_builder_end(b), MT_OK);
    CHECK_ST(mt_closure_builder_end(b), MT_OK);
    CHECK_ST(mt_closure_builder_end(b), MT_OK);
}

static void test_tree_round_trip(void) {
    char *dom = scratch_new("closure-tree");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    mt_closure_builder *b = NULL;
    REQUIRE_OK(mt_closure_builder_new(&b));
    build_tree(b);
    uint64_t v = 0;
    CHECK_ST(mt_closure_publish(d, "cfg", b, &v), MT_OK);
    CHECK(v == 1);
    /* The builder is empty again. */
    CHECK_ST(mt_closure_publish(d, "cfg", b, &v), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "no value");

    mt_closure *c = NULL;
    REQUIRE_OK(mt_closure_open(d, "cfg", &c));
    mt_value root, x;
    REQUIRE_OK(mt_closure_root(c, &root));
    CHECK(root.kind == MT_VALUE_MAP);
    size_t n = 0;
    CHECK_ST(mt_value_len(root, &n), MT_OK);
    CHECK(n == 6);
    /* Keys come sorted. */
    const char *want[] = {"id", "name", "nested", "ratio", "raw", "tags"};
    for (size_t i = 0; i < 6; i++) {
        const char *k = NULL;
        size_t kl = 0;
        CHECK_ST(mt_value_map_at(root, i, &k, &kl, NULL), MT_OK);
        CHECK(k != NULL && strcmp(k, want[i]) == 0 && kl == strlen(want[i]));
    }
    int64_t id = 0;
    CHECK_ST(mt_value_map_get(root, "id", 2, &x), MT_OK);
    CHECK(x.kind == MT_VALUE_INT);
    CHECK_ST(mt_value_int(x, &id), MT_OK);
    CHECK(id == 42);
    double r = 0;
    CHECK_ST(mt_value_map_get(root, "ratio", 5, &x), MT_OK);
    CHECK_ST(mt_value_float(x, &r), MT_OK);
    CHECK(r == 0.5);
    const char *s = NULL;
    size_t sl = 0;
    CHECK_ST(mt_value_map_get(root, "name", 4, &x), MT_OK);
    CHECK_ST(mt_value_str(x, &s, &sl), MT_OK);
    CHECK(sl == 7 && strcmp(s, "routing") == 0); /* NUL-terminated in place */
    mt_value tags, item;
    CHECK_ST(mt_value_map_get(root, "tags", 4, &tags), MT_OK);
    CHECK(tags.kind == MT_VALUE_LIST);
    CHECK_ST(mt_value_len(tags, &n), MT_OK);
    CHECK(n == 2);
    CHECK_ST(mt_value_list_get(tags, 1, &item), MT_OK);
    CHECK_ST(mt_value_str(item, &s, &sl), MT_OK);
    CHECK(sl == 3 && memcmp(s, "b\0c", 4) == 0);
    const uint8_t *bp = NULL;
    CHECK_ST(mt_value_map_get(root, "raw", 3, &x), MT_OK);
    CHECK_ST(mt_value_bytes(x, &bp, &n), MT_OK);
    CHECK(n == 3 && memcmp(bp, "\x00\xff\x10", 3) == 0);
    mt_value nested, deep;
    CHECK_ST(mt_value_map_get(root, "nested", 6, &nested), MT_OK);
    CHECK_ST(mt_value_map_get(nested, "deep", 4, &deep), MT_OK);
    CHECK(deep.kind == MT_VALUE_LIST);
    CHECK_ST(mt_value_len(deep, &n), MT_OK);
    CHECK(n == 0);

    /* Wrong kinds, missing keys, out of range: errors, outputs untouched. */
    int64_t untouched = 7;
    CHECK_ST(mt_value_int(root, &untouched), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "map, not an int");
    CHECK(untouched == 7);
    mt_value same = tags;
    CHECK_ST(mt_value_map_get(root, "nope", 4, &same), MT_ERR_NOT_FOUND);
    CHECK(same.node == tags.node);
    CHECK_ST(mt_value_map_get(tags, "a", 1, &same), MT_ERR_INVALID);
    CHECK_ST(mt_value_list_get(tags, 2, &same), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "out of range");
    CHECK_ST(mt_value_map_at(root, 6, NULL, NULL, NULL), MT_ERR_INVALID);
    CHECK_ST(mt_value_len(x, NULL), MT_ERR_INVALID);
    mt_value idv;
    CHECK_ST(mt_value_map_get(root, "id", 2, &idv), MT_OK);
    CHECK_ST(mt_value_len(idv, &n), MT_ERR_INVALID);
    CHECK_ST(mt_closure_bytes(c, &bp, &n), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "not bytes");
    /* A zeroed mt_value (no closure) is refused, not followed. */
    mt_value zero;
    memset(&zero, 0, sizeof zero);
    CHECK_ST(mt_value_int(zero, &untouched), MT_ERR_INVALID);
    CHECK_ST(mt_value_len(zero, &n), MT_ERR_INVALID);

    mt_closure_free(c);
    mt_closure_builder_free(b);
    mt_domain_free(d);
    scratch_free(dom);
}

static void test_builder_misuse(void) {
    char *dom = scratch_new("closure-misuse");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    mt_closure_builder *b = NULL;
    REQUIRE_OK(mt_closure_builder_new(&b));
    CHECK_ST(mt_closure_builder_end(b), MT_ERR_INVALID);
    CHECK_ST(mt_closure_builder_key(b, "k", 1), MT_ERR_INVALID);
    CHECK_ST(mt_closure_builder_begin_map(b), MT_OK);
    CHECK_ST(mt_closure_builder_add_int(b, 1), MT_ERR_INVALID); /* needs a key */
    CHECK_CONTAINS(mt_last_error(), "key first");
    CHECK_ST(mt_closure_builder_key(b, "\xff", 1), MT_ERR_INVALID); /* not UTF-8 */
    CHECK_ST(mt_closure_builder_key(b, "k", 1), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "j", 1), MT_ERR_INVALID); /* two in a row */
    CHECK_ST(mt_closure_builder_add_int(b, 1), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "k", 1), MT_ERR_INVALID); /* twice */
    CHECK_ST(mt_closure_builder_add_str(b, NULL, 3), MT_ERR_INVALID);
    CHECK_ST(mt_closure_publish(d, "x", b, NULL), MT_ERR_INVALID); /* map open */
    CHECK_CONTAINS(mt_last_error(), "still open");
    CHECK_ST(mt_closure_builder_end(b), MT_OK);
    CHECK_ST(mt_closure_builder_add_int(b, 2), MT_ERR_INVALID); /* complete */
    /* A bad name: the builder keeps its value for another try. */
    CHECK_ST(mt_closure_publish(d, "bad/name", b, NULL), MT_ERR_INVALID);
    uint64_t v = 0;
    CHECK_ST(mt_closure_publish(d, "x", b, &v), MT_OK);
    CHECK(v == 1);
    /* Nesting past the limit. */
    mt_status st = MT_OK;
    int levels = 0;
    while (levels < 100 && (st = mt_closure_builder_begin_list(b)) == MT_OK) levels++;
    CHECK(st == MT_ERR_INVALID && levels == 64);
    CHECK_CONTAINS(mt_last_error(), "at most 64");
    mt_closure_builder_free(b);
    mt_domain_free(d);
    scratch_free(dom);
}

static void test_refusals(void) {
    char *dom = scratch_new("closure-refuse");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    mt_closure *sentinel = (mt_closure *)(uintptr_t)0x5eed;
    mt_closure *c = sentinel;
    CHECK_ST(mt_closure_open(d, "never", &c), MT_ERR_NOT_FOUND);
    CHECK(c == sentinel);
    CHECK_ST(mt_closure_open(NULL, "x", &c), MT_ERR_INVALID);
    CHECK_ST(mt_closure_open(d, NULL, &c), MT_ERR_INVALID);
    CHECK_ST(mt_closure_open(d, "", &c), MT_ERR_INVALID);
    CHECK_ST(mt_closure_open(d, "../x", &c), MT_ERR_INVALID);
    CHECK_ST(mt_closure_open(d, ".x", &c), MT_ERR_INVALID);
    CHECK_ST(mt_closure_open(d, "x", NULL), MT_ERR_INVALID);
    CHECK(c == sentinel);
    CHECK_ST(mt_closure_publish_bytes(d, "x", NULL, 5, NULL), MT_ERR_INVALID);
    CHECK_ST(mt_closure_publish_bytes(NULL, "x", NULL, 0, NULL), MT_ERR_INVALID);
    char name[70];
    memset(name, 'a', 65);
    name[65] = 0;
    CHECK_ST(mt_closure_publish_bytes(d, name, NULL, 0, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "at most 64");
    /* Oversized: the message gives the limit. (A mapping nothing touches.) */
    size_t big_len = (size_t)1 << 30;
    void *big = mmap(NULL, big_len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(big != MAP_FAILED);
    CHECK_ST(mt_closure_publish_bytes(d, "big", big, big_len, NULL), MT_ERR_INVALID);
    munmap(big, big_len);
    CHECK_CONTAINS(mt_last_error(), "at most 1073741824 bytes");
    CHECK(!exists(dom, "closures/big"));
    uint64_t v = 9;
    CHECK_ST(mt_closure_version(NULL, &v), MT_ERR_INVALID);
    CHECK(v == 9);
    CHECK_ST(mt_closure_root(NULL, NULL), MT_ERR_INVALID);
    CHECK_ST(mt_closure_builder_new(NULL), MT_ERR_INVALID);
    CHECK_ST(mt_closure_builder_add_int(NULL, 1), MT_ERR_INVALID);
    mt_closure_free(NULL);
    mt_closure_builder_free(NULL);
    /* A corrupt version file. */
    CHECK_ST(mt_closure_publish_bytes(d, "x", (const uint8_t *)"hello", 5, NULL), MT_OK);
    char *p = path_join(dom, "closures/x/v1");
    uint8_t buf[256];
    ssize_t len = read_file(p, buf, sizeof buf);
    CHECK(len == 80);
    buf[64] = 0x7f; /* no such kind of node */
    CHECK(chmod(p, 0600) == 0 && write_private(p, buf, (size_t)len) == 0 && chmod(p, 0400) == 0);
    CHECK_ST(mt_closure_open(d, "x", &c), MT_ERR_CORRUPT);
    CHECK_CONTAINS(mt_last_error(), "bad kind");
    CHECK(c == sentinel);
    free(p);
    mt_domain_free(d);
    scratch_free(dom);
}

/* Lengths no object can have, and values the library did not make, are
 * MT_ERR_INVALID (they used to be MT_ERR_PANIC, or reach write(2)). */
static void test_boundary_overflows(void) {
    char *dom = scratch_new("closure-overflow");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    static const uint8_t some[8] = "12345678";
    CHECK_ST(mt_closure_publish_bytes(d, "x", some, SIZE_MAX, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "not a possible size");
    CHECK(!exists(dom, "closures/x"));
    mt_closure_builder *b = NULL;
    REQUIRE_OK(mt_closure_builder_new(&b));
    CHECK_ST(mt_closure_builder_add_bytes(b, some, SIZE_MAX), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "not a possible size");
    CHECK_ST(mt_closure_builder_add_str(b, (const char *)some, SIZE_MAX), MT_ERR_INVALID);
    CHECK_ST(mt_closure_builder_key(b, (const char *)some, SIZE_MAX), MT_ERR_INVALID);
    mt_closure_builder_free(b);

    /* A tree, then mt_values pointing where no value starts. */
    REQUIRE_OK(mt_closure_builder_new(&b));
    CHECK_ST(mt_closure_builder_begin_map(b), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "name", 4), MT_OK);
    CHECK_ST(mt_closure_builder_add_str(b, "a rather long string value here", 31), MT_OK);
    CHECK_ST(mt_closure_builder_key(b, "n", 1), MT_OK);
    CHECK_ST(mt_closure_builder_add_int(b, 7), MT_OK);
    CHECK_ST(mt_closure_builder_end(b), MT_OK);
    CHECK_ST(mt_closure_publish(d, "tree", b, NULL), MT_OK);
    mt_closure_builder_free(b);
    mt_closure *c = NULL;
    REQUIRE_OK(mt_closure_open(d, "tree", &c));
    mt_value root;
    REQUIRE_OK(mt_closure_root(c, &root));
    size_t n = 0;
    CHECK_ST(mt_value_len(root, &n), MT_OK);
    CHECK(n == 2);
    int bad = 0;
    for (uint64_t off = 0; off < 512; off += 8) {
        mt_value v = root;
        v.node = off;
        v.kind = MT_VALUE_STR;
        size_t len = 12345;
        const char *sp = NULL;
        mt_status st = mt_value_str(v, &sp, &len);
        /* Either a real string of the closure, or refused: never a panic. */
        CHECK(st == MT_OK || st == MT_ERR_INVALID);
        if (st == MT_ERR_INVALID) {
            bad++;
            CHECK(len == 12345);
        } else {
            CHECK(len < 64);
        }
        st = mt_value_len(v, &len);
        CHECK(st == MT_OK || st == MT_ERR_INVALID);
        if (st == MT_OK) CHECK(len < 64);
    }
    CHECK(bad > 0);
    mt_value v = root;
    v.node = UINT64_MAX;
    CHECK_ST(mt_value_len(v, &n), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "no value at position");
    mt_closure_free(c);
    mt_domain_free(d);
    scratch_free(dom);
}

/* A child process opens v1 and keeps it while the parent publishes v2;
 * the child still reads v1's bytes; v1's file goes when the child exits. */
static void test_reader_in_another_process(void) {
    char *dom = scratch_new("closure-proc");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    CHECK_ST(mt_closure_publish_bytes(d, "shared", (const uint8_t *)"first", 5, NULL), MT_OK);
    int to_child[2], to_parent[2];
    REQUIRE(pipe(to_child) == 0 && pipe(to_parent) == 0);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        mt_domain *cd = NULL;
        mt_closure *c = NULL;
        const uint8_t *p;
        size_t n;
        if (mt_domain_open(dom, &cd) != MT_OK || mt_closure_open(cd, "shared", &c) != MT_OK) _exit(2);
        if (mt_closure_bytes(c, &p, &n) != MT_OK || n != 5 || memcmp(p, "first", 5) != 0) _exit(3);
        char x = 'o';
        if (write(to_parent[1], &x, 1) != 1) _exit(4);
        if (read(to_child[0], &x, 1) != 1) _exit(5); /* v2 is published now */
        if (mt_closure_bytes(c, &p, &n) != MT_OK || n != 5 || memcmp(p, "first", 5) != 0) _exit(6);
        mt_closure_free(c);
        mt_domain_free(cd);
        _exit(0);
    }
    close(to_child[0]);
    close(to_parent[1]);
    char x;
    CHECK(read(to_parent[0], &x, 1) == 1);
    CHECK_ST(mt_closure_publish_bytes(d, "shared", (const uint8_t *)"second", 6, NULL), MT_OK);
    CHECK(exists(dom, "closures/shared/v1")); /* the child holds it */
    mt_closure *c = NULL;
    const uint8_t *p;
    size_t n;
    CHECK_ST(mt_closure_open(d, "shared", &c), MT_OK);
    CHECK_ST(mt_closure_bytes(c, &p, &n), MT_OK);
    CHECK(n == 6 && memcmp(p, "second", 6) == 0);
    CHECK(write(to_child[1], "g", 1) == 1);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(!exists(dom, "closures/shared/v1")); /* the child was its last reader */
    close(to_child[1]);
    close(to_parent[0]);
    mt_closure_free(c);
    mt_domain_free(d);
    scratch_free(dom);
}

/* examples/c_closure.c (quoted in the README; built by test-c into
 * target/c/, run from the repository root) says what it should. */
static void test_example(void) {
    char *dom = scratch_new("closure-example");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "target/c/c_closure '%s'", dom);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    char line[256] = "";
    CHECK(fgets(line, sizeof line, p) != NULL);
    CHECK(pclose(p) == 0);
    CHECK(strcmp(line, "routing v1: queue billing, weight 3\n") == 0);
    CHECK(exists(dom, "closures/routing/v1"));
    scratch_free(dom);
}

int main(void) {
    RUN(test_bytes_round_trip);
    RUN(test_tree_round_trip);
    RUN(test_builder_misuse);
    RUN(test_refusals);
    RUN(test_boundary_overflows);
    RUN(test_reader_in_another_process);
    RUN(test_example);
    return mt_test_exit("test_closure");
}
