/* The HA hooks from C (mt_ha_*): outside supervision every hook is MT_OK
 * and does nothing; NULL out-parameters are refused. Under supervision the
 * test forks a minimal fake Monitor written here with plain sockets (the
 * protocol of docs/ha.md: one SOCK_SEQPACKET packet per message), which
 * checks the hello against the peer's credentials, answers with the role,
 * reads "polls on" (a health callback is registered) and ready, polls health (answered by the C callback), changes the role
 * (delivered to the C callback), reads a heartbeat, polls health again
 * (now unhealthy), and exits: the hooks then return MT_ERR_UNAVAILABLE and
 * the role learned stays. Then the connection the HA Spawner makes for a
 * process before its exec (MTIPC_HA_FD): taken by the first mt_ha_ready
 * of that process, never by a child it forked before. */
#define _GNU_SOURCE
#include "mt_test.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_calls;
static mt_ha_role g_role = 99;
static uint64_t g_epoch = 99;
static void *g_user;
static int g_sick;

static void on_role(void *user, mt_ha_role role, uint64_t epoch) {
    pthread_mutex_lock(&g_lock);
    g_calls++;
    g_role = role;
    g_epoch = epoch;
    g_user = user;
    pthread_mutex_unlock(&g_lock);
}

/* A role callback that tries to register one from inside: refused. */
static mt_status g_nested = MT_OK;
static void on_role_nested(void *user, mt_ha_role role, uint64_t epoch) {
    g_nested = mt_ha_on_role(on_role, user);
    on_role(user, role, epoch);
}

static int health(void *user) {
    (void)user;
    pthread_mutex_lock(&g_lock);
    int sick = g_sick;
    pthread_mutex_unlock(&g_lock);
    return sick;
}

static void test_outside_supervision(void) {
    unsetenv("MTIPC_HA_SOCKET");
    CHECK(mt_ha_supervised() == 0);
    CHECK_ST(mt_ha_ready(), MT_OK);
    CHECK_ST(mt_ha_heartbeat(), MT_OK);
    CHECK_ST(mt_ha_set_health(health, NULL), MT_OK);
    CHECK_ST(mt_ha_on_role(on_role, &g_calls), MT_OK);
    CHECK_ST(mt_ha_set_health(NULL, NULL), MT_OK);
    mt_ha_role role = MT_HA_STANDBY;
    uint64_t epoch = 7;
    CHECK_ST(mt_ha_role_get(&role, &epoch), MT_OK);
    CHECK(role == MT_HA_NONE);
    CHECK(epoch == 0);
    CHECK(g_calls == 0); /* nothing is delivered outside supervision */
    CHECK_ST(mt_ha_role_get(NULL, &epoch), MT_ERR_INVALID);
    CHECK_ST(mt_ha_role_get(&role, NULL), MT_ERR_INVALID);
    setenv("MTIPC_HA_SOCKET", "", 1); /* empty: not supervised either */
    CHECK(mt_ha_supervised() == 0);
    CHECK_ST(mt_ha_ready(), MT_OK);
    unsetenv("MTIPC_HA_SOCKET");
}

/* --- the fake Monitor (in the child) ------------------------------------ */

/* Receives one packet into buf (NUL-terminated); exits 20 + step on error. */
static void expect(int fd, const char *want, int step) {
    char buf[128];
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) _exit(20 + step);
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) _exit(40 + step);
    buf[n] = 0;
    if (strcmp(buf, want) != 0) {
        fprintf(stderr, "fake monitor, step %d: got \"%s\", want \"%s\"\n", step, buf, want);
        _exit(60 + step);
    }
}

static void say(int fd, const char *msg) {
    if (send(fd, msg, strlen(msg), MSG_NOSIGNAL) != (ssize_t)strlen(msg)) _exit(90);
}

static void fake_monitor(const char *path, pid_t app) {
    int l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 4) != 0) _exit(10);
    int c = accept(l, NULL, NULL);
    if (c < 0) _exit(11);
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != app) _exit(12);
    /* hello 1 <pid> <start>: check the pid part. */
    char buf[128];
    struct pollfd p = {c, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) _exit(13);
    ssize_t n = recv(c, buf, sizeof buf - 1, 0);
    if (n <= 0) _exit(14);
    buf[n] = 0;
    char want[64];
    snprintf(want, sizeof want, "hello 1 %d ", (int)app);
    if (strncmp(buf, want, strlen(want)) != 0) _exit(15);
    say(c, "role active 1");
    expect(c, "polls on", 5); /* mt_ha_set_health made the connection */
    expect(c, "ready", 1);
    say(c, "health? 1");
    expect(c, "health 1 ok", 2);
    say(c, "role standby 2");
    expect(c, "heartbeat", 3); /* the app saw the new role, then turned sick */
    say(c, "health? 2");
    expect(c, "health 2 fail", 4);
    close(c);
    close(l);
    _exit(0);
}

