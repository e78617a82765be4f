//! What Siyu's two binaries (`siyu` and `siyu-bench`) share as processes: how they log,
//! how one finds the other (both are built into the same directory), and how a child's
//! exit is passed on.

use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};

/// Logs to stderr, filtered by `SIYU_LOG` (default `info`, sqlx quieter).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIYU_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The binary `name` in this binary's directory; `build_hint` says how to build it when
/// it is missing.
pub fn sibling_binary(name: &str, build_hint: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().map_err(|e| anyhow::anyhow!("finding this binary: {e}"))?;
    let other = me.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(other.exists(), "{} is missing: {build_hint}", other.display());
    Ok(other)
}

/// A child's exit as this process's: its code, or 128 + the signal that ended it, as a
/// shell reports it (Ctrl-C on a benchmark is 130, not a plain failure).
pub fn exit_code_of(status: ExitStatus) -> ExitCode {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return ExitCode::from(u8::try_from(128 + signal).unwrap_or(1));
    }
    match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_childs_exit_is_passed_on() {
        let run = |script: &str| exit_code_of(std::process::Command::new("sh").args(["-c", script]).status().unwrap());
        assert_eq!(run("exit 0"), ExitCode::SUCCESS);
        assert_eq!(run("exit 3"), ExitCode::from(3));
        assert_eq!(run("kill -INT $$"), ExitCode::from(130));
    }
}
