/* Sessions and request dispatch through the C ABI: mt_session_table_*,
 * mt_session_*, mt_worker_*, mt_request_*, mt_ticket_*.
 *
 * In one process: every call and its refusals (NULLs, bad UTF-8, empty and
 * oversized names, oversized user data, requests and responses with the
 * limit in mt_last_error(), MT_ERR_FULL, stale ids after a slot is reused),
 * out-parameters left unchanged on failure, the request and ticket life
 * cycles. With real processes (fork): worker children serving requests,
 * sticky sessions over two groups, a worker killed with SIGKILL in the
 * middle of a request whose request is then answered by the other worker
 * of its group, and MT_ERR_UNAVAILABLE once the group has no live worker.
 *
 * A child opens its own domain and table handles: the parent's, inherited
 * through fork, share the parent's open file descriptions and so its
 * liveness record (docs/session.md). Children leave with _exit and never
 * free what they inherited.
 */
#include "mt_test.h"

#include <ctype.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <sys/wait.h>

/* A pointer that no call may write: out-parameters stay unchanged on failure. */
static char sentinel_byte;
#define SENTINEL ((void *)&sentinel_byte)

#define T_WAIT 5000u /* ms: the longest a test waits for one response */

/* A small set: 8 sessions, 2 groups, 4 slots of 100 bytes, 4 workers. */
static mt_session_table_opts small_opts(void) {
    mt_session_table_opts o = MT_SESSION_TABLE_OPTS_INIT;
    o.capacity = 8;
    o.slots = 4;
    o.max_message = 100;
    o.workers = 4;
    return o;
}

struct fixture {
    char *dir, *dom;
    mt_domain *d;
    mt_session_table *t;
};

static bool fixture_open(struct fixture *f, const char *tag, const mt_session_table_opts *o) {
    memset(f, 0, sizeof *f);
    f->dir = scratch_new(tag);
    f->dom = path_join(f->dir, "dom");
    if (mt_domain_open(f->dom, &f->d) != MT_OK) return false;
    return mt_session_table_create(f->d, "s", o, &f->t) == MT_OK;
}

static void fixture_close(struct fixture *f) {
    mt_session_table_free(f->t);
    mt_domain_free(f->d);
    free(f->dom);
    scratch_free(f->dir);
}

/* Waits for a ticket and copies its response (NUL-terminated) into buf. */
static mt_status wait_text(mt_ticket *tk, uint32_t ms, char *buf, size_t cap) {
    mt_status st = mt_ticket_wait(tk, ms);
    if (st != MT_OK) return st;
    const uint8_t *p = NULL;
    size_t n = 0;
    st = mt_ticket_response(tk, &p, &n);
    if (st != MT_OK) return st;
    if (n >= cap) n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return MT_OK;
}

/* ---- the table ---------------------------------------------------------- */

