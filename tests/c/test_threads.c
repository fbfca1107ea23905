/* mt_last_error is per thread: a thread sees only its own failures, and one
 * thread's failures never overwrite another's message. */
#include "mt_test.h"

#include <pthread.h>

struct seen {
    char before[256]; /* the thread's mt_last_error before it failed anything */
    char after[256];  /* after its own failure */
    mt_status status; /* of that failure */
};

static void *fail_on_own_thread(void *arg) {
    struct seen *s = arg;
    snprintf(s->before, sizeof s->before, "%s", mt_last_error());
    /* A different failure from the main thread's: a NULL out-parameter. */
    s->status = mt_domain_open("/nonexistent-mtipc-test", NULL);
    snprintf(s->after, sizeof s->after, "%s", mt_last_error());
    return NULL;
}

static void second_thread_does_not_see_first_threads_error(void) {
    mt_domain *d = NULL;
    CHECK_ST(mt_domain_open("", &d), MT_ERR_INVALID);
    char mine[256];
    snprintf(mine, sizeof mine, "%s", mt_last_error());
    CHECK_CONTAINS(mine, "empty");

    struct seen s;
    memset(&s, 0, sizeof s);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, fail_on_own_thread, &s) == 0);
    REQUIRE(pthread_join(t, NULL) == 0);

    /* The new thread started with an empty message, not ours. */
    CHECK(s.before[0] == '\0');
    CHECK_ST(s.status, MT_ERR_INVALID);
    CHECK_CONTAINS(s.after, "out");
    CHECK(strcmp(s.after, mine) != 0);
    /* Its failure did not replace our message. */
    CHECK(strcmp(mt_last_error(), mine) == 0);
}

struct hammer {
    int id;
    int mismatches;
};

/* Each thread fails repeatedly with a message that names its own path and
 * checks it reads back its own message every time. */
static void *hammer_thread(void *arg) {
    struct hammer *h = arg;
    char path[64], needle[64];
    snprintf(path, sizeof path, "/nonexistent-mtipc-%d/x/dom", h->id);
    snprintf(needle, sizeof needle, "nonexistent-mtipc-%d/", h->id);
    for (int i = 0; i < 200; i++) {
        mt_domain *d = NULL;
        mt_status st = mt_domain_open(path, &d);
        if (st != MT_ERR_NOT_FOUND || d != NULL || strstr(mt_last_error(), needle) == NULL)
            h->mismatches++;
        if (d != NULL) mt_domain_free(d);
    }
    return NULL;
}

static void concurrent_failures_keep_their_own_messages(void) {
    enum { N = 8 };
    pthread_t t[N];
    struct hammer h[N];
    for (int i = 0; i < N; i++) {
        h[i] = (struct hammer){i, 0};
        REQUIRE(pthread_create(&t[i], NULL, hammer_thread, &h[i]) == 0);
    }
    for (int i = 0; i < N; i++) {
        REQUIRE(pthread_join(t[i], NULL) == 0);
        CHECK(h[i].mismatches == 0);
    }
}

int main(void) {
    RUN(second_thread_does_not_see_first_threads_error);
    RUN(concurrent_failures_keep_their_own_messages);
    return mt_test_exit("test_threads");
}
