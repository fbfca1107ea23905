/* A worker in C: registers in one group of a session set and serves its
 * requests until SIGTERM or SIGINT, answering each with
 *
 *     "<pid> g<group>: <the request, uppercased>"
 *
 * and printing one line per request served (stdout is line-buffered):
 *
 *     c-worker 4242 g1: session 0x0000000100000003 "hello" -> "4242 g1: HELLO"
 *
 * Build and run:
 *
 *   cc c_worker.c $(pkg-config --cflags --libs mtipc) -o c_worker
 *   ./c_worker DOMAIN_DIR TABLE_NAME [GROUP]        (GROUP: 0 by default)
 *
 * The session set TABLE_NAME is made by someone else (a connection
 * manager: mt_session_table_create, or mtipc.SessionTable in Python); if it
 * is not there yet, the worker waits for it up to 10 s. The manager
 * submits requests for its sessions to the group; a session's requests
 * keep going to the worker that took its first one (sticky sessions). If
 * this process is killed, even with SIGKILL, its sessions and unanswered
 * requests move to another worker of the group; stopped with SIGTERM, it
 * unregisters and hands them over at once.
 */
#define _POSIX_C_SOURCE 200809L /* sigaction, nanosleep */
#include <ctype.h>
#include <mtipc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static int fail(const char *what, mt_status st) {
    fprintf(stderr, "c-worker %d: %s: %s: %s\n", (int)getpid(), what, mt_status_str(st),
            mt_last_error());
    return 1;
}

/* Prints at most 60 bytes of `p`, non-printable bytes as '.'. */
static void print_text(const uint8_t *p, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n && i < 60; i++) putchar(isprint(p[i]) ? p[i] : '.');
    fputs(n > 60 ? "...\"" : "\"", stdout);
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s DOMAIN_DIR TABLE_NAME [GROUP]\n", argv[0]);
        return 2;
    }
    const char *name = argv[2];
    char *end = NULL;
    unsigned long group = argc > 3 ? strtoul(argv[3], &end, 10) : 0;
    if (argc > 3 && (*argv[3] == '\0' || *end != '\0' || group > UINT32_MAX)) {
        fprintf(stderr, "c-worker: GROUP must be a number, not \"%s\"\n", argv[3]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    mt_domain *d = NULL;
    mt_status st = mt_domain_open(argv[1], &d);
    if (st != MT_OK) return fail("mt_domain_open", st);

    /* The manager may not have made the table yet: try for 10 s. */
    mt_session_table *t = NULL;
    for (int tries = 0; !stop; tries++) {
        st = mt_session_table_open(d, name, &t);
        if (st != MT_ERR_NOT_FOUND || tries == 100) break;
        struct timespec ms100 = {0, 100 * 1000 * 1000};
        nanosleep(&ms100, NULL);
    }
    if (st != MT_OK) {
        mt_domain_free(d);
        return fail("mt_session_table_open", st);
    }
    mt_domain_free(d); /* the table does not need it */

    mt_worker *w = NULL;
    st = mt_worker_register(t, (uint32_t)group, &w);
    if (st != MT_OK) {
        mt_session_table_free(t);
        return fail("mt_worker_register", st);
    }
    const uint32_t max = mt_session_table_max_message(t);
    char *reply = malloc(max);
    if (reply == NULL) return 1;
    printf("c-worker %d g%lu: serving session set %s (worker id 0x%016llx)\n", (int)getpid(),
           group, name, (unsigned long long)mt_worker_id(w));

    unsigned long served = 0;
    while (!stop) {
        /* A bounded wait, so that a stop signal is seen within 200 ms. */
        mt_request *r = NULL;
        st = mt_worker_next(w, 200, &r);
        if (st == MT_ERR_TIMEOUT) continue;
        if (st != MT_OK) {
            fail("mt_worker_next", st);
            break;
        }
        /* The request's bytes, in place in shared memory. */
        const uint8_t *req = NULL;
        size_t len = 0;
        mt_request_data(r, &req, &len);
        int n = snprintf(reply, max, "%d g%lu: ", (int)getpid(), group);
        size_t out = n < 0 ? 0 : (size_t)n < max ? (size_t)n : max;
        for (size_t i = 0; i < len && out < max; i++) reply[out++] = (char)toupper(req[i]);

        printf("c-worker %d g%lu: session 0x%016llx ", (int)getpid(), group,
               (unsigned long long)mt_request_session(r));
        print_text(req, len);
        fputs(" -> ", stdout);
        print_text((const uint8_t *)reply, out);
        putchar('\n');

        /* Written into the same slot; the submitter wakes. (The request's
         * bytes are gone after this: that is why the line was printed first.) */
        st = mt_request_respond(r, (const uint8_t *)reply, out);
        if (st != MT_OK) fail("mt_request_respond", st);
        mt_request_free(r); /* freed unanswered, it would fail for its submitter */
        served++;
    }
    printf("c-worker %d g%lu: stopped after %lu requests\n", (int)getpid(), group, served);
    free(reply);
    mt_worker_free(w); /* unregisters: its sessions go to the group's other workers */
    mt_session_table_free(t);
    return 0;
}
