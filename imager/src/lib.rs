//! The imager library: profile → resolved profile → verified inputs → assembled outputs.
//!
//! `profile` parses, merges, defaults and validates (spec §1); `cmdline` renders the kernel
//! command line (§10); META for the cmdline is encoded by `adv::env` (§5); `build` checks inputs and
//! writes the artifacts of §2 (disk images through the installer library), each via a temp
//! name in the output directory and renamed when complete.

pub mod boot;
pub mod build;
pub mod cmdline;
pub mod error;
pub mod ext;
pub mod fetch;
pub mod installer_image;
pub mod iso;
pub mod profile;
pub mod quirks;
pub mod registry_cli;