static void table_refusals(void) {
    char *dir = scratch_new("stab");
    char *dom = path_join(dir, "dom");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    mt_session_table *t = SENTINEL;
    mt_session_table_opts o = small_opts();

    CHECK_ST(mt_session_table_create(NULL, "s", &o, &t), MT_ERR_INVALID);
    CHECK_ST(mt_session_table_create(d, NULL, &o, &t), MT_ERR_INVALID);
    CHECK_ST(mt_session_table_create(d, "s", &o, NULL), MT_ERR_INVALID);
    CHECK_ST(mt_session_table_create(d, "", &o, &t), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "empty");
    CHECK_ST(mt_session_table_create(d, "bad\xff", &o, &t), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "UTF-8");
    char longname[MT_SESSION_TABLE_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_ST(mt_session_table_create(d, longname, &o, &t), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "at most 64");
    CHECK_ST(mt_session_table_create(d, "../x", &o, &t), MT_ERR_INVALID);
    CHECK_ST(mt_session_table_create(d, "-x", &o, &t), MT_ERR_INVALID);
    /* Options: a size from an older header, capacities out of range. */
    mt_session_table_opts bad = o;
    bad.size = 4;
    CHECK_ST(mt_session_table_create(d, "s", &bad, &t), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "MT_SESSION_TABLE_OPTS_INIT");
    bad = o;
    bad.groups = 1;
    CHECK_ST(mt_session_table_create(d, "s", &bad, &t), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "2 to 64");
    bad = o;
    bad.capacity = 1u << 24;
    CHECK_ST(mt_session_table_create(d, "s", &bad, &t), MT_ERR_INVALID);
    bad = o;
    bad.max_message = (16u << 20) + 1;
    CHECK_ST(mt_session_table_create(d, "s", &bad, &t), MT_ERR_INVALID);
    CHECK(t == SENTINEL);
    /* Nothing was made by the refused calls. */
    CHECK_ST(mt_session_table_open(d, "s", &t), MT_ERR_NOT_FOUND);
    CHECK(t == SENTINEL);

    mt_session_table *a = NULL, *b = NULL, *c = NULL;
    REQUIRE_OK(mt_session_table_create(d, "s", &o, &a));
    CHECK(mt_session_table_capacity(a) == 8);
    CHECK(mt_session_table_groups(a) == 2);
    CHECK(mt_session_table_max_message(a) == 100);
    CHECK_ST(mt_session_table_create(d, "s", &o, &t), MT_ERR_EXISTS);
    CHECK(t == SENTINEL);
    CHECK_ST(mt_session_table_open(d, "s", &b), MT_OK);
    CHECK(mt_session_table_capacity(b) == 8);
    /* open_or_create keeps an existing set's capacities ... */
    mt_session_table_opts other = MT_SESSION_TABLE_OPTS_INIT;
    other.capacity = 50;
    CHECK_ST(mt_session_table_open_or_create(d, "s", &other, &c), MT_OK);
    CHECK(mt_session_table_capacity(c) == 8);
    mt_session_table_free(c);
    c = NULL;
    /* ... and makes a new one with the defaults (NULL opts). */
    CHECK_ST(mt_session_table_open_or_create(d, "dflt", NULL, &c), MT_OK);
    CHECK(mt_session_table_capacity(c) == 4096);
    CHECK(mt_session_table_groups(c) == 2);
    CHECK(mt_session_table_max_message(c) == 65536);
    mt_session_table_free(c);
    /* NULL handles. */
    CHECK(mt_session_table_capacity(NULL) == 0);
    CHECK(mt_session_table_groups(NULL) == 0);
    CHECK(mt_session_table_max_message(NULL) == 0);
    CHECK_ST(mt_session_table_set_spin(NULL, 10), MT_ERR_INVALID);
    CHECK_ST(mt_session_table_set_spin(a, 100), MT_OK);
    mt_session_table_free(NULL);

    /* A damaged request area is refused. */
    char *req = path_join(dir, "dom/sessions/s.requests");
    char hdr[8] = "garbage!";
    int fd = open(req, O_WRONLY);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(pwrite(fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr);
        close(fd);
    }
    CHECK_ST(mt_session_table_open(d, "s", &t), MT_ERR_CORRUPT);
    CHECK(t == SENTINEL);
    free(req);

    mt_session_table_free(a);
    mt_session_table_free(b);
    mt_domain_free(d);
    free(dom);
    scratch_free(dir);
}

/* ---- sessions ------------------------------------------------------------ */

static void session_calls_and_refusals(void) {
    struct fixture f;
    mt_session_table_opts o = small_opts();
    o.capacity = 3;
    REQUIRE(fixture_open(&f, "sess", &o));
    mt_session_table *t = f.t;
    uint64_t id = 0, sent = 0x5e5e5e5e;
    const uint8_t user[] = {1, 2, 3, 0, 5};

    /* Refusals leave *id alone. */
    uint64_t keep = sent;
    CHECK_ST(mt_session_create(NULL, "acme", 1, user, sizeof user, &keep), MT_ERR_INVALID);
    CHECK_ST(mt_session_create(t, NULL, 1, user, sizeof user, &keep), MT_ERR_INVALID);
    CHECK_ST(mt_session_create(t, "", 1, user, sizeof user, &keep), MT_ERR_INVALID);
    CHECK_ST(mt_session_create(t, "ac\xc3", 1, user, sizeof user, &keep), MT_ERR_INVALID);
    CHECK_ST(mt_session_create(t, "a/b", 1, user, sizeof user, &keep), MT_ERR_INVALID);
    CHECK_ST(mt_session_create(t, "acme", 1, NULL, 3, &keep), MT_ERR_INVALID);
    CHECK_ST(mt_session_create(t, "acme", 1, user, sizeof user, NULL), MT_ERR_INVALID);
    uint8_t big[MT_SESSION_USER_MAX + 1];
    memset(big, 7, sizeof big);
    CHECK_ST(mt_session_create(t, "acme", 1, big, sizeof big, &keep), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "64");
    char tenant65[MT_SESSION_TENANT_MAX + 2];
    memset(tenant65, 't', sizeof tenant65 - 1);
    tenant65[sizeof tenant65 - 1] = '\0';
    CHECK_ST(mt_session_create(t, tenant65, 1, NULL, 0, &keep), MT_ERR_INVALID);
    CHECK(keep == sent);

    /* Create and look up; the longest tenant and user data fit. */
    char tenant64[MT_SESSION_TENANT_MAX + 1];
    memset(tenant64, 'T', MT_SESSION_TENANT_MAX);
    tenant64[MT_SESSION_TENANT_MAX] = '\0';
    REQUIRE_OK(mt_session_create(t, "acme", 7, user, sizeof user, &id));
    CHECK(id != 0);
    uint64_t id2 = 0;
    REQUIRE_OK(mt_session_create(t, tenant64, 0, big, MT_SESSION_USER_MAX, &id2));
    CHECK(id2 != id);
    mt_session_info s;
    memset(&s, 0xee, sizeof s);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.id == id);
    CHECK(strcmp(s.tenant, "acme") == 0);
    CHECK(s.state == 7);
    CHECK(s.worker == 0);
    CHECK(s.in_flight == 0);
    CHECK(s.user_len == sizeof user && memcmp(s.user, user, sizeof user) == 0);
    CHECK(s.created_ns > 1600000000ull * 1000000000ull);
    CHECK(s.updated_ns >= s.created_ns);
    REQUIRE_OK(mt_session_lookup(t, id2, &s));
    CHECK(strcmp(s.tenant, tenant64) == 0);
    CHECK(s.user_len == MT_SESSION_USER_MAX && memcmp(s.user, big, MT_SESSION_USER_MAX) == 0);

    /* Update: NULL user keeps the data; non-NULL with 0 bytes empties it. */
    REQUIRE_OK(mt_session_update(t, id, 8, NULL, 0));
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.state == 8 && s.user_len == sizeof user && memcmp(s.user, user, sizeof user) == 0);
    const uint8_t nu[] = "new";
    REQUIRE_OK(mt_session_update(t, id, 9, nu, 3));
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.state == 9 && s.user_len == 3 && memcmp(s.user, "new", 3) == 0);
    REQUIRE_OK(mt_session_update(t, id, 9, nu, 0));
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.user_len == 0);
    CHECK_ST(mt_session_update(t, id, 1, NULL, 4), MT_ERR_INVALID);
    CHECK_ST(mt_session_update(t, id, 1, big, sizeof big), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "64");
    CHECK_ST(mt_session_update(NULL, id, 1, NULL, 0), MT_ERR_INVALID);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.state == 9); /* the refused updates changed nothing */

    /* Bind and unbind (to a worker id as mt_worker_id gives it). */
    mt_worker *w = NULL;
    REQUIRE_OK(mt_worker_register(t, 0, &w));
    uint64_t wid = mt_worker_id(w);
    CHECK(wid != 0);
    CHECK_ST(mt_session_bind(t, id, 0), MT_ERR_INVALID);
    /* An id whose record is none of the area's (it used to be accepted). */
    CHECK_ST(mt_session_bind(t, id, UINT64_MAX), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "names no worker of this request area");
    CHECK_ST(mt_session_bind(t, id, (uint64_t)100000 << 32), MT_ERR_INVALID);
    CHECK_ST(mt_session_bind(t, id, wid), MT_OK);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.worker == wid);
    CHECK_ST(mt_session_unbind(t, id), MT_OK);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.worker == 0);
    mt_worker_free(w);

    /* Full: the third session fills the table of 3. */
    uint64_t id3 = 0, more = sent;
    REQUIRE_OK(mt_session_create(t, "acme", 0, NULL, 0, &id3));
    CHECK_ST(mt_session_create(t, "acme", 0, NULL, 0, &more), MT_ERR_FULL);
    CHECK(more == sent);

    /* End; the id is stale for good, even once its slot is reused. */
    CHECK_ST(mt_session_end(t, id), MT_OK);
    mt_session_info unchanged;
    memset(&unchanged, 0xab, sizeof unchanged);
    CHECK_ST(mt_session_lookup(t, id, &unchanged), MT_ERR_NOT_FOUND);
    CHECK(((unsigned char *)&unchanged)[0] == 0xab);
    CHECK_ST(mt_session_end(t, id), MT_ERR_NOT_FOUND);
    uint64_t reused = 0;
    REQUIRE_OK(mt_session_create(t, "other", 0, NULL, 0, &reused));
    CHECK((uint32_t)reused == (uint32_t)id); /* the same slot ... */
    CHECK(reused != id);                     /* ... at a new generation */
    CHECK_ST(mt_session_lookup(t, id, &s), MT_ERR_NOT_FOUND);
    CHECK_ST(mt_session_update(t, id, 1, NULL, 0), MT_ERR_NOT_FOUND);
    CHECK_ST(mt_session_bind(t, id, wid), MT_ERR_NOT_FOUND);
    CHECK_ST(mt_session_unbind(t, id), MT_ERR_NOT_FOUND);
    CHECK_ST(mt_session_end(t, id), MT_ERR_NOT_FOUND);
    REQUIRE_OK(mt_session_lookup(t, reused, &s));
    CHECK(strcmp(s.tenant, "other") == 0);
    /* Malformed ids never resolve. */
    CHECK_ST(mt_session_lookup(t, 0, &s), MT_ERR_NOT_FOUND);
    CHECK_ST(mt_session_lookup(t, 1000, &s), MT_ERR_NOT_FOUND);
    CHECK_ST(mt_session_lookup(t, id, NULL), MT_ERR_INVALID);
    CHECK_ST(mt_session_lookup(NULL, reused, &s), MT_ERR_INVALID);

    fixture_close(&f);
}

