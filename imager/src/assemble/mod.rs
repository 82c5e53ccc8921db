//! Stage 3 of the pipeline: what the outputs are made of, computed from the profile and the
//! resolved inputs — the kernel command line, the META values, and the initramfs (rebuilt
//! with extensions when there are any). Later: the UKI.
//!
//! In: a validated [`Profile`] and [`Inputs`]. Out: an [`Assembly`]; files it creates live in
//! the build's staging directory.

pub mod cmdline;
pub mod extensions;
pub mod meta;
mod modules;

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::inputs::{self, Inputs};
use crate::profile::Profile;
use std::path::{Path, PathBuf};

/// The assembled pieces of one build.
#[derive(Debug)]
pub struct Assembly {
    /// The kernel command line (META on it for outputs without a META partition).
    pub cmdline: String,
    /// META values for the META partition of disk images.
    pub meta: adv::Adv,
    /// The initramfs to ship: the base one, or the rebuilt one in staging.
    pub initramfs: Option<PathBuf>,
    /// `(name, version)` of every extension layer.
    pub layers: Vec<(String, String)>,
}

/// The kernel command line of `p`, with META as `INSTALLER_META_BASE64` for outputs that have
/// no META partition (docs/formats/cmdline.md, docs/formats/meta.md).
pub fn cmdline_of(p: &Profile) -> Result<String> {
    cmdline_with(p, &[])
}

/// [`cmdline_of`] with a board overlay's kernel arguments.
pub fn cmdline_with(p: &Profile, overlay_args: &[String]) -> Result<String> {
    let env = meta::cmdline_env(p);
    let c = cmdline::build(p, env.as_deref(), overlay_args).to_string();
    cmdline::check_len(&c, p.arch, env.as_deref())?;
    Ok(c)
}

/// What the profile alone decides: its META values and its kernel command line (in that order
/// of checks). The build computes them before any input is read, so that a value that does
/// not fit fails first.
#[derive(Debug)]
pub struct FromProfile {
    /// META values.
    pub meta: adv::Adv,
    /// The kernel command line.
    pub cmdline: String,
}

/// Computes [`FromProfile`].
pub fn from_profile(p: &Profile) -> Result<FromProfile> {
    Ok(FromProfile {
        meta: meta::values(p)?,
        cmdline: cmdline_of(p)?,
    })
}

/// Assembles `p` from what the profile decides and `inputs` (whose extension trees it
/// consumes).
pub fn assemble(
    p: &Profile,
    decided: FromProfile,
    inputs: &mut Inputs,
    ext_opts: &inputs::extensions::Options,
    staging: Option<&Path>,
    epoch: i64,
) -> Result<Assembly> {
    let FromProfile { meta, mut cmdline } = decided;
    if let Some(o) = inputs
        .overlay
        .as_ref()
        .filter(|o| !o.kernel_args.is_empty())
    {
        cmdline = cmdline_with(p, &o.kernel_args)?;
    }
    let mut initramfs = inputs.initramfs.clone();
    let mut layers = Vec::new();
    if inputs::needs_extensions(p) {
        let (Some(base), Some(staging)) = (&inputs.initramfs, staging) else {
            return Err(Error::new(
                ExitCode::Unknown,
                anyhow::anyhow!("extensions without a base initramfs or staging directory"),
            ));
        };
        let ext_dir = staging.join("ext");
        std::fs::create_dir_all(&ext_dir)
            .code(ExitCode::Io, || format!("creating {}", ext_dir.display()))?;
        let out = ext_dir.join("initramfs");
        let exts = std::mem::take(&mut inputs.extensions);
        let summary = extensions::build(p, exts, base, &ext_dir, &out, epoch, ext_opts)?;
        for (name, version) in &summary.layers {
            eprintln!(
                "imager: extension {} {}",
                crate::error::printable(name),
                crate::error::printable(version)
            );
        }
        initramfs = Some(summary.initramfs);
        layers = summary.layers;
    }
    Ok(Assembly {
        cmdline,
        meta,
        initramfs,
        layers,
    })
}
