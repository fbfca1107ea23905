// A tenant in C++: advertises itself in an mtipc domain and answers every
// message of every attacher with "cpp-tenant: <message>".
//
//   c++ -std=c++17 cpp_tenant.cpp $(pkg-config --cflags --libs mtipc) -o cpp_tenant
//   ./cpp_tenant DOMAIN_DIR [TENANT_ID]      (stop it with Ctrl-C or SIGTERM)
#include <mtipc.hpp>

#include <csignal>
#include <iostream>
#include <pthread.h>
#include <string>

// Runs on a thread of its own for each attacher; owns the connection.
static void answer(const std::string &id, mtipc::Conn conn) {
    std::cout << id + ": attached\n" << std::flush;
    try {
        for (;;) {
            conn.send("cpp-tenant: " + conn.recv());
        }
    } catch (const mtipc::Error &e) {
        // MT_ERR_CLOSED: the attacher closed, or the connection's time is up.
        if (e.code() != MT_ERR_CLOSED) {
            std::cerr << id + ": " + e.what() + "\n";
        }
    }
    std::cout << id + ": connection closed\n" << std::flush;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " DOMAIN_DIR [TENANT_ID]\n";
        return 2;
    }
    const std::string id = argc > 2 ? argv[2] : "cpp-tenant";

    // Block the stop signals before any thread starts; sigwait takes them.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);

    try {
        mtipc::Domain domain(argv[1]);
        mtipc::Advert advert(domain, id, [id](mtipc::Conn c) { answer(id, std::move(c)); });
        std::cout << id << ": advertised, waiting for attachers" << std::endl;

        int sig = 0;
        sigwait(&stop, &sig);
        advert.withdraw(); // no new attacher after this (the destructor would do it too)
        std::cout << id << ": withdrawn" << std::endl;
    } catch (const mtipc::Error &e) {
        // e.name() is the status ("MT_ERR_EXISTS"), e.message() the details.
        std::cerr << id << ": " << e.name() << ": " << e.message() << "\n";
        return 1;
    }
    return 0;
}