/* ---- dispatch in one process -------------------------------------------- */

static void request_life_cycle(void) {
    struct fixture f;
    mt_session_table_opts o = small_opts();
    REQUIRE(fixture_open(&f, "req", &o));
    mt_session_table *t = f.t;
    uint64_t id = 0;
    REQUIRE_OK(mt_session_create(t, "acme", 0, NULL, 0, &id));

    /* Worker refusals. */
    mt_worker *w = SENTINEL;
    CHECK_ST(mt_worker_register(t, 2, &w), MT_ERR_INVALID);
    CHECK_ST(mt_worker_register(NULL, 0, &w), MT_ERR_INVALID);
    CHECK_ST(mt_worker_register(t, 0, NULL), MT_ERR_INVALID);
    CHECK(w == SENTINEL);
    REQUIRE_OK(mt_worker_register(t, 1, &w));
    CHECK(mt_worker_group(w) == 1);
    CHECK(mt_worker_id(NULL) == 0 && mt_worker_group(NULL) == 0);
    mt_request *r = SENTINEL;
    CHECK_ST(mt_worker_try_next(w, &r), MT_ERR_DEFERRED);
    double t0 = now_ms();
    CHECK_ST(mt_worker_next(w, 50, &r), MT_ERR_TIMEOUT);
    CHECK(now_ms() - t0 >= 45);
    CHECK_ST(mt_worker_next(NULL, 0, &r), MT_ERR_INVALID);
    CHECK_ST(mt_worker_next(w, 0, NULL), MT_ERR_INVALID);
    CHECK(r == SENTINEL);

    /* Submit refusals. */
    mt_ticket *tk = SENTINEL;
    uint8_t big[101];
    memset(big, 'x', sizeof big);
    CHECK_ST(mt_request_submit(t, id, 1, big, sizeof big, &tk), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "100");
    CHECK_ST(mt_request_submit(t, id, 2, big, 1, &tk), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "group");
    CHECK_ST(mt_request_submit(t, id, 1, NULL, 1, &tk), MT_ERR_INVALID);
    CHECK_ST(mt_request_submit(t, id, 1, big, 1, NULL), MT_ERR_INVALID);
    CHECK_ST(mt_request_submit(NULL, id, 1, big, 1, &tk), MT_ERR_INVALID);
    CHECK_ST(mt_request_submit(t, id + (1ull << 32), 1, big, 1, &tk), MT_ERR_NOT_FOUND);
    CHECK(tk == SENTINEL);

    /* A round trip, read in place on both sides. */
    REQUIRE_OK(mt_request_submit(t, id, 1, (const uint8_t *)"hello", 5, &tk));
    CHECK_ST(mt_ticket_poll(tk), MT_ERR_DEFERRED);
    const uint8_t *p = SENTINEL;
    size_t n = 12345;
    CHECK_ST(mt_ticket_response(tk, &p, &n), MT_ERR_INVALID);
    CHECK(p == SENTINEL && n == 12345);
    mt_session_info s;
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.in_flight == 1);
    REQUIRE_OK(mt_worker_try_next(w, &r));
    CHECK(mt_request_session(r) == id);
    CHECK(mt_request_session(NULL) == 0);
    REQUIRE_OK(mt_request_data(r, &p, &n));
    CHECK(n == 5 && memcmp(p, "hello", 5) == 0);
    CHECK_ST(mt_request_data(r, NULL, &n), MT_ERR_INVALID);
    CHECK_ST(mt_request_data(NULL, &p, &n), MT_ERR_INVALID);
    /* The taker is now the session's worker. */
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.worker == mt_worker_id(w));
    /* One request at a time per worker. */
    mt_request *r2 = SENTINEL;
    CHECK_ST(mt_worker_try_next(w, &r2), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "still open");
    CHECK(r2 == SENTINEL);
    /* Too long a response: refused with the limit, the request stays open. */
    CHECK_ST(mt_request_respond(r, big, sizeof big), MT_ERR_INVALID);
    CHECK_CONTAINS(mt_last_error(), "100");
    CHECK_ST(mt_request_respond(r, NULL, 3), MT_ERR_INVALID);
    CHECK_ST(mt_ticket_poll(tk), MT_ERR_DEFERRED);
    CHECK_ST(mt_request_respond(r, (const uint8_t *)"HELLO back", 10), MT_OK);
    CHECK_ST(mt_request_respond(r, (const uint8_t *)"twice", 5), MT_ERR_INVALID);
    CHECK_ST(mt_request_data(r, &p, &n), MT_ERR_INVALID);
    /* Answered: the worker may take the next one before the request is freed. */
    CHECK_ST(mt_worker_try_next(w, &r2), MT_ERR_DEFERRED);
    mt_request_free(r);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_OK);
    REQUIRE_OK(mt_ticket_response(tk, &p, &n));
    CHECK(n == 10 && memcmp(p, "HELLO back", 10) == 0);
    CHECK_ST(mt_ticket_wait(tk, 0), MT_OK); /* again: still there */
    CHECK_ST(mt_ticket_poll(tk), MT_OK);
    CHECK_ST(mt_ticket_response(tk, NULL, &n), MT_ERR_INVALID);
    CHECK_ST(mt_ticket_response(NULL, &p, &n), MT_ERR_INVALID);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.in_flight == 0);
    mt_ticket_free(tk);

    /* Empty request and empty response; the largest ones fit. */
    REQUIRE_OK(mt_request_submit(t, id, 1, NULL, 0, &tk));
    REQUIRE_OK(mt_worker_next(w, T_WAIT, &r));
    REQUIRE_OK(mt_request_data(r, &p, &n));
    CHECK(n == 0);
    CHECK_ST(mt_request_respond(r, NULL, 0), MT_OK);
    mt_request_free(r);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_OK);
    CHECK_ST(mt_ticket_response(tk, &p, &n), MT_OK);
    CHECK(n == 0);
    mt_ticket_free(tk);
    REQUIRE_OK(mt_request_submit(t, id, 1, big, 100, &tk));
    REQUIRE_OK(mt_worker_next(w, T_WAIT, &r));
    REQUIRE_OK(mt_request_data(r, &p, &n));
    CHECK(n == 100 && memcmp(p, big, 100) == 0);
    CHECK_ST(mt_request_respond(r, big, 100), MT_OK);
    mt_request_free(r);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_OK);
    CHECK_ST(mt_ticket_response(tk, &p, &n), MT_OK);
    CHECK(n == 100);
    mt_ticket_free(tk);

    /* A request freed unanswered fails: MT_ERR_UNAVAILABLE, every time. */
    REQUIRE_OK(mt_request_submit(t, id, 1, (const uint8_t *)"drop", 4, &tk));
    REQUIRE_OK(mt_worker_next(w, T_WAIT, &r));
    mt_request_free(r);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_ERR_UNAVAILABLE);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_ERR_UNAVAILABLE);
    CHECK_ST(mt_ticket_poll(tk), MT_ERR_UNAVAILABLE);
    CHECK_ST(mt_ticket_response(tk, &p, &n), MT_ERR_INVALID);
    mt_ticket_free(tk);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.in_flight == 0);

    /* No worker answers in time: MT_ERR_TIMEOUT, and the ticket stays valid. */
    REQUIRE_OK(mt_request_submit(t, id, 1, (const uint8_t *)"late", 4, &tk));
    CHECK_ST(mt_ticket_wait(tk, 30), MT_ERR_TIMEOUT);
    REQUIRE_OK(mt_worker_next(w, T_WAIT, &r));
    CHECK_ST(mt_request_respond(r, (const uint8_t *)"ok", 2), MT_OK);
    mt_request_free(r);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_OK);
    mt_ticket_free(tk);

    /* A ticket freed unanswered withdraws its request. */
    REQUIRE_OK(mt_request_submit(t, id, 1, (const uint8_t *)"gone", 4, &tk));
    mt_ticket_free(tk);
    CHECK_ST(mt_worker_try_next(w, &r), MT_ERR_DEFERRED);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.in_flight == 0);

    /* Every slot in use by this live submitter: MT_ERR_FULL. */
    mt_ticket *held[4] = {0};
    for (int i = 0; i < 4; i++) CHECK_ST(mt_request_submit(t, id, 1, big, 1, &held[i]), MT_OK);
    tk = SENTINEL;
    CHECK_ST(mt_request_submit(t, id, 1, big, 1, &tk), MT_ERR_FULL);
    CHECK(tk == SENTINEL);
    for (int i = 0; i < 4; i++) mt_ticket_free(held[i]);
    REQUIRE_OK(mt_request_submit(t, id, 1, big, 1, &tk));
    mt_ticket_free(tk);

    /* A group without a worker: MT_ERR_UNAVAILABLE after the first check (100 ms). */
    REQUIRE_OK(mt_request_submit(t, id, 0, (const uint8_t *)"g0", 2, &tk));
    t0 = now_ms();
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_ERR_UNAVAILABLE);
    CHECK_CONTAINS(mt_last_error(), "no live worker");
    CHECK(now_ms() - t0 < 2000);
    mt_ticket_free(tk);

    /* A request outlives mt_worker_free: it is answered, then the worker goes. */
    REQUIRE_OK(mt_request_submit(t, id, 1, (const uint8_t *)"last", 4, &tk));
    REQUIRE_OK(mt_worker_next(w, T_WAIT, &r));
    mt_worker_free(w);
    CHECK_ST(mt_request_respond(r, (const uint8_t *)"LAST", 4), MT_OK);
    mt_request_free(r);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_OK);
    mt_ticket_free(tk);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.worker == 0); /* unregistered: its sessions are unbound */

    /* Worker records are limited (4 here). */
    mt_worker *ws[4] = {0};
    for (int i = 0; i < 4; i++) CHECK_ST(mt_worker_register(t, 0, &ws[i]), MT_OK);
    w = SENTINEL;
    CHECK_ST(mt_worker_register(t, 0, &w), MT_ERR_FULL);
    CHECK(w == SENTINEL);
    for (int i = 0; i < 4; i++) mt_worker_free(ws[i]);
    mt_worker_free(NULL);
    mt_request_free(NULL);
    mt_ticket_free(NULL);

    /* Workers and tickets outlive their table handle. */
    mt_session_table *t2 = NULL;
    REQUIRE_OK(mt_session_table_open(f.d, "s", &t2));
    REQUIRE_OK(mt_worker_register(t2, 1, &w));
    REQUIRE_OK(mt_request_submit(t2, id, 1, (const uint8_t *)"x", 1, &tk));
    mt_session_table_free(t2);
    REQUIRE_OK(mt_worker_next(w, T_WAIT, &r));
    CHECK_ST(mt_request_respond(r, (const uint8_t *)"y", 1), MT_OK);
    mt_request_free(r);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_OK);
    mt_ticket_free(tk);
    mt_worker_free(w);

    fixture_close(&f);
}

