use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("node.toml"))
}

fn good(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("refused:\n{e}"))
}

/// The one problem of `text`: its line and reason.
fn refused(text: &str) -> (usize, String) {
    let e = parse(text).expect_err("accepted");
    assert_eq!(e.problems.len(), 1, "{e}");
    (e.problems[0].line, e.problems[0].reason.clone())
}

fn assert_refused(text: &str, line: usize, needle: &str) {
    let (l, reason) = refused(text);
    assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
    assert_eq!(l, line, "line of {reason:?}");
}

const NODE: &str = "[node]\nname = \"a\"\n";

fn names<'a>(ps: impl Iterator<Item = &'a Process>) -> Vec<&'a str> {
    ps.map(|p| p.name.as_str()).collect()
}

#[test]
fn the_design_example_is_accepted_with_its_values() {
    let c = good(
        r#"
[node]
name = "a"
domain = "/run/mtipc"
# listen = "10.0.0.1:7400"

[[process]]
name = "db"
command = ["/usr/bin/app", "--flag"]
depends_on = []
priority = 10
monitor_ms = 200
tenant_group = "acme"
restart = "always"
ready = "notify"
watchdog_ms = 1000
placement = "everywhere"
"#,
    );
    assert_eq!(c.node.name, "a");
    assert_eq!(c.node.domain.as_deref(), Some(Path::new("/run/mtipc")));
    let db = c.process("db").unwrap();
    assert_eq!(db.line, 7);
    assert_eq!(db.command, ["/usr/bin/app", "--flag"]);
    assert_eq!(db.priority, 10);
    assert_eq!(db.monitor_ms, 200);
    assert_eq!(db.tenant_group.as_deref(), Some("acme"));
    assert_eq!(db.restart, Restart::Always);
    assert_eq!(db.ready, Ready::Notify);
    assert_eq!(db.watchdog_ms, 1000);
    assert_eq!(db.placement, Placement::Everywhere);
}

#[test]
fn defaults_fill_what_is_not_given() {
    let c = good(&format!(
        "{NODE}[[process]]\nname = \"x\"\ncommand = [\"/bin/true\"]\n"
    ));
    let x = &c.processes[0];
    assert_eq!(x.depends_on, Vec::<String>::new());
    assert_eq!(x.monitor_ms, defaults::MONITOR_MS);
    assert_eq!(x.priority, 0);
    assert_eq!(x.tenant_group, None);
    assert_eq!(x.restart, Restart::Always);
    assert_eq!(x.restart_backoff_ms, defaults::RESTART_BACKOFF_MS);
    assert_eq!(x.restart_backoff_max_ms, defaults::RESTART_BACKOFF_MAX_MS);
    assert_eq!(x.restart_max, defaults::RESTART_MAX);
    assert_eq!(x.restart_window_ms, defaults::RESTART_WINDOW_MS);
    assert_eq!(x.ready, Ready::Started);
    assert_eq!(x.watchdog_ms, 0);
    assert_eq!(x.placement, Placement::Active);
    assert!(x.env.is_empty());
    assert_eq!(x.cwd, Path::new("/"));
    assert_eq!(x.user, None);
    assert_eq!(x.stop_signal, Signal::TERM);
    assert_eq!(x.stop_timeout_ms, defaults::STOP_TIMEOUT_MS);
    assert_eq!(x.log, None);
    assert_eq!(x.log_max_bytes, defaults::LOG_MAX_BYTES);
    assert_eq!(x.log_keep, defaults::LOG_KEEP);
    let domain = Path::new("/run/d");
    assert_eq!(x.log_file(domain), Path::new("/run/d/ha/log/x.log"));
    assert_eq!(c.node.domain, None);
    assert!(c.node.witness.is_empty() && c.node.peer.is_none());
}

