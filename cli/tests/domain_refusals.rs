//! Every bad domain is refused with its own clear error, the same way through
//! the Rust API (`Domain::open`) and through the operator's command line
//! (`mtipc --domain PATH info`: exit status 1, `mtipc: <message> (MT_ERR_...)`
//! on stderr). Each check asserts the kind *and* that the message names the
//! path or the problem, and that the refusal left the domain as it was.

#[path = "../../tests/common/mod.rs"]
mod common;

use mtipc::{Domain, ErrorKind};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const HEADER_SIZE: usize = 64;
const SEM_SIZE: usize = 128;

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static SEQ: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
        let seq = {
            let mut g = SEQ.lock().unwrap_or_else(|e| e.into_inner());
            *g += 1;
            *g
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "mtipc-refusals-{tag}-{}-{nanos}-{seq}",
            std::process::id()
        ));
        fs::create_dir(&p).unwrap();
        Scratch(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A scratch dir holding a good, freshly created domain at `<scratch>/dom`.
fn good_domain(tag: &str) -> (Scratch, PathBuf) {
    let s = Scratch::new(tag);
    let d = s.path().join("dom");
    Domain::open(Some(&d)).expect("a fresh domain opens");
    (s, d)
}

/// Writes `bytes` as an owner-only file (replacing what was there).
fn write_private(path: &Path, bytes: &[u8]) {
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn sem_header(magic: &[u8; 8], version: u32, header_size: u32, total: u64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_SIZE];
    b[0..8].copy_from_slice(magic);
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[12..16].copy_from_slice(&header_size.to_le_bytes());
    b[16..24].copy_from_slice(&total.to_le_bytes());
    b
}

fn sem_file(magic: &[u8; 8], version: u32, total: u64, len: usize) -> Vec<u8> {
    let mut b = sem_header(magic, version, HEADER_SIZE as u32, total);
    b.resize(len, 0);
    b
}

/// Names, kinds and contents of everything under `dir` (not following links),
/// to check that a refusal changed nothing.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let md = match fs::symlink_metadata(dir) {
        Ok(md) => md,
        Err(_) => return out,
    };
    out.push((
        ".".into(),
        format!("{:?} {:o}", md.file_type(), md.permissions().mode()),
    ));
    if !md.is_dir() {
        return out;
    }
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let md = fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() {
            format!("{:?}", fs::read(&p).unwrap())
        } else if md.file_type().is_symlink() {
            format!("-> {:?}", fs::read_link(&p).unwrap())
        } else {
            String::new()
        };
        out.push((
            n.to_string_lossy().into_owned(),
            format!(
                "{:?} {:o} {content}",
                md.file_type(),
                md.permissions().mode()
            ),
        ));
    }
    out
}

fn cli_info(domain: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mtipc"))
        .arg("--domain")
        .arg(domain)
        .arg("info")
        .output()
        .expect("run mtipc")
}

/// Opening `domain` fails with `kind` through the API and the CLI, both
/// messages contain every string of `needles`, and nothing under `domain`
/// changed.
fn expect_refusal(domain: &Path, kind: ErrorKind, needles: &[&str]) {
    let before = snapshot(domain);

    let e = Domain::open(Some(domain)).expect_err("the API must refuse this domain");
    assert_eq!(
        e.kind(),
        kind,
        "API: wrong kind for {}: {e}",
        domain.display()
    );
    for n in needles {
        assert!(
            e.message().contains(n),
            "API message {:?} does not mention {n:?}",
            e.message()
        );
    }
    assert_eq!(
        snapshot(domain),
        before,
        "the API refusal changed the domain"
    );

    let out = cli_info(domain);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "CLI: exit status for {} (stderr {stderr:?})",
        domain.display()
    );
    assert!(out.stdout.is_empty(), "CLI printed on stdout: {out:?}");
    assert!(
        stderr.starts_with("mtipc: "),
        "CLI stderr {stderr:?} is not `mtipc: <message>`"
    );
    assert!(
        stderr.contains(&format!("({})", kind.name())),
        "CLI stderr {stderr:?} does not name {}",
        kind.name()
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "CLI stderr {stderr:?} does not mention {n:?}"
        );
    }
    assert_eq!(
        snapshot(domain),
        before,
        "the CLI refusal changed the domain"
    );
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_good_domain_opens_through_api_and_cli() {
    let (_s, d) = good_domain("good");
    let out = cli_info(&d);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&s(&d)), "{text}");
    assert!(text.contains("layout version:  1"), "{text}");
}

