/* Opens an mtipc domain, shows its path and semaphore, then posts and waits.
 *
 *   cc c_domain.c $(pkg-config --cflags --libs mtipc) -o c_domain
 *   ./c_domain [DOMAIN_DIR]     (default: a new directory under /tmp)
 */
#define _POSIX_C_SOURCE 200809L /* for mkdtemp in -std=c11 */
#include <mtipc.h>
#include <stdio.h>
#include <stdlib.h> /* mkdtemp */

/* Every mtipc call returns a status. On failure, print the call, the status's
 * name and this thread's detailed message (read it right away). */
static int ok(const char *call, mt_status st) {
    if (st != MT_OK)
        fprintf(stderr, "%s: %s: %s\n", call, mt_status_str(st), mt_last_error());
    return st == MT_OK;
}

int main(int argc, char **argv) {
    char tmp[] = "/tmp/mtipc-example-XXXXXX";
    const char *dir = argc > 1 ? argv[1] : mkdtemp(tmp);
    if (dir == NULL) {
        perror("mkdtemp");
        return 1;
    }
    printf("mtipc %s\n", mt_version());

    mt_domain *d = NULL; /* created (mode 0700) if missing */
    if (!ok("mt_domain_open", mt_domain_open(dir, &d)))
        return 1;

    int rc = 1;
    char path[4096]; /* a domain path has at most 4000 bytes */
    size_t len = 0;
    uint32_t value = 0;
    if (!ok("mt_domain_path", mt_domain_path(d, path, sizeof path, &len)) ||
        !ok("mt_sem_value", mt_sem_value(d, &value)))
        goto out;
    printf("domain %s, semaphore %u\n", path, (unsigned)value);

    /* Post one unit, then take it back (waiting at most 1000 ms). */
    if (!ok("mt_sem_post", mt_sem_post(d, 1)) || !ok("mt_sem_wait", mt_sem_wait(d, 1000)))
        goto out;
    printf("posted 1 and took it back\n");

    /* Nothing is left: this wait times out after 100 ms, as expected. */
    mt_status st = mt_sem_wait(d, 100);
    printf("waiting again: %s (%s)\n", mt_status_str(st), mt_last_error());
    rc = st == MT_ERR_TIMEOUT ? 0 : 1;
out:
    mt_domain_free(d);
    return rc;
}