#[test]
fn every_key_is_read() {
    let c = good(
        r#"[node]
name = "a"
listen = "10.0.0.1:7400"
key = "/etc/mtipc/a.key"
lease_ms = 1000
peer = { address = "10.0.0.2:7400", key = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" }
witness = ["http://10.0.0.3:2379", "https://w:2379"]

[[process]]
name = "x"
command = ["/bin/sh", "-c", "exec sleep 1"]
restart = "on-failure"
restart_backoff_ms = 50
restart_backoff_max_ms = 800
restart_max = 3
restart_window_ms = 10000
env = { A = "1", B_2 = "two words" }
cwd = "/srv"
user = "www-data"
stop_signal = "SIGINT"
stop_timeout_ms = 250
log = "x/out.log"
log_max_bytes = 65536
log_keep = 0
"#,
    );
    assert_eq!(c.node.listen.as_deref(), Some("10.0.0.1:7400"));
    assert_eq!(c.node.key.as_deref(), Some(Path::new("/etc/mtipc/a.key")));
    assert_eq!(c.node.lease_ms, Some(1000));
    assert_eq!(c.node.peer.as_ref().unwrap().address, "10.0.0.2:7400");
    assert_eq!(c.node.witness.len(), 2);
    let x = &c.processes[0];
    assert_eq!(x.restart, Restart::OnFailure);
    assert_eq!(
        (
            x.restart_backoff_ms,
            x.restart_backoff_max_ms,
            x.restart_max,
            x.restart_window_ms
        ),
        (50, 800, 3, 10_000)
    );
    assert_eq!(x.env["B_2"], "two words");
    assert_eq!(x.cwd, Path::new("/srv"));
    assert_eq!(x.user.as_deref(), Some("www-data"));
    assert_eq!(
        x.stop_signal,
        Signal {
            name: "INT",
            number: libc::SIGINT
        }
    );
    assert_eq!(x.stop_timeout_ms, 250);
    assert_eq!(
        x.log_file(Path::new("/d")),
        Path::new("/d/ha/log/x/out.log")
    );
    assert_eq!((x.log_max_bytes, x.log_keep), (65536, 0));
    // A small backoff raises nothing; a large one raises the default max.
    let c = good(&format!(
        "{NODE}[[process]]\nname = \"y\"\ncommand = [\"/b\"]\nrestart_backoff_ms = 60000\n"
    ));
    assert_eq!(c.processes[0].restart_backoff_max_ms, 60_000);
    // 0: restarted at once (the crash loop still held by restart_max).
    let c = good(&format!(
        "{NODE}[[process]]\nname = \"y\"\ncommand = [\"/b\"]\nrestart_backoff_ms = 0\nrestart_backoff_max_ms = 0\n"
    ));
    assert_eq!(
        (
            c.processes[0].restart_backoff_ms,
            c.processes[0].restart_backoff_max_ms
        ),
        (0, 0)
    );
}

#[test]
fn syntax_errors_give_their_line() {
    assert_refused(&format!("{NODE}\n[[process]]\nname = \"x\nc = 1\n"), 5, "");
    assert_refused("[node]\nname = \"a\"\n[node]\nname = \"b\"\n", 3, "");
    let (line, reason) = refused("[node]\nname = \"a\"\nx = = 1\n");
    assert_eq!(line, 3, "{reason}");
    assert!(!reason.contains('\n'));
}

#[test]
fn unknown_keys_are_refused_at_their_line() {
    assert_refused(
        &format!("{NODE}[[process]]\nname = \"x\"\ncommand = [\"/b\"]\nmonitr_ms = 10\n"),
        6,
        "unknown field `monitr_ms`",
    );
    assert_refused(
        "[node]\nname = \"a\"\nnmae = \"b\"\n",
        3,
        "unknown field `nmae`",
    );
    assert_refused(
        "[node]\nname = \"a\"\n[nodes]\n",
        3,
        "unknown field `nodes`",
    );
    assert_refused(
        "[node]\nname = \"a\"\npeer = { address = \"x:1\", key = \"k\", port = 2 }\n",
        3,
        "unknown field `port`",
    );
}

#[test]
fn missing_and_mistyped_values() {
    assert_refused("", 1, "missing field `node`");
    assert_refused(
        &format!("{NODE}\n[[process]]\nname = \"x\"\n"),
        4,
        "missing field `command`",
    );
    assert_refused(
        &format!("{NODE}[[process]]\nname = \"x\"\ncommand = [\"/b\"]\nmonitor_ms = \"fast\"\n"),
        6,
        "invalid type",
    );
    assert_refused(
        &format!("{NODE}[[process]]\nname = \"x\"\ncommand = \"/bin/app --flag\"\n"),
        5,
        "invalid type",
    );
}

#[test]
fn bad_values_are_refused_with_the_reason() {
    let p = |extra: &str| format!("{NODE}[[process]]\nname = \"x\"\ncommand = [\"/b\"]\n{extra}\n");
    assert_refused(
        &p("monitor_ms = 5"),
        6,
        "monitor_ms = 5 is out of range (allowed: 10 to",
    );
    assert_refused(&p("monitor_ms = -1"), 6, "monitor_ms = -1 is negative");
    assert_refused(&p("monitor_ms = 0"), 6, "must not be 0");
    assert_refused(&p("watchdog_ms = 3"), 6, "watchdog_ms = 3");
    assert_refused(
        &p("restart_backoff_ms = -1"),
        6,
        "restart_backoff_ms = -1 is negative",
    );
    assert_refused(&p("restart_max = 0"), 6, "restart_max = 0 must not be 0");
    assert_refused(&p("stop_timeout_ms = 0"), 6, "stop_timeout_ms");
    assert_refused(
        &p("priority = 2000000"),
        6,
        "priority = 2000000 is out of range",
    );
    assert_refused(&p("priority = -9223372036854775808"), 6, "priority");
    assert_refused(&p("log_max_bytes = 100"), 6, "log_max_bytes = 100");
    assert_refused(&p("log_keep = 101"), 6, "log_keep");
    assert_refused(
        &p("restart_backoff_ms = 500\nrestart_backoff_max_ms = 100"),
        7,
        "less than restart_backoff_ms (500)",
    );
    assert_refused(
        &p("restart = \"sometimes\""),
        6,
        "restart = \"sometimes\" is not one of: always, on-failure, never",
    );
    assert_refused(&p("ready = \"yes\""), 6, "started, notify");
    assert_refused(&p("placement = \"both\""), 6, "active, everywhere");
    assert_refused(&p("stop_signal = \"TERMINATE\""), 6, "not a signal name");
    assert_refused(&p("stop_signal = \"term\""), 6, "not a signal name");
    assert_refused(&p("cwd = \"srv\""), 6, "not an absolute path");
    assert_refused(&p("user = \"a b\""), 6, "not a user name");
    assert_refused(&p("log = \"../../etc/x\""), 6, "no ..");
    assert_refused(&p("env = { \"A-B\" = \"1\" }"), 6, "not a variable name");
    assert_refused(
        &p("env = { MTIPC_HA_SOCKET = \"/x\" }"),
        6,
        "the Spawner sets it",
    );
    assert_refused(
        &p("env = { MTIPC_HA_PROCESS = \"db\" }"),
        6,
        "env must not set MTIPC_HA_PROCESS: the Spawner sets it",
    );
    assert_refused(&p("tenant_group = \"../g\""), 6, "tenant_group \"../g\"");
    assert_refused(
        &format!("{NODE}[[process]]\nname = \"x\"\ncommand = []\n"),
        5,
        "command is empty",
    );
    assert_refused(
        &format!("{NODE}[[process]]\nname = \"x\"\ncommand = [\"\", \"a\"]\n"),
        5,
        "program is empty",
    );
    assert_refused(
        &format!("{NODE}[[process]]\nname = \".x\"\ncommand = [\"/b\"]\n"),
        4,
        "process name \".x\": starts with '.'",
    );
    assert_refused("[node]\nname = \"a/b\"\n", 2, "node name \"a/b\"");
    assert_refused(
        "[node]\nname = \"a\"\ndomain = \"rel\"\n",
        3,
        "not an absolute path",
    );
    assert_refused(
        "[node]\nname = \"a\"\nlisten = \"here\"\n",
        3,
        "not an address",
    );
    assert_refused(
        "[node]\nname = \"a\"\npeer = { address = \"x:1\", key = \"sha256:12\" }\n",
        3,
        "not a pin",
    );
    assert_refused(
        "[node]\nname = \"a\"\nwitness = [\"etcd:2379\"]\n",
        3,
        "witness",
    );
}

#[test]
fn every_problem_is_reported_by_line() {
    let e = parse(&format!(
        "{NODE}[[process]]\nname = \"x\"\ncommand = [\"/b\"]\nmonitor_ms = 1\n\
         [[process]]\nname = \"y\"\ncommand = [\"/b\"]\nrestart = \"no\"\n"
    ))
    .unwrap_err();
    let lines: Vec<usize> = e.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [6, 10], "{e}");
    let text = e.to_string();
    assert!(text.starts_with("node.toml:6: monitor_ms = 1"), "{text}");
    assert!(text.contains("\nnode.toml:10: restart = \"no\""), "{text}");
}

