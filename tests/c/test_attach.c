/* Discovery and attach through the C ABI: mt_advertise(_protocols),
 * mt_advert_free, mt_attach and mt_attach_opts, mt_conn_send/recv/free,
 * mt_tenant_list_*. The test starts its own mtipcd ($MTIPCD, else
 * target/debug/mtipcd) on a scratch domain, advertises tenants in this
 * process and attaches to them from this process; at the end it stops the
 * daemon with SIGTERM (exit status 0 expected) and checks that attaching
 * then fails with MT_ERR_UNAVAILABLE.
 */
#include "mt_test.h"

#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/wait.h>

extern char **environ;

#define MiB (1024u * 1024u)

static mt_domain *g_d;     /* the scratch domain */
static char *g_dom;        /* its path */
static pid_t g_daemon = -1; /* the running mtipcd, or -1 */

/* A pointer that no call may write: out-parameters stay unchanged on failure. */
static char sentinel_byte;
#define SENTINEL ((void *)&sentinel_byte)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- the daemon ------------------------------------------------------- */

/* True if the domain lists an advertisement `id` (and stores its pid). */
static bool listed(const char *id, uint32_t *pid) {
    mt_tenant_list *l = NULL;
    if (mt_tenant_list_new(g_d, &l) != MT_OK) return false;
    bool found = false;
    for (size_t i = 0; i < mt_tenant_list_len(l); i++) {
        mt_tenant_info t;
        if (mt_tenant_list_get(l, i, &t) == MT_OK && strcmp(t.id, id) == 0) {
            found = true;
            if (pid) *pid = t.pid;
        }
    }
    mt_tenant_list_free(l);
    return found;
}

/* Starts mtipcd on the domain and waits (10 s at most) until it advertises. */
static pid_t daemon_start(void) {
    const char *exe = getenv("MTIPCD");
    if (exe == NULL || exe[0] == '\0') exe = "target/debug/mtipcd";
    char *argv[] = {(char *)exe, "--domain", g_dom, "--log", "warn", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, exe, NULL, NULL, argv, environ);
    if (rc != 0) {
        fprintf(stderr, "cannot start %s: %s (set MTIPCD)\n", exe, strerror(rc));
        return -1;
    }
    for (double t0 = now_ms(); now_ms() - t0 < 10000;) {
        uint32_t p = 0;
        if (listed("@mtipcd", &p) && p == (uint32_t)pid) return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            fprintf(stderr, "%s exited at start\n", exe);
            return -1;
        }
        sleep_ms(10);
    }
    fprintf(stderr, "%s did not advertise within 10 s\n", exe);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* Stops it with SIGTERM; returns its exit status (-1: it did not exit cleanly in 10 s). */
