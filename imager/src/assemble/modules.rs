//! Kernel modules shipped by extensions (docs/formats/extensions.md step 3): the base rootfs's module tree and
//! every extension's modules are merged (extensions over the base, the first extension on
//! top, as the overlay mounts them), module metadata is regenerated with our own depmod, and
//! the `modules.*` files become the synthetic `modules.dep` extension.

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::inputs::extensions::{Extension, Options};
use crate::inputs::tree::{Kind, Tree};
use crate::profile::Profile;
use crate::profile::quirks::Quirk;
use std::io::Read;
use std::path::Path;

fn modules_dir(p: &Profile) -> &'static str {
    if p.quirks().has(Quirk::Usrmerge) {
        "usr/lib/modules"
    } else {
        "lib/modules"
    }
}

fn assembly(msg: String) -> Error {
    Error::new(ExitCode::Assembly, anyhow::anyhow!(msg))
}

/// Decompresses the base initramfs (xz by magic, else zstd) and returns `rootfs.sqsh`.
fn rootfs_from_initramfs(initramfs: &Path, out: &Path) -> Result<()> {
    let what = || format!("reading {}", initramfs.display());
    let mut f = std::io::BufReader::new(std::fs::File::open(initramfs).code(ExitCode::Io, what)?);
    let mut magic = [0u8; 4];
    {
        use std::io::BufRead;
        let b = f.fill_buf().code(ExitCode::Io, what)?;
        if b.len() >= 4 {
            magic.copy_from_slice(&b[..4]);
        }
    }
    let r: Box<dyn Read> = if magic == [0xfd, b'7', b'z', b'X'] {
        Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(f))
    } else {
        Box::new(zstd::stream::read::Decoder::with_buffer(f).code(ExitCode::Io, what)?)
    };
    let entries = cpio::read_all(r).map_err(|e| {
        assembly(format!(
            "{}: reading the cpio archive: {e}",
            initramfs.display()
        ))
    })?;
    let e = entries
        .into_iter()
        .find(|e| e.name == "rootfs.sqsh")
        .ok_or_else(|| {
            assembly(format!(
                "{}: no rootfs.sqsh in the initramfs",
                initramfs.display()
            ))
        })?;
    std::fs::write(out, &e.data).code(ExitCode::Io, || format!("writing {}", out.display()))?;
    Ok(())
}

/// Copies `<moddir>` out of the squashfs into `dest` (`dest/<moddir>/<kver>/…`) and returns
/// the kernel version (there must be exactly one).
fn unsquash_modules(sqsh: &Path, moddir: &str, dest: &Path) -> Result<String> {
    use backhand::{FilesystemReader, InnerNode};
    let bad = |m: String| assembly(format!("base rootfs.sqsh: {m}"));
    let f = std::io::BufReader::new(
        std::fs::File::open(sqsh).code(ExitCode::Io, || format!("reading {}", sqsh.display()))?,
    );
    let fs = FilesystemReader::from_reader(f).map_err(|e| bad(e.to_string()))?;
    let prefix = format!("/{moddir}/");
    let mut kvers = std::collections::BTreeSet::new();
    for node in fs.files() {
        let full = node.fullpath.to_string_lossy().into_owned();
        let Some(rel) = full.strip_prefix(&prefix) else {
            continue;
        };
        let rel = rel.trim_end_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            continue;
        }
        let kv = rel.split('/').next().unwrap_or_default();
        let target = dest.join(moddir).join(rel);
        match &node.inner {
            InnerNode::Dir(_) => {
                if !rel.contains('/') {
                    kvers.insert(kv.to_string());
                }
                std::fs::create_dir_all(&target)
                    .code(ExitCode::Io, || format!("creating {}", target.display()))?;
            }
            InnerNode::File(file) => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .code(ExitCode::Io, || format!("creating {}", parent.display()))?;
                }
                let mut out = std::fs::File::create(&target)
                    .code(ExitCode::Io, || format!("creating {}", target.display()))?;
                let mut r = fs.file(file).reader();
                std::io::copy(&mut r, &mut out).map_err(|e| bad(format!("{full}: {e}")))?;
            }
            _ => {}
        }
    }
    let kvers: Vec<String> = kvers.into_iter().collect();
    match kvers.as_slice() {
        [kver] => Ok(kver.clone()),
        _ => Err(bad(format!(
            "expected exactly one kernel version under /{moddir}, found {kvers:?}"
        ))),
    }
}