/* Closing a worker with an open request (docs/session.md, "Closing a worker
 * with an open request"): the request stays answerable, the worker stays
 * registered until it is answered or freed, then its sessions and the
 * requests queued to it meanwhile go to another worker of the group. The
 * same behaviour as Python's Worker.close() (test_session.py). */
static void worker_freed_with_an_open_request(void) {
    struct fixture f;
    mt_session_table_opts o = small_opts();
    REQUIRE(fixture_open(&f, "close", &o));
    mt_session_table *t = f.t;
    uint64_t id = 0;
    REQUIRE_OK(mt_session_create(t, "acme", 0, NULL, 0, &id));
    mt_worker *w = NULL, *peer = NULL;
    REQUIRE_OK(mt_worker_register(t, 0, &w));
    const uint64_t wid = mt_worker_id(w);
    mt_ticket *tk = NULL, *later = NULL;
    mt_request *r = NULL, *moved = NULL;
    mt_session_info s;
    char buf[64];

    REQUIRE_OK(mt_request_submit(t, id, 0, (const uint8_t *)"held", 4, &tk));
    REQUIRE_OK(mt_worker_next(w, T_WAIT, &r));
    mt_worker_free(w);
    /* Still registered: the session stays bound to it ... */
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.worker == wid);
    /* ... and a request of that session waits for it, not for the peer. */
    REQUIRE_OK(mt_worker_register(t, 0, &peer));
    REQUIRE_OK(mt_request_submit(t, id, 0, (const uint8_t *)"later", 5, &later));
    CHECK_ST(mt_worker_try_next(peer, &moved), MT_ERR_DEFERRED);
    /* The open request is still readable and answerable. */
    const uint8_t *p = NULL;
    size_t n = 0;
    REQUIRE_OK(mt_request_data(r, &p, &n));
    CHECK(n == 4 && memcmp(p, "held", 4) == 0);
    CHECK_ST(mt_request_respond(r, (const uint8_t *)"answered", 8), MT_OK);
    CHECK_ST(wait_text(tk, T_WAIT, buf, sizeof buf), MT_OK);
    CHECK(strcmp(buf, "answered") == 0);
    mt_ticket_free(tk);
    /* Answered, the worker is unregistered (mt_request_free is still
     * needed for the handle): the waiting request goes to the peer. */
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.worker == 0);
    mt_request_free(r);
    REQUIRE_OK(mt_worker_next(peer, T_WAIT, &moved));
    REQUIRE_OK(mt_request_data(moved, &p, &n));
    CHECK(n == 5 && memcmp(p, "later", 5) == 0);
    CHECK_ST(mt_request_respond(moved, (const uint8_t *)"from the peer", 13), MT_OK);
    mt_request_free(moved);
    CHECK_ST(wait_text(later, T_WAIT, buf, sizeof buf), MT_OK);
    CHECK(strcmp(buf, "from the peer") == 0);
    mt_ticket_free(later);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.worker == mt_worker_id(peer) && s.in_flight == 0);

    /* Freed unanswered after its worker: it fails for its submitter, and
     * the worker goes with it. */
    REQUIRE_OK(mt_request_submit(t, id, 0, (const uint8_t *)"x", 1, &tk));
    REQUIRE_OK(mt_worker_next(peer, T_WAIT, &r));
    mt_worker_free(peer);
    mt_request_free(r);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_ERR_UNAVAILABLE);
    mt_ticket_free(tk);
    REQUIRE_OK(mt_session_lookup(t, id, &s));
    CHECK(s.worker == 0 && s.in_flight == 0);
    /* Every worker record is free again: four can register. */
    mt_worker *ws[4] = {0};
    for (int i = 0; i < 4; i++) CHECK_ST(mt_worker_register(t, 1, &ws[i]), MT_OK);
    for (int i = 0; i < 4; i++) mt_worker_free(ws[i]);
    fixture_close(&f);
}

