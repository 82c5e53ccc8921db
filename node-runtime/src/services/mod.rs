//! Extension services (seed "Extension Services"): discovery, validation and supervision.
//!
//! In: `/usr/local/etc/containers/*.yaml` (the root filesystems in
//! `/usr/local/lib/containers/<name>`), readiness keys set by the rest of node-runtime (network,
//! time) and, for tests, `node_runtime.test_ready=KEY[@SECONDS][,…]` on the kernel cmdline.
//! Out: one supervised process tree per valid service (`ext-<name>`, in its own mount and PID
//! namespaces), machine-readable console lines, and logs in `/system/log/ext-<name>.log`.
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
mod reaper;
mod spawn;
mod supervisor;

use crate::cmdline::Cmdline;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::Duration;

/// Readiness key: an address is configured on a link.
pub const NET_ADDRESSES: &str = "network.addresses";
/// Readiness key: a default route exists.
pub const NET_CONNECTIVITY: &str = "network.connectivity";
/// Readiness key: the hostname is set.
pub const NET_HOSTNAME: &str = "network.hostname";
/// Readiness key: /etc/hosts and /etc/resolv.conf are written.
pub const NET_ETCFILES: &str = "network.etcfiles";
/// Readiness key: time is synchronised.
pub const TIME: &str = "time";

/// Cmdline hook for tests: `KEY[@SECONDS][,KEY…]` marks keys set after a delay.
const TEST_READY: &str = "node_runtime.test_ready";

fn say(line: &str) {
    // stdout is /dev/console; never panic on a write error
    let _ = writeln!(std::io::stdout().lock(), "node-runtime: {line}");
}

/// Where a service is, as far as dependants are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its process runs.
    Running,
    /// Its last run exited 0 and it is not restarting.
    Succeeded,
    /// Anything else.
    Other,
}

#[derive(Default)]
struct State {
    keys: BTreeSet<String>,
    services: BTreeMap<String, Phase>,
    generation: u64,
}

/// Conditions the node reaches during boot, which services may depend on (and the phases of
/// the services themselves, for `service:` dependencies).
#[derive(Default)]
pub struct Readiness {
    state: Mutex<State>,
    cv: Condvar,
}

impl Readiness {
    /// A fresh set with nothing reached.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `key` as reached and wakes waiters (the first time, a `ready-key` line).
    pub fn set(&self, key: &str) {
        let mut s = self.lock();
        if s.keys.insert(key.to_string()) {
            s.generation += 1;
            drop(s);
            say(&format!("ready-key {key}"));
            self.cv.notify_all();
        }
    }

    /// Whether `key` was reached.
    pub fn is_set(&self, key: &str) -> bool {
        self.lock().keys.contains(key)
    }

    fn set_phase(&self, id: &str, phase: Phase) {
        let mut s = self.lock();
        if s.services.insert(id.to_string(), phase) != Some(phase) {
            s.generation += 1;
            drop(s);
            self.cv.notify_all();
        }
    }

    /// Whether service `id` is running or finished successfully.
    fn service_ok(&self, id: &str) -> bool {
        matches!(
            self.lock().services.get(id),
            Some(Phase::Running | Phase::Succeeded)
        )
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Waits until something changed since `generation`, or `timeout`.
    fn wait_change(&self, generation: u64, timeout: Duration) {
        let s = self.lock();
        let _ = self
            .cv
            .wait_timeout_while(s, timeout, |s| s.generation == generation);
    }
}

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
/// once). Also starts the background reaper and the `node_runtime.test_ready` hook.
pub fn start(dir: &Path, ready: Arc<Readiness>) {
    static REAPER: Once = Once::new();
    REAPER.call_once(|| spawn_thread("reaper".into(), || reaper::reap_loop()));

    let cmd = Cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
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
                "service-invalid file={} reason={reason:?}",
                f.display()
            ));
        }
        let known: Arc<Vec<String>> = Arc::new(found.services.iter().map(|s| s.id()).collect());
        for svc in found.services {
            let (hub, known) = (ready.clone(), known.clone());
            spawn_thread(svc.id(), move || supervisor::supervise(svc, hub, known));
        }
    });
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

    #[test]
    fn readiness_wakes_waiters() {
        let r = Readiness::new();
        assert!(!r.is_set(TIME));
        let g = r.generation();
        let r2 = r.clone();
        let h = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            r2.wait_change(g, Duration::from_secs(20));
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        r.set(TIME);
        assert!(h.join().unwrap() < Duration::from_secs(10));
        assert!(r.is_set(TIME));
        // setting again changes nothing
        let g = r.generation();
        r.set(TIME);
        assert_eq!(r.generation(), g);
    }
}