static int daemon_stop(pid_t pid) {
    if (pid <= 0) return -1;
    kill(pid, SIGTERM);
    for (double t0 = now_ms(); now_ms() - t0 < 10000; sleep_ms(10)) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* ---- the tenant's handler --------------------------------------------- */

/* Shared with the handler threads (the `user` pointer). */
struct echo {
    atomic_int attached; /* handler calls */
    atomic_int closed;   /* connections whose recv gave MT_ERR_CLOSED */
    atomic_int failed;   /* any other failure in the handler */
};

/* Echoes every message back, except "close" (closes the connection at
 * once) and "sleep:N" (waits N ms first). */
static void echo_handler(void *user, mt_conn *c) {
    struct echo *e = user;
    atomic_fetch_add(&e->attached, 1);
    uint8_t *buf = malloc(MiB);
    if (buf == NULL) abort();
    for (;;) {
        size_t len = 0;
        mt_status st = mt_conn_recv(c, buf, MiB, &len, MT_WAIT_FOREVER);
        if (st == MT_ERR_CLOSED) {
            atomic_fetch_add(&e->closed, 1);
            break;
        }
        if (st != MT_OK) {
            fprintf(stderr, "echo_handler: recv: %s: %s\n", mt_status_str(st), mt_last_error());
            atomic_fetch_add(&e->failed, 1);
            break;
        }
        if (len == 5 && memcmp(buf, "close", 5) == 0) break;
        if (len == 6 && memcmp(buf, "proto?", 6) == 0) {
            /* Answer with the protocol as the tenant's end sees it. */
            char p[33];
            size_t plen = 0;
            if (mt_conn_protocol(c, p, sizeof p, &plen) != MT_OK) atomic_fetch_add(&e->failed, 1);
            memcpy(buf, p, plen);
            len = plen;
        }
        if (len > 6 && len < 16 && memcmp(buf, "sleep:", 6) == 0) {
            char n[16] = {0};
            memcpy(n, buf + 6, len - 6);
            sleep_ms(atol(n));
        }
        st = mt_conn_send(c, buf, len);
        if (st != MT_OK) {
            if (st != MT_ERR_CLOSED) atomic_fetch_add(&e->failed, 1);
            break;
        }
    }
    free(buf);
    mt_conn_free(c);
}

/* Waits (5 s at most) until *counter reaches `want`. */
static bool wait_count(atomic_int *counter, int want) {
    for (double t0 = now_ms(); now_ms() - t0 < 5000; sleep_ms(5))
        if (atomic_load(counter) >= want) return true;
    return atomic_load(counter) >= want;
}

/* Sends `len` bytes and checks that the same bytes come back. */
static bool roundtrip(mt_conn *c, const uint8_t *msg, size_t len) {
    uint8_t *back = malloc(len ? len : 1);
    if (back == NULL) abort();
    size_t got = 12345;
    bool ok = mt_conn_send(c, msg, len) == MT_OK &&
              mt_conn_recv(c, back, len, &got, 10000) == MT_OK && got == len &&
              memcmp(back, msg, len) == 0;
    free(back);
    return ok;
}

static bool roundtrip_str(mt_conn *c, const char *s) {
    return roundtrip(c, (const uint8_t *)s, strlen(s));
}

/* ---- tests without a daemon ------------------------------------------- */

static void opts_init_macro(void) {
    mt_attach_opts o = MT_ATTACH_OPTS_INIT;
    CHECK(o.size == sizeof(mt_attach_opts));
    CHECK(o.timeout_ms == 0 && o.start_unix_ms == 0 && o.duration_ms == 0);
    CHECK(o.protocol == NULL);
}

/* A start too far ahead or a duration too long is refused at once (it used
 * to make mt_attach wait for UINT64_MAX ms), with the out-parameter kept. */
static void start_or_duration_out_of_range(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const uint64_t now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    mt_conn *c = SENTINEL;
    mt_attach_opts o = MT_ATTACH_OPTS_INIT;
    o.start_unix_ms = UINT64_MAX;
    CHECK_ST(mt_attach(g_d, "c-anyone", &o, &c), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "start");
    o.start_unix_ms = now_ms + 25ull * 3600 * 1000; /* 25 h ahead */
    CHECK_ST(mt_attach(g_d, "c-anyone", &o, &c), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "at most 86400 s (24 h)");
    o.start_unix_ms = 0;
    o.duration_ms = UINT64_MAX;
    CHECK_ST(mt_attach(g_d, "c-anyone", &o, &c), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "duration");
    o.duration_ms = 30ull * 24 * 3600 * 1000 + 1;
    CHECK_ST(mt_attach(g_d, "c-anyone", &o, &c), MT_ERR_INVALID);
    CHECK(c == SENTINEL);
    /* Within the bounds the options are accepted: the call goes on to the
     * round and finds no daemon. */
    o.start_unix_ms = now_ms + 3600 * 1000;
    o.duration_ms = 30ull * 24 * 3600 * 1000;
    CHECK_ST(mt_attach(g_d, "c-anyone", &o, &c), MT_ERR_UNAVAILABLE);
}

static void attach_without_daemon_is_unavailable(void) {
    mt_conn *c = SENTINEL;
    CHECK_ST(mt_attach(g_d, "c-anyone", NULL, &c), MT_ERR_UNAVAILABLE);
    CHECK_CONTAINS(mt_last_error(), "mtipcd is not running");
    CHECK(c == SENTINEL);
}

static void invalid_arguments(void) {
    struct echo e = {0};
    mt_advert *a = SENTINEL;
    mt_conn *c = SENTINEL;
    mt_tenant_list *l = SENTINEL;

    /* mt_advertise */
    CHECK_ST(mt_advertise(NULL, "c-x", echo_handler, &e, &a), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "mt_domain handle is NULL");
    CHECK_ST(mt_advertise(g_d, NULL, echo_handler, &e, &a), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "tenant is NULL");
    CHECK_ST(mt_advertise(g_d, "c-x", NULL, &e, &a), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "handler is NULL");
    CHECK_ST(mt_advertise(g_d, "c-x", echo_handler, &e, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "out-parameter out is NULL");
    CHECK(a == SENTINEL);

    /* Bad tenant ids, for mt_advertise and mt_attach alike. */
    char long_id[66];
    memset(long_id, 'x', 65);
    long_id[65] = '\0';
    const char *bad_ids[] = {"", ".hidden", "-dash", "a b", "a/b", "../x", "@mtipcd", "tab\t",
                             "\xff\xfe", "caf\xc3\xa9", long_id};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        CHECK_ST(mt_advertise(g_d, bad_ids[i], echo_handler, &e, &a), MT_ERR_INVALID);
        CHECK(strlen(mt_last_error()) > 0);
        CHECK_ST(mt_advertise_protocols(g_d, bad_ids[i], "msg", echo_handler, &e, &a),
                 MT_ERR_INVALID);
        CHECK_ST(mt_attach(g_d, bad_ids[i], NULL, &c), MT_ERR_INVALID);
        CHECK(strlen(mt_last_error()) > 0);
    }
    CHECK(a == SENTINEL);
    CHECK(c == SENTINEL);
    CHECK(atomic_load(&e.attached) == 0);

    /* mt_advertise_protocols: bad lists */
    CHECK_ST(mt_advertise_protocols(g_d, "c-x", NULL, echo_handler, &e, &a), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "protocols is NULL");
    char many[16 * 3 + 8] = "";
    for (int i = 0; i < 17; i++) strcat(many, i ? ",p" : "p"); /* 17 names (repeats too) */
    char long_proto[40];
    memset(long_proto, 'p', 33);
    long_proto[33] = '\0';
    const char *bad_lists[] = {"", "Echo", "echo,", ",echo", "a,,b", "e cho", "ech/o", many,
                               long_proto};
    for (size_t i = 0; i < sizeof bad_lists / sizeof *bad_lists; i++) {
        CHECK_ST(mt_advertise_protocols(g_d, "c-x", bad_lists[i], echo_handler, &e, &a),
                 MT_ERR_INVALID);
        CHECK(strlen(mt_last_error()) > 0);
    }
    CHECK_ST(mt_advertise_protocols(NULL, "c-x", "msg", echo_handler, &e, &a), MT_ERR_INVALID);
    CHECK_ST(mt_advertise_protocols(g_d, "c-x", "msg", NULL, &e, &a), MT_ERR_INVALID);
    CHECK_ST(mt_advertise_protocols(g_d, "c-x", "msg", echo_handler, &e, NULL), MT_ERR_INVALID);
    CHECK(a == SENTINEL);

    /* mt_attach */
    CHECK_ST(mt_attach(NULL, "c-x", NULL, &c), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "mt_domain handle is NULL");
    CHECK_ST(mt_attach(g_d, NULL, NULL, &c), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "tenant is NULL");
    CHECK_ST(mt_attach(g_d, "c-x", NULL, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "out-parameter out is NULL");
    /* Options of a wrong size: the library cannot know the fields. */
    mt_attach_opts o = MT_ATTACH_OPTS_INIT;
    o.size = 0;
    CHECK_ST(mt_attach(g_d, "c-x", &o, &c), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "MT_ATTACH_OPTS_INIT");
    o.size = (uint32_t)sizeof o - 1;
    CHECK_ST(mt_attach(g_d, "c-x", &o, &c), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "mt_attach_opts.size");
    o.size = 8; /* an older, shorter struct */
    CHECK_ST(mt_attach(g_d, "c-x", &o, &c), MT_ERR_INVALID);
    /* A bad protocol name. */
    const char *bad_protocols[] = {"", long_proto, "\xff"};
    for (size_t i = 0; i < sizeof bad_protocols / sizeof *bad_protocols; i++) {
        mt_attach_opts p = MT_ATTACH_OPTS_INIT;
        p.protocol = bad_protocols[i];
        CHECK_ST(mt_attach(g_d, "c-x", &p, &c), MT_ERR_INVALID);
        CHECK_CONTAINS(mt_last_error(), "protocol");
    }
    CHECK(c == SENTINEL);

    /* mt_conn_* on NULL */
    uint8_t buf[8] = {0};
    size_t len = 77;
    CHECK_ST(mt_conn_send(NULL, buf, 1), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "mt_conn handle is NULL");
    CHECK_ST(mt_conn_send(NULL, NULL, 0), MT_ERR_INVALID);
    CHECK_ST(mt_conn_recv(NULL, buf, sizeof buf, &len, 0), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "mt_conn handle is NULL");
    CHECK_ST(mt_conn_recv(NULL, buf, sizeof buf, NULL, 0), MT_ERR_INVALID);
    CHECK(len == 77);
    mt_conn_free(NULL);
    mt_advert_free(NULL);

    /* mt_tenant_list_* */
    CHECK_ST(mt_tenant_list_new(NULL, &l), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "mt_domain handle is NULL");
    CHECK_ST(mt_tenant_list_new(g_d, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "out-parameter out is NULL");
    CHECK(l == SENTINEL);
    CHECK(mt_tenant_list_len(NULL) == 0);
    mt_tenant_info info;
    memset(&info, 0xab, sizeof info);
    CHECK_ST(mt_tenant_list_get(NULL, 0, &info), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "mt_tenant_list handle is NULL");
    CHECK(info.pid == 0xabababab);
    mt_tenant_list_free(NULL);
}

/* ---- tests with the daemon -------------------------------------------- */

static struct echo g_echo; /* the handler state of tenant "c-echo" */
static mt_advert *g_echo_ad;

static void invalid_arguments_on_live_handles(void) {
    mt_conn *c = NULL;
    REQUIRE_OK(mt_attach(g_d, "c-echo", NULL, &c));
    uint8_t buf[8] = {0};
    size_t len = 77;
    CHECK_ST(mt_conn_send(c, NULL, 1), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "buf is NULL");
    CHECK_ST(mt_conn_recv(c, NULL, 1, &len, 0), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "buf is NULL");
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, NULL, 0), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "out-parameter len is NULL");
    CHECK(len == 77);
    /* Over the 1 MiB limit. */
    uint8_t *big = calloc(MiB + 1, 1);
    REQUIRE(big != NULL);
    CHECK_ST(mt_conn_send(c, big, MiB + 1), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "limit");
    free(big);
    /* None of these broke the connection. */
    CHECK(roundtrip_str(c, "still fine"));

    /* The tenant list's checks. */
    mt_tenant_list *l = NULL;
    REQUIRE_OK(mt_tenant_list_new(g_d, &l));
    size_t n = mt_tenant_list_len(l);
    CHECK(n >= 2);
    mt_tenant_info info;
    memset(&info, 0xab, sizeof info);
    CHECK_ST(mt_tenant_list_get(l, n, &info), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "out of range");
    CHECK_ST(mt_tenant_list_get(l, (size_t)-1, &info), MT_ERR_INVALID);
    CHECK(info.pid == 0xabababab);
    CHECK_ST(mt_tenant_list_get(l, 0, NULL), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "out-parameter out is NULL");
    mt_tenant_list_free(l);
    mt_conn_free(c);
}

static void tenant_list(void) {
    uint32_t daemon_pid = (uint32_t)g_daemon;
    mt_tenant_list *l = NULL;
    REQUIRE_OK(mt_tenant_list_new(g_d, &l));
    size_t n = mt_tenant_list_len(l);
    bool saw_daemon = false, saw_echo = false;
    const char *prev = "";
    char prev_buf[80] = "";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    for (size_t i = 0; i < n; i++) {
        mt_tenant_info t;
        REQUIRE_OK(mt_tenant_list_get(l, i, &t));
        CHECK(strcmp(prev, t.id) < 0); /* sorted by id, no duplicates */
        snprintf(prev_buf, sizeof prev_buf, "%s", t.id);
        prev = prev_buf;
        CHECK(t.uid == (uint32_t)geteuid());
        CHECK(t.since_unix_ms <= now + 1000 && t.since_unix_ms + 600000 > now);
        if (strcmp(t.id, "@mtipcd") == 0) {
            saw_daemon = true;
            CHECK(strcmp(t.role, "daemon") == 0);
            CHECK(strcmp(t.fingerprint, "") == 0);
            CHECK(t.pid == daemon_pid);
        } else if (strcmp(t.id, "c-echo") == 0) {
            saw_echo = true;
            CHECK(strcmp(t.role, "tenant") == 0);
            CHECK(strcmp(t.protocols, "msg") == 0);
            CHECK(strlen(t.fingerprint) == 64);
            CHECK(strspn(t.fingerprint, "0123456789abcdef") == 64);
            CHECK(t.pid == (uint32_t)getpid());
        }
    }
    CHECK(saw_daemon);
    CHECK(saw_echo);
    mt_tenant_list_free(l);
}

static void advertise_twice_exists(void) {
    struct echo e = {0};
    mt_advert *a = SENTINEL;
    CHECK_ST(mt_advertise(g_d, "c-echo", echo_handler, &e, &a), MT_ERR_EXISTS);
    CHECK_CONTAINS(mt_last_error(), "c-echo");
    CHECK(a == SENTINEL);
}

static void echo_message_sizes(void) {
    mt_conn *c = NULL;
    REQUIRE_OK(mt_attach(g_d, "c-echo", NULL, &c));
    const size_t sizes[] = {0, 1, 2, 1000, 16 * 1024 + 1, 64 * 1024, MiB - 1, MiB};
    uint8_t *msg = malloc(MiB);
    REQUIRE(msg != NULL);
    for (size_t i = 0; i < MiB; i++) msg[i] = (uint8_t)(i * 31 + (i >> 8));
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        if (!roundtrip(c, msg, sizes[i])) {
            fprintf(stderr, "echo of %zu bytes failed\n", sizes[i]);
            CHECK(false);
        }
    }
    /* An empty message may come from a NULL buffer, and be received into none. */
    size_t len = 77;
    CHECK_ST(mt_conn_send(c, NULL, 0), MT_OK);
    CHECK_ST(mt_conn_recv(c, NULL, 0, &len, 10000), MT_OK);
    CHECK(len == 0);
    /* Several in flight: they come back in order. */
    for (int i = 0; i < 10; i++) {
        char m[16];
        snprintf(m, sizeof m, "m%d", i);
        CHECK_ST(mt_conn_send(c, (const uint8_t *)m, strlen(m)), MT_OK);
    }
    for (int i = 0; i < 10; i++) {
        char m[16], want[16];
        snprintf(want, sizeof want, "m%d", i);
        CHECK_ST(mt_conn_recv(c, (uint8_t *)m, sizeof m, &len, 10000), MT_OK);
        CHECK(len == strlen(want) && memcmp(m, want, len) == 0);
    }
    free(msg);
    mt_conn_free(c);
}

