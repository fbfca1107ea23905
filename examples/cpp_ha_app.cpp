// An application supervised by mtipc-ha, in C++: mtipc::ha from
// include/mtipc.hpp, with std::function callbacks. It reports its role,
// answers health polls, says ready after INIT_MS, heartbeats every 200 ms
// and stops on SIGTERM.
//
//   cpp_ha_app NAME [INIT_MS]
//
// Outside supervision every call does nothing. `make demo` runs it under
// `mtipc-ha up`.
#include <mtipc.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include <unistd.h>

namespace {
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_term(int) { g_stop = 1; }
} // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::cerr << "usage: cpp_ha_app NAME [INIT_MS]\n";
        return 2;
    }
    const std::string name = argv[1];
    const long init_ms = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 100;
    std::signal(SIGTERM, on_term);
    std::cout << name << ": C++ application, pid " << getpid()
              << ", supervised: " << (mtipc::ha::supervised() ? "yes" : "no") << std::endl;
    try {
        mtipc::ha::on_role([name](mt_ha_role role, std::uint64_t epoch) {
            std::cout << name << ": role "
                      << (role == MT_HA_ACTIVE ? "active" : role == MT_HA_STANDBY ? "standby" : "none")
                      << ", epoch " << epoch << std::endl;
        });
        mtipc::ha::set_health([] { return true; });
        std::this_thread::sleep_for(std::chrono::milliseconds(init_ms));
        mtipc::ha::ready();
        std::cout << name << ": ready" << std::endl;
    } catch (const mtipc::Error &e) {
        std::cerr << name << ": " << e.what() << std::endl;
        return 1;
    }
    while (!g_stop) {
        try {
            mtipc::ha::heartbeat();
        } catch (const mtipc::Error &) {
            // MT_ERR_UNAVAILABLE while the Monitor restarts: the library
            // reconnects by itself.
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::cout << name << ": SIGTERM, stopping" << std::endl;
    mtipc::ha::on_role(nullptr);
    return 0;
}
