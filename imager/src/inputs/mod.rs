//! Stage 2 of the pipeline: every input the profile names, resolved into a typed [`Inputs`]
//! value — local files checked, remote images pulled through the registry client (digests and
//! signatures verified), archives flattened. Nothing after this stage reads a path from the
//! profile or reaches the network (except `--push`, which uses the same client).
//!
//! In: a [`Resolved`] profile and [`Options`]. Out: [`Inputs`], whose files live either where
//! the user put them or in the build's staging directory.

pub mod base;
pub mod extensions;
pub mod overlay;
pub mod registry;
pub mod sandbox;
pub mod tree;

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::profile::{AssetRoot, ContainerAsset, OutputKind, Profile, Resolved};
use std::path::{Path, PathBuf};

/// How inputs are fetched and checked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Registry settings (pulls of imageRef assets, the base installer, pushes).
    pub fetch: registry::FetchOptions,
    /// How system extensions are checked.
    pub extensions: extensions::Options,
    /// Whether a registry client is needed even when nothing is pulled (`--push`).
    pub push: bool,
    /// Time limit of one run of an overlay's installer program (`--overlay-timeout`).
    pub overlay_timeout: std::time::Duration,
}

/// GRUB's images: `<assets>/<arch>/grub/{boot.img,core.img,grub-efi.img,eltorito.img,
/// boot_hybrid.img}` (docs/formats/disk-layout.md, docs/formats/iso.md).
#[derive(Debug, Clone)]
pub struct GrubImages {
    dir: PathBuf,
    /// BIOS images exist on amd64 only.
    bios: bool,
}

impl GrubImages {
    fn file(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        check_file("GRUB assets", &path)
    }

    /// The images a GRUB disk layout needs: `grub-efi.img`, and on amd64 `boot.img` and
    /// `core.img`.
    pub fn disk(&self) -> Result<installer::GrubFiles> {
        let bios = |name: &str| self.bios.then(|| self.file(name)).transpose();
        Ok(installer::GrubFiles {
            boot_img: bios("boot.img")?,
            core_img: bios("core.img")?,
            efi_img: self.file("grub-efi.img")?,
        })
    }

