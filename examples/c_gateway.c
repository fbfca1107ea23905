/* A processing instance in C that uploads and downloads files through a
 * gateway volume, asking for a permit before each transfer:
 *
 *     ./c_gateway DOMAIN_DIR VOLUME NAME SECONDS [THREADS]
 *
 * Each of THREADS threads (1 by default; more makes this instance flood
 * the arbiter with requests) loops for SECONDS: it asks for a write permit
 * on "NAME/upload-<thread>.dat" and puts a local file of 256 KiB there, or
 * asks for a read permit on a file another instance uploaded and gets it;
 * either way it holds the permit for the transfer plus 5 ms (one request
 * in three puts a shared file the others read). At the end it
 * prints one line (grants that came after the end are not counted):
 *
 *     c_gateway NAME pid 4242: 37 grants (25 puts, 12 gets), 0 fenced, tokens 3..290
 *
 * The volume is made by someone else (mt_volume_create, or
 * `mtipc volume add VOLUME DIR`). If this process is killed, even with
 * SIGKILL in the middle of a put, its permit is reclaimed by the next
 * process that asks, and no half-written file appears under a final name.
 *
 * Build: cc c_gateway.c $(pkg-config --cflags --libs mtipc) -pthread -o c_gateway
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, clock_gettime */
#include <mtipc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *g_domain, *g_volume, *g_name;
static double g_until;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned g_grants, g_puts, g_gets, g_fenced;
static uint64_t g_first = UINT64_MAX, g_last;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

struct thread_arg {
    mt_domain *d;
    int id;
};

static void *run(void *p) {
    struct thread_arg *a = p;
    char src[256], dst[256], path[256];
    snprintf(src, sizeof src, "/tmp/c_gateway-%d-%d.src", (int)getpid(), a->id);
    snprintf(dst, sizeof dst, "/tmp/c_gateway-%d-%d.dst", (int)getpid(), a->id);
    FILE *f = fopen(src, "wb");
    if (f == NULL) return NULL;
    for (int i = 0; i < 256 * 1024; i++) fputc('a' + (i * 7 + a->id) % 26, f);
    fclose(f);
    unsigned n = 0;
    while (now_s() < g_until) {
        /* Own file, a shared file (others read it), or a read of one. */
        unsigned kind = n++ % 3;
        int upload = kind != 2;
        if (kind == 0)
            snprintf(path, sizeof path, "%s/upload-%d.dat", g_name, a->id);
        else
            snprintf(path, sizeof path, "shared/common-%u.dat", (n / 3) % 4);
        mt_permit *pm = NULL;
        mt_status st = mt_permit_request(a->d, g_volume, path,
                                         upload ? MT_PERMIT_WRITE : MT_PERMIT_READ, 5000, &pm);
        if (st != MT_OK) {
            fprintf(stderr, "c_gateway %s: %s: %s\n", g_name, mt_status_str(st), mt_last_error());
            continue;
        }
        if (now_s() >= g_until) {
            /* Granted after the run's end: not counted (the instance with
             * many threads would otherwise count what it had queued). */
            mt_permit_free(pm);
            break;
        }
        uint64_t tok = mt_permit_token(pm);
        if (upload) {
            st = mt_transfer_put(pm, src);
        } else {
            st = mt_transfer_get(pm, dst);
            if (st == MT_ERR_NOT_FOUND) st = MT_OK; /* nobody uploaded it yet */
        }
        sleep_ms(5);
        mt_permit_free(pm);
        pthread_mutex_lock(&g_mu);
        g_grants++;
        if (st == MT_ERR_FENCED) g_fenced++;
        else if (upload) g_puts++;
        else g_gets++;
        if (tok < g_first) g_first = tok;
        if (tok > g_last) g_last = tok;
        pthread_mutex_unlock(&g_mu);
        if (st != MT_OK && st != MT_ERR_FENCED)
            fprintf(stderr, "c_gateway %s: transfer: %s: %s\n", g_name, mt_status_str(st),
                    mt_last_error());
    }
    unlink(src);
    unlink(dst);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s DOMAIN_DIR VOLUME NAME SECONDS [THREADS]\n", argv[0]);
        return 2;
    }
    g_domain = argv[1];
    g_volume = argv[2];
    g_name = argv[3];
    g_until = now_s() + atof(argv[4]);
    int threads = argc > 5 ? atoi(argv[5]) : 1;
    if (threads < 1 || threads > 64) threads = 1;
    mt_domain *d = NULL;
    mt_status st = mt_domain_open(g_domain, &d);
    if (st != MT_OK) {
        fprintf(stderr, "c_gateway: %s: %s\n", mt_status_str(st), mt_last_error());
        return 1;
    }
    pthread_t t[64];
    struct thread_arg args[64];
    for (int i = 0; i < threads; i++) {
        args[i] = (struct thread_arg){d, i};
        pthread_create(&t[i], NULL, run, &args[i]);
    }
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("c_gateway %s pid %d (%d thread%s): %u grants (%u puts, %u gets), %u fenced, tokens "
           "%llu..%llu\n",
           g_name, (int)getpid(), threads, threads == 1 ? "" : "s", g_grants, g_puts, g_gets,
           g_fenced, (unsigned long long)(g_first == UINT64_MAX ? 0 : g_first),
           (unsigned long long)g_last);
    mt_domain_free(d);
    return 0;
}
