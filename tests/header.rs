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
    let lib = unsafe { std::ffi::CStr::from_ptr(mtipc::internals::ffi::mt_version()) };
    assert_eq!(lib.to_str().unwrap(), v);
}

/// The status codes are written once (`mtipc::ErrorKind`); the header's
/// `mt_status` enum (generated from src/ffi/status.rs, which cbindgen needs
/// as a literal enum) and the README's table must say the same, and no
/// more (issue 10, item 6).
#[test]
fn status_codes_agree_everywhere() {
    let header =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/mtipc.h")).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let enum_text = &header[header.find("enum mt_status").unwrap()..];
    let enum_text = &enum_text[..enum_text.find("};").unwrap()];
    let in_header: Vec<(String, u32)> = enum_text
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',');
            let (name, v) = l.split_once(" = ")?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect();
    let mut want = vec![("MT_OK".to_string(), 0)];
    for k in mtipc::ErrorKind::ALL {
        want.push((k.name().to_string(), k.code()));
        assert!(
            readme.contains(&format!("| `{}` | {} |", k.name(), k.code())),
            "README.md's status table lacks {} = {}",
            k.name(),
            k.code()
        );
        assert_eq!(mtipc::ErrorKind::from_code(k.code()), Some(k));
    }
    assert_eq!(in_header, want, "include/mtipc.h's mt_status enum");
    assert_eq!(mtipc::ErrorKind::from_code(0), None);
}
