//! Unified kernel images (docs/formats/uki-secureboot.md): systemd-stub with the kernel, the
//! initramfs, the command line, os-release, the kernel release and a splash image appended as
//! PE sections, laid out as Talos does (`pe::assemble`).
//!
//! In: the profile, the final cmdline, the kernel, the initramfs and the stub. Out: the UKI,
//! streamed into a writer (kernel and initramfs are never held in memory), or — signed, since
//! the Authenticode digest covers the whole image — assembled in memory and then written.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::profile::{OutputKind, Profile, quirks::Quirk};

/// A stub larger than this is refused unread (systemd-stub is ≈ 100 KiB).
pub(crate) const MAX_STUB: u64 = 16 << 20;

/// The signers of a SecureBoot UKI.
pub struct SecureBootKeys {
    /// Authenticode (`input.secureboot.secureBootSigner`).
    pub signer: secureboot::PemSigner,
    /// PCR policies (`input.secureboot.pcrSigner`).
    pub pcr: secureboot::measure::PcrKey,
}

impl std::fmt::Debug for SecureBootKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureBootKeys").finish_non_exhaustive()
    }
}

/// Loads the key-file signers of a SecureBoot profile (KMS and gRPC signers are refused with
/// exit code 3 by validation, `Profile::check_supported`).
pub fn secureboot_keys(p: &Profile) -> Result<SecureBootKeys> {
    let sb = p.input.secureboot.clone().unwrap_or_default();
    let (s, k) = (&sb.secure_boot_signer, &sb.pcr_signer);
    let read = |field: &str, path: &str| -> Result<Vec<u8>> {
        if path.is_empty() {
            return Err(Error::invalid(format!(
                "{field} is required with secureboot"
            )));
        }
        crate::io::read_bytes(
            Path::new(path),
            crate::io::limits::SIDE_FILE,
            field,
            ExitCode::Io,
        )
    };
    let key = read("input.secureboot.secureBootSigner.keyPath", &s.key_path)?;
    let cert = read("input.secureboot.secureBootSigner.certPath", &s.cert_path)?;
    let signer = secureboot::PemSigner::new(
        &key,
        "input.secureboot.secureBootSigner.keyPath",
        &cert,
        "input.secureboot.secureBootSigner.certPath",
    )
    .map_err(|e| Error::invalid(e.to_string()))?;
    let pcr_pem = read("input.secureboot.pcrSigner.keyPath", &k.key_path)?;
    let pcr = secureboot::measure::PcrKey::from_pem(&pcr_pem, "input.secureboot.pcrSigner.keyPath")
        .map_err(|e| Error::invalid(e.to_string()))?;
    Ok(SecureBootKeys { signer, pcr })
}

/// A section's digests in the three PCR banks, streamed from its source.
fn digests(src: &pe::Source) -> Result<[Vec<u8>; 3]> {
    let mut h = secureboot::measure::SectionHasher::default();
    src.for_each_chunk(|b| h.update(b))
        .map_err(|e| Error::new(ExitCode::Io, anyhow::anyhow!("{e}")))?;
    Ok(h.finish())
}

/// The files a UKI is made of.
#[derive(Debug, Clone, Copy)]
pub struct UkiInputs<'a> {
    /// The kernel (`.linux`).
    pub kernel: &'a Path,
    /// The initramfs (`.initrd`), extensions included.
    pub initramfs: &'a Path,
    /// systemd-stub.
    pub stub: &'a Path,
}

/// `.osrel` as Talos writes it (one `KEY=value` per line, a trailing newline).
pub fn os_release(p: &Profile) -> String {
    let name = if p.name.is_empty() { "Talos" } else { &p.name };
    let id = name.to_lowercase().replace(' ', "_");
    let v = &p.version;
    format!(
        "NAME=\"{name}\"\nID={id}\nVERSION_ID={v}\nPRETTY_NAME=\"{name} ({v})\"\n\
         HOME_URL=\"https://www.talos.dev/\"\n\
         BUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\n\
         VENDOR_NAME=\"Sidero Labs\"\nVENDOR_URL=\"https://www.siderolabs.com/\"\n"
    )
}

