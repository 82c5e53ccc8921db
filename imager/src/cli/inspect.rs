//! `imager inspect FILE`: what a UKI (or any PE image: systemd-boot, a stub) is made of —
//! its sections with sizes and digests, the command line of each UKI profile, the kernel
//! release, and who signed it (docs/formats/uki-secureboot.md).

use crate::error::{Error, ExitCode, Result, WithCode};
use std::io::Write;
use std::path::PathBuf;

/// A file larger than this is refused (UKIs are tens of MiB).
const MAX_IMAGE: u64 = 1 << 30;

/// Sections as (name, contents).
type Sections<'a> = Vec<(&'a str, &'a [u8])>;

/// Arguments of `imager inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// A PE image: a UKI, systemd-boot, systemd-stub.
    file: PathBuf,
}

/// Text with control characters shown as escapes (section contents are untrusted).
fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

/// Prints the image's description (a closed stdout is an I/O error, not a panic).
pub fn run(a: &InspectArgs) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    macro_rules! println {
        ($($t:tt)*) => {
            writeln!(out, $($t)*).code(ExitCode::Io, || "writing to stdout".into())?
        };
    }
    let data = crate::io::read_bytes(&a.file, MAX_IMAGE, "imager inspect", ExitCode::Io)?;
    let pe =
        pe::Pe::parse(&data).map_err(|e| Error::invalid(format!("{}: {e}", a.file.display())))?;
    let machine = match pe.machine {
        0x8664 => "x86-64",
        0xaa64 => "arm64",
        _ => "other machine",
    };
    println!(
        "{}: PE32+ {machine}, {} sections, time stamp {}",
        a.file.display(),
        pe.sections.len(),
        civil::rfc3339(i64::from(pe.timestamp))
    );
    let digest = pe
        .authenticode_sha256()
        .map(hex::encode)
        .unwrap_or_else(|e| format!("({e})"));
    println!("  authenticode sha256:{digest}");
    let sigs = pe.signatures();
    if sigs.is_empty() {
        println!("  unsigned");
    }
    for s in sigs {
        match secureboot::authenticode::signer_subjects(s) {
            Ok(subjects) => println!("  signed by {}", printable(subjects.join("; ").as_bytes())),
            Err(e) => println!("  a signature that does not parse: {e}"),
        }
    }
    println!("  {:<10} {:>10}  sha256", "section", "size");
    for s in &pe.sections {
        let d = pe.section_data(s);
        println!(
            "  {:<10} {:>10}  {}",
            printable(s.name.as_bytes()),
            d.len(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(d))
        );
    }
    // UKI profiles: the sections before the first `.profile` are the base; each `.profile`
    // may override `.cmdline`
    let mut base_cmdline = None;
    let mut profiles: Vec<(String, Option<String>)> = Vec::new();
    for s in &pe.sections {
        let d = pe.section_data(s);
        match (s.name.as_str(), profiles.last_mut()) {
            (".profile", _) => profiles.push((printable(d), None)),
            (".cmdline", None) => base_cmdline = Some(printable(d)),
            (".cmdline", Some(p)) => p.1 = Some(printable(d)),
            (".uname", _) => println!("  kernel release {}", printable(d)),
            _ => {}
        }
    }
    if let Some(base) = &base_cmdline {
        if profiles.is_empty() {
            println!("  cmdline {base}");
        }
        for (id, cmdline) in &profiles {
            println!(
                "  profile {id}: cmdline {}",
                cmdline.as_deref().unwrap_or(base)
            );
        }
    }
    // PCR 11 as the UKI's own stub measures it (systemd >= 257 measures every UKI section,
    // older ones fewer), per profile: the base sections, then the profile's own
    let all: Vec<(&str, &[u8])> = pe
        .sections
        .iter()
        .map(|s| (s.name.as_str(), pe.section_data(s)))
        .collect();
    let first = all
        .iter()
        .position(|(n, _)| *n == ".profile")
        .unwrap_or(all.len());
    let mut sets: Vec<(String, Sections<'_>)> = Vec::new();
    if first == all.len() {
        sets.push((String::new(), all.clone()));
    }
    let mut i = first;
    while i < all.len() {
        let end = all[i + 1..]
            .iter()
            .position(|(n, _)| *n == ".profile")
            .map_or(all.len(), |e| i + 1 + e);
        let mut set = all[..first].to_vec();
        set.extend_from_slice(&all[i..end]);
        sets.push((format!(" (profile {})", printable(all[i].1)), set));
        i = end;
    }
    if all.iter().any(|(n, _)| *n == ".linux") {
        let version = crate::output::uki::stub_version(&pe);
        if let Some(v) = version {
            println!("  systemd-stub {v}");
        }
        let Some(order) = secureboot::measure::section_order(version) else {
            println!("  PCR 11: which sections this stub measures is not known here");
            return Ok(());
        };
        for (label, set) in sets {
            let values: Vec<String> = secureboot::measure::Bank::ALL
                .iter()
                .map(|b| {
                    let v = secureboot::measure::pcr11_in_order(
                        *b,
                        order,
                        &set,
                        &secureboot::measure::PHASES,
                    );
                    format!(
                        "{}={}",
                        b.name(),
                        hex::encode(v.last().cloned().unwrap_or_default())
                    )
                })
                .collect();
            println!("  PCR 11 at enter-machined{label}: {}", values.join(" "));
        }
    }
    Ok(())
}
