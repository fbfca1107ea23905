//! The library's events, delivered to one logger the application installs.
//!
//! The library never prints. What it has to say (a stale advertisement
//! removed, a relay pairing refused, a waiter that stopped) is an *event*: a
//! [`Level`], a target (the module that emitted it, `mtipc::attach::relay`)
//! and a message with its fields (`relay: listening path=/run/x/relay.sock
//! owner_uid=1000`). With no logger installed an event costs one relaxed
//! atomic load and nothing else; with one, events above its level are not
//! even formatted.
//!
//! - Rust: [`set_logger`] / [`clear_logger`];
//! - C: `mt_log_set(fn, user, max_level)` (`src/ffi/log.rs`);
//! - C++: `mtipc::set_log(std::function)`;
//! - Python: events go to the `logging` logger `mtipc`.
//!
//! The logger is called on the thread that emitted the event (an
//! application thread inside a call, or one of the library's own threads: a
//! tenant's waiter, mtipcd's relay), possibly on several threads at once. It
//! must not block for long; it may call into mtipc (an event it causes is
//! delivered to it too: do not log from it unconditionally on every event).
//! Replacing the logger while events are delivered is safe: a delivery that
//! started keeps the logger it started with.
//!
//! Inside the library, events are emitted with the macros [`error!`],
//! [`warn!`], [`info!`], [`debug!`], [`trace!`] of this module, which take
//! the field syntax of the `tracing` crate's macros, so that call sites read
//! as before: `warn!(pairing = %tag, pid = cred.pid, "relay: refused")`
//! (`%`: `Display`, `?`: `Debug`, a plain value: `Display`; a bare name is
//! that variable). The message comes last and may have format arguments.

use std::fmt::Write as _;
// Process-local state, never in shared memory and never modelled by loom.
use crate::sync::{local::AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// How much an event matters; a logger receives the events up to its
/// maximum level ([`Level::Error`] is the least, [`Level::Trace`] the most).
/// The values are those of the C enum `mt_log_level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// Something failed that the library could not report as a status (a
    /// waiter thread stopped, the relay's loop failed).
    Error = 1,
    /// Something unexpected that the library handled (a bad file skipped, a
    /// connection refused).
    Warn = 2,
    /// What a daemon's operator wants to see (listening, a pairing made).
    Info = 3,
    /// Details of each step (a handshake accepted, a closure published).
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl Level {
    /// The level of a C `mt_log_level` value (1 to 5); `None` otherwise.
    pub fn from_u32(v: u32) -> Option<Level> {
        Some(match v {
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            5 => Level::Trace,
            _ => return None,
        })
    }

    /// `"error"`, `"warn"`, `"info"`, `"debug"` or `"trace"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// The level named `s` (`"warn"`, `"WARN"`, `"warning"`, ...); `None`
    /// for anything else.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a logger is: called with the event's level, its target (the module
/// path that emitted it) and its message with the fields appended.
pub type Logger = dyn Fn(Level, &str, &str) + Send + Sync;

/// The most verbose level delivered (0: no logger). Checked before an event
/// is formatted.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);
static LOGGER: RwLock<Option<Arc<Logger>>> = RwLock::new(None);

/// Installs `logger`, replacing any other, and delivers to it the events up
/// to `max_level`. Events emitted before the call are not kept.
pub fn set_logger(logger: Arc<Logger>, max_level: Level) {
    let mut slot = LOGGER.write().unwrap_or_else(|p| p.into_inner());
    *slot = Some(logger);
    MAX_LEVEL.store(max_level as u8, Ordering::Release);
}

/// Removes the logger: events are dropped from now on (a delivery already
/// under way finishes).
pub fn clear_logger() {
    let mut slot = LOGGER.write().unwrap_or_else(|p| p.into_inner());
    MAX_LEVEL.store(0, Ordering::Release);
    *slot = None;
}

/// Whether an event of `level` would be delivered now.
#[inline]
pub fn enabled(level: Level) -> bool {
    (level as u8) <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Delivers one event to the logger, if any and if `level` passes its
/// filter. The lock is not held during the call, so a logger may replace
/// itself or log.
pub fn emit(level: Level, target: &str, message: &str) {
    if !enabled(level) {
        return;
    }
    let logger = match LOGGER.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    if let Some(l) = logger {
        // The application's code: on a library thread made batch (an
        // advertisement's waiter), with the policy that thread had.
        crate::sys::thread::in_foreground(|| l(level, target, message));
    }
}

// ---------------------------------------------------------------------------
// Panics: reported, never printed, when they happen in the library's code.

thread_local! {
    /// How many [`quiet_panics`] scopes this thread is in.
    static QUIET: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

// Under loom the C boundary and the library's threads are not built.
#[cfg_attr(loom, allow(dead_code))]
static HOOK: std::sync::Once = std::sync::Once::new();

/// Installs, once per process, a panic hook in front of the one that was
/// there: a panic on a thread inside [`quiet_panics`] becomes an
/// [`Level::Error`] event ("panic at FILE:LINE: MESSAGE", with a backtrace
/// when `RUST_BACKTRACE` asks for one) instead of text on stderr; every
/// other panic goes to the previous hook untouched, so the application's
/// own panics print (or not) as they did. An application that installs its
/// own hook later replaces this one, and then sees the library's panics too.
#[cfg_attr(loom, allow(dead_code))]
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) == 0 {
                return previous(info);
            }
            if !enabled(Level::Error) {
                return;
            }
            let payload = info.payload();
            let what = if let Some(s) = payload.downcast_ref::<&str>() {
                s
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.as_str()
            } else {
                "(no message)"
            };
            let mut msg = match info.location() {
                Some(l) => format!("panic at {}:{}: {what}", l.file(), l.line()),
                None => format!("panic: {what}"),
            };
            let bt = std::backtrace::Backtrace::capture();
            if bt.status() == std::backtrace::BacktraceStatus::Captured {
                let _ = write!(msg, "\n{bt}");
            }
            emit(Level::Error, "mtipc::panic", &msg);
        }));
    });
}

