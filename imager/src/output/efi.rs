//! The UEFI boot set shared by ISOs, disk images and installer images
//! (docs/formats/uki-secureboot.md "Where UKIs are used"): systemd-boot, the UKI it boots from
//! `EFI/Linux/` (Talos ≥ 1.10, or SecureBoot), and under SecureBoot both signed, the key
//! databases systemd-boot enrolls from `loader/keys/auto/` and the `secure-boot-enroll` mode
//! for `loader.conf`.
//!
//! In: the profile, the final cmdline, the kernel, initramfs, systemd-boot and systemd-stub.
//! Out: a [`BootSet`] whose files sit in a private temporary directory until the caller has
//! written them into its artifact.

use std::path::{Path, PathBuf};

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::profile::{OutputKind, Profile, SdBootEnrollKeys};

/// The UEFI side of a boot medium.
#[derive(Debug)]
pub struct BootSet {
    /// systemd-boot (signed under SecureBoot).
    pub sd_boot: PathBuf,
    /// The UKI, when the profile boots one.
    pub uki: Option<PathBuf>,
    /// `loader/keys/auto/<name>` files (SecureBoot with enrollment).
    pub keys: Vec<(String, Vec<u8>)>,
    /// The signing certificate, DER (SecureBoot).
    pub cert_der: Option<Vec<u8>>,
    /// The `secure-boot-enroll` value for `loader.conf`, when there is one.
    pub enroll: Option<&'static str>,
    _dir: tempfile::TempDir,
}

/// The enrollment mode the profile asks for on this output kind.
fn enroll_mode(p: &Profile) -> SdBootEnrollKeys {
    match p.output.kind {
        OutputKind::Iso => p
            .output
            .iso_options
            .as_ref()
            .map(|o| o.sd_boot_enroll_keys)
            .unwrap_or_default(),
        _ => p
            .output
            .image_options
            .as_ref()
            .map(|o| o.sd_boot_enroll_keys)
            .unwrap_or_default(),
    }
}

/// The enrollment databases: the pre-built ones the profile names (all three, or none), or
/// generated from the signing certificate.
fn enrollment(
    p: &Profile,
    keys: &super::uki::SecureBootKeys,
    epoch: i64,
) -> Result<Vec<(String, Vec<u8>)>> {
    let sb = p.input.secureboot.clone().unwrap_or_default();
    let given = [
        (
            "input.secureboot.platformKeyPath",
            "PK.auth",
            &sb.platform_key_path,
        ),
        (
            "input.secureboot.keyExchangeKeyPath",
            "KEK.auth",
            &sb.key_exchange_key_path,
        ),
        (
            "input.secureboot.signatureKeyPath",
            "db.auth",
            &sb.signature_key_path,
        ),
    ];
    let set = given.iter().filter(|g| !g.2.is_empty()).count();
    if set == 3 {
        let mut v = Vec::new();
        for (field, name, path) in given.iter().rev() {
            v.push((
                name.to_string(),
                crate::io::read_bytes(
                    Path::new(path),
                    crate::io::limits::SIDE_FILE,
                    field,
                    ExitCode::Io,
                )?,
            ));
        }
        return Ok(v);
    }
    if set != 0 {
        return Err(Error::invalid(
            "input.secureboot: platformKeyPath, keyExchangeKeyPath and signatureKeyPath are \
             given together or not at all",
        ));
    }
    let files = secureboot::variables::enrollment(&keys.signer, sb.include_well_known_certs, epoch)
        .map_err(|e| {
            Error::new(
                ExitCode::Dependency,
                anyhow::anyhow!("signing the SecureBoot key databases: {e}"),
            )
        })?;
    Ok(files.into_iter().map(|(n, d)| (n.to_string(), d)).collect())
}

/// The files of an EFI boot set.
#[derive(Debug, Clone, Copy)]
pub struct EfiInputs<'a> {
    /// Kernel.
    pub kernel: &'a Path,
    /// Initramfs (extensions included).
    pub initramfs: &'a Path,
    /// systemd-boot.
    pub sd_boot: &'a Path,
    /// systemd-stub (needed when the profile boots a UKI).
    pub sd_stub: Option<&'a Path>,
}

/// Prepares the boot set of `p` in a temporary directory under `tmp` (for media that boot
/// systemd-boot: a GRUB-only disk layout does not call it). `loader.conf` itself is written
/// by `installer::loader_conf` from [`BootSet::enroll`].
pub fn prepare(
    p: &Profile,
    cmdline: &str,
    files: &EfiInputs<'_>,
    tmp: &Path,
    epoch: i64,
) -> Result<BootSet> {
    let dir = tempfile::Builder::new()
        .prefix(".efi.")
        .tempdir_in(tmp)
        .code(ExitCode::Io, || "creating the EFI boot set".to_string())?;
    let keys = p
        .is_secureboot()
        .then(|| super::uki::secureboot_keys(p))
        .transpose()?;
    let uki = if p.uses_uki() {
        let stub = files.sd_stub.ok_or_else(|| {
            Error::new(
                ExitCode::Unknown,
                anyhow::anyhow!("input.sdStub was not resolved for the UKI"),
            )
        })?;
        let path = dir.path().join("vmlinuz.efi");
        let mut f = std::io::BufWriter::with_capacity(
            1 << 16,
            std::fs::File::create(&path).code(ExitCode::Io, || "creating the UKI".to_string())?,
        );
        let inputs = super::uki::UkiInputs {
            kernel: files.kernel,
            initramfs: files.initramfs,
            stub,
        };
        for note in super::uki::write(p, cmdline, &inputs, epoch, keys.as_ref(), &mut f)? {
            eprintln!("imager: {note}");
        }
        std::io::Write::flush(&mut f).code(ExitCode::Io, || "writing the UKI".to_string())?;
        Some(path)
    } else {
        None
    };
    let mut set = BootSet {
        sd_boot: files.sd_boot.to_path_buf(),
        uki,
        keys: Vec::new(),
        cert_der: None,
        enroll: None,
        _dir: dir,
    };
    let mode = enroll_mode(p);
    if let Some(k) = &keys {
        let image = crate::io::read_bytes(
            files.sd_boot,
            super::uki::MAX_STUB,
            "input.sdBoot.path",
            ExitCode::Io,
        )?;
        let signed = secureboot::sign_pe(image, &k.signer).map_err(|e| {
            Error::invalid(format!(
                "input.sdBoot.path: {}: signing systemd-boot: {e}",
                files.sd_boot.display()
            ))
        })?;
        let path = set._dir.path().join("systemd-boot.efi");
        std::fs::write(&path, signed).code(ExitCode::Io, || "writing systemd-boot".to_string())?;
        set.sd_boot = path;
        set.cert_der = Some(secureboot::Signer::certificate_der(&k.signer).to_vec());
        // the installer image carries no key databases: they belong to boot media
        if mode != SdBootEnrollKeys::Off && p.output.kind != OutputKind::Installer {
            set.keys = enrollment(p, k, epoch)?;
            set.enroll = Some(mode.as_str());
        }
    }
    // non-SecureBoot ISOs say `off` explicitly, as Talos's do
    if set.enroll.is_none() && p.output.kind == OutputKind::Iso {
        set.enroll = Some("off");
    }
    Ok(set)
}
