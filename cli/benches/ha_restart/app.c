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
 * every supervisor). */
#include <mtipc.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void)
{
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
    for (;;)
        pause();
}
