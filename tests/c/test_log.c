/* The log callback (mt_log_set): the library's events reach the C program
 * with their level, target and message, filtered by level; NULL removes the
 * callback; a bad level is refused; and with no callback the library writes
 * nothing to stdout or stderr, even when it has warnings to give (a domain
 * with junk in its advertisement directory, listed in a child process whose
 * output is captured). */
#include "mt_test.h"

#include <pthread.h>
#include <sys/wait.h>

struct event {
    mt_log_level level;
    char target[128];
    char message[512];
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct event g_events[64];
static int g_count;
static int g_user_seen;

static void on_log(void *user, mt_log_level level, const char *target, const char *message) {
    pthread_mutex_lock(&g_lock);
    if (user == &g_user_seen) g_user_seen++;
    if (g_count < (int)(sizeof g_events / sizeof g_events[0])) {
        struct event *e = &g_events[g_count++];
        e->level = level;
        snprintf(e->target, sizeof e->target, "%s", target);
        snprintf(e->message, sizeof e->message, "%s", message);
    }
    pthread_mutex_unlock(&g_lock);
}

static void reset_events(void) {
    pthread_mutex_lock(&g_lock);
    g_count = 0;
    g_user_seen = 0;
    pthread_mutex_unlock(&g_lock);
}

/* The index of the first event whose message contains `needle`, or -1. */
static int find_event(const char *needle) {
    int found = -1;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_count && found < 0; i++)
        if (strstr(g_events[i].message, needle) != NULL) found = i;
    pthread_mutex_unlock(&g_lock);
    return found;
}

/* Publishing a closure emits a debug event "published closure". */
static void publish(mt_domain *d) { CHECK_ST(mt_closure_publish_bytes(d, "cfg", (const uint8_t *)"x", 1, NULL), MT_OK); }

static void test_events_levels_and_removal(void) {
    char *dom = scratch_new("log-events");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));

    reset_events();
    CHECK_ST(mt_log_set(on_log, &g_user_seen, MT_LOG_DEBUG), MT_OK);
    publish(d);
    int i = find_event("published closure");
    CHECK(i >= 0);
    if (i >= 0) {
        CHECK(g_events[i].level == MT_LOG_DEBUG);
        CHECK(strcmp(g_events[i].target, "mtipc::closure::store") == 0);
        CHECK_CONTAINS(g_events[i].message, "closure=cfg");
        CHECK_CONTAINS(g_events[i].message, "version=1");
    }
    CHECK(g_user_seen > 0); /* the user pointer comes back as given */

    /* Above the level: not delivered. */
    reset_events();
    CHECK_ST(mt_log_set(on_log, &g_user_seen, MT_LOG_INFO), MT_OK);
    publish(d);
    CHECK(find_event("published closure") < 0);

    /* Back to debug, then removed with NULL. */
    CHECK_ST(mt_log_set(on_log, &g_user_seen, MT_LOG_TRACE), MT_OK);
    publish(d);
    CHECK(find_event("published closure") >= 0);
    reset_events();
    CHECK_ST(mt_log_set(NULL, NULL, MT_LOG_TRACE), MT_OK);
    publish(d);
    CHECK(g_count == 0);

    mt_domain_free(d);
    scratch_free(dom);
}

static void test_bad_level(void) {
    reset_events();
    CHECK_ST(mt_log_set(on_log, NULL, 0), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "max_level 0");
    CHECK_ST(mt_log_set(on_log, NULL, 6), MT_ERR_INVALID);
    CHECK_ST(mt_log_set(on_log, NULL, 0xffffffffu), MT_ERR_INVALID);
    /* Nothing was installed by the refused calls. */
    char *dom = scratch_new("log-bad-level");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    publish(d);
    CHECK(g_count == 0);
    mt_domain_free(d);
    scratch_free(dom);
}

/* Warnings the library has to give (junk entries in adverts/ while
 * listing) reach the callback; without one, the process's stdout and
 * stderr stay empty. */
static void test_silent_without_a_callback(void) {
    char *dom = scratch_new("log-silent");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    char *adverts = path_join(dom, "adverts");
    CHECK(mkdir(adverts, 0700) == 0 || errno == EEXIST);
    free(adverts);
    char *junk = path_join(dom, "adverts/junk-file");
    CHECK(write_private(junk, "junk", 4) == 0);
    free(junk);

    reset_events();
    CHECK_ST(mt_log_set(on_log, NULL, MT_LOG_WARN), MT_OK);
    mt_tenant_list *l = NULL;
    CHECK_ST(mt_tenant_list_new(d, &l), MT_OK);
    mt_tenant_list_free(l);
    CHECK(find_event("junk-file") >= 0);
    int i = find_event("junk-file");
    if (i >= 0) CHECK(g_events[i].level == MT_LOG_WARN);
    CHECK_ST(mt_log_set(NULL, NULL, MT_LOG_WARN), MT_OK);

    int out[2];
    REQUIRE(pipe(out) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(out[1], 2);
        close(out[0]);
        mt_tenant_list *cl = NULL;
        mt_status st = mt_tenant_list_new(d, &cl);
        mt_tenant_list_free(cl);
        _exit(st == MT_OK ? 0 : 1);
    }
    close(out[1]);
    char buf[4096];
    size_t total = 0;
    ssize_t n;
    while ((n = read(out[0], buf + total, sizeof buf - 1 - total)) > 0) total += (size_t)n;
    buf[total] = '\0';
    close(out[0]);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (total != 0) fprintf(stderr, "the child printed: %s\n", buf);
    CHECK(total == 0);

    mt_domain_free(d);
    scratch_free(dom);
}

int main(void) {
    RUN(test_events_levels_and_removal);
    RUN(test_bad_level);
    RUN(test_silent_without_a_callback);
    return mt_test_exit("test_log");
}
