// Opens an mtipc domain with the C++ wrapper, shows its path and semaphore,
// then posts and waits.
//
//   c++ -std=c++17 cpp_domain.cpp $(pkg-config --cflags --libs mtipc) -o cpp_domain
//   ./cpp_domain [DOMAIN_DIR]     (default: a new directory under /tmp)
#include <mtipc.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

using namespace std::chrono_literals;

int main(int argc, char **argv) {
    std::string dir;
    if (argc > 1) {
        dir = argv[1];
    } else {
        char tmp[] = "/tmp/mtipc-example-XXXXXX";
        if (mkdtemp(tmp) == nullptr) {
            std::perror("mkdtemp");
            return 1;
        }
        dir = tmp;
    }
    std::cout << "mtipc " << mtipc::version() << "\n";

    try {
        mtipc::Domain d(dir); // created (mode 0700) if missing; closed at the end of scope
        std::cout << "domain " << d.path() << ", semaphore " << d.sem_value() << "\n";

        d.sem_post(1);
        if (!d.sem_wait(1000ms)) { // at most 1 s
            std::cerr << "the post was not there\n";
            return 1;
        }
        std::cout << "posted 1 and took it back\n";

        // Nothing is left: a timeout is not an exception, sem_wait returns false.
        if (!d.sem_wait(100ms)) {
            std::cout << "waiting again: timed out after 100 ms\n";
        }
    } catch (const mtipc::Error &e) {
        // e.name() is the status ("MT_ERR_DENIED"), e.message() the details.
        std::cerr << "mtipc: " << e.name() << ": " << e.message() << "\n";
        return 1;
    }
    return 0;
}