/* Two threads on one worker: the second one is refused, never both in. */
struct next_arg {
    mt_worker *w;
    mt_status st;
    char msg[256];
};

static void *next_thread(void *p) {
    struct next_arg *a = p;
    mt_request *r = NULL;
    a->st = mt_worker_next(a->w, 300, &r);
    snprintf(a->msg, sizeof a->msg, "%s", mt_last_error());
    if (a->st == MT_OK) mt_request_free(r);
    return NULL;
}

static void one_thread_at_a_time_per_worker(void) {
    struct fixture f;
    mt_session_table_opts o = small_opts();
    REQUIRE(fixture_open(&f, "thr", &o));
    mt_worker *w = NULL;
    REQUIRE_OK(mt_worker_register(f.t, 0, &w));
    struct next_arg a = {w, MT_OK, ""};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, next_thread, &a) == 0);
    /* While the thread waits in mt_worker_next, this one is refused. */
    bool refused = false;
    char msg[256] = "";
    for (double t0 = now_ms(); now_ms() - t0 < 250 && !refused;) {
        mt_request *r = SENTINEL;
        mt_status st = mt_worker_try_next(w, &r);
        if (st == MT_ERR_INVALID) {
            refused = true;
            snprintf(msg, sizeof msg, "%s", mt_last_error());
        } else {
            CHECK_ST(st, MT_ERR_DEFERRED);
            struct timespec ms1 = {0, 1000 * 1000};
            nanosleep(&ms1, NULL);
        }
        CHECK(r == SENTINEL);
    }
    pthread_join(th, NULL);
    /* Either this thread was refused, or (it came first) the other one was. */
    if (refused) {
        CHECK_CONTAINS(msg, "another thread");
        CHECK_ST(a.st, MT_ERR_TIMEOUT);
    } else {
        CHECK_ST(a.st, MT_ERR_INVALID);
        CHECK_CONTAINS(a.msg, "another thread");
    }
    /* Afterwards the worker is usable again. */
    mt_request *r = SENTINEL;
    CHECK_ST(mt_worker_try_next(w, &r), MT_ERR_DEFERRED);
    mt_worker_free(w);
    fixture_close(&f);
}