#[test]
fn duplicate_names_and_unknown_dependencies() {
    assert_refused(
        &format!(
            "{NODE}[[process]]\nname = \"x\"\ncommand = [\"/b\"]\n\n[[process]]\nname = \"x\"\ncommand = [\"/c\"]\n"
        ),
        7,
        "process \"x\" is defined twice (first at line 3)",
    );
    assert_refused(
        &format!(
            "{NODE}[[process]]\nname = \"x\"\ncommand = [\"/b\"]\ndepends_on = [\n  \"db\",\n]\n"
        ),
        7,
        "process \"x\" depends on \"db\", which is not a process of this file",
    );
    assert_refused(
        &format!(
            "{NODE}[[process]]\nname = \"x\"\ncommand = [\"/b\"]\ndepends_on = [\"y\", \"y\"]\n[[process]]\nname = \"y\"\ncommand = [\"/b\"]\n"
        ),
        6,
        "depends_on names \"y\" twice",
    );
}

#[test]
fn cycles_are_named() {
    assert_refused(
        &format!("{NODE}[[process]]\nname = \"x\"\ncommand = [\"/b\"]\ndepends_on = [\"x\"]\n"),
        6,
        "dependency cycle: x -> x",
    );
    let text = format!(
        "{NODE}\
         [[process]]\nname = \"a\"\ncommand = [\"/b\"]\ndepends_on = [\"c\"]\n\
         [[process]]\nname = \"b\"\ncommand = [\"/b\"]\ndepends_on = [\"a\"]\n\
         [[process]]\nname = \"c\"\ncommand = [\"/b\"]\ndepends_on = [\"free\", \"b\"]\n\
         [[process]]\nname = \"free\"\ncommand = [\"/b\"]\n\
         [[process]]\nname = \"after\"\ncommand = [\"/b\"]\ndepends_on = [\"c\"]\n"
    );
    // Reported from the cycle's first process in the file, at its
    // depends_on entry that continues the cycle.
    assert_refused(&text, 6, "dependency cycle: a -> c -> b -> a");
}

