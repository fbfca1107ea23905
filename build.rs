//! Gives libmtipc.so a soname (libmtipc.so.<major>), so that programs linked
//! against an installed copy record the ABI they were built for.
fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmtipc.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