static void recv_into_too_small_a_buffer(void) {
    mt_conn *c = NULL;
    REQUIRE_OK(mt_attach(g_d, "c-echo", NULL, &c));
    uint8_t msg[100], buf[100];
    for (int i = 0; i < 100; i++) msg[i] = (uint8_t)i;
    REQUIRE_OK(mt_conn_send(c, msg, sizeof msg));
    size_t len = 0;
    CHECK_ST(mt_conn_recv(c, buf, 10, &len, 10000), MT_ERR_INVALID);
    CHECK(len == 100);
    CHECK_CONTAINS(mt_last_error(), "100 bytes needed");
    len = 0;
    CHECK_ST(mt_conn_recv(c, NULL, 0, &len, 10000), MT_ERR_INVALID);
    CHECK(len == 100);
    len = 0;
    CHECK_ST(mt_conn_recv(c, buf, 99, &len, 0), MT_ERR_INVALID);
    CHECK(len == 100);
    /* Still queued, whole: now with room. */
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, &len, 10000), MT_OK);
    CHECK(len == 100 && memcmp(buf, msg, 100) == 0);
    /* A 1 MiB message, size asked first. */
    uint8_t *big = malloc(MiB);
    REQUIRE(big != NULL);
    memset(big, 'z', MiB);
    REQUIRE_OK(mt_conn_send(c, big, MiB));
    CHECK_ST(mt_conn_recv(c, NULL, 0, &len, 10000), MT_ERR_INVALID);
    CHECK(len == MiB);
    memset(big, 0, MiB);
    CHECK_ST(mt_conn_recv(c, big, len, &len, 10000), MT_OK);
    CHECK(len == MiB && big[0] == 'z' && big[MiB - 1] == 'z');
    free(big);
    mt_conn_free(c);
}

