//! `imager`: builds boot media from a profile.
//!
//! `imager <profile>|- [flags]`: a built-in profile name with flags merged onto it, or `-` to
//! read a whole profile from stdin (then only `--output` applies, as in Talos).

use anyhow::Context;
use clap::Parser;
use imager::build::{BuildOptions, build};
use imager::error::{Error, ExitCode, Result};
use imager::profile::{self, OutputKind};
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Built-in profiles: metal.

`imager boot ARTIFACT [--firmware uefi|bios] [--until-ready]` boots a disk image in QEMU
(see `imager boot --help`).

Exit codes: 0 ok, 1 unknown, 2 invalid input (profile, flags, META), 3 unsupported,
4 environment, 5 dependency, 6 I/O (including missing input files), 7 assembly.

SOURCE_DATE_EPOCH (default 0) sets every timestamp written; the same inputs and epoch give
byte-identical outputs.";

/// Build bootable OS media (disk images, kernel, initramfs, cmdline) from a Talos-style profile.
#[derive(Parser, Debug)]
#[command(name = "imager", version, after_help = AFTER_HELP)]
struct Cli {
    /// A built-in profile name (e.g. `metal`), or `-` to read a complete profile YAML from stdin.
    profile: String,

    /// Target architecture (amd64 or arm64); the default is the host's.
    #[arg(long, default_value = host_arch())]
    arch: String,

    /// Platform (overrides the profile's), e.g. metal, aws, nocloud.
    #[arg(long)]
    platform: Option<String>,

    /// Extra kernel argument (repeatable). `-key` deletes a default argument, `-key=value` one value;
    /// `console=` replaces the platform's consoles.
    #[arg(long = "extra-kernel-arg", value_name = "ARG")]
    extra_kernel_args: Vec<String>,

    /// META value `KEY=VALUE` (repeatable); KEY is decimal, 0x hex, 0o octal or 0b binary
    /// (0..=0xff); `KEY=@FILE` reads the value from FILE. Key 0xa holds the metal network
    /// configuration.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,

    /// Output directory (created if missing).
    #[arg(long, default_value = "/out")]
    output: PathBuf,

    /// Output kind, overriding the profile's: image, kernel, initramfs or cmdline.
    #[arg(long = "output-kind", value_name = "KIND")]
    output_kind: Option<String>,

    /// Directory holding the base assets as `<arch>/{vmlinuz,initramfs.xz,systemd-boot.efi,
    /// systemd-stub.efi}`; it replaces /usr/install in the default input paths.
    #[arg(
        long = "install-dir",
        env = "IMAGER_INSTALL_DIR",
        default_value = "/usr/install"
    )]
    install_dir: String,

    /// Print the filled-in profile as YAML and exit without building.
    #[arg(long = "dump-profile")]
    dump_profile: bool,

    /// Print the artifacts (kind, path, size, sha256) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

const fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

fn epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| Error::invalid(format!("SOURCE_DATE_EPOCH={v:?} is not an integer"))),
        _ => Ok(0),
    }
}

fn meta_flag(s: &str) -> Result<Value> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::invalid(format!("--meta {s:?}: expected KEY=VALUE")))?;
    let key =
        imager::parse_meta_key(k).map_err(|e| Error::invalid(format!("--meta {s:?}: {e}")))?;
    let value = match v.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("--meta {k}=@{path}: reading {path}"))
            .map_err(|e| Error::new(ExitCode::InvalidInput, e))?,
        None => v.to_string(),
    };
    Ok(json!({"key": key, "value": value}))
}

fn resolve(cli: &Cli) -> Result<(profile::Profile, Vec<String>)> {
    let (value, what) = if cli.profile == "-" {
        let ignored = !cli.extra_kernel_args.is_empty()
            || !cli.meta.is_empty()
            || cli.platform.is_some()
            || cli.output_kind.is_some();
        if ignored {
            eprintln!(
                "imager: reading the profile from stdin: --platform, --extra-kernel-arg, --meta and --output-kind are ignored"
            );
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the profile from stdin")
            .map_err(|e| Error::new(ExitCode::Io, e))?;
        (
            profile::parse_yaml(&text, "profile (stdin)")?,
            "profile (stdin)".to_string(),
        )
    } else {
        let mut over = json!({
            "baseProfileName": cli.profile,
            "arch": cli.arch,
            "platform": cli.platform.clone().unwrap_or_default(),
        });
        if let Some(k) = &cli.output_kind {
            let kind = OutputKind::parse(k).ok_or_else(|| {
                Error::invalid(format!(
                    "--output-kind {k:?}: not one of iso, image, installer, kernel, initramfs, uki, cmdline"
                ))
            })?;
            over["output"] = json!({"kind": kind.as_str()});
        }
        let meta = cli
            .meta
            .iter()
            .map(|m| meta_flag(m))
            .collect::<Result<Vec<_>>>()?;
        over["customization"] = json!({
            "extraKernelArgs": cli.extra_kernel_args,
            "metaContents": meta,
        });
        (over, format!("profile {}", cli.profile))
    };
    let merged = profile::resolve_base(value)?;
    let mut p = profile::from_value(merged, &what)?;
    let notes = p.fill_defaults(&cli.arch, &cli.install_dir);
    p.validate()?;
    Ok((p, notes))
}

fn run(cli: &Cli) -> Result<()> {
    let (p, notes) = resolve(cli)?;
    for n in &notes {
        eprintln!("imager: note: {n}");
    }
    if cli.dump_profile {
        let y = serde_saphyr::to_string(&p)
            .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("dumping profile: {e}")))?;
        print!("{y}");
        return Ok(());
    }
    let opts = BuildOptions {
        output_dir: cli.output.clone(),
        epoch: epoch()?,
        digests: cli.json,
    };
    let start = std::time::Instant::now();
    let artifacts = build(&p, &opts)?;
    if cli.json {
        let out = json!({"artifacts": artifacts, "seconds": start.elapsed().as_secs_f64()});
        println!("{out}");
    } else {
        for a in &artifacts {
            eprintln!(
                "imager: wrote {} ({} bytes, {:.1} s)",
                a.path.display(),
                a.size,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("boot") {
        let cli = imager::boot::BootCli::parse_from(std::env::args().skip(1));
        if let Err(e) = imager::boot::run(&cli) {
            eprintln!("error: {e}");
            std::process::exit(e.code as i32);
        }
        return;
    }
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("error: {e}");
        std::process::exit(e.code as i32);
    }
}
