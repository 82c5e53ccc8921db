//! node-runtime: PID 1 of the images built by the imager.
//!
//! The same binary runs twice per boot. As `/init` in the initramfs (there is a
//! `/rootfs.sqsh`) it is [`stage1`]: API filesystems, floor modules, the squashfs root (or
//! the overlay with the system extensions), switch_root into `/sbin/init`. As `/sbin/init` in
//! the read-only root it is [`stage2`]: writable mounts, META, modules, network, services, and
//! the ready line. Every step prints one machine-readable line on the console ([`console`]).
//!
//! A stage that fails prints `error: <chain>`; with `node_runtime.test_poweroff` on the kernel
//! cmdline the machine then powers off, which lets tests and the quickstart end QEMU cleanly.
//! Either way PID 1 never exits: it ends reaping children ([`console::idle`]).

mod api;
mod cmdline;
mod config;
mod console;
mod lifecycle;
mod meta;
mod metaliso;
mod modules;
mod mounts;
mod net;
mod provision;
mod readiness;
mod security;
mod services;
mod stage1;
mod stage2;
mod sys;
mod upgrade;
mod volumes;
mod watchdog;

use cmdline::Cmdline;
use console::{POWEROFF_FLAG, START_ENV, boottime_ns, idle, poweroff, say};
use std::path::Path;

fn main() {
    if nix::unistd::getpid().as_raw() != 1 {
        eprintln!(
            "node-runtime is the init process of the images the imager builds; it only runs as PID 1"
        );
        std::process::exit(2);
    }
    let initramfs = Path::new("/rootfs.sqsh").exists();
    let start_ns = if initramfs {
        boottime_ns()
    } else {
        std::env::var(START_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let res = if initramfs {
        stage1::run(start_ns)
    } else {
        stage2::run(start_ns)
    };
    if let Err(e) = res {
        say(&format!("error: {e:#}"));
        // a new version on trial that fails goes back to the previous one
        if !initramfs && upgrade::on_fatal() {
            idle()
        }
        if Cmdline::read().flag(POWEROFF_FLAG) {
            poweroff();
        }
    }
    idle()
}
