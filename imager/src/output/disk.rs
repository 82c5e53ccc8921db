//! Disk images (docs/formats/disk-layout.md): the layout is written by the installer library
//! into a sparse raw file; qcow2, vhd and ova are converted from it (docs/formats/outputs.md
//! "Disk format conversion"), honouring `diskFormatOptions` as `qemu-img -o` would.

use super::{Artifact, Writer, temp_in};
use crate::assemble::Assembly;
use crate::error::{Error, ExitCode, Result};
use crate::inputs::Inputs;
use crate::profile::quirks::Quirk;
use crate::profile::{ImageOptions, Profile};
use std::fs::File;

/// The installer library's description of the image `p` asks for.
pub fn image_spec(p: &Profile, inputs: &Inputs, a: &Assembly) -> Result<installer::ImageSpec> {
    let io = p.output.image_options.clone().unwrap_or_default();
    let need = |what: &str, v: &Option<std::path::PathBuf>| {
        v.clone().ok_or_else(|| {
            Error::new(
                ExitCode::Unknown,
                anyhow::anyhow!("{what} was not resolved for a disk image"),
            )
        })
    };
    let spec = installer::ImageSpec {
        arch: p.arch.to_string(),
        disk_size: io.disk_size,
        sector_size: if io.disk_sector_size == 0 {
            512
        } else {
            u64::from(io.disk_sector_size)
        },
        bootloader: installer::Bootloader::parse(io.bootloader.as_str()).ok_or_else(|| {
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
        cmdline: a.cmdline.clone(),
        files: installer::BootFiles {
            kernel: need("input.kernel", &inputs.kernel)?,
            initramfs: need("input.initramfs", &a.initramfs)?,
            sd_boot: need("input.sdBoot", &inputs.sd_boot)?,
            grub: match io.bootloader.as_str() {
                "grub" | "dual-boot" => Some(inputs.grub.disk()?),
                _ => None,
            },
            // the UKI and SecureBoot files are made by `write` (`super::efi`)
            uki: None,
            enroll_keys: Vec::new(),
            secure_boot_enroll: None,
        },
        meta: a.meta.clone(),
        epoch: 0,
        grub_reset_entry: p.quirks().has(Quirk::ResetOption),
        data_partitions: !p.quirks().has(Quirk::SkipDataPartitions),
        skip_lbas: inputs.overlay.as_ref().map_or(0, |o| o.partition_offset),
        esp_extra: inputs
            .overlay
            .iter()
            .flat_map(|o| o.esp.iter())
            .map(|(path, src)| (path.clone(), src.clone()))
            .collect(),
        blobs: inputs
            .overlay
            .as_ref()
            .map(|o| o.blobs.clone())
            .unwrap_or_default(),
    };
    // a layout that cannot be placed is the profile's fault: say so before writing anything
    let layout = installer::table(&spec).map_err(|e| {
        Error::invalid(format!(
            "field output.imageOptions.diskSize: {} bytes (after the version's adjustment) \
             cannot hold the {} layout: {e}",
            spec.disk_size,
            io.bootloader.as_str()
        ))
    })?;
    // a board blob or ESP file that does not fit the layout is the overlay's fault
    if let Some(o) = &inputs.overlay {
        installer::check_blobs(&spec, &layout)
            .map_err(|e| Error::invalid(format!("{}: {e}", o.source)))?;
        installer::esp_tree(&spec).map_err(|e| Error::invalid(format!("{}: {e}", o.source)))?;
    }
    Ok(spec)
}

/// Writes the disk image of `spec` (with the writer's epoch) in the profile's disk format;
/// `sd_stub` makes the UKI of layouts that boot systemd-boot, when the profile boots one.
pub fn write(
    p: &Profile,
    spec: &installer::ImageSpec,
    sd_stub: Option<&std::path::Path>,
    w: &Writer,
) -> Result<Artifact> {
    let io = p.output.image_options.clone().unwrap_or_default();
    let name = p.output_name();
    let kind = p.output.kind.as_str();
    let fmt = p.output.out_format;
    let mut spec = spec.clone();
    spec.epoch = w.epoch;
    let write_raw = |f: &mut File| {
        write_into(p, &mut spec.clone(), sd_stub, None, &w.tmp, f)
            .map_err(|e| e.context(format!("writing disk image {name}")))?;
        Ok(())
    };
    if io.disk_format == "raw" {
        return w.file(kind, &name, fmt, write_raw);
    }
    // other formats are converted from a sparse raw image written first
    let mut raw = temp_in(&w.tmp, &format!("{}.raw", p.base_name()))?;
    write_raw(raw.as_file_mut())?;
    w.file(kind, &name, fmt, |f| {
        convert(
            raw.as_file(),
            f,
            &io,
            &p.base_name(),
            p.arch.as_str(),
            w.epoch,
        )
    })
}

/// Writes the raw layout of `spec` into `f` (truncated to the disk size first): systemd-boot's
/// boot set is made in `tmp` (the UKI from `sd_stub` when the profile boots one), or `uki`
/// is booted as it is (an installation from an installer image). Returns the layout.
pub fn write_into(
    p: &Profile,
    spec: &mut installer::ImageSpec,
    sd_stub: Option<&std::path::Path>,
    uki: Option<&std::path::Path>,
    tmp: &std::path::Path,
    f: &mut File,
) -> Result<installer::Layout> {
    // kept until the image is written: the boot set's files live in its directory
    let _boot = match (spec.bootloader, uki) {
        (installer::Bootloader::Grub, _) => None,
        (_, Some(u)) => {
            spec.files.uki = Some(u.to_path_buf());
            None
        }
        (_, None) => {
            let fl = &spec.files;
            let set = super::efi::prepare(
                p,
                &spec.cmdline,
                &super::efi::EfiInputs {
                    kernel: &fl.kernel,
                    initramfs: &fl.initramfs,
                    sd_boot: &fl.sd_boot,
                    sd_stub,
                },
                tmp,
                spec.epoch,
            )?;
            spec.files.sd_boot = set.sd_boot.clone();
            spec.files.uki = set.uki.clone();
            spec.files.enroll_keys = set.keys.clone();
            spec.files.secure_boot_enroll = set.enroll.map(str::to_string);
            Some(set)
        }
    };
    installer::write_image(f, spec).map_err(Error::from_install)
}

/// Converts a sparse raw disk image into `io.disk_format`.
fn convert(
    raw: &File,
    out: &mut File,
    io: &ImageOptions,
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
            match diskfmt::parse_vhd_options(&io.disk_format_options).map_err(bad)? {
                diskfmt::VhdSubformat::Fixed => diskfmt::write_vhd_fixed(raw, out, &opts),
                diskfmt::VhdSubformat::Dynamic => diskfmt::write_vhd_dynamic(raw, out, &opts),
            }
            .map_err(failed)?;
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
