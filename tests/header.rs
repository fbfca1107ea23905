//! The committed C header is what cbindgen generates from the sources now,
//! and its version macros match Cargo.toml. `MTIPC_BLESS=1` rewrites it
//! (that is what `make header` does).

use std::path::Path;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_crate(root)
        .generate()
        .expect("cbindgen failed")
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn header_is_fresh() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mtipc.h");
    let want = generate();
    if std::env::var_os("MTIPC_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "include/mtipc.h is stale: run `make header` and commit it"
    );
}

fn macro_value(header: &str, name: &str) -> String {
    let prefix = format!("#define {name} ");
    header
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} missing from the header"))
        .trim()
        .trim_matches('"')
        .to_string()
}

#[test]
fn header_version_matches_cargo() {
    let header = generate();
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(macro_value(&header, "MTIPC_VERSION_STRING"), v);
    assert_eq!(
        macro_value(&header, "MTIPC_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MAJOR")
    );
    assert_eq!(
        macro_value(&header, "MTIPC_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_MINOR")
    );
    assert_eq!(
        macro_value(&header, "MTIPC_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION_PATCH")
    );
    // The ABI version is the soname's number: the major version.
    let abi = env!("CARGO_PKG_VERSION_MAJOR");
    assert_eq!(macro_value(&header, "MTIPC_ABI_VERSION"), abi);
    // SAFETY: mt_version returns a static NUL-terminated string.
    let lib = unsafe { std::ffi::CStr::from_ptr(mtipc::ffi::mt_version()) };
    assert_eq!(lib.to_str().unwrap(), v);
}