static void recv_timeout_loses_nothing(void) {
    mt_conn *c = NULL;
    REQUIRE_OK(mt_attach(g_d, "c-echo", NULL, &c));
    uint8_t buf[64];
    size_t len = 77;
    double t0 = now_ms();
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, &len, 0), MT_ERR_TIMEOUT);
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, &len, 50), MT_ERR_TIMEOUT);
    double took = now_ms() - t0;
    CHECK(took >= 45 && took < 5000);
    CHECK(len == 77);
    /* The reply comes after 300 ms: short waits time out, then it is there. */
    REQUIRE_OK(mt_conn_send(c, (const uint8_t *)"sleep:300", 9));
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, &len, 50), MT_ERR_TIMEOUT);
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, &len, 10000), MT_OK);
    CHECK(len == 9 && memcmp(buf, "sleep:300", 9) == 0);
    /* 1 MiB polled with timeout 0 while it arrives: it comes whole, once. */
    uint8_t *big = malloc(MiB), *back = malloc(MiB);
    REQUIRE(big != NULL && back != NULL);
    for (size_t i = 0; i < MiB; i++) big[i] = (uint8_t)(i % 251);
    REQUIRE_OK(mt_conn_send(c, big, MiB));
    mt_status st = MT_ERR_TIMEOUT;
    int timeouts = 0;
    for (double t1 = now_ms(); st == MT_ERR_TIMEOUT && now_ms() - t1 < 10000; timeouts++)
        st = mt_conn_recv(c, back, MiB, &len, 0);
    CHECK_ST(st, MT_OK);
    CHECK(len == MiB && memcmp(big, back, MiB) == 0);
    CHECK_ST(mt_conn_recv(c, back, MiB, &len, 0), MT_ERR_TIMEOUT);
    CHECK(roundtrip_str(c, "after"));
    free(big);
    free(back);
    mt_conn_free(c);
}

