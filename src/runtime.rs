//! TensorFlow's process-wide settings, in force before TF's own start-up code runs: oneDNN on,
//! TF's C++ log level, and TF's start-up log lines kept out of pretext's output.
//!
//! TF reads `TF_ENABLE_ONEDNN_OPTS` and prints its oneDNN banner while its library is being
//! loaded, before `main`, and glibc's own start-up resets the environment after any earlier
//! `setenv`. So every program linking pretext carries three pieces:
//! - a `getenv` that interposes libc's for the whole process (an executable's definition comes
//!   first in the dynamic linker's search order): it answers from the environment as libc does,
//!   except that an unset `TF_ENABLE_ONEDNN_OPTS` reads `1` (TF's own default is on only for CPUs
//!   with AVX-512 VNNI/BF16 or AMX; oneDNN trains MobileNetV2 about twice as fast on an AVX2-only
//!   CPU too) and an unset `TF_CPP_MIN_LOG_LEVEL` reads `2`. Nothing is written to the
//!   environment, so child processes (the tests' Python oracles) see the user's;
//! - `.preinit_array` (before any shared library's initialiser) sends standard error into a
//!   memory file;
//! - `.init_array` (after TF's initialisers, before `main`) restores it and replays what TF
//!   printed, minus the lines below the log level (INFO and WARNING by default). If TF dies
//!   while loading, a signal handler replays everything first.
//!
//! oneDNN's one known training crash in TF 2.21 (strided 1×1 convolutions) is rewritten away by
//! `graph::unstride`, so oneDNN stays on for every model; `TF_ENABLE_ONEDNN_OPTS=0` remains the
//! user's choice.
use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicI32, Ordering};

/// The defaults `getenv` gives TF for variables the user left unset.
const DEFAULTS: [(&CStr, &CStr); 2] = [
    (c"TF_ENABLE_ONEDNN_OPTS", c"1"),
    (c"TF_CPP_MIN_LOG_LEVEL", c"2"),
];

/// Whether TF runs with oneDNN: `TF_ENABLE_ONEDNN_OPTS` as TF reads it.
pub fn onednn_enabled() -> bool {
    std::env::var("TF_ENABLE_ONEDNN_OPTS").map_or(true, |v| !is_off(v.as_bytes()))
}

extern "C" {
    static environ: *const *const c_char;
}

/// `name`'s value in the process environment, or its default (module doc), or null.
///
/// # Safety
/// `name` is a NUL-terminated string (libc's contract for `getenv`).
#[no_mangle]
pub unsafe extern "C" fn getenv(name: *const c_char) -> *mut c_char {
    if name.is_null() {
        return std::ptr::null_mut();
    }
    let key = CStr::from_ptr(name).to_bytes();
    let mut p = environ;
    while !p.is_null() && !(*p).is_null() {
        let entry = CStr::from_ptr(*p).to_bytes();
        if entry.len() > key.len() && entry.starts_with(key) && entry[key.len()] == b'=' {
            return (*p).add(key.len() + 1) as *mut c_char;
        }
        p = p.add(1);
    }
    DEFAULTS
        .iter()
        .find(|(k, _)| k.to_bytes() == key)
        .map_or(std::ptr::null_mut(), |(_, v)| v.as_ptr() as *mut c_char)
}

static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
static CAPTURE: AtomicI32 = AtomicI32::new(-1);

const FATAL_SIGNALS: [libc::c_int; 5] = [
    libc::SIGABRT,
    libc::SIGSEGV,
    libc::SIGILL,
    libc::SIGBUS,
    libc::SIGFPE,
];

/// TF's reading of a boolean environment variable: `0`/`false` off, anything else on.
fn is_off(v: &[u8]) -> bool {
    v == b"0" || v.eq_ignore_ascii_case(b"false")
}

/// The absl log line's severity rank (INFO 0 … FATAL 3), or None for text of another shape.
fn severity(line: &str) -> Option<u8> {
    if line.starts_with("WARNING: All log messages before absl::InitializeLog()") {
        return Some(1);
    }
    let b = line.as_bytes();
    let rank = match b.first()? {
        b'I' => 0,
        b'W' => 1,
        b'E' => 2,
        b'F' => 3,
        _ => return None,
    };
    (b.len() > 5 && b[1..5].iter().all(u8::is_ascii_digit) && b[5] == b' ').then_some(rank)
}

/// The lines of TF's start-up output worth showing at `min_level` (TF_CPP_MIN_LOG_LEVEL).
fn keep_lines(text: &str, min_level: u8) -> String {
    text.split_inclusive('\n')
        .filter(|l| severity(l).is_none_or(|s| s >= min_level))
        .collect()
}

#[cfg(target_os = "linux")]
mod hooks {
    use super::*;

