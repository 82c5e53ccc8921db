//! Writing the artifacts of a resolved profile (spec §2).
//!
//! In: a validated [`Profile`] and [`BuildOptions`]. Out: files in the output directory, each
//! written under a temporary name (`.<name>.*.partial`) and renamed into place only when
//! complete, so a failed build leaves nothing behind. Post-processing (`outFormat`) streams
//! the primary artifact through the compressor into a second temp file.

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::profile::{OutFormat, OutputKind, Profile};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Build-wide options.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory (created if missing).
    pub output_dir: PathBuf,
    /// SOURCE_DATE_EPOCH.
    pub epoch: i64,
    /// Compute sha256 of each artifact.
    pub digests: bool,
    /// Base assets directory (`/usr/install`): GRUB images are read from `<dir>/<arch>/grub/`.
    pub install_dir: PathBuf,
    /// How system extensions are checked.
    pub extensions: crate::ext::Options,
    /// Registry settings (pulls of imageRef assets, the base installer, pushes).
    pub fetch: crate::fetch::FetchOptions,
    /// The default asset paths point into `input.baseInstaller` (it was set explicitly):
    /// paths starting with [`BASE_INSTALLER_DIR`] are resolved inside the pulled image.
    pub base_assets: bool,
    /// `--push REF` (installer output): target reference and plain HTTP.
    pub push: Option<(oci::Reference, bool)>,
    /// `--sign-key`: signs pushed images (cosign) and written files (Sigstore bundles).
    pub sign: Option<SignKey>,
}

/// Placeholder for `/usr/install` inside the base installer image, used in default asset
/// paths when the assets come from `input.baseInstaller`.
pub const BASE_INSTALLER_DIR: &str = "{baseInstaller}/usr/install";

/// A signing key (Debug prints only its public key id).
#[derive(Clone)]
pub struct SignKey(pub std::sync::Arc<cosign::SigningKey>);

impl std::fmt::Debug for SignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignKey({})", hex::encode(self.0.public_key().key_id()))
    }
}

/// A finished artifact.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Artifact {
    /// Output kind.
    pub kind: &'static str,
    /// Path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// sha256 (when requested).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn check_input(field: &str, path: &str) -> Result<PathBuf> {
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p).code(ExitCode::Io, || format!("{field}: {path}"))?;
    if !meta.is_file() {
        return Err(Error::new(
            ExitCode::Io,
            anyhow::anyhow!("{field}: {path}: not a regular file"),
        ));
    }
    Ok(p)
}

/// META key written into dual-boot disk images (`DiskImageBootloader`, spec §4.3).
pub const META_DISK_IMAGE_BOOTLOADER: u8 = 0x11;

/// META values of the profile (later duplicates overwrite earlier ones), plus the image-mode
/// auto value of spec §4.3: `0x11 = dual-boot` on amd64 dual-boot images of Talos ≥ 1.10.
pub fn meta_values(p: &Profile) -> Result<adv::Adv> {
    let mut a = adv::Adv::new();
    for (i, m) in p.customization.meta_contents.iter().enumerate() {
        a.set(m.key, m.value.as_bytes())
            .map_err(|e| Error::invalid(format!("field customization.metaContents[{i}]: {e}")))?;
    }
    let dual = p
        .output
        .image_options
        .as_ref()
        .is_some_and(|o| o.bootloader == "dual-boot");
    if p.output.kind == OutputKind::Image
        && dual
        && p.arch == "amd64"
        && !p.is_secureboot()
        && p.quirks().has(crate::quirks::Quirk::SdBootForUefi)
    {
        a.set(META_DISK_IMAGE_BOOTLOADER, b"dual-boot")
            .map_err(|e| Error::invalid(format!("field customization.metaContents: {e}")))?;
    }
    Ok(a)
}

fn temp_in(dir: &Path, name: &str) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .code(ExitCode::Io, || {
            format!("creating a temporary file in {}", dir.display())
        })?;
    // artifacts are 0644 whatever the umask (fchmod is not subject to it)
    t.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .code(ExitCode::Io, || format!("chmod {}", t.path().display()))?;
    Ok(t)
}

