/* The supervised program of the HA benchmark (cli/benches/ha_restart.rs):
 * one binary for every supervisor, so that what is started, linked and
 * loaded is the same. On start it signals readiness the way its
 * supervisor wants it, then sleeps until killed:
 *
 * - under mtipc-ha ($MTIPC_HA_SOCKET set): mt_ha_ready() from libmtipc;
 * - under s6-supervise with notification-fd: a newline on the descriptor
 *   named by $HA_BENCH_NOTIFY_FD, which is then closed;
 * - otherwise (runit, which has no readiness protocol): nothing.
 *
 * It always links libmtipc.so (the dynamic loader's work is the same under
 * every supervisor).
 *
 * With $HA_BENCH_STAMPS set, once ready it appends "PID MAIN READY\n" to
 * that file: CLOCK_MONOTONIC in ns when main() began and when its
 * notification was done, for the bench's account of where the time goes
 * (written after the notification, so it does not delay it). */
#include <mtipc.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(void)
{
    uint64_t t_main = now_ns();
    const char *stamps = getenv("HA_BENCH_STAMPS");
    const char *sock = getenv("MTIPC_HA_SOCKET");
    const char *fd = getenv("HA_BENCH_NOTIFY_FD");
    if (sock != NULL && sock[0] != '\0') {
        mt_status s = mt_ha_ready();
        if (s != MT_OK) {
            fprintf(stderr, "ha-bench app: mt_ha_ready: %d\n", (int)s);
            return 1;
        }
    } else if (fd != NULL && fd[0] != '\0') {
        int n = atoi(fd);
        if (write(n, "\n", 1) != 1) {
            perror("ha-bench app: notification-fd");
            return 1;
        }
        close(n);
    }
    if (stamps != NULL && stamps[0] != '\0') {
        uint64_t t_ready = now_ns();
        char line[96];
        int len = snprintf(line, sizeof line, "%ld %llu %llu\n", (long)getpid(),
                           (unsigned long long)t_main, (unsigned long long)t_ready);
        int f = open(stamps, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (f >= 0) {
            if (write(f, line, (size_t)len) != len)
                perror("ha-bench app: stamps");
            close(f);
        }
    }
    for (;;)
        pause();
}