/// The systemd version of a stub, from its `.sdmagic` section
/// (`#### LoaderInfo: systemd-stub 252 ####`).
pub fn stub_version(stub: &pe::Pe<'_>) -> Option<u32> {
    let magic = stub.section_data(stub.section(".sdmagic")?);
    let text = String::from_utf8_lossy(magic);
    let rest = text.split("systemd-stub ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The extra UKI profiles of an output kind (≥ 1.10): (id, title, extra kernel argument).
fn extra_profiles(kind: OutputKind) -> &'static [(&'static str, &'static str, &'static str)] {
    match kind {
        OutputKind::Iso => &[(
            "reset",
            "Reset system disk",
            "talos.experimental.wipe=system",
        )],
        OutputKind::Image | OutputKind::Installer => &[(
            "reset-maintenance",
            "Reset to maintenance mode",
            "talos.experimental.wipe=system:EPHEMERAL,STATE",
        )],
        _ => &[],
    }
}

/// The kernel release from the kernel's boot header (x86 bzImage), if it has one.
fn kernel_release(kernel: &Path) -> Result<Option<String>> {
    let f = std::fs::File::open(kernel).code(ExitCode::Io, || {
        format!("input.kernel.path: {}", kernel.display())
    })?;
    let mut head = Vec::new();
    f.take(0x10400)
        .read_to_end(&mut head)
        .code(ExitCode::Io, || format!("reading {}", kernel.display()))?;
    Ok(pe::bzimage_release(&head))
}

