//! Readiness: the conditions the node reaches during boot, which extension services wait on.
//!
//! Stage 2 creates one [`Readiness`] just before starting the network and hands it to both
//! the network and the services. In: keys set by the network ([`NET_ADDRESSES`],
//! [`NET_CONNECTIVITY`], [`NET_HOSTNAME`], [`NET_ETCFILES`]), by the
//! `node_runtime.test_ready` cmdline hook of the services (any key, [`TIME`] included), and
//! the phases of the supervised services themselves. Out: waits that end when something
//! changes (the supervisor's dependency checks), and one `ready-key <key>` console line the
//! first time a key is set.

use crate::console::say;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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

/// Where a service is, as far as dependants are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
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

    /// Records the phase of service `id` and wakes waiters when it changed.
    pub fn set_phase(&self, id: &str, phase: Phase) {
        let mut s = self.lock();
        if s.services.insert(id.to_string(), phase) != Some(phase) {
            s.generation += 1;
            drop(s);
            self.cv.notify_all();
        }
    }

    /// Whether service `id` is running or finished successfully.
    pub fn service_ok(&self, id: &str) -> bool {
        matches!(
            self.lock().services.get(id),
            Some(Phase::Running | Phase::Succeeded)
        )
    }

    /// A counter bumped on every change, for [`Readiness::wait_change`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Waits until something changed since `generation`, or `timeout`.
    pub fn wait_change(&self, generation: u64, timeout: Duration) {
        let s = self.lock();
        let _ = self
            .cv
            .wait_timeout_while(s, timeout, |s| s.generation == generation);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