    /// Runs before every shared library's initialiser (module doc); single-threaded, and libc
    /// is not initialised yet: only system-call wrappers here.
    extern "C" fn before_tf(
        _argc: libc::c_int,
        _argv: *const *const libc::c_char,
        _envp: *const *const libc::c_char,
    ) {
        // SAFETY: plain system calls on descriptors this function owns.
        unsafe {
            let cap = libc::memfd_create(c"pretext-tf-startup".as_ptr(), libc::MFD_CLOEXEC);
            if cap < 0 {
                return;
            }
            let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
            if saved < 0 || libc::dup2(cap, 2) < 0 {
                libc::close(cap);
                if saved >= 0 {
                    libc::close(saved);
                }
                return;
            }
            SAVED_STDERR.store(saved, Ordering::SeqCst);
            CAPTURE.store(cap, Ordering::SeqCst);
            for sig in FATAL_SIGNALS {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_fatal as *const () as usize;
                sa.sa_flags = libc::SA_RESETHAND;
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    }

    /// TF died while loading: show everything it printed, then let the signal take its course.
    extern "C" fn on_fatal(_sig: libc::c_int) {
        let (saved, cap) = (
            SAVED_STDERR.load(Ordering::SeqCst),
            CAPTURE.load(Ordering::SeqCst),
        );
        if saved < 0 || cap < 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut off = 0;
        // SAFETY: pread, write and dup2 are async-signal-safe.
        unsafe {
            loop {
                let n = libc::pread(cap, buf.as_mut_ptr().cast(), buf.len(), off);
                if n <= 0 || libc::write(saved, buf.as_ptr().cast(), n as usize) <= 0 {
                    break;
                }
                off += n as libc::off_t;
            }
            libc::dup2(saved, 2);
        }
    }

    /// Runs after TF's initialisers, before `main` (module doc).
    extern "C" fn after_tf() {
        let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
        let cap = CAPTURE.swap(-1, Ordering::SeqCst);
        if saved < 0 {
            return;
        }
        // SAFETY: still single-threaded; the descriptors are ours.
        let text = unsafe {
            for sig in FATAL_SIGNALS {
                libc::signal(sig, libc::SIG_DFL);
            }
            libc::dup2(saved, 2);
            libc::close(saved);
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            let mut off = 0;
            loop {
                let n = libc::pread(cap, buf.as_mut_ptr().cast(), buf.len(), off);
                if n <= 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n as usize]);
                off += n as libc::off_t;
            }
            libc::close(cap);
            out
        };
        let level = std::env::var("TF_CPP_MIN_LOG_LEVEL")
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0);
        let shown = keep_lines(&String::from_utf8_lossy(&text), level);
        if !shown.is_empty() {
            use std::io::Write;
            let _ = std::io::stderr().write_all(shown.as_bytes());
        }
    }

    #[used]
    #[link_section = ".preinit_array"]
    static BEFORE_TF: extern "C" fn(
        libc::c_int,
        *const *const libc::c_char,
        *const *const libc::c_char,
    ) = before_tf;

    #[used]
    #[link_section = ".init_array"]
    static AFTER_TF: extern "C" fn() = after_tf;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_lines_are_filtered_by_level() {
        let text = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n\
                    I0000 00:00:1796123630.756638    7916 port.cc:153] oneDNN custom operations are on.\n\
                    W1201 11:02:03.000000    7916 x.cc:1] a warning\n\
                    E1201 11:02:03.000000    7916 x.cc:1] an error\n\
                    plain text\n";
        let at2 = keep_lines(text, 2);
        assert!(at2.starts_with("E1201"), "{at2}");
        assert!(at2.ends_with("plain text\n"), "{at2}");
        assert_eq!(keep_lines(text, 0), text);
        assert_eq!(keep_lines(text, 1).lines().count(), 4);
    }

    #[test]
    fn getenv_answers_from_the_environment_then_the_defaults() {
        // SAFETY: NUL-terminated names; the test harness's other threads do not write the
        // environment.
        let read = |k: &CStr| unsafe {
            let p = getenv(k.as_ptr());
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        assert_eq!(read(c"PRETEXT_SURELY_UNSET_VARIABLE"), None);
        assert_eq!(
            read(c"PATH"),
            std::env::var_os("PATH").map(|p| p.to_string_lossy().into())
        );
        for (k, v) in DEFAULTS {
            let user = std::env::vars_os().find(|(n, _)| n.as_encoded_bytes() == k.to_bytes());
            let want = user.map_or(v.to_string_lossy().into_owned(), |(_, u)| {
                u.to_string_lossy().into_owned()
            });
            assert_eq!(read(k).as_deref(), Some(want.as_str()));
        }
        assert!(is_off(b"FALSE") && is_off(b"0") && !is_off(b"1"));
    }
}
