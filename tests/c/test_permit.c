/* Permits from C (mt_volume_create, mt_permit_*, mt_transfer_*): grants,
 * MT_ERR_DEFERRED and MT_ERR_TIMEOUT, tokens that only grow, a put and a
 * get that copy whole files, MT_ERR_FENCED after the lease (nothing
 * changed on the volume), bad arguments, and a holder process killed with
 * SIGKILL whose permit the next request gets at once. */
#include "mt_test.h"

#include <signal.h>
#include <sys/wait.h>

static char *make_volume(mt_domain **d, const char *tag, uint32_t lease_ms, char **dom_out) {
    char *root = scratch_new(tag);
    char *dom = path_join(root, "domain");
    char *vol = path_join(root, "vol");
    mkdir(vol, 0755);
    mt_status st = mt_domain_open(dom, d);
    if (st == MT_OK) {
        mt_volume_opts o = MT_VOLUME_OPTS_INIT;
        o.lease_ms = lease_ms;
        st = mt_volume_create(*d, "gw", vol, &o);
    }
    CHECK(st == MT_OK);
    free(vol);
    *dom_out = dom;
    return root;
}

static void grants_defers_and_tokens(void) {
    mt_domain *d = NULL;
    char *dom = NULL;
    char *root = make_volume(&d, "grants", 0, &dom);
    REQUIRE(d != NULL);
    mt_permit *w = NULL, *r = NULL, *other = NULL;
    REQUIRE_OK(mt_permit_request(d, "gw", "calls/a.wav", MT_PERMIT_WRITE, 0, &w));
    CHECK(mt_permit_token(w) == 1);
    CHECK_ST(mt_permit_request(d, "gw", "calls/a.wav", MT_PERMIT_READ, 0, &r), MT_ERR_DEFERRED);
    CHECK(r == NULL);
    double t0 = now_ms();
    CHECK_ST(mt_permit_request(d, "gw", "calls/a.wav", MT_PERMIT_READ, 50, &r), MT_ERR_TIMEOUT);
    CHECK(now_ms() - t0 >= 49.0);
    REQUIRE_OK(mt_permit_request(d, "gw", "calls/b.wav", MT_PERMIT_WRITE, 0, &other));
    CHECK(mt_permit_token(other) > mt_permit_token(w));
    mt_permit_free(w);
    REQUIRE_OK(mt_permit_request(d, "gw", "calls/a.wav", MT_PERMIT_READ, 0, &r));
    CHECK(mt_permit_token(r) > mt_permit_token(other));
    CHECK_ST(mt_permit_renew(r), MT_OK);
    mt_permit_free(r);
    mt_permit_free(other);
    mt_permit_free(NULL);
    CHECK(mt_permit_token(NULL) == 0);
    mt_domain_free(d);
    free(dom);
    scratch_free(root);
}

