//! The imager library: a staged pipeline with plain data between the stages.
//!
//! ```text
//! cli ──► profile ──────► inputs ──────► assemble ──────► output
//!         Resolved        Inputs         Assembly         Vec<Artifact>
//!         (merge,         (files, pulls, (cmdline, META,  (disk, ISO, PXE, installer
//!          defaults,       digests,       extensions →     image; atomic writes;
//!          validate)       signatures)    initramfs)       signatures)
//! ```
//!
//! - [`cli`]: the `imager` command line (one clap parser; flags → profile).
//! - [`profile`]: schema, merge, defaults, validation (docs/formats/profile.md).
//! - [`inputs`]: every input resolved, pulled and verified.
//! - [`assemble`]: kernel cmdline (docs/formats/cmdline.md), META (docs/formats/meta.md),
//!   extensions → initramfs (docs/formats/extensions.md).
//! - [`output`]: the artifacts of docs/formats/outputs.md through one atomic writer.
//! - [`build`]: sequences the stages. [`io`]: bounded, hashing reads. [`error`]: the error
//!   type and the exit codes.

pub mod assemble;
pub mod build;
pub mod cli;
pub mod error;
pub mod inputs;
pub mod io;
pub mod output;
pub mod profile;
pub mod progress;