/* ---- real processes ------------------------------------------------------ */

/* What a worker child says on the shared pipe: {kind, pid}. */
enum { MSG_READY = 'R', MSG_HOLDING = 'H' };

/*
 * A worker child: opens its own handles, registers in `group`, says READY,
 * then serves until its parent is gone:
 *   "hold:<name>"  the first worker to see this name (a marker file made
 *                  with O_EXCL) says HOLDING and never answers (it waits to
 *                  be killed); any later one answers like any request;
 *   anything else  "<pid> <group>: <the request uppercased>".
 */
static void worker_child(const char *dom, const char *dir, uint32_t group, int wfd) {
    mt_domain *d = NULL;
    mt_session_table *t = NULL;
    mt_worker *w = NULL;
    if (mt_domain_open(dom, &d) != MT_OK || mt_session_table_open(d, "s", &t) != MT_OK ||
        mt_worker_register(t, group, &w) != MT_OK) {
        fprintf(stderr, "worker %d: %s\n", (int)getpid(), mt_last_error());
        _exit(2);
    }
    pid_t parent = getppid();
    int msg[2] = {MSG_READY, (int)getpid()};
    if (write(wfd, msg, sizeof msg) != (ssize_t)sizeof msg) _exit(3);
    for (;;) {
        mt_request *r = NULL;
        mt_status st = mt_worker_next(w, 200, &r);
        if (st == MT_ERR_TIMEOUT) {
            if (getppid() != parent) _exit(0);
            continue;
        }
        if (st != MT_OK) {
            fprintf(stderr, "worker %d: next: %s\n", (int)getpid(), mt_last_error());
            _exit(4);
        }
        const uint8_t *p = NULL;
        size_t n = 0;
        if (mt_request_data(r, &p, &n) != MT_OK) _exit(5);
        if (n > 5 && memcmp(p, "hold:", 5) == 0) {
            char name[64];
            size_t k = n - 5 < sizeof name - 1 ? n - 5 : sizeof name - 1;
            memcpy(name, p + 5, k);
            name[k] = '\0';
            char *marker = path_join(dir, name);
            int fd = open(marker, O_WRONLY | O_CREAT | O_EXCL, 0600);
            free(marker);
            if (fd >= 0) {
                close(fd);
                msg[0] = MSG_HOLDING;
                if (write(wfd, msg, sizeof msg) != (ssize_t)sizeof msg) _exit(3);
                for (;;) pause(); /* killed here, the request unanswered */
            }
        }
        char out[160];
        int len = snprintf(out, sizeof out, "%d %u: ", (int)getpid(), group);
        for (size_t i = 0; i < n && (size_t)len < sizeof out - 1; i++)
            out[len++] = (char)toupper(p[i]);
        if (mt_request_respond(r, (const uint8_t *)out, (size_t)len) != MT_OK) _exit(6);
        mt_request_free(r);
    }
}

/* Reads one message from the worker pipe within `ms`; false on timeout. */
static bool read_msg(int fd, int ms, int *kind, int *pid) {
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, ms) != 1) return false;
    int msg[2];
    if (read(fd, msg, sizeof msg) != (ssize_t)sizeof msg) return false;
    *kind = msg[0];
    *pid = msg[1];
    return true;
}

/* Forks a worker of `group` and waits until it has registered; its pid or -1. */
static pid_t spawn_worker(struct fixture *f, uint32_t group, int pipefd[2]) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(pipefd[0]);
        worker_child(f->dom, f->dir, group, pipefd[1]);
    }
    int kind = 0, who = 0;
    if (!read_msg(pipefd[0], 10000, &kind, &who) || kind != MSG_READY || who != pid) {
        fprintf(stderr, "worker %d did not get ready\n", (int)pid);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

static void reap_child(pid_t pid) {
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Submits `text` for `session` to `group` and waits for the answer; its pid or -1. */
static int ask(mt_session_table *t, uint64_t session, uint32_t group, const char *text,
               char *answer, size_t cap) {
    mt_ticket *tk = NULL;
    if (mt_request_submit(t, session, group, (const uint8_t *)text, strlen(text), &tk) != MT_OK)
        return -1;
    mt_status st = wait_text(tk, T_WAIT, answer, cap);
    mt_ticket_free(tk);
    return st == MT_OK ? atoi(answer) : -1;
}

static void workers_in_child_processes_sticky_sessions(void) {
    struct fixture f;
    mt_session_table_opts o = small_opts();
    o.capacity = 16;
    o.slots = 16;
    REQUIRE(fixture_open(&f, "sticky", &o));
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t g0[2] = {-1, -1}, g1 = -1;
    g0[0] = spawn_worker(&f, 0, pfd);
    g0[1] = spawn_worker(&f, 0, pfd);
    g1 = spawn_worker(&f, 1, pfd);
    CHECK(g0[0] > 0 && g0[1] > 0 && g1 > 0);

    enum { S = 6, ROUNDS = 5 };
    uint64_t ids[S];
    int owner[S];
    int served_by[2] = {0, 0};
    for (int i = 0; i < S; i++) {
        CHECK_ST(mt_session_create(f.t, "acme", 0, NULL, 0, &ids[i]), MT_OK);
        owner[i] = -1;
    }
    char answer[200], text[32], want[64];
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < S; i++) {
            snprintf(text, sizeof text, "s%d r%d", i, round);
            int pid = ask(f.t, ids[i], 0, text, answer, sizeof answer);
            CHECK(pid == g0[0] || pid == g0[1]);
            snprintf(want, sizeof want, "%d 0: S%d R%d", pid, i, round);
            CHECK(strcmp(answer, want) == 0);
            /* Sticky: every request of a session goes to its first worker. */
            if (owner[i] < 0) owner[i] = pid;
            CHECK(pid == owner[i]);
            served_by[pid == g0[1]]++;
            /* The other group: any of its workers; the binding stays. */
            pid = ask(f.t, ids[i], 1, "other group", answer, sizeof answer);
            CHECK(pid == g1);
            snprintf(want, sizeof want, "%d 1: OTHER GROUP", g1);
            CHECK(strcmp(answer, want) == 0);
        }
    }
    /* Several requests of one session in flight at once: all to its worker. */
    mt_ticket *tk[8];
    for (int k = 0; k < 8; k++) {
        snprintf(text, sizeof text, "burst %d", k);
        CHECK_ST(mt_request_submit(f.t, ids[0], 0, (const uint8_t *)text, strlen(text), &tk[k]),
                 MT_OK);
    }
    for (int k = 0; k < 8; k++) {
        CHECK_ST(wait_text(tk[k], T_WAIT, answer, sizeof answer), MT_OK);
        CHECK(atoi(answer) == owner[0]);
        mt_ticket_free(tk[k]);
    }
    printf("    group 0: %d and %d requests served by the two workers\n", served_by[0],
           served_by[1]);
    CHECK(served_by[0] + served_by[1] == S * ROUNDS);
    mt_session_info s;
    for (int i = 0; i < S; i++) {
        CHECK_ST(mt_session_lookup(f.t, ids[i], &s), MT_OK);
        CHECK(s.worker != 0 && s.in_flight == 0);
    }
    reap_child(g0[0]);
    reap_child(g0[1]);
    reap_child(g1);
    close(pfd[0]);
    close(pfd[1]);
    fixture_close(&f);
}

