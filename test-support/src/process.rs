//! Process plumbing shared by the Postgres and Redis servers: free ports, signals by PID,
//! bounded waits, the exit watchdog.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::SupportError;

/// How often bounded waits poll.
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// A port that was free a moment ago on 127.0.0.1 (bind to port 0, read it, release it).
pub(crate) fn free_port() -> Result<u16, SupportError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| SupportError::io("bind 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| SupportError::io("read the free port", e))?
        .port();
    Ok(port)
}

/// Whether this process runs as root (uid 0), read from `/proc/self`.
pub(crate) fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Send `signal` (e.g. `INT`, `KILL`) to `pid` with the system `kill`.
pub(crate) fn signal(pid: u32, signal: &str) -> Result<(), SupportError> {
    let status = Command::new("kill")
        .arg("-s")
        .arg(signal)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| SupportError::io(format!("run `kill -s {signal} {pid}`"), e))?;
    if status.success() || !pid_alive(pid) {
        Ok(())
    } else {
        Err(SupportError::Failed {
            what: format!("kill -s {signal} {pid}"),
            detail: status.to_string(),
            log_tail: String::new(),
        })
    }
}

/// Whether `pid` names a process that is still running (a zombie counts as gone).
pub(crate) fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Whether the running process `pid` has `needle` in its command line (guards against acting
/// on a recycled PID).
pub(crate) fn cmdline_contains(pid: u32, needle: &str) -> bool {
    if !pid_alive(pid) {
        return false;
    }
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
        let text = String::from_utf8_lossy(&raw).replace('\0', " ");
        text.contains(needle)
    })
}

/// The direct children of `pid` (from `/proc/<pid>/task/*/children`).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Wait until `pid` is gone, up to `timeout`. Returns whether it is gone.
pub(crate) fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Wait for a child to exit, up to `timeout`. `Ok(None)` if it is still running.
pub(crate) fn wait_child(
    child: &mut Child,
    timeout: Duration,
) -> Result<Option<ExitStatus>, SupportError> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => return Ok(None),
            Ok(None) => thread::sleep(POLL),
            Err(e) => return Err(SupportError::io("wait for a child process", e)),
        }
    }
}

/// Run a command to completion within `timeout`, killing it if it overruns. Output goes to
/// `log` (appended); on failure the error carries the log's tail.
pub(crate) fn run_logged(
    what: &str,
    cmd: &mut Command,
    log: &Path,
    timeout: Duration,
) -> Result<(), SupportError> {
    let out = open_log(log)?;
    let err = out
        .try_clone()
        .map_err(|e| SupportError::io(format!("clone the log handle of {what}"), e))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| SupportError::io(format!("spawn {what}"), e))?;
    match wait_child(&mut child, timeout)? {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(SupportError::Failed {
            what: what.to_owned(),
            detail: status.to_string(),
            log_tail: log_tail(log, 30),
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(SupportError::Timeout {
                what: what.to_owned(),
                after: timeout,
                log_tail: log_tail(log, 30),
            })
        }
    }
}

/// Open a log file for appending.
pub(crate) fn open_log(path: &Path) -> Result<fs::File, SupportError> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| SupportError::io(format!("open log {}", path.display()), e))
}

/// The last `n` lines of a log file (empty if unreadable).
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    let Ok(file) = fs::File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Where temp dirs are created.
pub(crate) fn temp_base() -> PathBuf {
    std::env::var_os(crate::TMPDIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Find an executable on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is an executable regular file.
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// A shell that cleans up after the test process if it dies without running `Drop`.
///
/// The watchdog blocks on `read` from a pipe whose only writer is the test process; when the
/// test process exits for any reason the kernel closes the pipe, `read` returns, and the
/// script runs its cleanup (stop the server by the PID in its pid file, after checking that
/// PID still runs our server, then remove the temp dir). On a normal `Drop` the watchdog is
/// disarmed first (SIGKILL while it waits in the `read` builtin, so it has no children).
pub(crate) struct Watchdog {
    child: Child,
    _pipe: ChildStdin,
}

impl Watchdog {
    /// Spawn `sh -c script sh args...` with its stdin a pipe from this process.
    pub(crate) fn spawn(script: &str, args: &[&str]) -> Result<Self, SupportError> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("caracal-test-watchdog")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C aimed at the test run must not kill the watchdog
            // before it has cleaned up.
            .process_group(0)
            .spawn()
            .map_err(|e| SupportError::io("spawn the cleanup watchdog", e))?;
        let Some(pipe) = child.stdin.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SupportError::Failed {
                what: "spawn the cleanup watchdog".into(),
                detail: "no stdin pipe".into(),
                log_tail: String::new(),
            });
        };
        Ok(Self { child, _pipe: pipe })
    }

    /// Stop the watchdog without running its cleanup.
    pub(crate) fn disarm(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cleanup the watchdog runs for a server: `$1` = pid file, `$2` = a string the server's
/// `/proc/<pid>/cmdline` must contain (guards against PID reuse), `$3` = signal for a quick
/// stop, `$4` = the temp dir to remove.
pub(crate) const WATCHDOG_SCRIPT: &str = r#"
read -r _ignored
pid=$(head -n 1 "$1" 2>/dev/null)
case "$pid" in
  ''|*[!0-9]*) ;;
  *)
    if grep -qaF -- "$2" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -s "$3" "$pid" 2>/dev/null
      i=0
      while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
      kill -s KILL "$pid" 2>/dev/null
    fi
    ;;
esac
rm -rf -- "$4"
"#;