static void transfers_and_fencing(void) {
    mt_domain *d = NULL;
    char *dom = NULL;
    char *root = make_volume(&d, "xfer", 100, &dom);
    REQUIRE(d != NULL);
    char *src = path_join(root, "src.bin");
    char *back = path_join(root, "back.bin");
    char *dst = path_join(root, "vol/in/rec.bin");
    static char data[200000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (char)(i * 31 + i / 7);
    REQUIRE(write_private(src, data, sizeof data) == 0);
    mt_permit *p = NULL;
    REQUIRE_OK(mt_permit_request(d, "gw", "in/rec.bin", MT_PERMIT_WRITE, 0, &p));
    CHECK_ST(mt_transfer_put(p, src), MT_OK);
    static char got[sizeof data + 1];
    CHECK(read_file(dst, got, sizeof got) == (ssize_t)sizeof data);
    CHECK(memcmp(got, data, sizeof data) == 0);
    CHECK_ST(mt_transfer_get(p, back), MT_OK);
    CHECK(read_file(back, got, sizeof got) == (ssize_t)sizeof data);
    struct timespec ts = {0, 200 * 1000 * 1000}; /* the 100 ms lease runs out */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    REQUIRE(write_private(src, "late", 4) == 0);
    CHECK_ST(mt_transfer_put(p, src), MT_ERR_FENCED);
    CHECK_ST(mt_permit_renew(p), MT_ERR_FENCED);
    CHECK(read_file(dst, got, sizeof got) == (ssize_t)sizeof data);
    mt_permit_free(p);
    /* A read permit cannot put. */
    mt_permit *r = NULL;
    REQUIRE_OK(mt_permit_request(d, "gw", "in/rec.bin", MT_PERMIT_READ, 0, &r));
    CHECK_ST(mt_transfer_put(r, src), MT_ERR_INVALID);
    mt_permit_free(r);
    free(src);
    free(back);
    free(dst);
    mt_domain_free(d);
    free(dom);
    scratch_free(root);
}

static void bad_arguments(void) {
    mt_domain *d = NULL;
    char *dom = NULL;
    char *root = make_volume(&d, "bad", 0, &dom);
    REQUIRE(d != NULL);
    mt_permit *p = NULL;
    CHECK_ST(mt_permit_request(d, "gw", "/etc/passwd", MT_PERMIT_READ, 0, &p), MT_ERR_INVALID);
    CHECK_ST(mt_permit_request(d, "gw", "../x", MT_PERMIT_READ, 0, &p), MT_ERR_INVALID);
    CHECK_ST(mt_permit_request(d, "gw", "", MT_PERMIT_READ, 0, &p), MT_ERR_INVALID);
    CHECK_ST(mt_permit_request(d, "gw", NULL, MT_PERMIT_READ, 0, &p), MT_ERR_INVALID);
    CHECK_ST(mt_permit_request(d, "gw", "x", 3, 0, &p), MT_ERR_INVALID);
    CHECK_ST(mt_permit_request(d, "gw", "x", MT_PERMIT_READ, 0, NULL), MT_ERR_INVALID);
    CHECK_ST(mt_permit_request(d, "nope", "x", MT_PERMIT_READ, 0, &p), MT_ERR_NOT_FOUND);
    CHECK_ST(mt_permit_request(NULL, "gw", "x", MT_PERMIT_READ, 0, &p), MT_ERR_INVALID);
    CHECK(p == NULL);
    char *vol = path_join(root, "vol");
    CHECK_ST(mt_volume_create(d, "gw", vol, NULL), MT_ERR_EXISTS);
    CHECK_ST(mt_volume_create(d, "v2", "relative/dir", NULL), MT_ERR_INVALID);
    CHECK_ST(mt_volume_create(d, "v2", "/tmp", NULL), MT_ERR_DENIED); /* mode 1777 */
    CHECK_ST(mt_volume_create(d, "bad name", vol, NULL), MT_ERR_INVALID);
    mt_volume_opts o = MT_VOLUME_OPTS_INIT;
    o.size = 4;
    CHECK_ST(mt_volume_create(d, "v3", vol, &o), MT_ERR_INVALID);
    o = (mt_volume_opts)MT_VOLUME_OPTS_INIT;
    o.lease_ms = 5;
    CHECK_ST(mt_volume_create(d, "v3", vol, &o), MT_ERR_INVALID);
    o.lease_ms = 0;
    o.etcd = "ftp://x";
    CHECK_ST(mt_volume_create(d, "v3", vol, &o), MT_ERR_INVALID);
    free(vol);
    CHECK_ST(mt_transfer_put(NULL, "/tmp/x"), MT_ERR_INVALID);
    CHECK_ST(mt_permit_renew(NULL), MT_ERR_INVALID);
    mt_domain_free(d);
    free(dom);
    scratch_free(root);
}

static void killed_holder_is_reclaimed(void) {
    mt_domain *d = NULL;
    char *dom = NULL;
    char *root = make_volume(&d, "kill", 0, &dom);
    REQUIRE(d != NULL);
    int pipefd[2];
    REQUIRE(pipe(pipefd) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        mt_domain *cd = NULL;
        mt_permit *p = NULL;
        char ok = 'n';
        if (mt_domain_open(dom, &cd) == MT_OK &&
            mt_permit_request(cd, "gw", "x", MT_PERMIT_WRITE, 1000, &p) == MT_OK)
            ok = 'y';
        if (write(pipefd[1], &ok, 1) != 1) _exit(2);
        pause();
        _exit(0);
    }
    close(pipefd[1]);
    char ok = 0;
    CHECK(read(pipefd[0], &ok, 1) == 1 && ok == 'y');
    close(pipefd[0]);
    mt_permit *p = NULL;
    CHECK_ST(mt_permit_request(d, "gw", "x", MT_PERMIT_WRITE, 0, &p), MT_ERR_DEFERRED);
    kill(pid, SIGKILL);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    /* Reclaimed by this very request: no wait needed. */
    REQUIRE_OK(mt_permit_request(d, "gw", "x", MT_PERMIT_WRITE, 0, &p));
    CHECK(mt_permit_token(p) == 2);
    mt_permit_free(p);
    mt_domain_free(d);
    free(dom);
    scratch_free(root);
}

int main(void) {
    RUN(grants_defers_and_tokens);
    RUN(transfers_and_fencing);
    RUN(bad_arguments);
    RUN(killed_holder_is_reclaimed);
    return mt_test_exit("test_permit");
}
