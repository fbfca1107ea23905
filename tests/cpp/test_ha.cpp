// The C++ HA hooks of include/mtipc.hpp (mtipc::ha): outside supervision
// every call is a no-op and role() is {MT_HA_NONE, 0}; under a fake Monitor
// (a thread of this test speaking the protocol of docs/ha.md over a
// SOCK_SEQPACKET socket) the std::function callbacks get the role at once
// and on change and answer health polls (an exception is unhealthy), and
// once the Monitor is gone heartbeat() throws MT_ERR_UNAVAILABLE.
#include <mtipc.hpp>

#include "mt_test.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

std::mutex g_lock;
std::vector<std::pair<mt_ha_role, std::uint64_t>> g_roles;
std::atomic<int> g_health_mode{0}; // 0 healthy, 1 unhealthy, 2 throws

void outside_supervision() {
    unsetenv("MTIPC_HA_SOCKET");
    CHECK(!mt::ha::supervised());
    bool called = false;
    mt::ha::on_role([&](mt_ha_role, std::uint64_t) { called = true; });
    mt::ha::set_health([] { return false; });
    mt::ha::ready();
    mt::ha::heartbeat();
    CHECK(mt::ha::role() == std::make_pair(MT_HA_NONE, std::uint64_t{0}));
    CHECK(!called);
    mt::ha::on_role(nullptr);
    mt::ha::set_health(nullptr);
}

/** One packet from `fd` as a string ("" on end or timeout). */
std::string recv_msg(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) {
        return "";
    }
    char buf[128];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

void send_msg(int fd, const std::string &m) { send(fd, m.data(), m.size(), MSG_NOSIGNAL); }

void under_a_fake_monitor() {
    Scratch scratch("ha");
    const std::string path = (scratch.dir / "ha.sock").string();
    int l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    CHECK(bind(l, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
    CHECK(listen(l, 4) == 0);

    std::vector<std::string> got; // what the Monitor received, in order
    std::thread monitor([&] {
        int c = accept(l, nullptr, nullptr);
        got.push_back(recv_msg(c)); // hello
        send_msg(c, "role active 1");
        got.push_back(recv_msg(c)); // polls on (set_health made the connection)
        got.push_back(recv_msg(c)); // ready
        for (int seq = 1; seq <= 3; ++seq) {
            g_health_mode = seq - 1;
            send_msg(c, "health? " + std::to_string(seq));
            got.push_back(recv_msg(c));
        }
        send_msg(c, "role standby 7");
        got.push_back(recv_msg(c)); // the heartbeat sent after the change
        close(c);
    });

    setenv("MTIPC_HA_SOCKET", path.c_str(), 1);
    CHECK(mt::ha::supervised());
    mt::ha::set_health([] {
        if (g_health_mode == 2) {
            throw std::runtime_error("health check crashed");
        }
        return g_health_mode == 0;
    });
    mt::ha::on_role([](mt_ha_role r, std::uint64_t epoch) {
        std::lock_guard<std::mutex> lock(g_lock);
        g_roles.emplace_back(r, epoch);
        if (r == MT_HA_STANDBY) {
            // Registering from inside a callback is refused; this one stays.
            CHECK_THROWS(MT_ERR_INVALID, "inside a role callback",
                         mt::ha::on_role([](mt_ha_role, std::uint64_t) {}));
        }
    });
    {
        std::lock_guard<std::mutex> lock(g_lock);
        CHECK(g_roles.size() == 1); // delivered before on_role returned
    }
    mt::ha::ready();
    for (int i = 0; i < 10000; ++i) {
        std::lock_guard<std::mutex> lock(g_lock);
        if (g_roles.size() >= 2) {
            break;
        }
        std::this_thread::sleep_for(1ms);
    }
    CHECK(mt::ha::role() == std::make_pair(MT_HA_STANDBY, std::uint64_t{7}));
    mt::ha::heartbeat();
    monitor.join();
    close(l);
    CHECK(got.size() == 7);
    if (got.size() == 7) {
        CHECK(got[0].rfind("hello 1 " + std::to_string(getpid()) + " ", 0) == 0);
        CHECK(got[1] == "polls on");
        CHECK(got[2] == "ready");
        CHECK(got[3] == "health 1 ok");
        CHECK(got[4] == "health 2 fail");
        CHECK(got[5] == "health 3 fail"); // the exception
        CHECK(got[6] == "heartbeat");
    }
    {
        std::lock_guard<std::mutex> lock(g_lock);
        CHECK(g_roles == (std::vector<std::pair<mt_ha_role, std::uint64_t>>{
                             {MT_HA_ACTIVE, 1}, {MT_HA_STANDBY, 7}}));
    }
    // The Monitor is gone: heartbeat throws (once the library has seen the
    // connection end), and the role stays.
    bool thrown = false;
    for (int i = 0; i < 2000 && !thrown; ++i) {
        try {
            mt::ha::heartbeat();
            std::this_thread::sleep_for(1ms);
        } catch (const mt::Error &e) {
            thrown = true;
            CHECK(e.code() == MT_ERR_UNAVAILABLE);
        }
    }
    CHECK(thrown);
    CHECK_THROWS(MT_ERR_UNAVAILABLE, "not connected", mt::ha::ready());
    CHECK(mt::ha::role() == std::make_pair(MT_HA_STANDBY, std::uint64_t{7}));
    unsetenv("MTIPC_HA_SOCKET");
}

} // namespace

int main() {
    run("outside_supervision", outside_supervision);
    run("under_a_fake_monitor", under_a_fake_monitor);
    return mt_test_exit("test_ha");
}