/// Syncs a finished temp file and renames it to its final name.
fn commit(t: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    t.as_file()
        .sync_all()
        .code(ExitCode::Io, || format!("syncing {}", path.display()))?;
    t.persist(path)
        .code(ExitCode::Io, || format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Post-processes `src` into `dst` (spec §2): Talos's levels (xz -0, gzip -6, zstd -18,
/// `.tar.gz` of a sparse `disk.raw`), on every core, with output independent of the core count.
pub fn compress(fmt: OutFormat, src: &Path, dst: &mut File, epoch: i64) -> Result<()> {
    let f = match fmt {
        OutFormat::Raw => return Ok(()),
        OutFormat::Xz => postfmt::Format::Xz,
        OutFormat::Gz => postfmt::Format::Gz,
        OutFormat::Zst => postfmt::Format::Zst,
        OutFormat::TarGz => postfmt::Format::TarGz,
    };
    let opts = postfmt::Options {
        epoch: u64::try_from(epoch).unwrap_or(0),
        ..Default::default()
    };
    let mut w = BufWriter::with_capacity(1 << 20, dst);
    postfmt::compress(f, src, &mut w, &opts)
        .code(ExitCode::Io, || format!("{} compression", fmt.suffix()))?;
    w.flush()
        .code(ExitCode::Io, || format!("{} compression", fmt.suffix()))?;
    Ok(())
}

/// sha256 of a file, streamed.
pub fn sha256_of(path: &Path) -> Result<[u8; 32]> {
    let mut f = File::open(path).code(ExitCode::Io, || format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .code(ExitCode::Io, || format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn sha256_file(path: &Path) -> Result<String> {
    Ok(hex::encode(sha256_of(path)?))
}

/// Writes one artifact: `fill` writes the content into a temp file in the output directory,
/// which is post-processed with `fmt` and renamed to `<name><suffix>` when complete.
pub(crate) fn write_artifact(
    o: &BuildOptions,
    kind: &'static str,
    name: &str,
    fmt: OutFormat,
    fill: impl FnOnce(&mut File) -> Result<()>,
) -> Result<Artifact> {
    let mut tmp = temp_in(&o.output_dir, name)?;
    fill(tmp.as_file_mut())?;
    let final_name = format!("{name}{}", fmt.suffix());
    let path = o.output_dir.join(&final_name);
    if fmt == OutFormat::Raw {
        commit(tmp, &path)?;
    } else {
        let mut z = temp_in(&o.output_dir, &final_name)?;
        compress(fmt, tmp.path(), z.as_file_mut(), o.epoch)
            .map_err(|e| e.context(format!("post-processing {name}")))?;
        commit(z, &path)?;
    }
    let size = std::fs::metadata(&path)
        .code(ExitCode::Io, || format!("stat {}", path.display()))?
        .len();
    let sha256 = if o.digests {
        Some(sha256_file(&path)?)
    } else {
        None
    };
    Ok(Artifact {
        kind,
        path,
        size,
        sha256,
    })
}

fn copy_from(src: &Path) -> impl FnOnce(&mut File) -> Result<()> + '_ {
    move |f| {
        let mut r = File::open(src).code(ExitCode::Io, || format!("reading {}", src.display()))?;
        std::io::copy(&mut r, f).code(ExitCode::Io, || format!("copying {}", src.display()))?;
        Ok(())
    }
}

fn bytes(b: &[u8]) -> impl FnOnce(&mut File) -> Result<()> + '_ {
    move |f| f.write_all(b).code(ExitCode::Io, || "writing".into())
}

/// The kernel cmdline of `p`, with META as `INSTALLER_META_BASE64` for outputs that have no
/// META partition (spec §5, §10 step 7).
pub fn cmdline(p: &Profile) -> String {
    let env = (p.output.kind != OutputKind::Image && !p.customization.meta_contents.is_empty())
        .then(|| {
            let pairs: Vec<(u8, String)> = p
                .customization
                .meta_contents
                .iter()
                .map(|m| (m.key, m.value.clone()))
                .collect();
            adv::env::encode(&pairs, p.quirks().has(crate::quirks::Quirk::CompressedMeta))
        });
    crate::cmdline::build(p, env.as_deref()).to_string()
}

/// The iPXE script of a PXE set: kernel and initramfs next to the script (iPXE resolves the
/// names against the script's own URL), as Image Factory's `standard.ipxe` does with URLs.
pub fn ipxe_script(kernel: &str, initramfs: &str, cmdline: &str) -> String {
    format!("#!ipxe\n\nimgfree\nkernel {kernel} {cmdline}\ninitrd {initramfs}\nboot\n")
}

/// What an otherwise valid profile builds only in part, to tell the user.
pub fn limitations(p: &Profile) -> Vec<String> {
    let mut v = Vec::new();
    if p.output.kind == OutputKind::Pxe && p.output.out_format != OutFormat::Raw {
        v.push(format!(
            "pxe: files stay uncompressed for network boot (outFormat {} not applied)",
            p.output.out_format.suffix()
        ));
    }
    v
}

fn image_spec(
    p: &Profile,
    meta: adv::Adv,
    cmdline: String,
    o: &BuildOptions,
) -> Result<installer::ImageSpec> {
    let io = p.output.image_options.clone().unwrap_or_default();
    Ok(installer::ImageSpec {
        arch: p.arch.clone(),
        disk_size: io.disk_size,
        sector_size: if io.disk_sector_size == 0 {
            512
        } else {
            u64::from(io.disk_sector_size)
        },
        bootloader: installer::Bootloader::parse(&io.bootloader).ok_or_else(|| {
            Error::invalid(format!(
                "field output.imageOptions.bootloader: {:?}",
                io.bootloader
            ))
        })?,
        boot_size_mib: p.quirks().boot_size_mib(),
        os_name: if p.name.is_empty() {
            "Talos".into()
        } else {
            p.name.clone()
        },
        version: p.version.clone(),
        cmdline,
        files: installer::BootFiles {
            kernel: check_input("input.kernel.path", &p.input.kernel.path)?,
            initramfs: check_input("input.initramfs.path", &p.input.initramfs.path)?,
            sd_boot: check_input("input.sdBoot.path", &p.input.sd_boot.path)?,
            grub: match io.bootloader.as_str() {
                "grub" | "dual-boot" => {
                    let dir = o.install_dir.join(&p.arch).join("grub");
                    let f = |n: &str| {
                        let path = dir.join(n);
                        check_input("GRUB assets", &path.to_string_lossy())
                    };
                    Some(installer::GrubFiles {
                        boot_img: f("boot.img")?,
                        core_img: f("core.img")?,
                        efi_img: f("grub-efi.img")?,
                    })
                }
                _ => None,
            },
        },
        meta,
        epoch: o.epoch,
        grub_reset_entry: p.quirks().has(crate::quirks::Quirk::ResetOption),
    })
}

/// Whether `p` needs the initramfs rebuilt with extensions (spec §7).
fn needs_extensions(p: &Profile) -> bool {
    (!p.input.system_extensions.is_empty()
        || !p.customization.embedded_machine_configuration.is_empty())
        && matches!(
            p.output.kind,
            OutputKind::Image | OutputKind::Iso | OutputKind::Pxe | OutputKind::Initramfs
        )
}

/// Whether a container asset must be pulled from a registry.
fn is_pull(a: &crate::profile::ContainerAsset) -> bool {
    a.tarball_path.is_empty() && a.oci_path.is_empty() && !a.image_ref.is_empty()
}

/// Builds every artifact of `p`.
pub fn build(p: &Profile, o: &BuildOptions) -> Result<Vec<Artifact>> {
    let kind = p.output.kind;
    let need_base = kind == OutputKind::Installer || (o.base_assets && kind != OutputKind::Cmdline);
    if !needs_extensions(p) && !need_base {
        return build_with(p, o, None, None);
    }
    std::fs::create_dir_all(&o.output_dir).code(ExitCode::Io, || {
        format!("creating output directory {}", o.output_dir.display())
    })?;
    // staging lives next to the outputs and disappears with this value, on success or error
    let staging = tempfile::Builder::new()
        .prefix(".staging.")
        .tempdir_in(&o.output_dir)
        .code(ExitCode::Io, || {
            format!("creating a staging directory in {}", o.output_dir.display())
        })?;
    let wants_registry = (need_base && is_pull(&p.input.base_installer))
        || (needs_extensions(p) && p.input.system_extensions.iter().any(is_pull))
        || o.push.is_some();
    let fetcher = if wants_registry {
        Some(crate::fetch::Fetcher::new(&o.fetch)?)
    } else {
        None
    };
    let mut q = p.clone();
    let mut o2 = o.clone();
    let base = if need_base {
        Some(crate::fetch::base_image(
            fetcher.as_ref(),
            &p.input.base_installer,
            &p.arch,
        )?)
    } else {
        None
    };
    if o.base_assets
        && let Some(b) = &base
    {
        let dir = crate::fetch::extract_install_dir(
            b,
            &staging.path().join("base"),
            o.extensions.max_bytes,
        )?;
        let d = dir.to_string_lossy().into_owned();
        for a in [
            &mut q.input.kernel,
            &mut q.input.initramfs,
            &mut q.input.sd_stub,
            &mut q.input.sd_boot,
        ] {
            if let Some(rest) = a.path.strip_prefix(BASE_INSTALLER_DIR) {
                a.path = format!("{d}{rest}");
            }
        }
        o2.install_dir = dir;
    }
    if needs_extensions(p) {
        for (i, a) in q.input.system_extensions.iter_mut().enumerate() {
            if !is_pull(a) {
                continue;
            }
            let f = crate::fetch::required(fetcher.as_ref())?;
            let dir = staging.path().join(format!("pulled-{i}"));
            f.pull_layout(&format!("input.systemExtensions[{i}]"), a, &p.arch, &dir)?;
            a.oci_path = dir.to_string_lossy().into_owned();
        }
        let initramfs = check_input("input.initramfs.path", &q.input.initramfs.path)?;
        let ext_dir = staging.path().join("ext");
        std::fs::create_dir_all(&ext_dir)
            .code(ExitCode::Io, || format!("creating {}", ext_dir.display()))?;
        let out = ext_dir.join("initramfs");
        let summary = crate::ext::build(&q, &initramfs, &ext_dir, &out, o.epoch, &o.extensions)?;
        for (name, version) in &summary.layers {
            eprintln!("imager: extension {name} {version}");
        }
        q.input.initramfs.path = summary.initramfs.to_string_lossy().into_owned();
    }
    build_with(&q, &o2, base.as_ref(), fetcher.as_ref())
}

fn build_with(
    p: &Profile,
    o: &BuildOptions,
    base: Option<&crate::fetch::BaseImage>,
    fetcher: Option<&crate::fetch::Fetcher>,
) -> Result<Vec<Artifact>> {
    let meta = meta_values(p)?;
    let cmdline = cmdline(p);
    let kind = p.output.kind.as_str();
    let name = p.output_name();
    let fmt = p.output.out_format;
    // inputs are checked before anything is created
    let spec = match p.output.kind {
        OutputKind::Image => Some(image_spec(p, meta, cmdline.clone(), o)?),
        _ => None,
    };
    let kernel = matches!(
        p.output.kind,
        OutputKind::Kernel | OutputKind::Pxe | OutputKind::Iso | OutputKind::Installer
    )
    .then(|| check_input("input.kernel.path", &p.input.kernel.path))
    .transpose()?;
    let sd_boot = matches!(p.output.kind, OutputKind::Iso | OutputKind::Installer)
        .then(|| check_input("input.sdBoot.path", &p.input.sd_boot.path))
        .transpose()?;
    let initramfs = matches!(
        p.output.kind,
        OutputKind::Initramfs | OutputKind::Pxe | OutputKind::Iso | OutputKind::Installer
    )
    .then(|| check_input("input.initramfs.path", &p.input.initramfs.path))
    .transpose()?;
    std::fs::create_dir_all(&o.output_dir).code(ExitCode::Io, || {
        format!("creating output directory {}", o.output_dir.display())
    })?;
    match (p.output.kind, spec, kernel, initramfs) {
        (OutputKind::Image, Some(spec), _, _) => {
            let io = p.output.image_options.clone().unwrap_or_default();
            let write_raw = |f: &mut File| {
                installer::write_image(f, &spec).map_err(|e| {
                    let code = match e {
                        installer::InstallError::Unsupported(_) => ExitCode::Unsupported,
                        installer::InstallError::Io { .. } => ExitCode::Io,
                        _ => ExitCode::Assembly,
                    };
                    Error::new(code, e).context(format!("writing disk image {name}"))
                })?;
                Ok(())
            };
            if io.disk_format == "raw" {
                return Ok(vec![write_artifact(o, kind, &name, fmt, write_raw)?]);
            }
            // other formats are converted from a sparse raw image written first
            let mut raw = temp_in(&o.output_dir, &format!("{}.raw", p.base_name()))?;
            write_raw(raw.as_file_mut())?;
            let a = write_artifact(o, kind, &name, fmt, |f| {
                convert_disk(raw.as_file(), f, &io, &p.base_name(), &p.arch, o.epoch)
            })?;
            Ok(vec![a])
        }
        (OutputKind::Kernel, _, Some(k), _) => {
            Ok(vec![write_artifact(o, kind, &name, fmt, copy_from(&k))?])
        }
        (OutputKind::Initramfs, _, _, Some(i)) => {
            Ok(vec![write_artifact(o, kind, &name, fmt, copy_from(&i))?])
        }
        (OutputKind::Cmdline, ..) => Ok(vec![write_artifact(
            o,
            kind,
            &name,
            fmt,
            bytes(cmdline.as_bytes()),
        )?]),
        (OutputKind::Iso, _, Some(k), Some(i)) => {
            let sd = sd_boot.ok_or_else(|| Error::invalid("field input.sdBoot.path: required"))?;
            let inputs = crate::iso::IsoInputs {
                kernel: &k,
                initramfs: &i,
                sd_boot: &sd,
                grub_dir: o.install_dir.join(&p.arch).join("grub"),
            };
            let a = write_artifact(o, kind, &name, fmt, |f| {
                crate::iso::write_iso(p, &cmdline, &inputs, o.epoch, f)
            })?;
            Ok(vec![a])
        }
        (OutputKind::Pxe, _, Some(k), Some(i)) => {
            // Image Factory's names for the boot pieces; raw, for iPXE to fetch
            let kname = format!("kernel-{}", p.arch);
            let iname = format!("initramfs-{}.xz", p.arch);
            let cname = format!("cmdline-{}", p.base_name());
            let script = ipxe_script(&kname, &iname, &cmdline);
            let raw = OutFormat::Raw;
            Ok(vec![
                write_artifact(o, "kernel", &kname, raw, copy_from(&k))?,
                write_artifact(o, "initramfs", &iname, raw, copy_from(&i))?,
                write_artifact(o, "cmdline", &cname, raw, bytes(cmdline.as_bytes()))?,
                write_artifact(o, "ipxe", &name, raw, bytes(script.as_bytes()))?,
            ])
        }
        (OutputKind::Installer, _, Some(k), Some(i)) => {
            let sd = sd_boot.ok_or_else(|| Error::invalid("field input.sdBoot.path: required"))?;
            let base = base.ok_or_else(|| {
                Error::new(
                    ExitCode::Unknown,
                    anyhow::anyhow!("the base installer was not loaded"),
                )
            })?;
            let img = crate::installer_image::assemble(p, o, base, &k, &i, &sd)?;
            let mut arts = crate::installer_image::write(p, o, base, &img)?;
            if let Some((target, insecure)) = &o.push {
                let f = crate::fetch::required(fetcher)?;
                let d = f.push(target, *insecure, &img.files)?;
                if let Some(k) = &o.sign {
                    f.push_signature(target, *insecure, &d, &k.0)?;
                }
                arts.push(Artifact {
                    kind: "pushed",
                    path: PathBuf::from(format!("{}@{d}", target.name())),
                    size: img.files.descriptor.size,
                    sha256: Some(d.hex().to_string()),
                });
            }
            Ok(arts)
        }
        (other, ..) => Err(Error::unsupported(format!(
            "output kind {} is not implemented yet",
            other.as_str()
        ))),
    }
}

/// Converts a sparse raw disk image into `io.disk_format` (spec §2 "Disk format conversion"),
/// honouring `diskFormatOptions` as `qemu-img -o` would.
fn convert_disk(
    raw: &File,
    out: &mut File,
    io: &crate::profile::ImageOptions,
    label: &str,
    arch: &str,
    epoch: i64,
) -> Result<()> {
    let opts = diskfmt::Options {
        timestamp: epoch,
        label: label.to_string(),
    };
    let field = "output.imageOptions.diskFormatOptions";
    let bad = |e: diskfmt::DiskFmtError| Error::invalid(format!("field {field}: {e}"));
    let failed = |e: diskfmt::DiskFmtError| {
        Error::new(ExitCode::Assembly, e).context(format!("converting to {}", io.disk_format))
    };
    match io.disk_format.as_str() {
        "qcow2" => {
            let cluster = diskfmt::parse_qcow2_options(&io.disk_format_options).map_err(bad)?;
            diskfmt::write_qcow2(raw, out, cluster, &opts).map_err(failed)?;
        }
        "vhd" => {
            diskfmt::parse_vhd_options(&io.disk_format_options).map_err(bad)?;
            diskfmt::write_vhd_fixed(raw, out, &opts).map_err(failed)?;
        }
        "ova" => {
            // Talos runs vmdk-convert without options: diskFormatOptions do not apply
            let ovf = diskfmt::OvfOptions {
                arch: arch.to_string(),
                ..Default::default()
            };
            diskfmt::write_ova(raw, out, &ovf, &opts).map_err(failed)?;
        }
        other => {
            return Err(Error::invalid(format!(
                "field output.imageOptions.diskFormat: {other:?} is not one of raw, qcow2, vhd, ova"
            )));
        }
    }
    Ok(())
}

/// Writes `dir`'s regular files (sorted, not recursive) as a .tar.gz to `out`: owner 0,
/// mode 0644, mtime `epoch` (`--tar-to-stdout`).
pub fn tar_gz_dir(dir: &Path, epoch: i64, out: impl Write) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .code(ExitCode::Io, || format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let gz =
        postfmt::ParallelGzEncoder::new(out, 6, 0).code(ExitCode::Io, || "starting gzip".into())?;
    let mut t = tar::Builder::new(gz);
    t.mode(tar::HeaderMode::Deterministic);
    for n in &names {
        let path = dir.join(n);
        let mut f =
            File::open(&path).code(ExitCode::Io, || format!("reading {}", path.display()))?;
        let len = f
            .metadata()
            .code(ExitCode::Io, || format!("stat {}", path.display()))?
            .len();
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(u64::try_from(epoch).unwrap_or(0));
        h.set_entry_type(tar::EntryType::Regular);
        t.append_data(&mut h, n, &mut f)
            .code(ExitCode::Io, || format!("writing {n} to stdout"))?;
    }
    let gz = t
        .into_inner()
        .code(ExitCode::Io, || "finishing tar".into())?;
    let mut w = gz.finish().code(ExitCode::Io, || "finishing gzip".into())?;
    w.flush().code(ExitCode::Io, || "finishing gzip".into())?;
    Ok(())
}