static void peer_close_gives_closed(void) {
    /* The tenant closes: the attacher's receive fails with MT_ERR_CLOSED. */
    mt_conn *c = NULL;
    REQUIRE_OK(mt_attach(g_d, "c-echo", NULL, &c));
    CHECK(roundtrip_str(c, "before"));
    REQUIRE_OK(mt_conn_send(c, (const uint8_t *)"close", 5));
    uint8_t buf[16];
    size_t len = 77;
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, &len, 10000), MT_ERR_CLOSED);
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, &len, 0), MT_ERR_CLOSED);
    CHECK(len == 77);
    /* Sending soon fails too (the first writes may still be buffered). */
    mt_status st = MT_OK;
    for (int i = 0; i < 200 && st == MT_OK; i++) {
        st = mt_conn_send(c, (const uint8_t *)"x", 1);
        if (st == MT_OK) sleep_ms(10);
    }
    CHECK_ST(st, MT_ERR_CLOSED);
    mt_conn_free(c);

    /* The attacher closes: the tenant's receive fails with MT_ERR_CLOSED. */
    int closed = atomic_load(&g_echo.closed);
    REQUIRE_OK(mt_attach(g_d, "c-echo", NULL, &c));
    CHECK(roundtrip_str(c, "hello"));
    mt_conn_free(c);
    CHECK(wait_count(&g_echo.closed, closed + 1));
}

