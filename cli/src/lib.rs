//! What the programs `mtipc`, `mtipcd` and `mtipc-ha` share: printing the
//! library's events (and their own) on stderr, and the HA supervisor's
//! engine ([`ha`]).

pub mod ha;

use mtipc::log::Level;
use std::io::Write;
use std::sync::Arc;

/// The level named by `--log` or `$MTIPC_LOG` (`error`, `warn`, `info`,
/// `debug`, `trace`, or `off`), else `default`. `None` means off. An unknown
/// name is an error that names the accepted ones.
pub fn log_level(arg: Option<&str>, default: Level) -> Result<Option<Level>, String> {
    let env = std::env::var("MTIPC_LOG").ok();
    let Some(name) = arg.or(env.as_deref()).filter(|s| !s.trim().is_empty()) else {
        return Ok(Some(default));
    };
    if name.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    Level::parse(name).map(Some).ok_or_else(|| {
        format!("unknown log level {name:?}: use error, warn, info, debug, trace or off")
    })
}

/// Sends the library's events up to `level` to stderr, one line each:
/// `2026-12-07T06:30:01.123Z  WARN mtipc::attach::relay: message fields`.
pub fn log_to_stderr(level: Option<Level>) {
    match level {
        Some(l) => mtipc::log::set_logger(Arc::new(print_event), l),
        None => mtipc::log::clear_logger(),
    }
}

/// Emits the program's own event through the same logger as the library's.
pub fn event(level: Level, message: &str) {
    mtipc::log::emit(level, "mtipcd", message);
}

fn print_event(level: Level, target: &str, message: &str) {
    let line = format!(
        "{} {:>5} {target}: {message}\n",
        utc_now(),
        level.as_str().to_ascii_uppercase()
    );
    // One write per line, so that lines of several threads do not mix.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
    }

    #[test]
    fn levels() {
        assert_eq!(
            log_level(Some("debug"), Level::Info),
            Ok(Some(Level::Debug))
        );
        assert_eq!(log_level(Some("OFF"), Level::Info), Ok(None));
        assert!(log_level(Some("mtipc=debug"), Level::Info)
            .unwrap_err()
            .contains("unknown log level"));
    }
}