/// Writes the UKI for `p` into `w`, signed (Authenticode, PCR policies in `.pcrsig`) when
/// `keys` are given; returns one line per profile left out (an old stub).
pub fn write(
    p: &Profile,
    cmdline: &str,
    files: &UkiInputs<'_>,
    epoch: i64,
    keys: Option<&SecureBootKeys>,
    w: &mut dyn Write,
) -> Result<Vec<String>> {
    let stub = crate::io::read_bytes(files.stub, MAX_STUB, "input.sdStub.path", ExitCode::Io)?;
    let parsed = pe::Pe::parse(&stub)
        .map_err(|e| Error::invalid(format!("input.sdStub.path: {}: {e}", files.stub.display())))?;
    let mut notes = Vec::new();
    use pe::Source;
    let mut sections: Vec<(&str, Source)> = vec![
        (".osrel", Source::Bytes(os_release(p).into_bytes())),
        (".cmdline", Source::Bytes(cmdline.as_bytes().to_vec())),
    ];
    if let Some(release) = kernel_release(files.kernel)? {
        sections.push((".uname", Source::Bytes(release.into_bytes())));
    }
    sections.push((".splash", Source::Bytes(crate::output::splash::bmp())));
    if let Some(k) = keys {
        let pem = k
            .pcr
            .public_pem()
            .map_err(|e| Error::invalid(e.to_string()))?;
        sections.push((".pcrpkey", Source::Bytes(pem.into_bytes())));
    }
    sections.push((".linux", Source::File(files.kernel.to_path_buf())));
    sections.push((".initrd", Source::File(files.initramfs.to_path_buf())));
    // the measured sections before any profile, with their digests (PCR policies), measured
    // as the stub in this UKI measures them
    let version = stub_version(&parsed);
    let order = match (keys, secureboot::measure::section_order(version)) {
        (_, Some(o)) => o,
        (None, None) => &[],
        (Some(_), None) => {
            return Err(Error::unsupported(format!(
                "input.sdStub.path: {}: which sections systemd-stub {} measures into PCR 11 is \
                 not known here (252 and 257 or later are), so no PCR policy can be signed",
                files.stub.display(),
                version.unwrap_or_default()
            )));
        }
    };
    let mut measured: Vec<(&str, [Vec<u8>; 3])> = Vec::new();
    if keys.is_some() {
        if let Some(s) = parsed.section(".sbat") {
            let mut h = secureboot::measure::SectionHasher::default();
            h.update(parsed.section_data(s));
            measured.push((".sbat", h.finish()));
        }
        for (name, src) in &sections {
            measured.push((name, digests(src)?));
        }
    }
    let mut profiles: Vec<(String, Option<String>)> = Vec::new();
    if p.quirks().has(Quirk::UkiProfiles) {
        profiles.push(("ID=main".to_string(), None));
        let extra = extra_profiles(p.output.kind);
        // systemd-stub before 257 knows no `.profile` and boots the *last* `.cmdline`: an
        // extra profile there would boot its wipe argument by default
        match stub_version(&parsed) {
            Some(v) if v < 257 && !extra.is_empty() => notes.push(format!(
                "systemd-stub {v} predates UKI profiles (systemd 257): profile{} {} left out",
                if extra.len() == 1 { "" } else { "s" },
                extra.iter().map(|e| e.0).collect::<Vec<_>>().join(", ")
            )),
            _ => {
                for (id, title, arg) in extra {
                    profiles.push((
                        format!("ID={id}\nTITLE={title}"),
                        Some(format!("{cmdline} {arg}")),
                    ));
                }
            }
        }
    }
    let pcrsig = |extra: &[(&str, &[u8])]| -> Result<Vec<u8>> {
        let Some(k) = keys else { return Ok(Vec::new()) };
        let mut set = measured.clone();
        for (name, data) in extra {
            let mut h = secureboot::measure::SectionHasher::default();
            h.update(data);
            set.push((name, h.finish()));
        }
        secureboot::measure::pcr_signature_digests(order, &set, &k.pcr)
            .map(String::into_bytes)
            .map_err(|e| Error::new(ExitCode::Dependency, anyhow::anyhow!("PCR signature: {e}")))
    };
    if profiles.is_empty() && keys.is_some() {
        sections.push((".pcrsig", Source::Bytes(pcrsig(&[])?)));
    }
    for (profile, own_cmdline) in &profiles {
        let mut extra: Vec<(&str, &[u8])> = vec![(".profile", profile.as_bytes())];
        if let Some(c) = own_cmdline {
            extra.push((".cmdline", c.as_bytes()));
        }
        let sig = pcrsig(&extra)?;
        sections.push((".profile", Source::Bytes(profile.clone().into_bytes())));
        if let Some(c) = own_cmdline {
            sections.push((".cmdline", Source::Bytes(c.clone().into_bytes())));
        }
        if keys.is_some() {
            sections.push((".pcrsig", Source::Bytes(sig)));
        }
    }
    let ts = u32::try_from(epoch.max(0)).unwrap_or(u32::MAX);
    let assemble = |w: &mut dyn Write| {
        pe::assemble(&stub, &sections, ts, w).map_err(|e| match e {
            pe::Error::Io { .. } => {
                Error::new(ExitCode::Io, anyhow::anyhow!("writing the UKI: {e}"))
            }
            e => Error::invalid(format!("input.sdStub.path: {}: {e}", files.stub.display())),
        })
    };
    match keys {
        None => {
            assemble(w)?;
        }
        Some(k) => {
            // the Authenticode digest covers the whole image: assembled in memory, then signed
            let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() as usize).unwrap_or(0);
            let mut image = Vec::with_capacity(
                size(files.kernel) + size(files.initramfs) + stub.len() + (1 << 20),
            );
            assemble(&mut image)?;
            let signed = secureboot::sign_pe(image, &k.signer).map_err(|e| {
                Error::new(
                    ExitCode::Dependency,
                    anyhow::anyhow!("signing the UKI: {e}"),
                )
            })?;
            w.write_all(&signed)
                .code(ExitCode::Io, || "writing the UKI".into())?;
        }
    }
    Ok(notes)
}