#[test]
fn path_is_a_file() {
    let sc = Scratch::new("file");
    let p = sc.path().join("dom");
    write_private(&p, b"not a directory\n");
    expect_refusal(&p, ErrorKind::Invalid, &[&s(&p), "not a directory"]);
}

#[test]
fn symlink_where_the_directory_should_be() {
    // Even when the link points to a perfectly good domain.
    let (sc, real) = good_domain("symlink");
    let link = sc.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    expect_refusal(&link, ErrorKind::Denied, &[&s(&link), "symbolic link"]);
    // A dangling link is refused the same way, not created through.
    let dangling = sc.path().join("dangling");
    std::os::unix::fs::symlink(sc.path().join("nowhere"), &dangling).unwrap();
    expect_refusal(
        &dangling,
        ErrorKind::Denied,
        &[&s(&dangling), "symbolic link"],
    );
    assert!(!sc.path().join("nowhere").exists());
}

#[test]
fn directory_owned_by_another_user() {
    if unsafe { libc::geteuid() } != 0 {
        common::skip("directory_owned_by_another_user", "needs root to chown");
        return;
    }
    let (_s, d) = good_domain("owner");
    std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    expect_refusal(
        &d,
        ErrorKind::Denied,
        &[&s(&d), "owned by uid 65534", "uid 0"],
    );
}

#[test]
fn group_writable_directory() {
    let (_s, d) = good_domain("gw");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o770)).unwrap();
    expect_refusal(
        &d,
        ErrorKind::Denied,
        &[&s(&d), "group- or world-writable", "0770"],
    );
    fs::set_permissions(&d, fs::Permissions::from_mode(0o720)).unwrap();
    expect_refusal(&d, ErrorKind::Denied, &[&s(&d), "0720"]);
}

#[test]
fn world_writable_directory() {
    let (_s, d) = good_domain("ww");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o702)).unwrap();
    expect_refusal(
        &d,
        ErrorKind::Denied,
        &[&s(&d), "group- or world-writable", "0702"],
    );
    fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).unwrap();
    expect_refusal(&d, ErrorKind::Denied, &[&s(&d), "1777"]);
}

#[test]
fn layout_of_another_version() {
    let (_s, d) = good_domain("version");
    let layout = d.join("layout");
    write_private(&layout, b"mtipc domain\nlayout 2\n");
    expect_refusal(
        &d,
        ErrorKind::Version,
        &[&s(&d), "layout version 2", "uses layout 1"],
    );
    write_private(&layout, b"mtipc domain\nlayout 4294967295\n");
    expect_refusal(
        &d,
        ErrorKind::Version,
        &[&s(&d), "layout version 4294967295"],
    );
}

#[test]
fn garbage_layout() {
    let (_s, d) = good_domain("garbage");
    let layout = d.join("layout");
    write_private(&layout, b"\x7fELF\x02\x01\x01\0garbage\xff\xfe");
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&layout), "not UTF-8"]);
    write_private(&layout, b"some other program's file\n");
    expect_refusal(
        &d,
        ErrorKind::Corrupt,
        &[&s(&layout), "does not start with \"mtipc domain\""],
    );
    write_private(&layout, b"mtipc domain\nlayout one\n");
    expect_refusal(
        &d,
        ErrorKind::Corrupt,
        &[&s(&layout), "bad version \"one\""],
    );
}

