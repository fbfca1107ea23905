/* The notification semaphore through the C ABI: post, value, wait (with and
 * without blocking), timeouts, reset, the 2^31 - 1 limit, and a blocked
 * waiter woken by a post from another thread. */
#include "mt_test.h"

#include <pthread.h>

static char *g_dir;

/* A fresh domain for each test (its own directory under the scratch dir). */
static mt_domain *fresh(const char *name) {
    char *p = path_join(g_dir, name);
    mt_domain *d = NULL;
    mt_status st = mt_domain_open(p, &d);
    free(p);
    return st == MT_OK ? d : NULL;
}

static void post_value_wait(void) {
    mt_domain *d = fresh("pvw");
    REQUIRE(d != NULL);
    uint32_t v = 99;
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0);
    CHECK_ST(mt_sem_post(d, 3), MT_OK);
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 3);
    CHECK_ST(mt_sem_post(d, 0), MT_OK); /* posting nothing is allowed and changes nothing */
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 3);
    for (uint32_t i = 3; i > 0; i--) {
        CHECK_ST(mt_sem_wait(d, 0), MT_OK);
        CHECK_ST(mt_sem_value(d, &v), MT_OK);
        CHECK(v == i - 1);
    }
    /* Empty: a wait with timeout 0 does not block. */
    double t0 = now_ms();
    CHECK_ST(mt_sem_wait(d, 0), MT_ERR_TIMEOUT);
    CHECK(now_ms() - t0 < 1000);
    CHECK(mt_last_error()[0] != '\0');
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0);
    /* A unit available: a wait with a long timeout returns at once. */
    CHECK_ST(mt_sem_post(d, 1), MT_OK);
    t0 = now_ms();
    CHECK_ST(mt_sem_wait(d, 60000), MT_OK);
    CHECK(now_ms() - t0 < 1000);
    CHECK_ST(mt_sem_wait(d, 0), MT_ERR_TIMEOUT);
    CHECK(MT_WAIT_FOREVER == UINT32_MAX);
    mt_domain_free(d);
}

static void timeout_waits_about_as_long_as_asked(void) {
    mt_domain *d = fresh("timeout");
    REQUIRE(d != NULL);
    const uint32_t ms[] = {1, 20, 120};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        double t0 = now_ms();
        CHECK_ST(mt_sem_wait(d, ms[i]), MT_ERR_TIMEOUT);
        double took = now_ms() - t0;
        /* Never early (0.5 ms of slack for clock granularity); not absurdly late. */
        CHECK(took >= (double)ms[i] - 0.5);
        CHECK(took < (double)ms[i] + 2000);
    }
    uint32_t v = 99;
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0); /* a timed-out wait takes nothing */
    mt_domain_free(d);
}

static void reset_returns_previous_count(void) {
    mt_domain *d = fresh("reset");
    REQUIRE(d != NULL);
    uint32_t prev = 99, v = 99;
    CHECK_ST(mt_sem_reset(d, &prev), MT_OK);
    CHECK(prev == 0);
    CHECK_ST(mt_sem_post(d, 5), MT_OK);
    CHECK_ST(mt_sem_reset(d, &prev), MT_OK);
    CHECK(prev == 5);
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0);
    CHECK_ST(mt_sem_wait(d, 0), MT_ERR_TIMEOUT);
    /* previous may be NULL. */
    CHECK_ST(mt_sem_post(d, 2), MT_OK);
    CHECK_ST(mt_sem_reset(d, NULL), MT_OK);
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0);
    /* Posts after a reset are kept. */
    CHECK_ST(mt_sem_post(d, 1), MT_OK);
    CHECK_ST(mt_sem_wait(d, 0), MT_OK);
    mt_domain_free(d);
}

static void post_beyond_limit_is_invalid(void) {
    mt_domain *d = fresh("limit");
    REQUIRE(d != NULL);
    const uint32_t max = 0x7fffffffu;
    uint32_t v = 0;
    CHECK_ST(mt_sem_post(d, max), MT_OK);
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == max);
    CHECK_ST(mt_sem_post(d, 1), MT_ERR_INVALID);
    CHECK(mt_last_error()[0] != '\0');
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == max); /* unchanged by the refused post */
    CHECK_ST(mt_sem_reset(d, NULL), MT_OK);
    CHECK_ST(mt_sem_post(d, UINT32_MAX), MT_ERR_INVALID);
    CHECK_ST(mt_sem_post(d, 0x80000000u), MT_ERR_INVALID);
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0);
    mt_domain_free(d);
}

struct waiter {
    mt_domain *d;
    uint32_t timeout;
    mt_status result;
};

static void *wait_thread(void *arg) {
    struct waiter *w = arg;
    w->result = mt_sem_wait(w->d, w->timeout);
    return NULL;
}

static void blocked_waiter_is_woken_by_post(void) {
    mt_domain *d = fresh("wake");
    REQUIRE(d != NULL);
    /* The waiter uses its own handle on the same domain. */
    mt_domain *d2 = fresh("wake");
    REQUIRE(d2 != NULL);
    struct waiter w = {d2, MT_WAIT_FOREVER, MT_ERR_PANIC};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, wait_thread, &w) == 0);
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    CHECK_ST(mt_sem_post(d, 1), MT_OK);
    pthread_join(t, NULL);
    CHECK_ST(w.result, MT_OK);
    uint32_t v = 99;
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0);
    mt_domain_free(d2);
    mt_domain_free(d);
}

static void many_threads_share_one_handle(void) {
    /* The handle is documented as usable from several threads at once. */
    mt_domain *d = fresh("shared");
    REQUIRE(d != NULL);
    enum { N = 8 };
    struct waiter w[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct waiter){d, 10000, MT_ERR_PANIC};
        REQUIRE(pthread_create(&t[i], NULL, wait_thread, &w[i]) == 0);
    }
    for (int i = 0; i < N; i++) CHECK_ST(mt_sem_post(d, 1), MT_OK);
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        CHECK_ST(w[i].result, MT_OK);
    }
    uint32_t v = 99;
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0);
    mt_domain_free(d);
}

int main(void) {
    g_dir = scratch_new("sem");
    RUN(post_value_wait);
    RUN(timeout_waits_about_as_long_as_asked);
    RUN(reset_returns_previous_count);
    RUN(post_beyond_limit_is_invalid);
    RUN(blocked_waiter_is_woken_by_post);
    RUN(many_threads_share_one_handle);
    scratch_free(g_dir);
    return mt_test_exit("test_sem");
}
