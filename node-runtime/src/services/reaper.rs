//! Child reaping for PID 1.
//!
//! In: exits of any child of node-runtime (supervised service processes and orphans that the
//! kernel re-parents to PID 1). Out: the exit statuses of *watched* pids, handed to whoever
//! waits for them ([`wait`]); the others are reaped and forgotten.
//!
//! Only the reaper loop ([`reap_loop`]) calls `waitpid`; it may run in several threads at once
//! (a background thread started with the supervisor, and PID 1's final loop), each child is
//! reaped by exactly one of them and the status lands in the same table. A pid is watched
//! from before it exists: [`fork_watched`] holds the table lock across `fork`, so a child that
//! exits at once cannot be reaped before it is watched.

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How a watched child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

#[derive(Default)]
struct Table {
    /// Watched pids: `None` while running, the status once reaped.
    watched: HashMap<i32, Option<Exit>>,
    /// Bumped on every fork, to wake a reaper that found no children.
    forks: u64,
}

#[derive(Default)]
struct Reaper {
    table: Mutex<Table>,
    /// Signalled when a watched status arrives or a child is forked.
    cv: Condvar,
}

fn reaper() -> &'static Reaper {
    static R: OnceLock<Reaper> = OnceLock::new();
    R.get_or_init(Reaper::default)
}

fn lock() -> MutexGuard<'static, Table> {
    reaper()
        .table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `fork` (which forks once and returns the child's pid in the parent, or `None` when
/// forking failed) with the table locked, and watches the returned pid.
pub fn fork_watched<F: FnOnce() -> Option<Pid>>(fork: F) -> Option<Pid> {
    let mut t = lock();
    let pid = fork();
    if let Some(pid) = pid {
        t.watched.insert(pid.as_raw(), None);
    }
    t.forks += 1;
    drop(t);
    reaper().cv.notify_all();
    pid
}

/// Blocks until the watched `pid` has been reaped and returns how it ended (and forgets it);
/// `None` for a pid that is not watched.
pub fn wait(pid: Pid) -> Option<Exit> {
    let r = reaper();
    let mut t = lock();
    loop {
        match t.watched.get(&pid.as_raw()) {
            Some(Some(e)) => {
                let e = *e;
                t.watched.remove(&pid.as_raw());
                return Some(e);
            }
            Some(None) => {}
            None => return None,
        }
        t = r.cv.wait(t).unwrap_or_else(|p| p.into_inner());
    }
}

fn record(pid: Pid, e: Exit) {
    let mut t = lock();
    if let Some(slot) = t.watched.get_mut(&pid.as_raw()) {
        *slot = Some(e);
        drop(t);
        reaper().cv.notify_all();
    }
}

/// Reaps children forever. With no child at all it sleeps until the next fork (or a few
/// seconds, for children forked by other code).
pub fn reap_loop() -> ! {
    loop {
        // read before waiting, so that a fork right after an ECHILD is not slept through
        let forks = lock().forks;
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) => record(pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => record(pid, Exit::Signal(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ECHILD) => {
                let _ = reaper()
                    .cv
                    .wait_timeout_while(lock(), Duration::from_secs(5), |t| t.forks == forks);
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unwatched_pid_does_not_block() {
        assert_eq!(wait(Pid::from_raw(999_999)), None);
    }

    #[test]
    fn recorded_status_is_delivered_once() {
        let pid = fork_watched(|| Some(Pid::from_raw(424_242)));
        assert_eq!(pid, Some(Pid::from_raw(424_242)));
        let h = std::thread::spawn(move || wait(Pid::from_raw(424_242)));
        std::thread::sleep(Duration::from_millis(50));
        record(Pid::from_raw(424_242), Exit::Code(3));
        assert_eq!(h.join().unwrap(), Some(Exit::Code(3)));
        // forgotten afterwards
        assert_eq!(wait(Pid::from_raw(424_242)), None);
        // statuses of unwatched pids are dropped
        record(Pid::from_raw(424_243), Exit::Code(1));
        assert!(!lock().watched.contains_key(&424_243));
    }
}
