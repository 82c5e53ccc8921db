//! The hardware watchdog (docs/formats/machine-config.md, `WatchdogTimerConfig`): the
//! configured device is opened, its timeout set, and a thread feeds it every quarter of the
//! timeout for as long as node-runtime runs. If node-runtime stops (hangs, or PID 1 dies and
//! the kernel panics), the feeding stops and the hardware resets the machine.
//!
//! In: the configuration's device and timeout, and the test switch
//! `node_runtime.test_watchdog_stop=SECONDS` (stop feeding that long after arming, leaving the
//! watchdog armed). Out: `watchdog device=… timeout_s=… feed_every_s=…` on the console, or
//! `watchdog error=…`.

use crate::config::Watchdog;
use crate::console::say;
use crate::sys::{watchdog_get_timeout, watchdog_keepalive, watchdog_set_timeout};
use std::time::{Duration, Instant};

/// The test switch.
pub const TEST_STOP: &str = "node_runtime.test_watchdog_stop";

/// Arms the watchdog and starts feeding it; returns at once.
pub fn arm(w: &Watchdog, stop_after: Option<Duration>) {
    // a watchdog, not any device: a character device the watchdog class knows
    let name = std::path::Path::new(&w.device)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_char = std::fs::metadata(&w.device).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt as _;
        m.file_type().is_char_device()
    });
    let known = w.device == "/dev/watchdog"
        || std::path::Path::new("/sys/class/watchdog")
            .join(&name)
            .exists();
    if !is_char || !known {
        say(&format!(
            "watchdog device={} error=\"not a watchdog device (a character device of /sys/class/watchdog)\"",
            w.device
        ));
        return;
    }
    let f = match std::fs::OpenOptions::new().write(true).open(&w.device) {
        Ok(f) => f,
        Err(e) => {
            say(&format!(
                "watchdog device={} error={:?}",
                w.device,
                e.to_string()
            ));
            return;
        }
    };
    let asked = i32::try_from(w.timeout.as_secs()).unwrap_or(i32::MAX);
    let took = match watchdog_set_timeout(&f, asked) {
        Ok(t) => t,
        Err(e) => {
            say(&format!(
                "watchdog device={} error=\"setting the timeout: {e}\"",
                w.device
            ));
            asked
        }
    };
    let actual = watchdog_get_timeout(&f)
        .ok()
        .filter(|t| *t > 0)
        .unwrap_or(took)
        .max(1);
    let every = Duration::from_secs((actual as u64 / 4).max(1));
    say(&format!(
        "watchdog device={} timeout_s={actual} feed_every_s={}",
        w.device,
        every.as_secs()
    ));
    let start = Instant::now();
    std::thread::spawn(move || {
        loop {
            if stop_after.is_some_and(|s| start.elapsed() >= s) {
                say("watchdog feeding=stopped reason=test");
                // the file stays open and armed: no magic close
                std::mem::forget(f);
                return;
            }
            if let Err(e) = watchdog_keepalive(&f) {
                say(&format!("watchdog error=\"keepalive: {e}\""));
            }
            std::thread::sleep(every);
        }
    });
}