static void killed_worker_request_answered_by_peer_then_unavailable(void) {
    struct fixture f;
    mt_session_table_opts o = small_opts();
    o.slots = 16;
    REQUIRE(fixture_open(&f, "kill", &o));
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t a = spawn_worker(&f, 0, pfd);
    pid_t b = spawn_worker(&f, 0, pfd);
    REQUIRE(a > 0 && b > 0);
    uint64_t id = 0, other = 0;
    REQUIRE_OK(mt_session_create(f.t, "acme", 0, NULL, 0, &id));
    REQUIRE_OK(mt_session_create(f.t, "acme", 0, NULL, 0, &other));

    /* Bind the session: its first request's worker becomes its own. */
    char answer[200];
    int first = ask(f.t, id, 0, "hello", answer, sizeof answer);
    CHECK(first == a || first == b);
    int survivor = first == a ? b : a;

    /* A request its worker takes and never answers; more queued behind it. */
    mt_ticket *held = NULL, *queued[3] = {0};
    REQUIRE_OK(mt_request_submit(f.t, id, 0, (const uint8_t *)"hold:one", 8, &held));
    int kind = 0, who = 0;
    CHECK(read_msg(pfd[0], T_WAIT, &kind, &who));
    CHECK(kind == MSG_HOLDING && who == first);
    for (int k = 0; k < 3; k++)
        CHECK_ST(mt_request_submit(f.t, id, 0, (const uint8_t *)"next", 4, &queued[k]), MT_OK);
    mt_session_info s;
    REQUIRE_OK(mt_session_lookup(f.t, id, &s));
    CHECK(s.in_flight == 4);
    CHECK_ST(mt_ticket_poll(held), MT_ERR_DEFERRED);

    /* Kill it mid-request. The waiting submitter finds it dead and the
     * survivor answers the held request (once) and the queued ones. */
    double t0 = now_ms();
    CHECK(kill(first, SIGKILL) == 0);
    int status = 0;
    CHECK(waitpid(first, &status, 0) == first);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK_ST(wait_text(held, T_WAIT, answer, sizeof answer), MT_OK);
    printf("    held request answered by the survivor %.0f ms after the kill: \"%s\"\n",
           now_ms() - t0, answer);
    char want[64];
    snprintf(want, sizeof want, "%d 0: HOLD:ONE", survivor);
    CHECK(strcmp(answer, want) == 0);
    mt_ticket_free(held);
    for (int k = 0; k < 3; k++) {
        CHECK_ST(wait_text(queued[k], T_WAIT, answer, sizeof answer), MT_OK);
        CHECK(atoi(answer) == survivor);
        mt_ticket_free(queued[k]);
    }
    /* The session moved to the survivor. */
    REQUIRE_OK(mt_session_lookup(f.t, id, &s));
    CHECK(s.in_flight == 0);
    CHECK(s.worker != 0);
    CHECK(ask(f.t, id, 0, "again", answer, sizeof answer) == survivor);
    CHECK(ask(f.t, other, 0, "other", answer, sizeof answer) == survivor);

    /* Now the last worker of the group dies mid-request: MT_ERR_UNAVAILABLE. */
    REQUIRE_OK(mt_request_submit(f.t, id, 0, (const uint8_t *)"hold:two", 8, &held));
    CHECK(read_msg(pfd[0], T_WAIT, &kind, &who));
    CHECK(kind == MSG_HOLDING && who == survivor);
    CHECK(kill(survivor, SIGKILL) == 0);
    CHECK(waitpid(survivor, &status, 0) == survivor);
    CHECK_ST(mt_ticket_wait(held, T_WAIT), MT_ERR_UNAVAILABLE);
    CHECK_CONTAINS(mt_last_error(), "no live worker");
    CHECK_ST(mt_ticket_poll(held), MT_ERR_UNAVAILABLE);
    mt_ticket_free(held);
    REQUIRE_OK(mt_session_lookup(f.t, id, &s));
    CHECK(s.in_flight == 0);
    CHECK(s.worker == 0);
    /* And so is a new request to the empty group. */
    REQUIRE_OK(mt_request_submit(f.t, id, 0, (const uint8_t *)"anyone", 6, &held));
    CHECK_ST(mt_ticket_wait(held, T_WAIT), MT_ERR_UNAVAILABLE);
    mt_ticket_free(held);

    /* A new worker of the group serves the session again. */
    pid_t c = spawn_worker(&f, 0, pfd);
    CHECK(c > 0);
    CHECK(ask(f.t, id, 0, "back", answer, sizeof answer) == c);
    reap_child(c);
    close(pfd[0]);
    close(pfd[1]);
    fixture_close(&f);
}

