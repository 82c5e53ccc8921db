//! An ordered worker pool: jobs are numbered as submitted, run on `threads` worker threads, and
//! their results are handed back **in submission order**, whatever order they finish in. This
//! is what makes the parallel writers (gzip chunks, xz blocks) independent of the thread count.
//!
//! In: closures returning a result each. Out: the results, in order, through a callback.
//! Memory: at most `2 × threads + 2` jobs are submitted and not yet handed back; `submit`
//! blocks (handing back finished results meanwhile) when that many are pending.

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::{Error, Result, io_err};

type Task<R> = Box<dyn FnOnce() -> Result<R> + Send>;

/// See the module documentation.
pub(crate) struct Pool<R: Send + 'static> {
    jobs: Option<SyncSender<(u64, Task<R>)>>,
    done: Receiver<(u64, Result<R>)>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_out: u64,
    ready: BTreeMap<u64, R>,
    limit: u64,
}

fn stopped() -> Error {
    Error::Io {
        context: "worker pool".into(),
        source: io::Error::other("a worker thread stopped"),
    }
}

fn work<R: Send + 'static>(
    jobs: &Mutex<Receiver<(u64, Task<R>)>>,
    done: &Sender<(u64, Result<R>)>,
) {
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, task)) = next else { return };
        if done.send((seq, task())).is_err() {
            return;
        }
    }
}

impl<R: Send + 'static> Pool<R> {
    /// Starts `threads` (≥ 1) workers named `name-N`.
    pub(crate) fn new(threads: usize, name: &str) -> Result<Self> {
        let threads = threads.max(1);
        let (jtx, jrx) = sync_channel::<(u64, Task<R>)>(threads);
        let (dtx, drx) = channel();
        let jrx = Arc::new(Mutex::new(jrx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (jrx, dtx) = (Arc::clone(&jrx), dtx.clone());
            let h = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&jrx, &dtx))
                .map_err(io_err(format!("spawning {name} worker")))?;
            workers.push(h);
        }
        Ok(Pool {
            jobs: Some(jtx),
            done: drx,
            workers,
            next_seq: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            limit: 2 * threads as u64 + 2,
        })
    }

    /// Queues `task`; results that became available in order are passed to `out`.
    pub(crate) fn submit(
        &mut self,
        task: impl FnOnce() -> Result<R> + Send + 'static,
        out: &mut dyn FnMut(R) -> Result<()>,
    ) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|tx| tx.send((seq, Box::new(task))).is_ok());
        if !sent {
            return Err(stopped());
        }
        self.settle(out)
    }

    /// Queues a result that needs no work (e.g. from a cache), in order with the jobs.
    pub(crate) fn submit_ready(
        &mut self,
        r: R,
        out: &mut dyn FnMut(R) -> Result<()>,
    ) -> Result<()> {
        self.ready.insert(self.next_seq, r);
        self.next_seq += 1;
        self.settle(out)
    }

    /// Hands back what is ready; waits while too many jobs are pending.
    fn settle(&mut self, out: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        self.collect(false, out)?;
        while self.next_seq - self.next_out >= self.limit {
            self.collect(true, out)?;
        }
        Ok(())
    }

    /// Receives finished results (waiting for one if `block` and the next in order is not
    /// there yet) and passes the in-order prefix to `out`.
    fn collect(&mut self, block: bool, out: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        let mut block = block && !self.ready.contains_key(&self.next_out);
        loop {
            let (seq, r) = if block {
                block = false;
                self.done.recv().map_err(|_| stopped())?
            } else {
                match self.done.try_recv() {
                    Ok(d) => d,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(stopped()),
                }
            };
            self.ready.insert(seq, r?);
        }
        while let Some(r) = self.ready.remove(&self.next_out) {
            self.next_out += 1;
            out(r)?;
        }
        Ok(())
    }

    /// Waits for every job, passes the remaining results to `out` and stops the workers.
    pub(crate) fn finish(mut self, out: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        while self.next_out < self.next_seq {
            self.collect(true, out)?;
        }
        self.jobs = None;
        for h in std::mem::take(&mut self.workers) {
            h.join().map_err(|_| stopped())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn results_in_order() {
        for threads in [1, 2, 5] {
            let mut pool = Pool::new(threads, "t").unwrap();
            let mut got = Vec::new();
            for i in 0..100u64 {
                if i % 7 == 0 {
                    pool.submit_ready(i, &mut |r| {
                        got.push(r);
                        Ok(())
                    })
                    .unwrap();
                } else {
                    let task = move || {
                        std::thread::sleep(std::time::Duration::from_micros((i * 37) % 300));
                        Ok(i)
                    };
                    pool.submit(task, &mut |r| {
                        got.push(r);
                        Ok(())
                    })
                    .unwrap();
                }
            }
            pool.finish(&mut |r| {
                got.push(r);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, (0..100).collect::<Vec<_>>());
        }
    }

    #[test]
    fn errors_propagate() {
        let mut pool = Pool::<u8>::new(2, "t").unwrap();
        let mut sink = |_| Ok(());
        let e = match pool.submit(|| Err(Error::InvalidArgument("boom".into())), &mut sink) {
            Err(e) => e,
            Ok(()) => pool.finish(&mut sink).unwrap_err(),
        };
        assert!(e.to_string().contains("boom"));
    }
}