/// Runs `f` with this thread's panics reported as events instead of
/// printed (see [`install_hook`]); the panic still unwinds to the caller,
/// which turns it into `MT_ERR_PANIC` (the C boundary) or ends its thread
/// (the library's own threads). Scopes nest.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn quiet_panics<R>(f: impl FnOnce() -> R) -> R {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            QUIET.with(|q| q.set(q.get().saturating_sub(1)));
        }
    }
    install_hook();
    QUIET.with(|q| q.set(q.get() + 1));
    let _leave = Leave;
    f()
}

/// Appends ` name=value` to an event's message (used by the macros).
#[doc(hidden)]
pub fn push_field(msg: &mut String, name: &str, value: std::fmt::Arguments<'_>) {
    let _ = write!(msg, " {name}={value}");
}

/// Emits an event at `level` with `tracing`-style fields (see the module
/// documentation). Used by [`error!`] and its siblings.
#[doc(hidden)]
#[macro_export]
macro_rules! __mt_event {
    ($level:expr, $($rest:tt)+) => {
        if $crate::log::enabled($level) {
            let mut __mt_fields = ::std::string::String::new();
            $crate::__mt_event!(@fields __mt_fields, $level; $($rest)+);
        }
    };
    // `name = %value`, `name = ?value`, `name = value`.
    (@fields $f:ident, $level:expr; $name:ident = % $value:expr, $($rest:tt)+) => {
        $crate::log::push_field(&mut $f, stringify!($name), format_args!("{}", $value));
        $crate::__mt_event!(@fields $f, $level; $($rest)+);
    };
    (@fields $f:ident, $level:expr; $name:ident = ? $value:expr, $($rest:tt)+) => {
        $crate::log::push_field(&mut $f, stringify!($name), format_args!("{:?}", $value));
        $crate::__mt_event!(@fields $f, $level; $($rest)+);
    };
    (@fields $f:ident, $level:expr; $name:ident = $value:expr, $($rest:tt)+) => {
        $crate::log::push_field(&mut $f, stringify!($name), format_args!("{}", $value));
        $crate::__mt_event!(@fields $f, $level; $($rest)+);
    };
    // `%name`, `?name`, `name`: the variable of that name.
    (@fields $f:ident, $level:expr; % $name:ident, $($rest:tt)+) => {
        $crate::log::push_field(&mut $f, stringify!($name), format_args!("{}", $name));
        $crate::__mt_event!(@fields $f, $level; $($rest)+);
    };
    (@fields $f:ident, $level:expr; ? $name:ident, $($rest:tt)+) => {
        $crate::log::push_field(&mut $f, stringify!($name), format_args!("{:?}", $name));
        $crate::__mt_event!(@fields $f, $level; $($rest)+);
    };
    (@fields $f:ident, $level:expr; $name:ident, $($rest:tt)+) => {
        $crate::log::push_field(&mut $f, stringify!($name), format_args!("{}", $name));
        $crate::__mt_event!(@fields $f, $level; $($rest)+);
    };
    // The message, last: a format string and its arguments.
    (@fields $f:ident, $level:expr; $($msg:tt)+) => {{
        let mut __mt_msg = ::std::format!($($msg)+);
        __mt_msg.push_str(&$f);
        $crate::log::emit($level, ::std::module_path!(), &__mt_msg);
    }};
}

