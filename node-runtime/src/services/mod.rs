//! Extension services (seed "Extension Services"): discovery, validation and supervision.
//!
//! The last step of stage 2 before the ready line: [`start`] returns at once and the services
//! run in background threads from then on; PID 1's final loop is [`reap_forever`].
//!
//! In: `/usr/local/etc/containers/*.yaml` (the root filesystems in
//! `/usr/local/lib/containers/<name>`), readiness keys set by the rest of node-runtime
//! (network, time; see [`crate::readiness`]) and, for tests,
//! `node_runtime.test_ready=KEY[@SECONDS][,…]` on the kernel cmdline. Out: one supervised
//! process tree per valid service (`ext-<name>`, in its own mount and PID namespaces),
//! machine-readable console lines, and logs in `/system/log/ext-<name>.log`.
//!
//! Console lines:
//!
//! - `node-runtime: services dir=<dir> valid=N invalid=M` once, when the directory exists;
//! - `node-runtime: service-invalid file=<path> reason="…"` per invalid file;
//! - `node-runtime: service id=ext-<name> state=<State> [reason="…"] [exit=N] [pid=N] [restarts=N]`
//!   per state change (see [`supervisor`]);
//! - `node-runtime: ready-key <key>` when a readiness key is first set;
//! - `ext-<name>: <line>` for the output of services with `logToConsole: true`.
//!
//! Process reaping: node-runtime is PID 1, so [`reaper`] is the only code that calls
//! `waitpid`: a background thread started by [`start`] and PID 1's final loop
//! ([`reap_forever`]) both run it, and the supervisor receives the statuses of its processes
//! from it. Other code in node-runtime must therefore not wait for children of its own.
//!
//! Not done yet: `configuration: true` (ExtensionServiceConfig) is never satisfied, so such
//! services stay `Waiting`; there is no way to stop or restart a service from outside.

mod config;
pub(crate) mod reaper;
mod spawn;
mod supervisor;
pub use supervisor::LOG_DIR;

use crate::cmdline::Cmdline;
use crate::console::say;
use crate::readiness::Readiness;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

/// Cmdline hook for tests: `KEY[@SECONDS][,KEY…]` marks keys set after a delay.
const TEST_READY: &str = "node_runtime.test_ready";

/// Parses `KEY[@SECONDS][,KEY…]` (seconds may have a fraction); bad entries are skipped.
fn parse_test_ready(value: &str) -> Vec<(String, Duration)> {
    value
        .split(',')
        .filter(|e| !e.is_empty())
        .filter_map(|e| match e.split_once('@') {
            None => Some((e.to_string(), Duration::ZERO)),
            Some((k, s)) => s
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e6)
                .map(|s| (k.to_string(), Duration::from_secs_f64(s))),
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn spawn_thread(name: String, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.clone()).spawn(f) {
        say(&format!(
            "service-thread name={name} failed={:?}",
            e.to_string()
        ));
    }
}

/// Discovers `<dir>/*.yaml` and supervises the services in background threads (returns at
/// once). Also starts the background reaper and the `node_runtime.test_ready` hook. `env` is
/// the machine configuration's `machine.env`: every service gets the variables its own
/// `environment` does not set.
pub fn start(dir: &Path, ready: Arc<Readiness>, env: &BTreeMap<String, String>) {
    let env = env.clone();
    static REAPER: Once = Once::new();
    REAPER.call_once(|| spawn_thread("reaper".into(), || reaper::reap_loop()));

    let cmd = Cmdline::read();
    let mut hooks: Vec<(String, Duration)> =
        cmd.get_all(TEST_READY).flat_map(parse_test_ready).collect();
    if !hooks.is_empty() {
        hooks.sort_by_key(|(_, d)| *d);
        let r = ready.clone();
        spawn_thread("test-ready".into(), move || {
            let t0 = std::time::Instant::now();
            for (k, d) in hooks {
                std::thread::sleep(d.saturating_sub(t0.elapsed()));
                r.set(&k);
            }
        });
    }

    let dir = dir.to_path_buf();
    spawn_thread("services".into(), move || {
        if !dir.is_dir() {
            return;
        }
        let found = config::discover(&dir);
        say(&format!(
            "services dir={} valid={} invalid={}",
            dir.display(),
            found.services.len(),
            found.invalid.len()
        ));
        for (f, reason) in &found.invalid {
            say(&format!(
                "service-invalid file={} reason={:?}",
                f.display(),
                reason.to_string()
            ));
        }
        let known: Arc<Vec<String>> = Arc::new(found.services.iter().map(|s| s.id()).collect());
        for mut svc in found.services {
            with_machine_env(&mut svc.environment, &env);
            let (hub, known) = (ready.clone(), known.clone());
            spawn_thread(svc.id(), move || supervisor::supervise(svc, hub, known));
        }
    });
}

/// `machine.env` entries put before a service's own `KEY=VALUE` entries, but for the keys the
/// service sets itself (its own value wins).
fn with_machine_env(environment: &mut Vec<String>, env: &BTreeMap<String, String>) {
    let own: Vec<String> = environment
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    let mut merged: Vec<String> = env
        .iter()
        .filter(|(k, _)| !own.contains(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    merged.append(environment);
    *environment = merged;
}

/// A service's last reported state (the API's `services`).
#[derive(Debug, Clone)]
pub struct Status {
    /// Waiting, Preparing, Running, Finished, Failed.
    pub state: String,
    /// Why it is waiting or failed.
    pub reason: Option<String>,
    /// The last run's exit code.
    pub exit: Option<i32>,
    /// The running process.
    pub pid: Option<i32>,
    /// Restarts so far.
    pub restarts: u32,
}

/// Every service's last reported state, by id.
pub static STATUS: std::sync::Mutex<std::collections::BTreeMap<String, Status>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Set when the node goes down: supervisors restart nothing any more.
pub static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a process other than PID 1 and the kernel's threads is alive.
fn others_alive() -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != 1)
        // kernel threads have an empty command line
        .any(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()))
}

/// Stops every process but PID 1, as an init does at shutdown: no more restarts, SIGTERM to
/// all, up to `grace` for them to exit, then SIGKILL. Returns how many seconds it took.
pub fn stop_all(grace: Duration) -> u64 {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    // pid -1: every process this one may signal, except PID 1 itself
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    while others_alive() && t0.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(100));
    }
    if others_alive() {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(200));
    }
    t0.elapsed().as_secs()
}

/// PID 1's wait loop: reaps every child, handing the statuses of supervised processes to the
/// supervisor.
pub fn reap_forever() -> ! {
    reaper::reap_loop()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn machine_env_below_the_services_own() {
        let env: BTreeMap<String, String> = [("GREETING", "machine"), ("HTTP_PROXY", "p:1")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let mut own = vec!["GREETING=service".to_string(), "X=1".to_string()];
        with_machine_env(&mut own, &env);
        assert_eq!(own, ["HTTP_PROXY=p:1", "GREETING=service", "X=1"]);
        let mut none = Vec::new();
        with_machine_env(&mut none, &env);
        assert_eq!(none, ["GREETING=machine", "HTTP_PROXY=p:1"]);
    }

    #[test]
    fn test_ready_hook() {
        let s = |n: f64| Duration::from_secs_f64(n);
        assert_eq!(
            parse_test_ready("network.addresses@3,time,x@0.5,bad@-1,worse@x,@2,,"),
            vec![
                ("network.addresses".to_string(), s(3.0)),
                ("time".to_string(), s(0.0)),
                ("x".to_string(), s(0.5)),
            ]
        );
    }
}