    /// An image of the ISO's BIOS side (`eltorito.img`, `boot_hybrid.img`).
    pub fn iso_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Every input of one build, resolved.
#[derive(Debug)]
pub struct Inputs {
    /// The kernel (for the kinds that carry one).
    pub kernel: Option<PathBuf>,
    /// The base initramfs (before extensions), for the kinds that carry one.
    pub initramfs: Option<PathBuf>,
    /// systemd-boot (ISO, installer).
    pub sd_boot: Option<PathBuf>,
    /// systemd-stub (UKIs).
    pub sd_stub: Option<PathBuf>,
    /// GRUB's images.
    pub grub: GrubImages,
    /// The base installer image (installer output, or the asset source when given).
    pub base: Option<base::BaseImage>,
    /// Extensions and the embedded configuration, flattened and validated, in layer order.
    pub extensions: Vec<extensions::Extension>,
    /// The registry client, when anything was pulled or will be pushed.
    pub fetcher: Option<registry::Fetcher>,
    /// The board overlay (docs/formats/overlays.md).
    pub overlay: Option<overlay::Overlay>,
}

/// Checks that `path` is a regular file (naming `field` on error).
pub fn check_file(field: &str, path: &Path) -> Result<PathBuf> {
    let meta =
        std::fs::metadata(path).code(ExitCode::Io, || format!("{field}: {}", path.display()))?;
    if !meta.is_file() {
        return Err(Error::new(
            ExitCode::Io,
            anyhow::anyhow!("{field}: {}: not a regular file", path.display()),
        ));
    }
    Ok(path.to_path_buf())
}

/// Whether a container asset must be pulled from a registry.
fn is_pull(a: &ContainerAsset) -> bool {
    a.tarball_path.is_empty() && a.oci_path.is_empty() && !a.image_ref.is_empty()
}

/// Whether the build rebuilds the initramfs with extensions (docs/formats/extensions.md).
pub fn needs_extensions(p: &Profile) -> bool {
    (!p.input.system_extensions.is_empty()
        || !p.customization.embedded_machine_configuration.is_empty())
        && matches!(
            p.output.kind,
            OutputKind::Image
                | OutputKind::Iso
                | OutputKind::Pxe
                | OutputKind::Initramfs
                | OutputKind::Uki
                | OutputKind::Installer
        )
}

/// Whether the build reads the base installer image.
fn needs_base(r: &Resolved) -> bool {
    let kind = r.profile.output.kind;
    kind == OutputKind::Installer
        || (r.assets == AssetRoot::BaseInstaller && kind != OutputKind::Cmdline)
}

/// Whether [`resolve`] needs a staging directory (pulls, extraction, extensions).
pub fn needs_staging(r: &Resolved) -> bool {
    needs_base(r) || needs_extensions(&r.profile) || r.profile.overlay.is_some()
}

/// Resolves the inputs of `r`. `staging` is the build's private directory (required when
/// [`needs_staging`] says so).
pub fn resolve(r: &Resolved, o: &Options, staging: Option<&Path>) -> Result<Inputs> {
    let p = &r.profile;
    let kind = p.output.kind;
    let need_base = needs_base(r);
    let need_ext = needs_extensions(p);
    let wants_registry = (need_base && is_pull(&p.input.base_installer))
        || (need_ext && p.input.system_extensions.iter().any(is_pull))
        || p.overlay.as_ref().is_some_and(|o| is_pull(&o.image))
        || o.push;
    let fetcher = if wants_registry {
        Some(registry::Fetcher::new(&o.fetch)?)
    } else {
        None
    };
    let staging_dir = || {
        staging.ok_or_else(|| {
            Error::new(
                ExitCode::Unknown,
                anyhow::anyhow!("no staging directory for the build's inputs"),
            )
        })
    };
    let base = if need_base {
        Some(base::base_image(
            fetcher.as_ref(),
            &p.input.base_installer,
            p.arch.as_str(),
        )?)
    } else {
        None
    };
    // where defaulted assets are: the install dir, or the base installer's usr/install
    let asset_dir = match (&r.assets, &base) {
        (AssetRoot::BaseInstaller, Some(b)) => Some(base::extract_install_dir(
            b,
            &staging_dir()?.join("base"),
            o.extensions.max_bytes,
        )?),
        _ => None,
    };
    let path_of = |defaulted: bool, profile_path: &str, file: &str| -> PathBuf {
        match &asset_dir {
            Some(d) if defaulted => d.join(p.arch).join(file),
            _ => PathBuf::from(profile_path),
        }
    };
    let kernel_path = path_of(r.defaulted.kernel, &p.input.kernel.path, "vmlinuz");
    let initramfs_path = path_of(
        r.defaulted.initramfs,
        &p.input.initramfs.path,
        "initramfs.xz",
    );
    let sd_boot_path = path_of(
        r.defaulted.sd_boot,
        &p.input.sd_boot.path,
        "systemd-boot.efi",
    );
    let sd_stub_path = path_of(
        r.defaulted.sd_stub,
        &p.input.sd_stub.path,
        "systemd-stub.efi",
    );
    let grub = GrubImages {
        dir: match (&asset_dir, &r.assets) {
            (Some(d), _) => d.join(p.arch).join("grub"),
            (None, AssetRoot::InstallDir(d)) => d.join(p.arch).join("grub"),
            (None, AssetRoot::BaseInstaller) => PathBuf::from(crate::profile::BASE_INSTALL_DIR)
                .join(p.arch)
                .join("grub"),
        },
        bios: p.arch == crate::profile::Arch::Amd64,
    };

    let mut exts = Vec::new();
    if need_ext {
        let mut sources = Vec::new();
        for (i, a) in p.input.system_extensions.iter().enumerate() {
            let field = format!("input.systemExtensions[{i}]");
            let src = if !a.tarball_path.is_empty() {
                extensions::Source {
                    label: format!("{field} (tarballPath {})", a.tarball_path),
                    archive: extensions::Archive::Tarball(PathBuf::from(&a.tarball_path)),
                }
            } else if !a.oci_path.is_empty() {
                extensions::Source {
                    label: format!("{field} (ociPath {})", a.oci_path),
                    archive: extensions::Archive::Layout(PathBuf::from(&a.oci_path)),
                }
            } else {
                let f = registry::required(fetcher.as_ref())?;
                let dir = staging_dir()?.join(format!("pulled-{i}"));
                f.pull_layout(&field, a, p.arch.as_str(), &dir)?;
                extensions::Source {
                    label: format!("{field} (imageRef {})", a.image_ref),
                    archive: extensions::Archive::Layout(dir),
                }
            };
            sources.push(src);
        }
        // the base initramfs must exist before anything is extracted
        check_file("input.initramfs.path", &initramfs_path)?;
        exts = extensions::load(
            &sources,
            &p.customization.embedded_machine_configuration,
            p.arch.as_str(),
            &p.version,
            &staging_dir()?.join("ext"),
            &o.extensions,
        )?;
    }

    // the files each kind reads, checked before anything is written
    let kernel = matches!(
        kind,
        OutputKind::Image
            | OutputKind::Kernel
            | OutputKind::Pxe
            | OutputKind::Iso
            | OutputKind::Installer
            | OutputKind::Uki
    )
    .then(|| check_file("input.kernel.path", &kernel_path))
    .transpose()?;
    // in the order the error messages have always named them: a disk image checks the
    // initramfs before systemd-boot, the ISO and the installer systemd-boot first
    let check_initramfs = || {
        matches!(
            kind,
            OutputKind::Image
                | OutputKind::Initramfs
                | OutputKind::Pxe
                | OutputKind::Iso
                | OutputKind::Installer
                | OutputKind::Uki
        )
        .then(|| check_file("input.initramfs.path", &initramfs_path))
        .transpose()
    };
    let check_sd_boot = || {
        matches!(
            kind,
            OutputKind::Image | OutputKind::Iso | OutputKind::Installer
        )
        .then(|| check_file("input.sdBoot.path", &sd_boot_path))
        .transpose()
    };
    let (initramfs, sd_boot) = if kind == OutputKind::Image {
        let i = check_initramfs()?;
        (i, check_sd_boot()?)
    } else {
        let s = check_sd_boot()?;
        (check_initramfs()?, s)
    };
    // a UKI is built for the uki kind, and for the media that boot systemd-boot when the
    // profile boots UKIs (a GRUB-only disk image does not)
    let grub_only = kind == OutputKind::Image
        && p.output
            .image_options
            .as_ref()
            .map(|o| o.bootloader.as_str())
            == Some("grub");
    let boots_uki = matches!(
        kind,
        OutputKind::Iso | OutputKind::Image | OutputKind::Installer
    ) && p.uses_uki()
        && !grub_only;
    let sd_stub = (kind == OutputKind::Uki || boots_uki)
        .then(|| check_file("input.sdStub.path", &sd_stub_path))
        .transpose()?;
    let overlay = match &p.overlay {
        Some(_) => Some(overlay::load(
            p,
            fetcher.as_ref(),
            staging_dir()?,
            &o.extensions,
            o.overlay_timeout,
        )?),
        None => None,
    };
    Ok(Inputs {
        kernel,
        initramfs,
        sd_boot,
        sd_stub,
        grub,
        base,
        extensions: exts,
        fetcher,
        overlay,
    })
}