/// Emits an [`Level::Error`] event (see the module documentation).
#[doc(hidden)]
#[macro_export]
macro_rules! __mt_error { ($($t:tt)+) => { $crate::__mt_event!($crate::log::Level::Error, $($t)+) }; }
/// Emits a [`Level::Warn`] event.
#[doc(hidden)]
#[macro_export]
macro_rules! __mt_warn { ($($t:tt)+) => { $crate::__mt_event!($crate::log::Level::Warn, $($t)+) }; }
/// Emits a [`Level::Info`] event.
#[doc(hidden)]
#[macro_export]
macro_rules! __mt_info { ($($t:tt)+) => { $crate::__mt_event!($crate::log::Level::Info, $($t)+) }; }
/// Emits a [`Level::Debug`] event.
#[doc(hidden)]
#[macro_export]
macro_rules! __mt_debug { ($($t:tt)+) => { $crate::__mt_event!($crate::log::Level::Debug, $($t)+) }; }
/// Emits a [`Level::Trace`] event.
#[doc(hidden)]
#[macro_export]
macro_rules! __mt_trace { ($($t:tt)+) => { $crate::__mt_event!($crate::log::Level::Trace, $($t)+) }; }

#[doc(hidden)]
pub use crate::{
    __mt_debug as debug, __mt_error as error, __mt_info as info, __mt_trace as trace,
    __mt_warn as warn,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The logger is process-wide: these tests take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Installs a logger that keeps the events of this thread (other tests
    /// run in parallel and may emit events of their own).
    fn capture(max: Level) -> Arc<Mutex<Vec<(Level, String, String)>>> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        let me = std::thread::current().id();
        set_logger(
            Arc::new(move |l, t: &str, m: &str| {
                if std::thread::current().id() == me {
                    g.lock().unwrap().push((l, t.into(), m.into()))
                }
            }),
            max,
        );
        got
    }

    #[test]
    fn fields_and_message_reach_the_logger() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let got = capture(Level::Debug);
        let path = "/run/x";
        let pid = 42u32;
        let n = 7;
        warn!(path = %path, pid, list = ?[1, 2], count = n + 1, "relay: refused {n} times");
        debug!("plain");
        clear_logger();
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, Level::Warn);
        assert_eq!(got[0].1, "mtipc::log::tests");
        assert_eq!(
            got[0].2,
            "relay: refused 7 times path=/run/x pid=42 list=[1, 2] count=8"
        );
        assert_eq!(
            got[1],
            (Level::Debug, "mtipc::log::tests".into(), "plain".into())
        );
    }

    #[test]
    fn events_above_the_level_are_not_formatted() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let got = capture(Level::Warn);
        let formatted = std::cell::Cell::new(0);
        struct Counted<'a>(&'a std::cell::Cell<u32>);
        impl std::fmt::Display for Counted<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.set(self.0.get() + 1);
                f.write_str("x")
            }
        }
        info!(v = %Counted(&formatted), "not delivered");
        debug!("not delivered either");
        error!(v = %Counted(&formatted), "delivered");
        clear_logger();
        error!(v = %Counted(&formatted), "after clear: dropped");
        assert_eq!(formatted.get(), 1, "only the delivered event is formatted");
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].2, "delivered v=x");
    }

    #[test]
    fn a_logger_may_replace_itself() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let calls = Arc::new(Mutex::new(0));
        let c = Arc::clone(&calls);
        set_logger(
            Arc::new(move |_, _: &str, _: &str| {
                *c.lock().unwrap() += 1;
                clear_logger(); // would deadlock if emit held the lock
            }),
            Level::Trace,
        );
        info!("one");
        info!("two: no logger any more");
        assert_eq!(*calls.lock().unwrap(), 1);
        assert!(!enabled(Level::Error));
    }

    #[test]
    fn a_panic_inside_the_library_is_an_event_not_text() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let got = capture(Level::Error);
        let r = std::panic::catch_unwind(|| quiet_panics(|| panic!("boom {}", 7)));
        assert!(r.is_err(), "the panic still unwinds");
        // Outside a scope the previous hook runs (the test harness's, which
        // prints): nothing reaches the logger.
        let r = std::panic::catch_unwind(|| panic!("the application's own"));
        assert!(r.is_err());
        clear_logger();
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Level::Error);
        assert_eq!(got[0].1, "mtipc::panic");
        assert!(
            got[0].2.starts_with("panic at src/log.rs:") && got[0].2.contains(": boom 7"),
            "{}",
            got[0].2
        );
        assert_eq!(
            QUIET.with(|q| q.get()),
            0,
            "the scope is left after the unwind"
        );
    }

    #[test]
    fn level_names_and_values() {
        for (v, l) in (1..=5).zip([
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ]) {
            assert_eq!(Level::from_u32(v), Some(l));
            assert_eq!(l as u32, v);
            assert_eq!(Level::parse(l.as_str()), Some(l));
        }
        assert_eq!(Level::from_u32(0), None);
        assert_eq!(Level::from_u32(6), None);
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
    }
}
