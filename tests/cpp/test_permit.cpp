// The C++ permit types of include/mtipc.hpp: create_volume, Permit (RAII,
// move-only, released by its destructor), Error codes for a deferred, timed
// out or fenced permit, put/get of whole files, and the mt:: short name.
#include <mtipc.hpp>

#include "mt_test.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

static_assert(!std::is_copy_constructible_v<mt::Permit>, "Permit is move-only");
static_assert(std::is_nothrow_move_constructible_v<mt::Permit>, "Permit moves");

std::string slurp(const fs::path &p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

struct Fixture {
    Scratch scratch{"permit"};
    fs::path vol = scratch.dir / "vol";
    mt::Domain domain;
    explicit Fixture(std::chrono::milliseconds lease = 0ms)
        : domain((fs::create_directory(scratch.dir / "vol"),
                  fs::permissions(scratch.dir / "vol", fs::perms(0755)),
                  (scratch.dir / "domain").string())) {
        mt::VolumeOptions o;
        o.lease = lease;
        mt::create_volume(domain, "gw", vol.string(), o);
    }
};

void raii_release_and_errors() {
    Fixture f;
    std::uint64_t first = 0;
    {
        mt::Permit w = mt::Permit::request(f.domain, "gw", "a.wav", mt::PermitMode::Write);
        first = w.token();
        CHECK(first == 1);
        CHECK_THROWS(MT_ERR_DEFERRED, "deferred",
                     mt::Permit::request(f.domain, "gw", "a.wav", mt::PermitMode::Read));
        CHECK_THROWS(MT_ERR_TIMEOUT, "not granted",
                     mt::Permit::request(f.domain, "gw", "a.wav", mt::PermitMode::Read, 30ms));
        mt::Permit moved = std::move(w);
        CHECK(!w && moved);
        CHECK_THROWS(MT_ERR_INVALID, "NULL", w.renew());
    } // released here
    mt::Permit r = mt::Permit::request(f.domain, "gw", "a.wav", mt::PermitMode::Read);
    CHECK(r.token() > first);
    CHECK_THROWS(MT_ERR_INVALID, "absolute",
                 mt::Permit::request(f.domain, "gw", "/a.wav", mt::PermitMode::Read));
    CHECK_THROWS(MT_ERR_EXISTS, "exists", mt::create_volume(f.domain, "gw", f.vol.string()));
}

void transfers_and_fencing() {
    Fixture f(100ms);
    fs::path src = f.scratch.dir / "src.txt";
    std::ofstream(src) << std::string(100000, 'x') << "end";
    mt::Permit p = mt::Permit::request(f.domain, "gw", "in/a.txt", mt::PermitMode::Write);
    p.put(src.string());
    CHECK(slurp(f.vol / "in/a.txt") == slurp(src));
    p.get((f.scratch.dir / "back.txt").string());
    CHECK(slurp(f.scratch.dir / "back.txt") == slurp(src));
    std::this_thread::sleep_for(200ms);
    std::ofstream(src) << "late";
    CHECK_THROWS(MT_ERR_FENCED, "no longer current", p.put(src.string()));
    CHECK_THROWS(MT_ERR_FENCED, "no longer current", p.renew());
    CHECK(slurp(f.vol / "in/a.txt").size() == 100003);
}

} // namespace

int main() {
    run("raii_release_and_errors", raii_release_and_errors);
    run("transfers_and_fencing", transfers_and_fencing);
    return mt_test_exit("test_permit");
}