/* ------------------------------------------------------------------------ */

static int wait_calls(int n) {
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&g_lock);
        int c = g_calls;
        pthread_mutex_unlock(&g_lock);
        if (c >= n) return c;
        usleep(1000);
    }
    return -1;
}

static void test_under_a_fake_monitor(void) {
    char *dir = scratch_new("ha");
    REQUIRE(dir != NULL);
    char *path = path_join(dir, "ha.sock");
    pid_t app = getpid();
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) fake_monitor(path, app);
    struct stat st;
    for (int i = 0; i < 5000 && stat(path, &st) != 0; i++) usleep(1000);
    setenv("MTIPC_HA_SOCKET", path, 1);
    CHECK(mt_ha_supervised() == 1);

    g_calls = 0;
    CHECK_ST(mt_ha_set_health(health, NULL), MT_OK); /* connects */
    CHECK_ST(mt_ha_on_role(on_role, &g_calls), MT_OK);
    /* Delivered at once, before mt_ha_on_role returned. */
    CHECK(g_calls == 1);
    CHECK(g_role == MT_HA_ACTIVE);
    CHECK(g_epoch == 1);
    CHECK(g_user == &g_calls);
    /* Registered again (from inside a callback: refused): delivered again. */
    CHECK_ST(mt_ha_on_role(on_role_nested, &g_calls), MT_OK);
    CHECK(g_calls == 2);
    CHECK_ST(g_nested, MT_ERR_INVALID);
    CHECK_ST(mt_ha_on_role(on_role, &g_calls), MT_OK);
    CHECK(g_calls == 3);
    CHECK_ST(mt_ha_ready(), MT_OK);
    /* The Monitor polls health (ok), then says standby 2. */
    CHECK(wait_calls(4) == 4);
    pthread_mutex_lock(&g_lock);
    CHECK(g_role == MT_HA_STANDBY);
    CHECK(g_epoch == 2);
    g_sick = 1;
    pthread_mutex_unlock(&g_lock);
    mt_ha_role role = MT_HA_NONE;
    uint64_t epoch = 0;
    CHECK_ST(mt_ha_role_get(&role, &epoch), MT_OK);
    CHECK(role == MT_HA_STANDBY && epoch == 2);
    CHECK_ST(mt_ha_heartbeat(), MT_OK);

    int status = -1;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "fake monitor exit status %d\n", WEXITSTATUS(status));

    /* The Monitor is gone: heartbeats fail (at once, or once the library
     * has seen the connection end), the role stays. */
    mt_status hb = MT_OK;
    for (int i = 0; i < 2000 && hb == MT_OK; i++) {
        hb = mt_ha_heartbeat();
        if (hb == MT_OK) usleep(1000);
    }
    CHECK_ST(hb, MT_ERR_UNAVAILABLE);
    CHECK_CONTAINS(mt_last_error(), "is not connected");
    CHECK_ST(mt_ha_ready(), MT_ERR_UNAVAILABLE);
    CHECK_ST(mt_ha_role_get(&role, &epoch), MT_OK);
    CHECK(role == MT_HA_STANDBY && epoch == 2);
    CHECK(g_calls == 4);
    CHECK_ST(mt_ha_on_role(NULL, NULL), MT_OK); /* a role is known: delivered (to nothing) */
    CHECK_ST(mt_ha_set_health(NULL, NULL), MT_ERR_UNAVAILABLE);
    unsetenv("MTIPC_HA_SOCKET");
    free(path);
    scratch_free(dir);
}

/* --- the connection made before the exec (MTIPC_HA_FD) ----------------- */

/* Field 22 of /proc/self/stat (the start time), or 0. */
static unsigned long long own_start(void) {
    char buf[1024];
    int f = open("/proc/self/stat", O_RDONLY);
    if (f < 0) return 0;
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (p == NULL) return 0;
    p += 2; /* the state */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL) return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}

