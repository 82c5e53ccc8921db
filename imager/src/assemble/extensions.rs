//! Extensions → initramfs (docs/formats/extensions.md): the loaded extension trees become one
//! squashfs each, plus the generated `modules.dep` layer, `extensions.yaml`, firmware and
//! microcode, appended to the base initramfs.
//!
//! The base initramfs is never modified: the new one is `[early microcode cpio] ‖ base ‖
//! compressed cpio of the staging tree`, written into the build's staging directory.

use super::modules;
use crate::error::{Error, ExitCode, Result, WithCode};
use crate::inputs::extensions::{Extension, Options};
use crate::inputs::tree::Kind;
use crate::profile::Profile;
use crate::profile::quirks::Quirk;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What was built.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `(name, version)` of every layer, in `extensions.yaml` order.
    pub layers: Vec<(String, String)>,
    /// The rebuilt initramfs.
    pub initramfs: PathBuf,
}

/// An entry of the initramfs staging tree `S`.
enum SNode {
    Dir(u32),
    File(PathBuf, u32),
    Symlink(String),
}

/// Go `filepath.WalkDir` order: depth first, children sorted by name.
fn walk_key(p: &str) -> Vec<&str> {
    p.split('/').collect()
}

/// The firmware and modules paths of the target version (docs/formats/quirks.md usrmerge).
fn firmware_dir(p: &Profile) -> &'static str {
    if p.quirks().has(Quirk::Usrmerge) {
        "usr/lib/firmware"
    } else {
        "lib/firmware"
    }
}

fn glob_match(pat: &str, name: &str) -> bool {
    // the two globs of docs/formats/extensions.md: "*" and "microcode_amd*.bin"
    match pat.split_once('*') {
        None => pat == name,
        Some((pre, suf)) => {
            name.len() >= pre.len() + suf.len() && name.starts_with(pre) && name.ends_with(suf)
        }
    }
}

