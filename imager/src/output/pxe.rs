//! The PXE set (this imager's output kind `pxe`): kernel, initramfs and cmdline under Image
//! Factory's names, and an iPXE script that boots them. Always uncompressed, for iPXE to
//! fetch.

use super::{Artifact, Writer, copy_from};
use crate::error::{Error, Result};
use crate::profile::{OutFormat, Profile};
use std::path::Path;

/// The iPXE script of a PXE set: kernel and initramfs next to the script (iPXE resolves the
/// names against the script's own URL), as Image Factory's `standard.ipxe` does with URLs.
///
/// iPXE expands `${…}` settings anywhere on a line and chains commands with `||` and `&&`,
/// and has no quoting for them: a command line holding `$`, `|` or `&` (or any control
/// character) is refused rather than written.
pub fn ipxe_script(kernel: &str, initramfs: &str, cmdline: &str) -> Result<String> {
    check_ipxe_cmdline(cmdline)?;
    Ok(format!(
        "#!ipxe\n\nimgfree\nkernel {kernel} {cmdline}\ninitrd {initramfs}\nboot\n"
    ))
}

/// The SecureBoot variant (Image Factory's `secureboot.ipxe`): the UKI, with the command line
/// given explicitly, since iPXE starts it as a plain PE image and sd-stub then does not use
/// the embedded one.
pub fn ipxe_uki_script(uki: &str, cmdline: &str) -> Result<String> {
    check_ipxe_cmdline(cmdline)?;
    Ok(format!("#!ipxe\n\nimgfree\nkernel {uki} {cmdline}\nboot\n"))
}

fn check_ipxe_cmdline(cmdline: &str) -> Result<()> {
    if let Some(c) = cmdline
        .chars()
        .find(|c| matches!(c, '$' | '|' | '&') || c.is_control())
    {
        return Err(Error::invalid(format!(
            "the kernel command line holds {c:?}, which an iPXE script would interpret; \
             remove it from customization.extraKernelArgs for PXE output"
        )));
    }
    Ok(())
}

/// Writes the four files.
pub fn write(
    p: &Profile,
    kernel: &Path,
    initramfs: &Path,
    cmdline: &str,
    w: &Writer,
) -> Result<Vec<Artifact>> {
    let kname = format!("kernel-{}", p.arch);
    let iname = format!("initramfs-{}.xz", p.arch);
    let cname = format!("cmdline-{}", p.base_name());
    // the script is checked before anything is written
    let script = ipxe_script(&kname, &iname, cmdline)?;
    let raw = OutFormat::Raw;
    Ok(vec![
        w.file("kernel", &kname, raw, copy_from(kernel))?,
        w.file("initramfs", &iname, raw, copy_from(initramfs))?,
        w.bytes("cmdline", &cname, cmdline.as_bytes())?,
        w.bytes("ipxe", &p.output_name(), script.as_bytes())?,
    ])
}
