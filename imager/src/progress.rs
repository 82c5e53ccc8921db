//! Progress of long steps on stderr: registry pulls, extension squashfs images, compression
//! and disk-image writes.
//!
//! - stderr is a terminal: one line per step, redrawn ten times a second (a bar with the
//!   percentage when the size is known, else the bytes so far), replaced by a summary line
//!   when the step ends;
//! - stderr is not a terminal (CI logs, pipes): only the summary line,
//!   `imager: <step>: <size> in <seconds> s`;
//! - `--json`, or before [`init`] (library use, unit tests): nothing.
//!
//! A step measures either what it is told ([`Step::add`], for streams) or how much of a
//! file has been allocated so far ([`Step::file`], for writers we do not own, such as the
//! squashfs writer or a sparse disk image).

use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redrawn lines on a terminal.
    Bar,
    /// One summary line per step.
    Lines,
    /// Nothing.
    Quiet,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Chooses the mode once per process: quiet with `--json`, else by whether stderr is a
/// terminal.
pub fn init(json: bool) {
    let m = if json {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Bar
    } else {
        Mode::Lines
    };
    let _ = MODE.set(m);
}

fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Quiet)
}

/// `12.3 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The redrawn line of a step.
pub fn bar_line(label: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = human((done as f64 / secs) as u64);
    match total {
        Some(t) if t > 0 => {
            let frac = (done as f64 / t as f64).clamp(0.0, 1.0);
            let filled = (frac * 24.0).round() as usize;
            format!(
                "{label} [{}{}] {:>3.0}% {} / {} {rate}/s",
                "#".repeat(filled),
                "-".repeat(24 - filled),
                frac * 100.0,
                human(done),
                human(t)
            )
        }
        _ => format!("{label} {} {rate}/s {:.0} s", human(done), secs),
    }
}

#[derive(Debug)]
enum Source {
    Counter,
    File(PathBuf),
}

fn measure(source: &Source, counter: &AtomicU64) -> u64 {
    match source {
        Source::Counter => counter.load(Ordering::Relaxed),
        // allocated bytes: right for sparse images and for files written in order
        Source::File(p) => std::fs::metadata(p).map_or(0, |m| m.blocks() * 512),
    }
}

/// One measured step; the summary is printed by [`Step::finish`], nothing by a drop (a
/// failed step is reported by its error).
#[derive(Debug)]
pub struct Step {
    label: String,
    counter: Arc<AtomicU64>,
    source: Arc<Source>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
    start: Instant,
}

impl Step {
    fn new(label: &str, total: Option<u64>, source: Source) -> Self {
        let counter = Arc::new(AtomicU64::new(0));
        let source = Arc::new(source);
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let ticker = (mode() == Mode::Bar).then(|| {
            let (label, counter, source, stop) = (
                label.to_string(),
                counter.clone(),
                source.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let line = bar_line(&label, measure(&source, &counter), total, start.elapsed());
                    let mut e = std::io::stderr().lock();
                    let _ = write!(e, "\r\x1b[2K{line}");
                    let _ = e.flush();
                }
            })
        });
        Self {
            label: label.to_string(),
            counter,
            source,
            stop,
            ticker,
            start,
        }
    }

    /// A step told its bytes with [`Step::add`].
    pub fn counter(label: &str, total: Option<u64>) -> Self {
        Self::new(label, total, Source::Counter)
    }

    /// A step measured by the allocated size of `path` (its final size is not known ahead).
    pub fn file(label: &str, path: PathBuf) -> Self {
        Self::new(label, None, Source::File(path))
    }

    /// `n` more bytes done.
    pub fn add(&self, n: u64) {
        self.counter.fetch_add(n, Ordering::Relaxed);
    }

    fn stop_ticker(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
        }
    }

    /// Ends the step with its summary line.
    pub fn finish(mut self) {
        self.stop_ticker();
        if mode() == Mode::Quiet {
            return;
        }
        let done = measure(&self.source, &self.counter);
        eprintln!(
            "imager: {}: {} in {:.1} s",
            self.label,
            human(done),
            self.start.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

/// The registry client's progress: one [`Step`] per blob download.
#[derive(Debug)]
pub struct Downloads;

struct DownloadMeter(Step);

impl oci::client::Meter for DownloadMeter {
    fn add(&mut self, n: u64) {
        self.0.add(n);
    }
    fn finish(self: Box<Self>) {
        self.0.finish();
    }
}

impl oci::client::Progress for Downloads {
    fn download(&self, what: &str, total: u64) -> Box<dyn oci::client::Meter> {
        Box::new(DownloadMeter(Step::counter(what, Some(total))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_well() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(12 * 1024 * 1024 + 300 * 1024), "12.3 MiB");
        let l = bar_line("pull x", 50 << 20, Some(100 << 20), Duration::from_secs(2));
        assert_eq!(
            l,
            "pull x [############------------]  50% 50.0 MiB / 100.0 MiB 25.0 MiB/s"
        );
        let l = bar_line("squashfs a", 3 << 20, None, Duration::from_secs(3));
        assert_eq!(l, "squashfs a 3.0 MiB 1.0 MiB/s 3 s");
        // never past 100 %, never a division by zero
        let l = bar_line("x", 200, Some(100), Duration::ZERO);
        assert!(l.contains("100%"), "{l}");
    }
}