/// Builds the new initramfs into `out` (a file in `staging`'s filesystem).
pub fn build(
    p: &Profile,
    mut exts: Vec<Extension>,
    base_initramfs: &Path,
    staging: &Path,
    out: &Path,
    epoch: i64,
    opts: &Options,
) -> Result<Summary> {
    if exts.is_empty() {
        std::fs::copy(base_initramfs, out).code(ExitCode::Io, || {
            format!("copying {}", base_initramfs.display())
        })?;
        return Ok(Summary {
            layers: Vec::new(),
            initramfs: out.to_path_buf(),
        });
    }
    if let Some(m) = modules::dependency_extension(p, base_initramfs, &exts, staging, opts)? {
        exts.push(m);
    }

    let fw = firmware_dir(p);
    let mut s: BTreeMap<String, SNode> = BTreeMap::new();
    let ucode = [
        ("intel-ucode", "*", "kernel/x86/microcode/GenuineIntel.bin"),
        (
            "amd-ucode",
            "microcode_amd*.bin",
            "kernel/x86/microcode/AuthenticAMD.bin",
        ),
    ];
    let mut ucode_blobs: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    let mtime = u32::try_from(epoch.clamp(0, i64::from(u32::MAX))).unwrap_or(0);
    let compression = if p.quirks().has(Quirk::ZstdExtensions) {
        squashfs::Compression::Zstd { level: 18 }
    } else {
        squashfs::Compression::Xz
    };
    let mut config = sysext::Config::default();
    for e in &mut exts {
        // 1. microcode, concatenated in glob (name) order across extensions
        for (dir, pat, dst) in ucode {
            let d = format!("rootfs/{fw}/{dir}");
            let files: Vec<(String, PathBuf)> = e
                .tree
                .under(&d)
                .filter(|(rel, n)| {
                    !rel.contains('/')
                        && glob_match(pat, rel)
                        && matches!(n.kind, Kind::File { .. })
                })
                .filter_map(|(rel, n)| match &n.kind {
                    Kind::File { blob, .. } => Some((format!("{d}/{rel}"), blob.clone())),
                    _ => None,
                })
                .collect();
            for (path, blob) in files {
                ucode_blobs.entry(dst).or_default().push(blob);
                e.tree.remove_tree(&path);
            }
        }
        // 2. firmware moves to the initramfs
        let fw_root = format!("rootfs/{fw}");
        for (k, n) in e.tree.remove_tree(&fw_root) {
            let rel = &k["rootfs/".len()..];
            let node = match n.kind {
                Kind::Dir => SNode::Dir(n.mode),
                Kind::File { blob, .. } => SNode::File(blob, n.mode),
                Kind::Symlink(t) => SNode::Symlink(t),
            };
            s.insert(rel.to_string(), node);
        }
        // 3. the squashfs
        let name = format!("{}.sqsh", e.dir);
        let sqsh = staging.join(&name);
        write_squashfs(e, &sqsh, compression, mtime)?;
        s.insert(name.clone(), SNode::File(sqsh, 0o644));
        config.layers.push(sysext::Layer {
            image: name,
            metadata: e.manifest.metadata.clone(),
        });
    }
    // parents of the firmware tree
    let parents: Vec<String> = s
        .keys()
        .flat_map(|k| {
            let c: Vec<&str> = k.split('/').collect();
            (1..c.len())
                .map(move |i| c[..i].join("/"))
                .collect::<Vec<_>>()
        })
        .collect();
    for d in parents {
        s.entry(d).or_insert(SNode::Dir(0o755));
    }
    for (dst, blobs) in &ucode_blobs {
        let path = staging.join(dst.replace('/', "_"));
        let mut w =
            File::create(&path).code(ExitCode::Io, || format!("creating {}", path.display()))?;
        for b in blobs {
            let mut r = File::open(b).code(ExitCode::Io, || format!("reading {}", b.display()))?;
            std::io::copy(&mut r, &mut w)
                .code(ExitCode::Io, || format!("writing {}", path.display()))?;
        }
        for d in ["kernel", "kernel/x86", "kernel/x86/microcode"] {
            s.insert(d.into(), SNode::Dir(0o755));
        }
        s.insert(dst.to_string(), SNode::File(path, 0o644));
    }
    let yaml = staging.join("extensions.yaml");
    std::fs::write(&yaml, config.to_yaml())
        .code(ExitCode::Io, || format!("writing {}", yaml.display()))?;
    s.insert("extensions.yaml".into(), SNode::File(yaml, 0o644));

    let mut order: Vec<&String> = s.keys().collect();
    order.sort_by(|a, b| walk_key(a).cmp(&walk_key(b)));
    let (early, rest): (Vec<&String>, Vec<&String>) = order
        .into_iter()
        .partition(|k| *k == "kernel" || k.starts_with("kernel/"));

    let f = File::create(out).code(ExitCode::Io, || format!("creating {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let cpio_err = |e: cpio::CpioError| {
        Error::new(
            ExitCode::Assembly,
            anyhow::anyhow!("writing the extensions cpio: {e}"),
        )
    };
    if !early.is_empty() {
        let mut c = cpio::Writer::new(&mut w, epoch);
        write_cpio(&mut c, &s, &early).map_err(cpio_err)?;
        c.finish().map_err(cpio_err)?;
    }
    let mut base = File::open(base_initramfs).code(ExitCode::Io, || {
        format!("reading {}", base_initramfs.display())
    })?;
    std::io::copy(&mut base, &mut w).code(ExitCode::Io, || {
        format!("copying {}", base_initramfs.display())
    })?;
    let threads = postfmt::resolve_threads(0) as u32;
    if p.quirks().has(Quirk::ZstdExtensions) {
        let mut z = zstd::stream::write::Encoder::new(&mut w, 18)
            .code(ExitCode::Assembly, || "zstd encoder".into())?;
        z.multithread(threads.max(1))
            .code(ExitCode::Assembly, || "zstd encoder".into())?;
        z.include_checksum(true)
            .code(ExitCode::Assembly, || "zstd encoder".into())?;
        let mut c = cpio::Writer::new(z, epoch);
        write_cpio(&mut c, &s, &rest).map_err(cpio_err)?;
        c.finish()
            .map_err(cpio_err)?
            .finish()
            .code(ExitCode::Io, || "finishing the zstd stream".into())?;
    } else {
        // xz -v -C crc32 -0 -e -T 0
        let stream = liblzma::stream::MtStreamBuilder::new()
            .preset(liblzma::stream::PRESET_EXTREME)
            .threads(threads.max(2))
            .check(liblzma::stream::Check::Crc32)
            .encoder()
            .code(ExitCode::Assembly, || "xz encoder".into())?;
        let z = liblzma::write::XzEncoder::new_stream(&mut w, stream);
        let mut c = cpio::Writer::new(z, epoch);
        write_cpio(&mut c, &s, &rest).map_err(cpio_err)?;
        c.finish()
            .map_err(cpio_err)?
            .finish()
            .code(ExitCode::Io, || "finishing the xz stream".into())?;
    }
    w.flush()
        .code(ExitCode::Io, || format!("writing {}", out.display()))?;
    Ok(Summary {
        layers: config
            .layers
            .iter()
            .map(|l| (l.metadata.name.clone(), l.metadata.version.clone()))
            .collect(),
        initramfs: out.to_path_buf(),
    })
}

fn write_cpio<W: Write>(
    c: &mut cpio::Writer<W>,
    s: &BTreeMap<String, SNode>,
    list: &[&String],
) -> std::result::Result<(), cpio::CpioError> {
    for k in list {
        match &s[k.as_str()] {
            SNode::Dir(m) => c.dir(k, *m)?,
            SNode::Symlink(t) => c.symlink(k, t)?,
            SNode::File(path, m) => {
                let mut f = File::open(path)?;
                let len = f.metadata()?.len();
                c.file(k, *m, len, &mut f)?;
            }
        }
    }
    Ok(())
}

/// `mksquashfs rootfs <dir>.sqsh -all-root -noappend` with the SELinux labels recorded at
/// extraction (docs/formats/extensions.md step 4).
fn write_squashfs(
    e: &Extension,
    out: &Path,
    compression: squashfs::Compression,
    mtime: u32,
) -> Result<()> {
    let err = |m: String| {
        Error::new(
            ExitCode::Assembly,
            anyhow::anyhow!("{}: squashfs: {m}", e.source),
        )
    };
    let mut b = squashfs::Builder::new(squashfs::Options {
        compression,
        block_size: 128 * 1024,
        mtime,
        threads: 0,
    });
    let xattrs = |l: &Option<Vec<u8>>| -> Vec<(String, Vec<u8>)> {
        l.iter()
            .map(|v| ("security.selinux".to_string(), v.clone()))
            .collect()
    };
    if let Some(root) = e.tree.get("rootfs") {
        b.dir("", root.mode, xattrs(&root.selinux))
            .map_err(|x| err(x.to_string()))?;
    }
    for (rel, n) in e.tree.under("rootfs") {
        let r = match &n.kind {
            Kind::Dir => b.dir(rel, n.mode, xattrs(&n.selinux)),
            Kind::File { blob, .. } => b.file(
                rel,
                n.mode,
                xattrs(&n.selinux),
                squashfs::Source::Path(blob.clone()),
            ),
            Kind::Symlink(t) => b.symlink(rel, t, xattrs(&n.selinux)),
        };
        r.map_err(|x| err(x.to_string()))?;
    }
    let f = File::create(out).code(ExitCode::Io, || format!("creating {}", out.display()))?;
    let step = crate::progress::Step::file(
        &format!(
            "squashfs {}",
            crate::error::printable(&e.manifest.metadata.name)
        ),
        out.to_path_buf(),
    );
    let mut w = BufWriter::with_capacity(1 << 20, f);
    b.write(&mut w).map_err(|x| err(x.to_string()))?;
    w.flush()
        .code(ExitCode::Io, || format!("writing {}", out.display()))?;
    step.finish();
    Ok(())
}
