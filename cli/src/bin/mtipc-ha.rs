//! `mtipc-ha`: the high-availability supervisor of a node (DESIGN.md
//! section 4, docs/ha.md).
//!
//! ```text
//! mtipc-ha check CONFIG     check a configuration file; print its start order
//! ```
//!
//! The five roles (`mtipc-ha up CONFIG` and the Server, Monitor, Spawner,
//! Master and Master Watcher it starts) are not built yet.
//!
//! Exit status: 0 on success; 1 when the file is refused (one line per
//! problem on stderr: `CONFIG:LINE: reason`); 2 on bad usage.

use clap::{Parser, Subcommand};
use mtipc::ha::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Supervise the processes of an mtipc node.
#[derive(Parser)]
#[command(name = "mtipc-ha", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a configuration file without starting anything: print the
    /// node, its processes in start order (with their tenant group,
    /// priority, readiness and dependencies), the stop order and the
    /// tenant groups; or every problem as CONFIG:LINE: reason (exit 1).
    Check {
        /// The configuration file (TOML).
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => check(&config),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let c = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report(&c));
    ExitCode::SUCCESS
}

/// What `check` prints for a good file.
fn report(c: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let domain = match &c.node.domain {
        Some(d) => d.display().to_string(),
        None => "default (as mt_domain_open(NULL))".to_string(),
    };
    let _ = writeln!(
        out,
        "{}: node {}, domain {domain}",
        c.file.display(),
        c.node.name
    );
    let _ = writeln!(out, "{} processes, in start order:", c.processes.len());
    let rows: Vec<[String; 7]> = c
        .start_order()
        .enumerate()
        .map(|(i, p)| {
            [
                (i + 1).to_string(),
                p.name.clone(),
                p.tenant_group.clone().unwrap_or_else(|| "-".into()),
                p.priority.to_string(),
                p.ready.to_string(),
                p.placement.to_string(),
                if p.depends_on.is_empty() {
                    "-".into()
                } else {
                    p.depends_on.join(", ")
                },
            ]
        })
        .collect();
    let head = [
        "#",
        "NAME",
        "GROUP",
        "PRIORITY",
        "READY",
        "PLACEMENT",
        "DEPENDS ON",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(head.map(String::from)).chain(rows) {
        let mut line = String::from(" ");
        for (k, (w, cell)) in width.iter().zip(&r).enumerate() {
            if k + 1 == r.len() {
                let _ = write!(line, " {cell}");
            } else if k == 0 {
                let _ = write!(line, " {cell:>w$}");
            } else {
                let _ = write!(line, " {cell:<w$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let stop: Vec<&str> = c.stop_order().map(|p| p.name.as_str()).collect();
    let _ = writeln!(out, "stop order: {}", or_none(&stop));
    let groups = c.groups();
    if groups.is_empty() {
        let _ = writeln!(out, "tenant groups: none");
    } else {
        let _ = writeln!(out, "tenant groups (members in start order):");
        for (g, members) in groups {
            let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
            let _ = writeln!(out, "  {g}: {}", names.join(", "));
        }
    }
    out
}

fn or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}