static void unknown_tenant_or_protocol_not_found(void) {
    mt_conn *c = SENTINEL;
    CHECK_ST(mt_attach(g_d, "c-nobody", NULL, &c), MT_ERR_NOT_FOUND);
    CHECK_CONTAINS(mt_last_error(), "c-nobody");
    mt_attach_opts o = MT_ATTACH_OPTS_INIT;
    o.protocol = "xml";
    CHECK_ST(mt_attach(g_d, "c-echo", &o, &c), MT_ERR_NOT_FOUND);
    CHECK_CONTAINS(mt_last_error(), "xml");
    CHECK(c == SENTINEL);
}

static void protocols_and_options(void) {
    static struct echo e;
    mt_advert *a = NULL;
    REQUIRE_OK(mt_advertise_protocols(g_d, "c-proto", "echo,json", echo_handler, &e, &a));
    mt_tenant_list *l = NULL;
    REQUIRE_OK(mt_tenant_list_new(g_d, &l));
    bool found = false;
    for (size_t i = 0; i < mt_tenant_list_len(l); i++) {
        mt_tenant_info t;
        if (mt_tenant_list_get(l, i, &t) == MT_OK && strcmp(t.id, "c-proto") == 0)
            found = strcmp(t.protocols, "echo,json") == 0;
    }
    mt_tenant_list_free(l);
    CHECK(found);

    mt_conn *c = NULL;
    const char *ask[] = {NULL, "echo", "json"};
    for (size_t i = 0; i < 3; i++) {
        mt_attach_opts o = MT_ATTACH_OPTS_INIT;
        o.protocol = ask[i];
        o.timeout_ms = 10000;
        CHECK_ST(mt_attach(g_d, "c-proto", &o, &c), MT_OK);
        if (c) CHECK(roundtrip_str(c, "p"));
        if (c) {
            /* Both ends know the protocol the attacher asked for. */
            const char *want = ask[i] ? ask[i] : "echo";
            char p[33];
            size_t plen = 99;
            CHECK_ST(mt_conn_protocol(c, p, 2, &plen), MT_ERR_INVALID);
            /* A NULL buffer with a size: the NULL is what is wrong. */
            CHECK_ST(mt_conn_protocol(c, NULL, 5, &plen), MT_ERR_INVALID);
            CHECK_CONTAINS(mt_last_error(), "buf is NULL but cap is 5");
            CHECK(plen == strlen(want));
            CHECK_ST(mt_conn_protocol(c, p, sizeof p, &plen), MT_OK);
            CHECK(strcmp(p, want) == 0 && plen == strlen(want));
            CHECK_ST(mt_conn_send(c, (const uint8_t *)"proto?", 6), MT_OK);
            uint8_t r[64];
            size_t rlen = 0;
            CHECK_ST(mt_conn_recv(c, r, sizeof r, &rlen, 10000), MT_OK);
            CHECK(rlen == strlen(want) && memcmp(r, want, rlen) == 0);
        }
        mt_conn_free(c);
        c = NULL;
    }
    /* "msg" is only the default of mt_advertise. */
    mt_attach_opts o = MT_ATTACH_OPTS_INIT;
    o.protocol = "msg";
    CHECK_ST(mt_attach(g_d, "c-proto", &o, &c), MT_ERR_NOT_FOUND);

    /* A caller compiled against a later, longer mt_attach_opts. */
    struct {
        mt_attach_opts o;
        uint64_t later_field;
    } longer = {MT_ATTACH_OPTS_INIT, 42};
    longer.o.size = (uint32_t)sizeof longer;
    CHECK_ST(mt_attach(g_d, "c-proto", &longer.o, &c), MT_OK);
    if (c) CHECK(roundtrip_str(c, "longer"));
    mt_conn_free(c);
    mt_advert_free(a);
    CHECK(atomic_load(&e.attached) == 4);
    CHECK(atomic_load(&e.failed) == 0);
}