/// A process and its dependencies, priority and group, for order tests.
fn proc_(name: &str, deps: &[&str], priority: i32, group: Option<&str>) -> String {
    let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
    let mut s = format!(
        "[[process]]\nname = {name:?}\ncommand = [\"/b\"]\ndepends_on = [{}]\npriority = {priority}\n",
        deps.join(", ")
    );
    if let Some(g) = group {
        s += &format!("tenant_group = {g:?}\n");
    }
    s
}

#[test]
fn start_order_follows_dependencies_then_priority_then_name() {
    let text = [
        NODE.to_string(),
        proc_("web", &["db", "cache"], 0, Some("acme")),
        proc_("db", &[], 10, Some("acme")),
        proc_("cache", &[], 5, None),
        proc_("zeta", &[], 1, Some("beta")),
        proc_("alpha", &[], 1, Some("beta")),
        proc_("report", &["web"], -5, Some("beta")),
        proc_("log", &[], -1, None),
    ]
    .concat();
    let c = good(&text);
    // Ready at first: db 10, cache 5, zeta 1, alpha 1, log -1. log, then
    // alpha and zeta (priority 1, by name), cache, db; web waits for both;
    // report (-5) only once web is placed.
    assert_eq!(
        names(c.start_order()),
        ["log", "alpha", "zeta", "cache", "db", "web", "report"]
    );
    assert_eq!(
        names(c.stop_order()),
        ["report", "web", "db", "cache", "zeta", "alpha", "log"]
    );
    let groups = c.groups();
    assert_eq!(groups.keys().copied().collect::<Vec<_>>(), ["acme", "beta"]);
    assert_eq!(names(groups["acme"].iter().copied()), ["db", "web"]);
    assert_eq!(
        names(groups["beta"].iter().copied()),
        ["alpha", "zeta", "report"]
    );
    assert_eq!(
        names(c.group("beta").into_iter()),
        ["alpha", "zeta", "report"]
    );
    assert!(c.group("none").is_empty());
    // Every process comes after its dependencies.
    let pos = |n: &str| c.processes.iter().position(|p| p.name == n).unwrap();
    for p in &c.processes {
        for d in &p.depends_on {
            assert!(pos(d) < pos(&p.name), "{} before {d}", p.name);
        }
    }
}

