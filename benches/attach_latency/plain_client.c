/*
 * The whole-process baseline of benches/attach_latency.rs: the least a
 * command-line client of a local service does (what jattach does against
 * HotSpot's attach socket, without its signal handshake): connect to a UNIX
 * stream socket, send one command, read the reply until the server closes,
 * print it. No TLS, no discovery.
 *
 * usage: plain_client SOCKET MESSAGE      exit 0 if a reply came
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SOCKET MESSAGE\n", argv[0]);
        return 2;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(argv[1]) >= sizeof sa.sun_path) {
        fprintf(stderr, "socket path too long\n");
        return 2;
    }
    strcpy(sa.sun_path, argv[1]);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        return 1;
    }
    size_t len = strlen(argv[2]);
    for (size_t done = 0; done < len;) {
        ssize_t n = write(fd, argv[2] + done, len - done);
        if (n <= 0) {
            perror("write");
            return 1;
        }
        done += (size_t)n;
    }
    char buf[4096];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        if (n < 0) {
            perror("read");
            return 1;
        }
        if (n == 0 || (got += (size_t)n) == sizeof buf - 1)
            break;
    }
    close(fd);
    if (got == 0)
        return 1;
    buf[got] = '\n';
    fwrite(buf, 1, got + 1, stdout);
    return 0;
}
