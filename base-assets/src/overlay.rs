//! `base-assets overlay`: packs a reference board overlay (docs/formats/overlays.md) from its
//! directory in `overlays/` and Debian's boot loader binaries.
//!
//! In: `overlays/<name>/{overlay.yaml,artifacts.txt,profiles/*.yaml}`, the unpacked packages
//! `artifacts.txt` names (`--package NAME=DIR`; `kernel` is the arm64 kernel, whose release
//! fills `{kver}`), SOURCE_DATE_EPOCH. Out: `<out>` — a gzip tar with `overlay.yaml`,
//! `profiles/…` and `artifacts/…` at its root, sorted, uid/gid 0, mtime SOURCE_DATE_EPOCH: the
//! same bytes from the same inputs.

use anyhow::{Context, Result, bail};
use clap::Parser;
use oci::layout::{LayerFile, write_layer_with_dirs};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "base-assets overlay", about = "Pack a reference board overlay")]
struct Args {
    /// The overlay's source directory (`overlays/<name>`).
    #[arg(long)]
    src: PathBuf,
    /// An unpacked package, `NAME=DIR` (repeatable).
    #[arg(long = "package", value_name = "NAME=DIR")]
    packages: Vec<String>,
    /// The tarball to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn main(args: impl Iterator<Item = String>) -> Result<()> {
    let a = Args::parse_from(args);
    let epoch = u64::try_from(crate::epoch()?).unwrap_or(0);
    let mut pkgs = BTreeMap::new();
    for p in &a.packages {
        let (name, dir) = p
            .split_once('=')
            .with_context(|| format!("--package {p:?}: expected NAME=DIR"))?;
        pkgs.insert(name.to_string(), PathBuf::from(dir));
    }
    // the kernel release, for `{kver}`
    let kver = match pkgs.get("kernel") {
        Some(k) => crate::kernel_release(k)?,
        None => String::new(),
    };
    let mut files = vec![LayerFile {
        path: "overlay.yaml".into(),
        mode: 0o644,
        source: a.src.join("overlay.yaml"),
    }];
    let mut dirs = BTreeSet::new();
    // the board profiles, usable as baseProfileName with this overlay
    let pdir = a.src.join("profiles");
    if pdir.is_dir() {
        let mut names = Vec::new();
        for e in std::fs::read_dir(&pdir).with_context(|| format!("reading {}", pdir.display()))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") {
                names.push(name);
            }
        }
        names.sort();
        if !names.is_empty() {
            dirs.insert("profiles".to_string());
        }
        for name in names {
            files.push(LayerFile {
                path: format!("profiles/{name}"),
                mode: 0o644,
                source: pdir.join(&name),
            });
        }
    }
    let list = a.src.join("artifacts.txt");
    let text =
        std::fs::read_to_string(&list).with_context(|| format!("reading {}", list.display()))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let [target, pkg, path] = line.split_whitespace().collect::<Vec<_>>()[..] else {
            bail!(
                "{}:{}: expected `<target> <package> <path>`",
                list.display(),
                n + 1
            );
        };
        if target.split('/').any(|c| c.is_empty() || c == "..") || !target.starts_with("artifacts/")
        {
            bail!(
                "{}:{}: {target:?} is not under artifacts/",
                list.display(),
                n + 1
            );
        }
        let root = pkgs
            .get(pkg)
            .with_context(|| format!("{}:{}: no --package {pkg}=DIR", list.display(), n + 1))?;
        let source = root.join(path.replace("{kver}", &kver));
        if !source.is_file() {
            bail!(
                "{}:{}: {} is not a file",
                list.display(),
                n + 1,
                source.display()
            );
        }
        dirs.extend(crate::parents(target));
        files.push(LayerFile {
            path: target.to_string(),
            mode: 0o644,
            source,
        });
    }
    let dirs: Vec<(String, u32)> = dirs.into_iter().map(|d| (d, 0o755)).collect();
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = a.out.with_extension("tmp-partial");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write_layer_with_dirs(&mut f, &dirs, &files, epoch, 9)
        .with_context(|| format!("writing {}", a.out.display()))?;
    f.sync_all()?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("renaming into {}", a.out.display()))?;
    eprintln!(
        "base-assets: overlay {} ({} files) → {}",
        a.src.display(),
        files.len(),
        a.out.display()
    );
    Ok(())
}