/// Builds the `modules.dep` extension when any extension ships kernel modules.
pub fn dependency_extension(
    p: &Profile,
    base_initramfs: &Path,
    exts: &[Extension],
    staging: &Path,
    opts: &Options,
) -> Result<Option<Extension>> {
    let moddir = modules_dir(p);
    let ext_root = format!("rootfs/{moddir}");
    let with_modules: Vec<&Extension> = exts
        .iter()
        .filter(|e| e.tree.get(&ext_root).is_some_and(|n| n.kind == Kind::Dir))
        .collect();
    if with_modules.is_empty() {
        return Ok(None);
    }
    let sqsh = staging.join("base-rootfs.sqsh");
    rootfs_from_initramfs(base_initramfs, &sqsh)?;
    let merged = staging.join("modules-merged");
    let kver = unsquash_modules(&sqsh, moddir, &merged)?;
    // extensions over the base; the first extension ends on top
    for e in with_modules.iter().rev() {
        for (rel, n) in e.tree.under(&ext_root) {
            let kv = rel.split('/').next().unwrap_or_default();
            if kv != kver {
                return Err(Error::invalid(format!(
                    "{}: kernel modules for kernel {kv:?}, but the base kernel is {kver:?} \
                     (rootfs/{moddir}/{rel})",
                    e.source
                )));
            }
            let target = merged.join(moddir).join(rel);
            match &n.kind {
                Kind::Dir => std::fs::create_dir_all(&target)
                    .code(ExitCode::Io, || format!("creating {}", target.display()))?,
                Kind::File { blob, .. } => {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)
                            .code(ExitCode::Io, || format!("creating {}", parent.display()))?;
                    }
                    if target.is_dir() {
                        std::fs::remove_dir_all(&target)
                            .code(ExitCode::Io, || format!("replacing {}", target.display()))?;
                    }
                    std::fs::copy(blob, &target).code(ExitCode::Io, || {
                        format!("copying into {}", target.display())
                    })?;
                }
                // links in module trees (build/, source/) do not take part in depmod
                Kind::Symlink(_) => {}
            }
        }
    }
    let kdir = merged.join(moddir).join(&kver);
    let out = kmod::depmod::generate(&kdir)
        .map_err(|e| assembly(format!("depmod for kernel {kver}: {e}")))?;
    out.write_to(&kdir)
        .map_err(|e| assembly(format!("writing modules.* for kernel {kver}: {e}")))?;

    let mut tree = Tree::new(&staging.join("blobs-modules.dep"), opts.max_bytes)
        .map_err(|e| assembly(format!("modules.dep: {e}")))?;
    let mut acc = String::from("rootfs");
    tree.insert(&acc, Kind::Dir, 0o755, None);
    for c in moddir.split('/').chain([kver.as_str()]) {
        acc = format!("{acc}/{c}");
        tree.insert(&acc, Kind::Dir, 0o755, None);
    }
    let mut names: Vec<String> = std::fs::read_dir(&kdir)
        .code(ExitCode::Io, || format!("reading {}", kdir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // binary indexes of the base would be stale: our depmod writes the text files only
        .filter(|n| n.starts_with("modules.") && !n.ends_with(".bin"))
        .collect();
    names.sort();
    for n in names {
        let src = kdir.join(&n);
        let f = std::fs::File::open(&src)
            .code(ExitCode::Io, || format!("reading {}", src.display()))?;
        let (blob, size) = tree
            .blob(f, &n)
            .map_err(|e| assembly(format!("modules.dep: {e}")))?;
        tree.insert(
            &format!("{acc}/{n}"),
            Kind::File { blob, size },
            0o644,
            None,
        );
    }
    Ok(Some(Extension {
        dir: "modules.dep".into(),
        source: "modules.dep (generated)".into(),
        manifest: sysext::Manifest {
            version: kver.clone(),
            metadata: sysext::Metadata {
                name: "modules.dep".into(),
                version: kver,
                author: "Talos Machinery".into(),
                description: "Combined modules.dep for all extensions".into(),
                ..Default::default()
            },
        },
        tree,
    }))
}
