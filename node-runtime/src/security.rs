//! SecureBoot state and PCR 11 boot phases (docs/formats/uki-secureboot.md, "Boot phases").
//!
//! In: the firmware's variables (efivarfs) and the TPM (`/dev/tpmrm0`, `/sys/class/tpm`).
//! Out: `secureboot=enabled|disabled|setup|none` and `pcr11=<sha256 bank, hex>|none` for the
//! ready line; the phase strings `enter-initrd`, `leave-initrd`, `enter-machined` extended
//! into PCR 11 at the points where Talos extends them, so that PCR 11 ends where the UKI's
//! signed policy expects it. Nothing here stops a boot: a missing TPM or efivarfs is reported
//! as `none`, a failing extend as one console line.

use std::io::{Read, Write};
use std::path::Path;

use crate::console::say;

const EFIVARS: &str = "/sys/firmware/efi/efivars";
const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
static TPM_DEVICES: [&str; 2] = ["/dev/tpmrm0", "/dev/tpm0"];
/// The phase strings, in boot order.
pub const ENTER_INITRD: &str = "enter-initrd";
/// See [`ENTER_INITRD`].
pub const LEAVE_INITRD: &str = "leave-initrd";
/// See [`ENTER_INITRD`].
pub const ENTER_MACHINED: &str = "enter-machined";

/// The one-byte value of a global EFI variable (efivarfs prefixes 4 attribute bytes).
fn efi_var(name: &str) -> Option<u8> {
    let mut b = [0u8; 5];
    let mut f = std::fs::File::open(format!("{EFIVARS}/{name}-{GLOBAL_GUID}")).ok()?;
    f.read_exact(&mut b).ok()?;
    Some(b[4])
}

/// Mounts efivarfs (a module, loaded from the floor list) read-only at
/// `/sys/firmware/efi/efivars`, once, on an EFI boot.
pub fn mount_efivars() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !Path::new("/sys/firmware/efi").is_dir() {
            return;
        }
        let _ = nix::mount::mount(
            Some("efivarfs"),
            EFIVARS,
            Some("efivarfs"),
            nix::mount::MsFlags::MS_RDONLY
                | nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NOEXEC
                | nix::mount::MsFlags::MS_NODEV,
            None::<&str>,
        );
    });
}

/// `enabled`, `setup` (no platform key: keys may be enrolled), `disabled`, or `none` (not an
/// EFI boot, or no efivarfs).
pub fn secureboot_state() -> &'static str {
    if !Path::new("/sys/firmware/efi").is_dir() {
        return "none";
    }
    mount_efivars();
    match (efi_var("SecureBoot"), efi_var("SetupMode")) {
        (Some(1), _) => "enabled",
        (_, Some(1)) => "setup",
        (Some(_), _) => "disabled",
        (None, _) => "none",
    }
}

/// `TPM2_PCR_Event` for PCR 11 with `data`, password session: the TPM extends every active
/// bank with its digest of `data`.
fn pcr_event_command(data: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(32 + data.len());
    c.extend(0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
    c.extend(0u32.to_be_bytes()); // size, below
    c.extend(0x0000_013cu32.to_be_bytes()); // TPM_CC_PCR_Event
    c.extend(11u32.to_be_bytes()); // pcrHandle
    c.extend(9u32.to_be_bytes()); // authorization area
    c.extend(0x4000_0009u32.to_be_bytes()); // TPM_RS_PW
    c.extend(0u16.to_be_bytes()); // nonce
    c.push(0); // session attributes
    c.extend(0u16.to_be_bytes()); // hmac (empty password)
    c.extend((data.len() as u16).to_be_bytes());
    c.extend(data);
    let n = c.len() as u32;
    c[2..6].copy_from_slice(&n.to_be_bytes());
    c
}

/// How long one TPM command may take before boot goes on without it (a TPM answers a
/// `PCR_Event` in milliseconds; a wedged one must not hold PID 1).
const TPM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Extends PCR 11 with the phase `phase` (a console line if a TPM is there and it fails or
/// does not answer within [`TPM_DEADLINE`]; the command then stays with its thread).
pub fn measure_phase(phase: &str) {
    let Some(&dev) = TPM_DEVICES.iter().find(|d| Path::new(d).exists()) else {
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let data = phase.as_bytes().to_vec();
    let spawned = std::thread::Builder::new()
        .name("tpm".into())
        .spawn(move || {
            let _ = tx.send(pcr_event(dev, &data));
        });
    let r = match spawned {
        Err(e) => Err(e),
        Ok(_) => rx.recv_timeout(TPM_DEADLINE).unwrap_or_else(|_| {
            Err(std::io::Error::other(format!(
                "no answer from {dev} within {} s",
                TPM_DEADLINE.as_secs()
            )))
        }),
    };
    if let Err(e) = r {
        say(&format!(
            "tpm pcr=11 phase={phase} error={:?}",
            e.to_string()
        ));
    }
}

/// Sends `TPM2_PCR_Event(11, data)` to `dev` and checks the response code.
fn pcr_event(dev: &str, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)?;
    f.write_all(&pcr_event_command(data))?;
    let mut resp = [0u8; 4096];
    let n = f.read(&mut resp)?;
    if n < 10 {
        return Err(std::io::Error::other(format!(
            "short TPM response ({n} bytes)"
        )));
    }
    let rc = u32::from_be_bytes([resp[6], resp[7], resp[8], resp[9]]);
    if rc != 0 {
        return Err(std::io::Error::other(format!("TPM response code {rc:#x}")));
    }
    Ok(())
}

/// PCR 11 of the SHA-256 bank as the kernel reads it, lowercase hex, or `none`.
pub fn pcr11() -> String {
    std::fs::read_to_string("/sys/class/tpm/tpm0/pcr-sha256/11")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "none".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_event_command_bytes() {
        let c = pcr_event_command(b"enter-initrd");
        assert_eq!(c.len(), 10 + 4 + 4 + 9 + 2 + 12);
        assert_eq!(&c[..2], &[0x80, 0x02]);
        assert_eq!(
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]) as usize,
            c.len()
        );
        assert_eq!(&c[6..10], &[0, 0, 1, 0x3c]);
        assert_eq!(&c[10..14], &[0, 0, 0, 11]);
        assert_eq!(&c[c.len() - 14..c.len() - 12], &[0, 12]);
        assert_eq!(&c[c.len() - 12..], b"enter-initrd");
    }
}
