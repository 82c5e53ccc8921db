//! System extensions (spec §7): inputs → flattened, validated trees → one squashfs per
//! extension + `extensions.yaml` + firmware and microcode → a rebuilt initramfs.
//!
//! The base initramfs is never modified: the new one is `[early microcode cpio] ‖ base ‖
//! compressed cpio of the staging tree`, written to a temporary file that the rest of the
//! build uses in place of `input.initramfs.path`.

mod modules;
mod oci;
pub mod tree;

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::profile::{ContainerAsset, Profile};
use crate::quirks::Quirk;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use tree::{Kind, Tree};

/// Default bound on the file contents of one extension image (16 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

/// Paths an extension may contain when content validation is on (spec §7 `AllowedPaths`).
const ALLOWED_PATHS: &[&str] = &[
    "/etc/cri/conf.d",
    "/usr/lib/firmware",
    "/usr/lib/modules",
    "/usr/lib/ld-linux-x86-64.so.2",
    "/usr/lib/ld-linux-aarch64.so.1",
    "/usr/bin/ldconfig",
    "/etc/ld.so.conf",
    "/etc/ld.so.cache",
    "/usr/bin/nvidia-modprobe",
    "/usr/bin/nvidia-pcc",
    "/usr/bin/nvidia-smi",
    "/usr/bin/nvidia-ctk",
    "/usr/bin/nvidia-cdi-hook",
    "/usr/bin/nvme",
    "/usr/lib/udev/rules.d",
    "/usr/local",
    "/usr/share/glvnd",
    "/usr/share/egl",
    "/etc/vulkan",
];

/// SELinux label of the embedded machine configuration (spec §7 step 2).
const EMBEDDED_CONFIG_LABEL: &str = "system_u:object_r:system_state_t:s0";

/// How extensions are checked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Spec §7 content validation (allowed paths, no world-writable files).
    pub validate_contents: bool,
    /// Extensions (by manifest name) allowed to carry setuid/setgid files.
    pub allow_setuid: Vec<String>,
    /// Bound on the file contents of one extension image.
    pub max_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            validate_contents: false,
            allow_setuid: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// An extension, flattened and validated.
pub struct Extension {
    /// Staging directory name (`0`, `1`, …, `modules.dep`): the squashfs is `<dir>.sqsh`.
    pub dir: String,
    /// What the user gave (for messages).
    pub source: String,
    /// The manifest.
    pub manifest: sysext::Manifest,
    /// The image tree (`manifest.yaml` and `rootfs/…`).
    pub tree: Tree,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `(name, version)` of every layer, in `extensions.yaml` order.
    pub layers: Vec<(String, String)>,
    /// The rebuilt initramfs.
    pub initramfs: PathBuf,
}

fn asset_source(field: &str, a: &ContainerAsset) -> String {
    if !a.tarball_path.is_empty() {
        format!("{field} (tarballPath {})", a.tarball_path)
    } else if !a.oci_path.is_empty() {
        format!("{field} (ociPath {})", a.oci_path)
    } else {
        format!("{field} (imageRef {})", a.image_ref)
    }
}

/// Opens a possibly compressed tar stream: gzip, zstd or xz by magic, plain tar otherwise.
pub fn open_decompressed(path: &Path, cap: u64) -> std::io::Result<Box<dyn Read>> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut magic = [0u8; 6];
    let n = {
        use std::io::BufRead;
        let b = f.fill_buf()?;
        let n = b.len().min(6);
        magic[..n].copy_from_slice(&b[..n]);
        n
    };
    let r: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::bufread::MultiGzDecoder::new(f))
    } else if n >= 4 && magic[..4] == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(f)?)
    } else if n >= 6 && magic == [0xfd, b'7', b'z', b'X', b'Z', 0] {
        Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(f))
    } else {
        Box::new(f)
    };
    Ok(Box::new(Capped {
        inner: r,
        left: cap,
    }))
}