#[test]
fn a_deep_chain_and_a_wide_fan_order_as_expected() {
    // A chain declared backwards: each depends on the next one declared.
    let mut text = NODE.to_string();
    for i in 0..50 {
        let deps: Vec<String> = if i < 49 {
            vec![format!("p{}", i + 1)]
        } else {
            vec![]
        };
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        text += &proc_(&format!("p{i}"), &deps, -i, None);
    }
    let c = good(&text);
    let want: Vec<String> = (0..50).rev().map(|i| format!("p{i}")).collect();
    assert_eq!(names(c.start_order()), want);
    // Equal priorities: by name (bytewise).
    let mut text = NODE.to_string();
    for n in ["b", "B", "a", "a1", "_x"] {
        text += &proc_(n, &[], 0, None);
    }
    assert_eq!(
        names(good(&text).start_order()),
        ["B", "_x", "a", "a1", "b"]
    );
}

#[test]
fn files_are_read_with_their_name_in_messages() {
    let dir = std::env::temp_dir().join(format!("mtipc-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(&f, "[node]\nname = \"a\"\n\n[[process]]\nname = \"x\"\n").unwrap();
    let e = Config::load(&f).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:4: missing field `command`", f.display())
    );
    std::fs::write(&f, b"[node]\nname = \"a\"\n# \xff\n").unwrap();
    assert_eq!(Config::load(&f).unwrap_err().problems[0].line, 3);
    let e = Config::load(&dir.join("missing.toml")).unwrap_err();
    assert!(
        e.problems[0].reason.starts_with("cannot read the file"),
        "{e}"
    );
    let err = e.into_error();
    assert_eq!(err.kind(), crate::ErrorKind::Invalid);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_value_does_not_hide_its_process_from_the_others() {
    // The dependent of a process with a bad value is not told that it
    // depends on an unknown process, and a cycle is still found.
    let e = parse(&format!(
        "{NODE}[[process]]\nname = \"db\"\ncommand = [\"/b\"]\nmonitor_ms = 1\n\
         [[process]]\nname = \"web\"\ncommand = [\"/b\"]\ndepends_on = [\"db\", \"web\"]\n"
    ))
    .unwrap_err();
    let got: Vec<(usize, &str)> = e
        .problems
        .iter()
        .map(|p| (p.line, p.reason.as_str()))
        .collect();
    assert_eq!(got.len(), 2, "{e}");
    assert_eq!(got[0].0, 6);
    assert!(got[0].1.starts_with("monitor_ms = 1"), "{e}");
    assert_eq!(got[1], (10, "dependency cycle: web -> web"));
}
