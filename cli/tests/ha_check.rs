//! `mtipc-ha check CONFIG`, the real program on good and bad files: the
//! start order, stop order and groups printed with exit status 0; every
//! problem as `CONFIG:LINE: reason` on stderr with exit status 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("mtipc-ha-check-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir(&d).unwrap();
    Dir(d)
}

fn check(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtipc-ha"))
        .arg("check")
        .arg(path)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const GOOD: &str = r#"# A node of three groups.
[node]
name = "a"
domain = "/run/mtipc-test"

[[process]]
name = "web"
command = ["/usr/bin/web", "--port", "8080"]
depends_on = ["db", "cache"]
tenant_group = "acme"
ready = "notify"
placement = "everywhere"

[[process]]
name = "db"
command = ["/usr/bin/db"]
priority = 10
tenant_group = "acme"

[[process]]
name = "cache"
command = ["/usr/bin/cache"]
priority = 5

[[process]]
name = "alpha"
command = ["/usr/bin/alpha"]
priority = 1
tenant_group = "beta"

[[process]]
name = "report"
command = ["/usr/bin/report"]
depends_on = ["web"]
priority = -5
tenant_group = "beta"
"#;

#[test]
fn a_good_file_prints_its_orders() {
    let d = dir("good");
    let f = d.0.join("node.toml");
    std::fs::write(&f, GOOD).unwrap();
    let out = check(&f);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let want = format!(
        "{}: node a, domain /run/mtipc-test
5 processes, in start order:
  # NAME   GROUP PRIORITY READY   PLACEMENT  DEPENDS ON
  1 alpha  beta  1        started active     -
  2 cache  -     5        started active     -
  3 db     acme  10       started active     -
  4 web    acme  0        notify  everywhere db, cache
  5 report beta  -5       started active     web
stop order: report, web, db, cache, alpha
tenant groups (members in start order):
  acme: db, web
  beta: alpha, report
",
        f.display()
    );
    assert_eq!(stdout, want);
}

/// Runs check on `content` and returns stderr, asserting exit status 1
/// and nothing on stdout.
fn refused(d: &Dir, content: &str) -> String {
    let f = d.0.join("bad.toml");
    std::fs::write(&f, content).unwrap();
    let out = check(&f);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout), "");
    text(&out.stderr).replace(&f.display().to_string(), "CONFIG")
}

#[test]
fn bad_files_are_refused_with_file_line_and_reason() {
    let d = dir("bad");
    // A dependency cycle, named.
    let cycle = GOOD.replace(
        "name = \"db\"\n",
        "name = \"db\"\ndepends_on = [\"report\"]\n",
    );
    assert_eq!(
        refused(&d, &cycle),
        "CONFIG:9: dependency cycle: web -> db -> report -> web\n"
    );
    // An unknown dependency and a duplicate name: both reported, by line.
    let two = GOOD
        .replace("depends_on = [\"web\"]", "depends_on = [\"wbe\"]")
        .replace("name = \"alpha\"", "name = \"cache\"");
    assert_eq!(
        refused(&d, &two),
        "CONFIG:25: process \"cache\" is defined twice (first at line 20)\n\
         CONFIG:34: process \"report\" depends on \"wbe\", which is not a process of this file\n"
    );
    // A typo in a key.
    assert_eq!(
        refused(&d, &GOOD.replace("priority = 10", "priorty = 10")),
        "CONFIG:17: unknown field `priorty`, expected one of `name`, `command`, `depends_on`, \
         `monitor_ms`, `priority`, `tenant_group`, `restart`, `restart_backoff_ms`, \
         `restart_backoff_max_ms`, `restart_max`, `restart_window_ms`, `ready`, `watchdog_ms`, \
         `placement`, `env`, `cwd`, `user`, `stop_signal`, `stop_timeout_ms`, `log`, \
         `log_max_bytes`, `log_keep`\n"
    );
    // Bad values.
    let bad = GOOD
        .replace("ready = \"notify\"", "ready = \"notified\"\nmonitor_ms = 2")
        .replace("priority = 5", "priority = 5\nstop_signal = \"STOP\"");
    let err = refused(&d, &bad);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("CONFIG:11: ready = \"notified\" is not one of: started, notify"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("CONFIG:12: monitor_ms = 2 is out of range (allowed: 10 to"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("CONFIG:25: stop_signal = \"STOP\" is not a signal name"),
        "{err}"
    );
    // TOML syntax.
    assert_eq!(
        refused(&d, "[node]\nname = \"a\"\n[[process]\n"),
        refused(&d, "[node]\nname = \"a\"\n[[process]\n"),
    );
    assert!(refused(&d, "[node]\nname = \"a\"\n[[process]\n").starts_with("CONFIG:3: "));
    // An empty command.
    assert_eq!(
        refused(&d, &GOOD.replace("[\"/usr/bin/db\"]", "[]")),
        "CONFIG:16: command is empty\n"
    );
}

#[test]
fn a_missing_file_and_bad_usage() {
    let d = dir("usage");
    let missing = d.0.join("nope.toml");
    let out = check(&missing);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("{}:1: cannot read the file:", missing.display())),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mtipc-ha"))
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