/// Fails a read once more than the cap has been produced (bounds decompression).
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(
                "decompressed stream exceeds the size limit (IMAGER_MAX_EXTENSION_BYTES)",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn invalid(source: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{source}: {msg}"))
}

fn tree_err(source: &str, e: tree::TreeError) -> Error {
    match e {
        tree::TreeError::Io { .. } => Error::new(ExitCode::Io, anyhow::anyhow!("{source}: {e}")),
        _ => invalid(source, e),
    }
}

/// Flattens one input into a tree under `staging`.
fn extract(
    a: &ContainerAsset,
    source: &str,
    arch: &str,
    staging: &Path,
    opts: &Options,
) -> Result<Tree> {
    let cap = opts.max_bytes.saturating_add(256 << 20);
    let mut t = Tree::new(staging, opts.max_bytes).map_err(|e| tree_err(source, e))?;
    if !a.tarball_path.is_empty() {
        let p = Path::new(&a.tarball_path);
        let r = open_decompressed(p, cap).code(ExitCode::Io, || source.to_string())?;
        t.apply_tar(r, 0, false).map_err(|e| tree_err(source, e))?;
    } else if !a.oci_path.is_empty() {
        let root = Path::new(&a.oci_path);
        let layers = oci::layers(root, arch).map_err(|e| invalid(source, e))?;
        for (i, l) in layers.iter().enumerate() {
            let what = format!("{source}: layer {}", l.digest);
            let r = open_decompressed(&l.path, cap).code(ExitCode::Io, || what.clone())?;
            t.apply_tar(r, i, true).map_err(|e| tree_err(&what, e))?;
        }
    } else {
        return Err(Error::unsupported(format!(
            "{source}: pulling extension images from a registry is not implemented yet; \
             give an OCI layout (ociPath, or a directory to --system-extension-image) or a \
             tarball (tarballPath, or a file)"
        )));
    }
    Ok(t)
}

/// Checks the top-level layout and reads the manifest (Talos `Load`).
fn load_manifest(t: &Tree, source: &str) -> Result<sysext::Manifest> {
    let mut manifest = None;
    let mut rootfs = false;
    for (k, n) in t.entries() {
        if k.contains('/') {
            continue;
        }
        match (k.as_str(), &n.kind) {
            ("manifest.yaml", Kind::File { blob, size }) => {
                if *size > 1 << 20 {
                    return Err(invalid(source, "manifest.yaml is larger than 1 MiB"));
                }
                let text = std::fs::read(blob).code(ExitCode::Io, || source.to_string())?;
                let text = String::from_utf8(text)
                    .map_err(|_| invalid(source, "manifest.yaml is not UTF-8"))?;
                manifest = Some(
                    sysext::Manifest::parse(&text)
                        .map_err(|e| invalid(source, format!("manifest.yaml: {e}")))?,
                );
            }
            ("manifest.yaml", _) => {
                return Err(invalid(source, "manifest.yaml is not a regular file"));
            }
            ("rootfs", Kind::Dir) => rootfs = true,
            ("rootfs", _) => return Err(invalid(source, "rootfs is not a directory")),
            (other, _) => {
                return Err(invalid(
                    source,
                    format!(
                        "unexpected file {other:?} at the top level (an extension holds exactly \
                         manifest.yaml and rootfs/)"
                    ),
                ));
            }
        }
    }
    let m = manifest.ok_or_else(|| invalid(source, "extension manifest is missing"))?;
    if !rootfs {
        return Err(invalid(source, "extension rootfs is missing"));
    }
    Ok(m)
}

/// Setuid/setgid bits and (optionally) spec §7 content rules.
fn check_contents(e: &Extension, opts: &Options) -> Result<()> {
    let name = &e.manifest.metadata.name;
    for (rel, n) in e.tree.under("rootfs") {
        let shown = format!("/{rel}");
        if n.mode & 0o6000 != 0
            && !matches!(n.kind, Kind::Symlink(_))
            && !opts.allow_setuid.iter().any(|a| a == name)
        {
            return Err(invalid(
                &e.source,
                format!(
                    "rootfs{shown}: setuid/setgid bits (mode {:04o}) are not allowed \
                     (--extension-allow-setuid {name} allows them)",
                    n.mode
                ),
            ));
        }
        if !opts.validate_contents {
            continue;
        }
        if n.mode & 0o002 != 0 && !matches!(n.kind, Kind::Symlink(_)) {
            return Err(invalid(
                &e.source,
                format!("world-writeable files are not allowed: {shown:?}"),
            ));
        }
        if n.kind != Kind::Dir && !ALLOWED_PATHS.iter().any(|a| shown.starts_with(a)) {
            return Err(invalid(
                &e.source,
                format!("path {shown:?} is not allowed in extensions"),
            ));
        }
    }
    Ok(())
}

/// The virtual `embedded-config` extension (spec §7 step 2).
fn embedded_config(config: &str, staging: &Path, opts: &Options) -> Result<Tree> {
    let mut t = Tree::new(staging, opts.max_bytes)
        .map_err(|e| tree_err("customization.embeddedMachineConfiguration", e))?;
    let digest = hex::encode(Sha256::digest(config.as_bytes()));
    let manifest = sysext::Manifest {
        version: sysext::MANIFEST_VERSION.into(),
        metadata: sysext::Metadata {
            name: "embedded-config".into(),
            version: digest,
            author: "Imager".into(),
            description: "Virtual extension which embeds the machine configuration.".into(),
            compatibility: sysext::Compatibility {
                talos: sysext::Constraint {
                    version: ">= 1.0.0".into(),
                },
            },
            extra_info: String::new(),
        },
    };
    let text = serde_saphyr::to_string(&manifest)
        .map_err(|e| Error::new(ExitCode::Assembly, anyhow::anyhow!("embedded config: {e}")))?;
    let err = |e| tree_err("customization.embeddedMachineConfiguration", e);
    let (blob, size) = t.blob(text.as_bytes(), "manifest.yaml").map_err(err)?;
    t.insert("manifest.yaml", Kind::File { blob, size }, 0o644, None);
    for d in [
        "rootfs",
        "rootfs/usr",
        "rootfs/usr/local",
        "rootfs/usr/local/etc",
        "rootfs/usr/local/etc/talos",
    ] {
        t.insert(d, Kind::Dir, 0o755, None);
    }
    let (blob, size) = t.blob(config.as_bytes(), "config.yaml").map_err(err)?;
    t.insert(
        "rootfs/usr/local/etc/talos/config.yaml",
        Kind::File { blob, size },
        0o400,
        Some(EMBEDDED_CONFIG_LABEL.as_bytes().to_vec()),
    );
    Ok(t)
}

/// Loads, flattens and validates every extension of `p` (plus the embedded config), in
/// Talos's order: staging directories `0, 1, …` listed in string order.
pub fn load(p: &Profile, staging: &Path, opts: &Options) -> Result<Vec<Extension>> {
    let mut exts = Vec::new();
    for (i, a) in p.input.system_extensions.iter().enumerate() {
        let source = asset_source(&format!("input.systemExtensions[{i}]"), a);
        let tree = extract(
            a,
            &source,
            &p.arch,
            &staging.join(format!("blobs-{i}")),
            opts,
        )?;
        let manifest = load_manifest(&tree, &source)?;
        manifest.check_compatibility(&p.version).map_err(|e| {
            invalid(
                &source,
                format!("extension {:?}: {e}", manifest.metadata.name),
            )
        })?;
        let e = Extension {
            dir: i.to_string(),
            source,
            manifest,
            tree,
        };
        check_contents(&e, opts)?;
        exts.push(e);
    }
    let cfg = &p.customization.embedded_machine_configuration;
    if !cfg.is_empty() {
        let i = exts.len();
        let source = "customization.embeddedMachineConfiguration".to_string();
        let tree = embedded_config(cfg, &staging.join(format!("blobs-{i}")), opts)?;
        let manifest = load_manifest(&tree, &source)?;
        exts.push(Extension {
            dir: i.to_string(),
            source,
            manifest,
            tree,
        });
    }
    exts.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(exts)
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

/// The firmware and modules paths of the target version (spec §13 usrmerge).
fn firmware_dir(p: &Profile) -> &'static str {
    if p.quirks().has(Quirk::Usrmerge) {
        "usr/lib/firmware"
    } else {
        "lib/firmware"
    }
}

fn glob_match(pat: &str, name: &str) -> bool {
    // the two globs of spec §7: "*" and "microcode_amd*.bin"
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
    base_initramfs: &Path,
    staging: &Path,
    out: &Path,
    epoch: i64,
    opts: &Options,
) -> Result<Summary> {
    let mut exts = load(p, staging, opts)?;
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
/// extraction (spec §7 step 4).
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
    let mut w = BufWriter::with_capacity(1 << 20, f);
    b.write(&mut w).map_err(|x| err(x.to_string()))?;
    w.flush()
        .code(ExitCode::Io, || format!("writing {}", out.display()))?;
    Ok(())
}
