/* Real processes on one domain: four children block in mt_sem_wait with a
 * timeout (the test fails unless /proc shows all four asleep in the futex
 * call), the parent posts 2, and exactly two wake while two time out.
 * A child killed while it waits takes nothing with it. */
#include "mt_test.h"

#include <signal.h>
#include <sys/syscall.h>
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

/* Whether the kernel shows `pid` asleep in the futex system call: state S,
 * and a wait channel naming futex or, where the kernel hides wait channels
 * ("0"), futex(2) as the system call it is blocked in. */
static int in_futex_wait(pid_t pid) {
    char path[64], buf[512] = {0};
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_file(path, buf, sizeof buf - 1) <= 0) return 0;
    const char *paren = strrchr(buf, ')');
    if (paren == NULL || strncmp(paren, ") S", 3) != 0) return 0;
    char wchan[128] = {0};
    snprintf(path, sizeof path, "/proc/%d/wchan", (int)pid);
    if (read_file(path, wchan, sizeof wchan - 1) > 0 && strstr(wchan, "futex") != NULL) return 1;
    char call[64] = {0};
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    return read_file(path, call, sizeof call - 1) > 0 && atol(call) == SYS_futex;
}

/* Waits until every pid is blocked in a futex wait, seen twice in a row
 * 10 ms apart, for at most BLOCK_WITHIN_MS (less than the children's
 * timeout). Returns 0, after saying which one, if some never blocked: the
 * test then fails rather than post to processes that are not asleep (a
 * post kept for a later waiter would pass without any wake-up). */
enum { BLOCK_WITHIN_MS = 2000 };
static int wait_until_blocked(const pid_t *pids, int n) {
    int seen = 0;
    for (int round = 0; round < BLOCK_WITHIN_MS / 10; round++) {
        int all = 1;
        for (int i = 0; i < n; i++)
            if (!in_futex_wait(pids[i])) all = 0;
        seen = all ? seen + 1 : 0;
        if (seen == 2) return 1;
        struct timespec ten_ms = {0, 10 * 1000 * 1000};
        nanosleep(&ten_ms, NULL);
    }
    for (int i = 0; i < n; i++)
        if (!in_futex_wait(pids[i]))
            fprintf(stderr, "    child %d never blocked in a futex wait within %d ms\n", (int)pids[i],
                    BLOCK_WITHIN_MS);
    return 0;
}

/* Kills and reaps the children (after a failed REQUIRE-like check). */
static void kill_children(const pid_t *pids, int n) {
    for (int i = 0; i < n; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
    }
}

static void post_two_wakes_exactly_two_of_four(void) {
    char *dir = scratch_new("mp");
    char *dom = path_join(dir, "dom");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));

    enum { N = 4 };
    const uint32_t timeout_ms = BLOCK_WITHIN_MS + 1000;
    pid_t pids[N];
    fflush(NULL);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) child_wait(dom, timeout_ms);
    }
    if (!wait_until_blocked(pids, N)) {
        CHECK(!"every child blocked in mt_sem_wait before the post");
        kill_children(pids, N);
        mt_domain_free(d);
        free(dom);
        scratch_free(dir);
        return;
    }
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
    CHECK(wait_until_blocked(&pid, 1));
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
