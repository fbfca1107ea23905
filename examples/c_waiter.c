/* Waits on a domain's notification semaphore and says when it was woken.
 * Used by `make demo`.  Usage: c_waiter DOMAIN [TIMEOUT_MS] */
#include <mtipc.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DOMAIN [TIMEOUT_MS]\n", argv[0]);
        return 2;
    }
    uint32_t timeout = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : MT_WAIT_FOREVER;
    mt_domain *d = NULL;
    mt_status st = mt_domain_open(argv[1], &d);
    if (st == MT_OK) {
        st = mt_sem_wait(d, timeout);
    }
    if (st != MT_OK) {
        fprintf(stderr, "c_waiter: %s: %s\n", mt_status_str(st), mt_last_error());
        mt_domain_free(d);
        return st == MT_ERR_TIMEOUT ? 3 : 1;
    }
    printf("woken (C waiter, pid %d)\n", (int)getpid());
    mt_domain_free(d);
    return 0;
}