static void duration_closes_the_connection(void) {
    mt_attach_opts o = MT_ATTACH_OPTS_INIT;
    o.duration_ms = 400;
    mt_conn *c = NULL;
    double t0 = now_ms();
    REQUIRE_OK(mt_attach(g_d, "c-echo", &o, &c));
    CHECK(roundtrip_str(c, "in time"));
    uint8_t buf[16];
    size_t len = 0;
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, &len, 10000), MT_ERR_CLOSED);
    double took = now_ms() - t0;
    CHECK(took >= 350 && took < 5000);
    mt_conn_free(c);
}

static void start_delays_the_connection(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    mt_attach_opts o = MT_ATTACH_OPTS_INIT;
    o.start_unix_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + 400;
    o.timeout_ms = 10000;
    mt_conn *c = NULL;
    double t0 = now_ms();
    REQUIRE_OK(mt_attach(g_d, "c-echo", &o, &c));
    CHECK(roundtrip_str(c, "later"));
    double took = now_ms() - t0;
    CHECK(took >= 350 && took < 5000);
    mt_conn_free(c);
}

static void advert_free_keeps_open_connections(void) {
    static struct echo e;
    mt_advert *a = NULL;
    REQUIRE_OK(mt_advertise(g_d, "c-free", echo_handler, &e, &a));
    mt_conn *c = NULL;
    REQUIRE_OK(mt_attach(g_d, "c-free", NULL, &c));
    CHECK(roundtrip_str(c, "one"));
    mt_advert_free(a);
    CHECK(!listed("c-free", NULL));
    mt_conn *c2 = SENTINEL;
    CHECK_ST(mt_attach(g_d, "c-free", NULL, &c2), MT_ERR_NOT_FOUND);
    CHECK(c2 == SENTINEL);
    /* The open connection still works both ways. */
    CHECK(roundtrip_str(c, "two"));
    uint8_t *big = calloc(MiB, 1);
    REQUIRE(big != NULL);
    CHECK(roundtrip(c, big, MiB));
    free(big);
    mt_conn_free(c);
    CHECK(wait_count(&e.closed, 1));
    CHECK(atomic_load(&e.attached) == 1);
    CHECK(atomic_load(&e.failed) == 0);
    /* The id is free again. */
    REQUIRE_OK(mt_advertise(g_d, "c-free", echo_handler, &e, &a));
    mt_advert_free(a);
}

