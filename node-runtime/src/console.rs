//! The console, the boot clock and the end of a boot.
//!
//! Used by every stage. In: lines from the rest of node-runtime. Out: `node-runtime: <line>`
//! on stdout, which is /dev/console (the kernel opens it for init); the lines are
//! machine-readable and the end-to-end tests match them exactly.
//!
//! The boot clock is `CLOCK_BOOTTIME`: stage 1 reads it when `/init` starts and hands it to
//! stage 2 in [`START_ENV`] across the exec, so the ready line's `boot_ms` counts from
//! `/init`. After the ready line (or a fatal error) PID 1 either powers off
//! (`node_runtime.test_poweroff`, [`POWEROFF_FLAG`]) or idles, reaping children forever.

use std::io::Write;

/// Kernel cmdline flag: power off once ready (or after a fatal error);
/// `node_runtime.test_poweroff=N` first keeps the node up N seconds.
pub const POWEROFF_FLAG: &str = "node_runtime.test_poweroff";

/// Environment variable that carries the boot clock at `/init` from stage 1 to stage 2.
pub const START_ENV: &str = "NODE_RUNTIME_START_NS";

/// Prints `node-runtime: <line>` on the console. A failed write is ignored: PID 1 must not
/// panic because the console went away.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "node-runtime: {line}");
}

/// Nanoseconds of `CLOCK_BOOTTIME` (0 if it cannot be read).
pub fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Says `poweroff`, syncs, unmounts an installation's volumes and powers the machine off.
pub fn poweroff() {
    say("poweroff");
    crate::volumes::unmount();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
}

/// Unmounts the volumes (synced) and reboots.
pub fn reboot() {
    crate::volumes::unmount();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
}

/// PID 1 must never exit: reap children forever (the service supervisor gets the statuses
/// of its processes).
pub fn idle() -> ! {
    crate::services::reap_forever()
}

/// `s` with control characters escaped (`\u{1b}`), so that text from outside never drives
/// the console.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
