/* An application supervised by mtipc-ha, in C: the HA hooks of
 * include/mtipc.h. It takes the role the node gives it, answers the
 * Monitor's health polls, says ready once its INIT_MS of set-up are done,
 * heartbeats every 200 ms and stops on SIGTERM.
 *
 *   c_ha_app NAME [INIT_MS]
 *
 * Outside supervision (no MTIPC_HA_SOCKET) every hook does nothing and
 * returns MT_OK, so the same program runs by hand. `make demo` runs it
 * under `mtipc-ha up`. */
#define _POSIX_C_SOURCE 200809L
#include <mtipc.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig) {
    (void)sig;
    stop = 1;
}

static int healthy(void *user) {
    (void)user;
    return 0; /* 0: healthy */
}

static void on_role(void *user, mt_ha_role role, uint64_t epoch) {
    const char *name = user;
    printf("%s: role %s, epoch %llu\n", name,
           role == MT_HA_ACTIVE ? "active" : role == MT_HA_STANDBY ? "standby" : "none",
           (unsigned long long)epoch);
    fflush(stdout);
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: c_ha_app NAME [INIT_MS]\n");
        return 2;
    }
    char *name = argv[1];
    long init_ms = argc > 2 ? strtol(argv[2], NULL, 10) : 100;
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    printf("%s: C application, pid %ld, supervised: %s\n", name, (long)getpid(),
           mt_ha_supervised() ? "yes" : "no");
    fflush(stdout);
    if (mt_ha_on_role(on_role, name) != MT_OK || mt_ha_set_health(healthy, NULL) != MT_OK) {
        fprintf(stderr, "%s: %s\n", name, mt_last_error());
        return 1;
    }
    sleep_ms(init_ms); /* set-up: open files, connect, ... */
    if (mt_ha_ready() != MT_OK) {
        fprintf(stderr, "%s: ready: %s\n", name, mt_last_error());
    }
    printf("%s: ready\n", name);
    fflush(stdout);
    while (!stop) {
        /* MT_ERR_UNAVAILABLE while the Monitor restarts: the library
         * reconnects by itself. */
        (void)mt_ha_heartbeat();
        sleep_ms(200);
    }
    printf("%s: SIGTERM, stopping\n", name);
    mt_ha_on_role(NULL, NULL);
    return 0;
}