/* Several attachers at once: the rounds are serialised, each gets its own tenant connection. */
static void *attacher_thread(void *arg) {
    int *ok = arg;
    mt_conn *c = NULL;
    mt_attach_opts o = MT_ATTACH_OPTS_INIT;
    o.timeout_ms = 20000;
    if (mt_attach(g_d, "c-echo", &o, &c) != MT_OK) {
        fprintf(stderr, "attacher_thread: %s\n", mt_last_error());
        return NULL;
    }
    *ok = 1;
    for (int i = 0; i < 20 && *ok; i++) {
        char m[32];
        snprintf(m, sizeof m, "thread %p message %d", arg, i);
        *ok = roundtrip_str(c, m);
    }
    mt_conn_free(c);
    return NULL;
}

static void concurrent_attachers(void) {
    enum { N = 4 };
    pthread_t t[N];
    int ok[N] = {0};
    for (int i = 0; i < N; i++) REQUIRE(pthread_create(&t[i], NULL, attacher_thread, &ok[i]) == 0);
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++) CHECK(ok[i] == 1);
}

/* Last: the daemon stops; attaching is MT_ERR_UNAVAILABLE, open connections end. */
static void daemon_stop_then_unavailable(void) {
    mt_conn *c = NULL;
    REQUIRE_OK(mt_attach(g_d, "c-echo", NULL, &c));
    CHECK(roundtrip_str(c, "before the stop"));
    CHECK(daemon_stop(g_daemon) == 0);
    g_daemon = -1;
    mt_conn *c2 = SENTINEL;
    CHECK_ST(mt_attach(g_d, "c-echo", NULL, &c2), MT_ERR_UNAVAILABLE);
    CHECK_CONTAINS(mt_last_error(), "mtipcd is not running");
    CHECK(c2 == SENTINEL);
    CHECK(!listed("@mtipcd", NULL));
    CHECK(listed("c-echo", NULL)); /* the tenant stays advertised */
    /* The relay is gone: the open connection has ended. */
    uint8_t buf[16];
    size_t len = 0;
    CHECK_ST(mt_conn_recv(c, buf, sizeof buf, &len, 10000), MT_ERR_CLOSED);
    mt_conn_free(c);
}

int main(void) {
    /* no signal(SIGPIPE, SIG_IGN): the library must not need it */
    char *dir = scratch_new("attach");
    g_dom = path_join(dir, "dom");
    if (mt_domain_open(g_dom, &g_d) != MT_OK) {
        fprintf(stderr, "mt_domain_open: %s\n", mt_last_error());
        return 1;
    }
    RUN(opts_init_macro);
    RUN(invalid_arguments);
    RUN(attach_without_daemon_is_unavailable);
    RUN(start_or_duration_out_of_range);

    g_daemon = daemon_start();
    if (g_daemon < 0) {
        CHECK(!"mtipcd started");
    } else if (mt_advertise(g_d, "c-echo", echo_handler, &g_echo, &g_echo_ad) != MT_OK) {
        CHECK(!"c-echo advertised");
    } else {
        RUN(invalid_arguments_on_live_handles);
        RUN(tenant_list);
        RUN(advertise_twice_exists);
        RUN(echo_message_sizes);
        RUN(recv_into_too_small_a_buffer);
        RUN(recv_timeout_loses_nothing);
        RUN(peer_close_gives_closed);
        RUN(unknown_tenant_or_protocol_not_found);
        RUN(protocols_and_options);
        RUN(duration_closes_the_connection);
        RUN(start_delays_the_connection);
        RUN(advert_free_keeps_open_connections);
        RUN(concurrent_attachers);
        RUN(daemon_stop_then_unavailable);
    }
    mt_advert_free(g_echo_ad);
    CHECK(atomic_load(&g_echo.failed) == 0);
    if (g_daemon > 0) CHECK(daemon_stop(g_daemon) == 0);
    mt_domain_free(g_d);
    free(g_dom);
    scratch_free(dir);
    return mt_test_exit("test_attach");
}
