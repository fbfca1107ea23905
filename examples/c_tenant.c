/* A tenant in C: advertises itself in an mtipc domain and answers every
 * message of every attacher with "c-tenant: <message>".
 *
 *   cc c_tenant.c $(pkg-config --cflags --libs mtipc) -o c_tenant
 *   ./c_tenant DOMAIN_DIR [TENANT_ID]        (stop it with Ctrl-C or SIGTERM)
 */
#define _POSIX_C_SOURCE 200809L /* sigwait */
#include <mtipc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* Runs on a thread of its own for each attacher; owns the connection. */
static void on_attach(void *user, mt_conn *conn) {
    const char *id = user;
    static const char prefix[] = "c-tenant: ";
    uint8_t msg[4096], reply[sizeof prefix - 1 + sizeof msg];
    size_t len = 0;
    printf("%s: attached\n", id);
    fflush(stdout);
    for (;;) {
        mt_status st = mt_conn_recv(conn, msg, sizeof msg, &len, MT_WAIT_FOREVER);
        if (st == MT_ERR_CLOSED)
            break; /* the attacher closed, or the connection's time is up */
        if (st != MT_OK) {
            fprintf(stderr, "%s: recv: %s: %s\n", id, mt_status_str(st), mt_last_error());
            break;
        }
        memcpy(reply, prefix, sizeof prefix - 1);
        memcpy(reply + sizeof prefix - 1, msg, len);
        if (mt_conn_send(conn, reply, sizeof prefix - 1 + len) != MT_OK)
            break;
    }
    printf("%s: connection closed\n", id);
    fflush(stdout);
    mt_conn_free(conn);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DOMAIN_DIR [TENANT_ID]\n", argv[0]);
        return 2;
    }
    const char *id = argc > 2 ? argv[2] : "c-tenant";

    /* Block the stop signals before any thread starts; sigwait takes them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    mt_domain *d = NULL;
    mt_advert *ad = NULL;
    mt_status st = mt_domain_open(argv[1], &d);
    if (st == MT_OK)
        st = mt_advertise(d, id, on_attach, (void *)id, &ad);
    if (st != MT_OK) {
        fprintf(stderr, "%s: %s: %s\n", id, mt_status_str(st), mt_last_error());
        mt_domain_free(d);
        return 1;
    }
    printf("%s: advertised, waiting for attachers\n", id);
    fflush(stdout);

    int sig = 0;
    sigwait(&stop, &sig);
    mt_advert_free(ad); /* withdraws: no new attacher after this */
    mt_domain_free(d);
    printf("%s: withdrawn\n", id);
    return 0;
}
