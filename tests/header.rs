//! The committed C header is what cbindgen generates from the sources now,
//! and its version macros match Cargo.toml. `MTIPC_BLESS=1` rewrites it
//! (that is what `make header` does).

use std::path::Path;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    // Only src/ffi is the C ABI: parsing just its files keeps the rest of
    // the crate's public constants out of the header.
    let mut files: Vec<_> = std::fs::read_dir(root.join("src/ffi"))
        .expect("src/ffi")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        // mod.rs declares the others: cbindgen would read them twice.
        .filter(|p| !p.ends_with("mod.rs"))
        .collect();
    // Status and errors first, then each capability's file in name order.
    files.sort_by_key(|p| (!p.ends_with("status.rs"), p.clone()));
    let mut builder = cbindgen::Builder::new().with_config(config);
    for f in files {
        builder = builder.with_src(f);
    }
    let mut out = Vec::new();
    builder.generate().expect("cbindgen failed").write(&mut out);
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