/* A submitter in a child process, the worker in this one. */
static void submitter_in_a_child(void) {
    struct fixture f;
    mt_session_table_opts o = small_opts();
    REQUIRE(fixture_open(&f, "sub", &o));
    uint64_t id = 0;
    REQUIRE_OK(mt_session_create(f.t, "acme", 0, NULL, 0, &id));
    mt_worker *w = NULL;
    REQUIRE_OK(mt_worker_register(f.t, 1, &w));
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        mt_domain *d = NULL;
        mt_session_table *t = NULL;
        if (mt_domain_open(f.dom, &d) != MT_OK || mt_session_table_open(d, "s", &t) != MT_OK)
            _exit(2);
        for (int k = 0; k < 50; k++) {
            char text[32], answer[64];
            snprintf(text, sizeof text, "%d", k);
            mt_ticket *tk = NULL;
            if (mt_request_submit(t, id, 1, (const uint8_t *)text, strlen(text), &tk) != MT_OK)
                _exit(3);
            if (wait_text(tk, T_WAIT, answer, sizeof answer) != MT_OK || atoi(answer) != 2 * k)
                _exit(4);
            mt_ticket_free(tk);
        }
        mt_session_table_free(t);
        mt_domain_free(d);
        _exit(0);
    }
    int served = 0;
    while (served < 50) {
        mt_request *r = NULL;
        mt_status st = mt_worker_next(w, T_WAIT, &r);
        CHECK_ST(st, MT_OK);
        if (st != MT_OK) break;
        const uint8_t *p = NULL;
        size_t n = 0;
        CHECK_ST(mt_request_data(r, &p, &n), MT_OK);
        char text[32], out[32];
        snprintf(text, sizeof text, "%.*s", (int)n, (const char *)p);
        int len = snprintf(out, sizeof out, "%d", 2 * atoi(text));
        CHECK_ST(mt_request_respond(r, (const uint8_t *)out, (size_t)len), MT_OK);
        mt_request_free(r);
        served++;
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(served == 50);
    mt_worker_free(w);
    fixture_close(&f);
}

extern char **environ;

/* examples/c_worker as the demo runs it: it waits for the table, serves
 * group 1 with "<pid> g1: <UPPERCASED>", prints a line per request, stops
 * cleanly on SIGTERM (unregistered: a new request is then unavailable). */
static void example_c_worker(void) {
    /* Under make (which sets C_WORKER and MTIPC_TEST_STRICT) a missing
     * c_worker is a failure; run by hand without either, a skip. */
    const char *exe = getenv("C_WORKER");
    int named = exe != NULL && exe[0] != '\0';
    const char *strict = getenv("MTIPC_TEST_STRICT");
    if (!named) exe = "target/c/c_worker";
    if (access(exe, X_OK) != 0) {
        char why[512];
        snprintf(why, sizeof why, "%s cannot be run (%s): make c-examples builds it", exe,
                 strerror(errno));
        if (named || (strict != NULL && strcmp(strict, "1") == 0)) {
            mt_test_checks++;
            mt_test_fail(__FILE__, __LINE__, why);
        } else {
            SKIP(why);
        }
        return;
    }
    char *dir = scratch_new("cworker");
    char *dom = path_join(dir, "dom");
    char *log = path_join(dir, "out.log");
    mt_domain *d = NULL;
    REQUIRE_OK(mt_domain_open(dom, &d));
    /* Start the worker before the table exists: it waits for it. */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char *argv[] = {(char *)exe, dom, "shop", "1", NULL};
    pid_t pid = -1;
    fflush(NULL);
    int rc = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    REQUIRE(rc == 0);
    mt_session_table *t = NULL;
    mt_session_table_opts o = small_opts();
    CHECK_ST(mt_session_table_create(d, "shop", &o, &t), MT_OK);
    uint64_t id = 0;
    CHECK_ST(mt_session_create(t, "acme", 0, NULL, 0, &id), MT_OK);
    char want[64], answer[200];
    snprintf(want, sizeof want, "%d g1: HELLO, WORKER", (int)pid);
    /* Until it has registered, the group has no worker: retry. */
    mt_status st = MT_ERR_UNAVAILABLE;
    for (int i = 0; i < 100 && st == MT_ERR_UNAVAILABLE; i++) {
        mt_ticket *tk = NULL;
        CHECK_ST(mt_request_submit(t, id, 1, (const uint8_t *)"hello, worker", 13, &tk), MT_OK);
        st = wait_text(tk, T_WAIT, answer, sizeof answer);
        mt_ticket_free(tk);
    }
    CHECK_ST(st, MT_OK);
    CHECK(strcmp(answer, want) == 0);
    /* A response longer than the table's 100 bytes is cut to them. */
    char big[100];
    memset(big, 'a', sizeof big);
    mt_ticket *tk = NULL;
    CHECK_ST(mt_request_submit(t, id, 1, (const uint8_t *)big, sizeof big, &tk), MT_OK);
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_OK);
    CHECK_ST(mt_ticket_response(tk, &p, &n), MT_OK);
    CHECK(n == 100 && p[n - 1] == 'A');
    mt_ticket_free(tk);
    mt_session_info s;
    CHECK_ST(mt_session_lookup(t, id, &s), MT_OK);
    CHECK(s.worker != 0);

    CHECK(kill(pid, SIGTERM) == 0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* Unregistered: its session is unbound, the group is empty. */
    CHECK_ST(mt_session_lookup(t, id, &s), MT_OK);
    CHECK(s.worker == 0);
    CHECK_ST(mt_request_submit(t, id, 1, (const uint8_t *)"x", 1, &tk), MT_OK);
    CHECK_ST(mt_ticket_wait(tk, T_WAIT), MT_ERR_UNAVAILABLE);
    mt_ticket_free(tk);

    char out[4096] = {0};
    CHECK(read_file(log, out, sizeof out - 1) > 0);
    snprintf(want, sizeof want, "c-worker %d g1: serving session set shop", (int)pid);
    CHECK_CONTAINS(out, want);
    CHECK_CONTAINS(out, "\"hello, worker\" -> \"");
    snprintf(want, sizeof want, "c-worker %d g1: stopped after 2 requests", (int)pid);
    CHECK_CONTAINS(out, want);

    mt_session_table_free(t);
    mt_domain_free(d);
    free(log);
    free(dom);
    scratch_free(dir);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(table_refusals);
    RUN(session_calls_and_refusals);
    RUN(request_life_cycle);
    RUN(worker_freed_with_an_open_request);
    RUN(one_thread_at_a_time_per_worker);
    RUN(workers_in_child_processes_sticky_sessions);
    RUN(killed_worker_request_answered_by_peer_then_unavailable);
    RUN(submitter_in_a_child);
    RUN(example_c_worker);
    return mt_test_exit("test_session");
}