#[test]
fn truncated_layout() {
    let (_s, d) = good_domain("trunc");
    let layout = d.join("layout");
    write_private(&layout, b"mtipc domain\nlay");
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&layout), "truncated"]);
    write_private(&layout, b"mtipc domain\nlayout 1");
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&layout), "truncated"]);
    write_private(&layout, b"mtipc dom");
    expect_refusal(
        &d,
        ErrorKind::Corrupt,
        &[&s(&layout), "does not start with"],
    );
}

#[test]
fn empty_layout() {
    let (_s, d) = good_domain("empty");
    let layout = d.join("layout");
    write_private(&layout, b"");
    expect_refusal(
        &d,
        ErrorKind::Corrupt,
        &[&s(&layout), "layout file", "is empty"],
    );
}

#[test]
fn oversized_layout() {
    let (_s, d) = good_domain("big");
    let layout = d.join("layout");
    let mut big = b"mtipc domain\nlayout 1\n".to_vec();
    big.resize(300, b' ');
    write_private(&layout, &big);
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&layout), "at most 256"]);
    write_private(&layout, &vec![b'x'; 1 << 20]);
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&layout), "at most 256"]);
}

#[test]
fn layout_file_unsafe() {
    // Not in the brief's list, but the same family: a layout file others may
    // write, or a symlink in its place, is refused.
    let (sc, d) = good_domain("layoutperm");
    let layout = d.join("layout");
    fs::set_permissions(&layout, fs::Permissions::from_mode(0o644)).unwrap();
    expect_refusal(&d, ErrorKind::Denied, &[&s(&layout), "0644", "owner-only"]);
    let elsewhere = sc.path().join("layout.real");
    write_private(&elsewhere, b"mtipc domain\nlayout 1\n");
    fs::remove_file(&layout).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &layout).unwrap();
    expect_refusal(&d, ErrorKind::Denied, &[&s(&layout), "symbolic link"]);
}

#[test]
fn notify_sem_truncated() {
    let (_s, d) = good_domain("semtrunc");
    let sem = d.join("notify.sem");
    let good = fs::read(&sem).unwrap();
    assert_eq!(good.len(), SEM_SIZE);
    // Shorter than a header.
    write_private(&sem, &good[..40]);
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&sem), "truncated", "40 bytes"]);
    write_private(&sem, b"");
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&sem), "truncated", "0 bytes"]);
    // A whole header, but the region is cut short.
    write_private(&sem, &good[..100]);
    expect_refusal(
        &d,
        ErrorKind::Corrupt,
        &[&s(&sem), "100 bytes", "expected 128"],
    );
}

#[test]
fn notify_sem_garbage_magic() {
    let (_s, d) = good_domain("semmagic");
    let sem = d.join("notify.sem");
    write_private(&sem, &sem_file(b"GARBAGE!", 1, SEM_SIZE as u64, SEM_SIZE));
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&sem), "bad magic"]);
    // Another mtipc region kind is not a semaphore either.
    write_private(&sem, &sem_file(b"MTIPCSES", 1, SEM_SIZE as u64, SEM_SIZE));
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&sem), "bad magic"]);
    // Pure noise, full size.
    let noise: Vec<u8> = (0..SEM_SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write_private(&sem, &noise);
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&sem), "bad magic"]);
}

#[test]
fn notify_sem_of_another_layout_version() {
    let (_s, d) = good_domain("semver");
    let sem = d.join("notify.sem");
    write_private(&sem, &sem_file(b"MTIPCSEM", 7, SEM_SIZE as u64, SEM_SIZE));
    expect_refusal(
        &d,
        ErrorKind::Version,
        &[&s(&sem), "layout version 7", "uses layout 1"],
    );
    // Another version with another size: still reported as a version problem,
    // not as a size problem.
    write_private(&sem, &sem_file(b"MTIPCSEM", 2, 4096, 4096));
    expect_refusal(&d, ErrorKind::Version, &[&s(&sem), "layout version 2"]);
}