/* Accepts one connection; checks that its hello names the peer's pid and
 * answers with the role. Returns the connection and its pid. */
static int accept_hello(int l, pid_t *pid, int step) {
    int c = accept(l, NULL, NULL);
    if (c < 0) _exit(100 + step);
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) _exit(110 + step);
    char want[64];
    snprintf(want, sizeof want, "hello 1 %d ", (int)cred.pid);
    char buf[128];
    struct pollfd p = {c, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) _exit(120 + step);
    ssize_t n = recv(c, buf, sizeof buf - 1, 0);
    if (n <= 0) _exit(130 + step);
    buf[n] = 0;
    if (strncmp(buf, want, strlen(want)) != 0) _exit(140 + step);
    /* Not checked: the forked child may have said ready and exited. */
    (void)!send(c, "role active 1", 13, MSG_NOSIGNAL);
    *pid = cred.pid;
    return c;
}

/* The fake Monitor of this test: the app's connection (made as the
 * Spawner makes it), then its forked child's own connection and ready,
 * then the app's ready and heartbeat on the first connection. */
static void fake_monitor_inherited(const char *path) {
    int l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 4) != 0) _exit(10);
    pid_t app, forked;
    int c1 = accept_hello(l, &app, 1);
    int c2 = accept_hello(l, &forked, 2);
    if (forked == app) _exit(16);
    expect(c2, "ready", 7);
    expect(c1, "ready", 8);
    expect(c1, "heartbeat", 9);
    _exit(0);
}

/* What the app does: connects and says hello as the HA Spawner does for a
 * process before its exec (F_SETOWN marks the connection as this
 * process's), forks a child before any hook (whose mt_ha_ready must not
 * use its parent's connection: it connects by the path), then says ready
 * itself on the inherited connection. Exits 0 when all went so. */
static void inherited_app(const char *path) {
    int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) _exit(30);
    char hello[64];
    snprintf(hello, sizeof hello, "hello 1 %d %llu", (int)getpid(), own_start());
    say(fd, hello);
    if (fcntl(fd, F_SETOWN, getpid()) != 0) _exit(31);
    char num[16];
    snprintf(num, sizeof num, "%d", fd);
    setenv("MTIPC_HA_SOCKET", path, 1);
    setenv("MTIPC_HA_FD", num, 1);
    pid_t kid = fork();
    if (kid < 0) _exit(32);
    /* Each reads the role before it exits: a socket closed with unread
     * packets resets its peer, whose recv then fails before it has read
     * what was sent to it. */
    mt_ha_role role;
    uint64_t epoch;
    if (kid == 0)
        _exit(mt_ha_ready() == MT_OK && mt_ha_role_get(&role, &epoch) == MT_OK ? 0 : 33);
    int st = -1;
    if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) _exit(34);
    if (fcntl(fd, F_GETFD) & FD_CLOEXEC) _exit(35); /* not taken yet */
    if (mt_ha_ready() != MT_OK) _exit(36);
    if (fcntl(fd, F_GETFD) != -1) _exit(37); /* taken: moved to a descriptor of the hooks' own */
    if (mt_ha_heartbeat() != MT_OK) _exit(38);           /* the hooks' own use of it */
    if (mt_ha_role_get(&role, &epoch) != MT_OK || role != MT_HA_ACTIVE) _exit(39);
    _exit(0);
}

static void test_inherited_connection(void) {
    char *dir = scratch_new("ha-fd");
    REQUIRE(dir != NULL);
    char *path = path_join(dir, "ha.sock");
    pid_t mon = fork();
    REQUIRE(mon >= 0);
    if (mon == 0) fake_monitor_inherited(path);
    struct stat st;
    for (int i = 0; i < 5000 && stat(path, &st) != 0; i++) usleep(1000);
    pid_t app = fork();
    REQUIRE(app >= 0);
    if (app == 0) inherited_app(path);
    int status = -1;
    CHECK(waitpid(app, &status, 0) == app);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        fprintf(stderr, "inherited app exit status %d\n", WEXITSTATUS(status));
    CHECK(waitpid(mon, &status, 0) == mon);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        fprintf(stderr, "fake monitor exit status %d\n", WEXITSTATUS(status));
    free(path);
    scratch_free(dir);
}

int main(void) {
    RUN(test_outside_supervision);
    RUN(test_under_a_fake_monitor);
    RUN(test_inherited_connection);
    return mt_test_exit("test_ha");
}
