/* Real processes on one domain: four children block in mt_sem_wait with a
 * timeout, the parent posts 2, and exactly two wake while two time out.
 * A child killed while it waits takes nothing with it. */
#include "mt_test.h"

#include <signal.h>
#include <sys/wait.h>

enum { CHILD_WOKEN = 0, CHILD_TIMED_OUT = 3, CHILD_ERROR = 1 };

/* Child: opens its own handle on the domain and waits once. */
static void child_wait(const char *dom, uint32_t timeout_ms) {
    mt_domain *d = NULL;
    mt_status st = mt_domain_open(dom, &d);
    if (st == MT_OK) st = mt_sem_wait(d, timeout_ms);
    if (st != MT_OK && st != MT_ERR_TIMEOUT)
        fprintf(stderr, "child %d: %s: %s\n", (int)getpid(), mt_status_str(st), mt_last_error());
    mt_domain_free(d);
    exit(st == MT_OK ? CHILD_WOKEN : st == MT_ERR_TIMEOUT ? CHILD_TIMED_OUT : CHILD_ERROR);
}

/* Whether the kernel shows `pid` asleep in a futex wait. (A running process,
 * or a kernel that hides wait channels, shows "0".) */
static int in_futex_wait(pid_t pid) {
    char path[64], wchan[128] = {0};
    snprintf(path, sizeof path, "/proc/%d/wchan", (int)pid);
    return read_file(path, wchan, sizeof wchan - 1) > 0 && strstr(wchan, "futex") != NULL;
}

/* Waits until every pid is blocked in a futex wait, for at most 1 s (less
 * than the children's timeout). Posting earlier is still correct, as posts
 * are kept for later waiters; this only makes the test exercise wake-ups of
 * blocked processes wherever /proc shows it. */
static void wait_until_blocked(const pid_t *pids, int n) {
    for (int round = 0; round < 100; round++) {
        int all = 1;
        for (int i = 0; i < n; i++)
            if (!in_futex_wait(pids[i])) all = 0;
        if (all) return;
        struct timespec ten_ms = {0, 10 * 1000 * 1000};
        nanosleep(&ten_ms, NULL);
    }
    printf("    note: could not see all waiters blocked in a futex wait; posting anyway\n");
}

static void post_two_wakes_exactly_two_of_four(void) {
    char *dir = scratch_new("mp");
    char *dom = path_join(dir, "dom");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));

    enum { N = 4 };
    const uint32_t timeout_ms = 1500;
    pid_t pids[N];
    fflush(NULL);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) child_wait(dom, timeout_ms);
    }
    wait_until_blocked(pids, N);
    double t0 = now_ms();
    CHECK_ST(mt_sem_post(d, 2), MT_OK);

    int woken = 0, timed_out = 0, other = 0;
    for (int i = 0; i < N; i++) {
        int status = 0;
        REQUIRE(waitpid(pids[i], &status, 0) == pids[i]);
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (code == CHILD_WOKEN) woken++;
        else if (code == CHILD_TIMED_OUT) timed_out++;
        else other++;
    }
    printf("    %d woken, %d timed out, %d other, after %.0f ms\n", woken, timed_out, other,
           now_ms() - t0);
    CHECK(woken == 2);
    CHECK(timed_out == 2);
    CHECK(other == 0);
    uint32_t v = 99;
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 0);

    mt_domain_free(d);
    free(dom);
    scratch_free(dir);
}

static void killed_waiter_takes_nothing(void) {
    char *dir = scratch_new("mpkill");
    char *dom = path_join(dir, "dom");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));

    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) child_wait(dom, MT_WAIT_FOREVER);
    wait_until_blocked(&pid, 1);
    CHECK(kill(pid, SIGKILL) == 0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* The post is still there for the next waiter. */
    CHECK_ST(mt_sem_post(d, 1), MT_OK);
    uint32_t v = 99;
    CHECK_ST(mt_sem_value(d, &v), MT_OK);
    CHECK(v == 1);
    CHECK_ST(mt_sem_wait(d, 0), MT_OK);

    mt_domain_free(d);
    free(dom);
    scratch_free(dir);
}

int main(void) {
    RUN(post_two_wakes_exactly_two_of_four);
    RUN(killed_waiter_takes_nothing);
    return mt_test_exit("test_multiprocess");
}