#[test]
fn notify_sem_of_wrong_size() {
    let (_s, d) = good_domain("semsize");
    let sem = d.join("notify.sem");
    // Good header, file too long.
    write_private(&sem, &sem_file(b"MTIPCSEM", 1, SEM_SIZE as u64, 4096));
    expect_refusal(
        &d,
        ErrorKind::Corrupt,
        &[&s(&sem), "4096 bytes", "expected 128"],
    );
    // Right length, header claims another size.
    write_private(&sem, &sem_file(b"MTIPCSEM", 1, 256, SEM_SIZE));
    expect_refusal(
        &d,
        ErrorKind::Corrupt,
        &[&s(&sem), "size of 256 bytes", "expected 128"],
    );
    // Right length, bad header size field.
    let mut b = sem_header(b"MTIPCSEM", 1, 32, SEM_SIZE as u64);
    b.resize(SEM_SIZE, 0);
    write_private(&sem, &b);
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&sem), "header size 32"]);
}

#[test]
fn notify_sem_replaced_by_a_symlink() {
    // The link points to a perfectly valid semaphore region: still refused.
    let (sc, d) = good_domain("semlink");
    let sem = d.join("notify.sem");
    let elsewhere = sc.path().join("notify.real");
    fs::rename(&sem, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &sem).unwrap();
    expect_refusal(&d, ErrorKind::Denied, &[&s(&sem), "symbolic link"]);
}

#[test]
fn notify_sem_open_to_others() {
    let (_s, d) = good_domain("semperm");
    let sem = d.join("notify.sem");
    fs::set_permissions(&sem, fs::Permissions::from_mode(0o666)).unwrap();
    expect_refusal(&d, ErrorKind::Denied, &[&s(&sem), "0666", "owner-only"]);
}

#[test]
fn notify_sem_owned_by_another_user() {
    if unsafe { libc::geteuid() } != 0 {
        common::skip("notify_sem_owned_by_another_user", "needs root to chown");
        return;
    }
    let (_s, d) = good_domain("semowner");
    let sem = d.join("notify.sem");
    std::os::unix::fs::chown(&sem, Some(65534), Some(65534)).unwrap();
    expect_refusal(&d, ErrorKind::Denied, &[&s(&sem), "owned by uid 65534"]);
}

#[test]
fn missing_parent_directory() {
    let sc = Scratch::new("parent");
    let d = sc.path().join("no-such-parent").join("dom");
    expect_refusal(
        &d,
        ErrorKind::NotFound,
        &[&s(&d), "parent directory does not exist"],
    );
    assert!(!sc.path().join("no-such-parent").exists());
}

#[test]
fn empty_path() {
    let e = Domain::open(Some(Path::new(""))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.message().contains("domain path is empty"), "{e}");

    // The CLI cannot hand an empty path to the library: clap refuses an
    // empty `--domain` value as bad usage (exit status 2), naming the option.
    let out = Command::new(env!("CARGO_BIN_EXE_mtipc"))
        .args(["--domain", "", "info"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--domain"), "{stderr}");
    assert!(stderr.contains("a value is required"), "{stderr}");
}

#[test]
fn oversized_path() {
    let long = std::env::temp_dir().join("x".repeat(4100));
    expect_refusal(&long, ErrorKind::Invalid, &["4", "at most 4000"]);
}

#[test]
fn notify_sem_is_a_directory() {
    let (_s, d) = good_domain("semdir");
    let sem = d.join("notify.sem");
    fs::remove_file(&sem).unwrap();
    fs::create_dir(&sem).unwrap();
    fs::set_permissions(&sem, fs::Permissions::from_mode(0o700)).unwrap();
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&sem), "not a regular file"]);
}

#[test]
fn layout_is_a_directory() {
    let (_s, d) = good_domain("layoutdir");
    let layout = d.join("layout");
    fs::remove_file(&layout).unwrap();
    fs::create_dir(&layout).unwrap();
    fs::set_permissions(&layout, fs::Permissions::from_mode(0o700)).unwrap();
    expect_refusal(&d, ErrorKind::Corrupt, &[&s(&layout), "not a regular file"]);
}
