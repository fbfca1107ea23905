// The C++ wrapper of shared closures (include/mtipc.hpp): ClosureBuilder,
// Closure and Value over a real domain; errors as mtipc::Error with the
// right code; move semantics; a version held while a newer one is
// published; values stay valid when their Closure is moved.
#include <mtipc.hpp>

#include "mt_test.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <type_traits>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

static_assert(!std::is_copy_constructible_v<mtipc::Closure>, "Closure is move-only");
static_assert(std::is_nothrow_move_constructible_v<mtipc::Closure>, "moves do not throw");
static_assert(!std::is_copy_constructible_v<mtipc::ClosureBuilder>, "the builder is move-only");
static_assert(std::is_trivially_copyable_v<mtipc::Value>, "a Value is a view");

void tree_round_trip() {
    Scratch s("closure-tree");
    mtipc::Domain d(s.dir.string());
    mtipc::ClosureBuilder b;
    b.begin_map()
        .key("name").add_str("routing")
        .key("id").add_int(-5)
        .key("ratio").add_float(2.5)
        .key("raw").add_bytes("\x01\x00\x02", 3)
        .key("tags").begin_list().add_str("x").add_str("y").end()
        .end();
    CHECK(b.publish(d, "cfg") == 1);
    CHECK_THROWS(MT_ERR_INVALID, "no value", b.publish(d, "cfg"));

    mtipc::Closure c(d, "cfg");
    CHECK(c.version() == 1);
    mtipc::Value r = c.root();
    CHECK(r.kind() == MT_VALUE_MAP);
    CHECK(r.size() == 5);
    CHECK(r["name"].as_str() == "routing");
    CHECK(r["name"].as_str().data()[7] == '\0');
    CHECK(r["id"].as_int() == -5);
    CHECK(r["ratio"].as_float() == 2.5);
    CHECK(r["raw"].as_bytes() == std::string_view("\x01\x00\x02", 3));
    CHECK(r["tags"].size() == 2);
    CHECK(r["tags"][1].as_str() == "y");
    CHECK(!r.find("missing"));
    CHECK(r.find("id").has_value());
    CHECK(r.entry(0).first == "id");
    CHECK(r.entry(4).first == "tags");
    CHECK_THROWS(MT_ERR_NOT_FOUND, "missing", r["missing"]);
    CHECK_THROWS(MT_ERR_INVALID, "not an int", r["name"].as_int());
    CHECK_THROWS(MT_ERR_INVALID, "out of range", r["tags"][2]);
    CHECK_THROWS(MT_ERR_INVALID, "not bytes", c.bytes());

    // Values stay valid when their Closure is moved.
    mtipc::Value tags = r["tags"];
    mtipc::Closure moved(std::move(c));
    CHECK(tags[0].as_str() == "x");
    CHECK(moved.version() == 1);
    CHECK_THROWS(MT_ERR_INVALID, "NULL", c.version());  // NOLINT(bugprone-use-after-move)
}

void bytes_and_versions() {
    Scratch s("closure-bytes");
    mtipc::Domain d(s.dir.string());
    CHECK(mtipc::publish_bytes(d, "blob", "one") == 1);
    mtipc::Closure v1(d, "blob");
    CHECK(mtipc::publish_bytes(d, "blob", "two!") == 2);
    mtipc::Closure v2(d, "blob");
    CHECK(v1.bytes() == "one");
    CHECK(v2.bytes() == "two!");
    CHECK(fs::exists(s.dir / "closures/blob/v1"));
    v1 = std::move(v2);  // lets go of v1: its last reader
    CHECK(!fs::exists(s.dir / "closures/blob/v1"));
    CHECK(v1.bytes() == "two!");
    CHECK_THROWS(MT_ERR_NOT_FOUND, "never published", mtipc::Closure(d, "nothing"));
    CHECK_THROWS(MT_ERR_INVALID, "closure name", mtipc::publish_bytes(d, "a/b", "x"));
}

void builder_misuse() {
    Scratch s("closure-misuse");
    mtipc::Domain d(s.dir.string());
    mtipc::ClosureBuilder b;
    CHECK_THROWS(MT_ERR_INVALID, "end without", b.end());
    b.begin_map();
    CHECK_THROWS(MT_ERR_INVALID, "key first", b.add_int(1));
    b.key("k");
    CHECK_THROWS(MT_ERR_INVALID, "two keys", b.key("j"));
    b.add_int(1);
    CHECK_THROWS(MT_ERR_INVALID, "still open", b.publish(d, "x"));
    b.end();
    CHECK_THROWS(MT_ERR_INVALID, "closure name", b.publish(d, ""));
    CHECK(b.publish(d, "x") == 1);  // kept its value after the failure
    mtipc::ClosureBuilder other(std::move(b));
    other.add_str("next");
    CHECK(other.publish(d, "x") == 2);
    CHECK(mtipc::Closure(d, "x").root().as_str() == "next");
}

}  // namespace

int main() {
    run("tree_round_trip", tree_round_trip);
    run("bytes_and_versions", bytes_and_versions);
    run("builder_misuse", builder_misuse);
    return mt_test_exit("test_closure");
}
