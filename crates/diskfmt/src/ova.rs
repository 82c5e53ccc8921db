//! OVA writer (docs/formats/outputs.md: Talos' `pkg/imager/ova`, the `vmware` profiles).
//!
//! In: the raw image, [`OvfOptions`] (VM name, architecture, optional SecureBoot certificate)
//! and [`Options`]. Out: a ustar archive, as `tar -cf out disk.ovf disk.mf disk.vmdk` would
//! write it (in that order; uid/gid 0, mode 0644, mtime = [`Options::timestamp`], no user or
//! group names, end-of-archive blocks and padding to a 10 KiB record like GNU tar), holding:
//!
//! - `disk.ovf`: the VMware OVF envelope of Talos' `disk.ovf.tmpl` ([`render_ovf`]): one
//!   VirtualSystem, hardware family `vmx-15`, 2 vCPUs, 2048 MB, a VmxNet3 NIC on "VM Network",
//!   one disk (`ovf:capacity` = disk size / 2^20 in "byte * 2^20", the File's `ovf:size` = the
//!   VMDK's size), the user-configurable string property `talos.config`, and ExtraConfig
//!   `disk.EnableUUID=true`;
//! - `disk.mf`: `SHA256(disk.vmdk)= <hex>\nSHA256(disk.ovf)= <hex>\n`;
//! - `disk.vmdk`: the streamOptimized VMDK of [`crate::write_vmdk_stream`].
//!
//! No temporary file: the VMDK is streamed into the output behind room reserved for the first
//! two members (sized for the longest possible `ovf:size`), hashed on the way, and moved down
//! by the few bytes the room turned out too large only if the OVF's padding needs it.

use crate::{DiskFmtError, Options, Stats, io_err, write_vmdk_stream};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// What the OVF descriptor says about the virtual machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfOptions {
    /// The VM's name (`<Name>`, `VirtualSystemIdentifier`, `<name>.nvram`), e.g. "talos".
    pub name: String,
    /// Target architecture, e.g. "amd64" or "arm64"; amd64 adds
    /// `vmw:osType="other3xLinux64Guest"`, as Talos does.
    pub arch: String,
    /// DER SecureBoot signing certificate: when set, EFI firmware with SecureBoot on and this
    /// certificate as PK, KEK and db default, as Talos does for `secureboot-vmware`.
    pub secureboot_certificate: Option<Vec<u8>>,
}

impl Default for OvfOptions {
    fn default() -> Self {
        OvfOptions {
            name: "talos".into(),
            arch: "amd64".into(),
            secureboot_certificate: None,
        }
    }
}

/// What [`write_ova`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OvaStats {
    /// The VMDK inside (its `output_size` is the VMDK's size).
    pub vmdk: Stats,
    /// Size of the OVA file, in bytes.
    pub ova_size: u64,
}

const OVF_NAME: &str = "disk.ovf";
const MF_NAME: &str = "disk.mf";
const VMDK_NAME: &str = "disk.vmdk";
const BLOCK: u64 = 512;
const RECORD: u64 = 20 * BLOCK;

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// Renders `disk.ovf` for a VMDK of `vmdk_size` bytes holding a disk of `disk_size` bytes
/// (the capacity is given in MiB, rounded up).
pub fn render_ovf(vmdk_size: u64, disk_size: u64, ovf: &OvfOptions) -> String {
    let name = xml_escape(&ovf.name);
    let capacity = disk_size.div_ceil(1 << 20);
    let os_type = if ovf.arch == "amd64" {
        " vmw:osType=\"other3xLinux64Guest\""
    } else {
        ""
    };
    let cert = ovf.secureboot_certificate.as_deref().map(hex::encode);
    let sb_config = if cert.is_some() {
        "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n\
         \x20     <vmw:Config ovf:required=\"false\" vmw:key=\"bootOptions.efiSecureBootEnabled\" vmw:value=\"true\"/>\n"
    } else {
        ""
    };
    let mut sb_extra = String::new();
    if let Some(c) = &cert {
        for (key, value) in [
            ("PKDefault", c.as_str()),
            ("KEKDefault", c.as_str()),
            ("dbDefault", c.as_str()),
            // SHA-256 of nothing: an empty dbx.
            (
                "dbxDefault",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ] {
            sb_extra.push_str(&format!(
                "      <vmw:ExtraConfig ovf:required=\"false\" vmw:key=\"uefi.secureBoot.{key}.value0\" vmw:value=\"{value}\"/>\n\
                 \x20     <vmw:ExtraConfig ovf:required=\"false\" vmw:key=\"uefi.secureBoot.{key}.append\" vmw:value=\"false\"/>\n"
            ));
        }
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by talos-rs diskfmt after Talos' disk.ovf.tmpl -->
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{VMDK_NAME}" ovf:id="file1" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <ProductSection ovf:required="false">
      <Info>Talos Virtual Appliance</Info>
      <Property ovf:userConfigurable="true" ovf:type="string"
                ovf:key="talos.config" ovf:value="">
        <Label>Talos config data</Label>
        <Description>Inline Talos config</Description>
      </Property>
    </ProductSection>
    <OperatingSystemSection ovf:id="101"{os_type}>
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo">
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-15</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>scsiController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>disk0</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>2</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on &quot;VM Network&quot;</rasd:Description>
        <rasd:ElementName>ethernet0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
        <vmw:Config ovf:required="false" vmw:key="slotInfo.pciSlotNumber" vmw:value="32"/>
        <vmw:Config ovf:required="false" vmw:key="wakeOnLanEnabled" vmw:value="false"/>
        <vmw:Config ovf:required="false" vmw:key="connectable.allowGuestControl" vmw:value="false"/>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>video</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>24</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>vmci</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.vmci</rasd:ResourceSubType>
        <rasd:ResourceType>1</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="tools.afterPowerOn" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.afterResume" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.beforeGuestShutdown" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.beforeGuestStandby" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.toolsUpgradePolicy" vmw:value="manual"/>
      <vmw:Config ovf:required="false" vmw:key="powerOpInfo.suspendType" vmw:value="soft"/>
{sb_config}      <vmw:ExtraConfig ovf:required="false" vmw:key="nvram" vmw:value="{name}.nvram"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="disk.EnableUUID" vmw:value="true"/>
{sb_extra}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// `disk.mf`.
fn render_mf(vmdk_sha: &[u8], ovf_sha: &[u8]) -> String {
    format!(
        "SHA256({VMDK_NAME})= {}\nSHA256({OVF_NAME})= {}\n",
        hex::encode(vmdk_sha),
        hex::encode(ovf_sha)
    )
}

/// Writes `v` as a NUL-terminated octal field filling `field`; values too large for octal use
/// the base-256 encoding of GNU tar and POSIX pax readers.
fn tar_number(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    if digits * 3 >= 64 || v < 1u64 << (3 * digits) {
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
    }
}

/// A ustar header for a regular file.
fn tar_header(name: &str, size: u64, mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    tar_number(&mut h[100..108], 0o644);
    tar_number(&mut h[108..116], 0);
    tar_number(&mut h[116..124], 0);
    tar_number(&mut h[124..136], size);
    // mtime: octal only (clamped to what 11 digits hold).
    tar_number(&mut h[136..148], mtime.min((1 << 33) - 1));
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    tar_number(&mut h[329..337], 0);
    tar_number(&mut h[337..345], 0);
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Counts and hashes what goes through.
struct HashWriter<W: Write> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `raw` as an OVA to `out` (truncated first): `disk.ovf`, `disk.mf` and a
/// streamOptimized `disk.vmdk`, the disk size being the raw file's size.
pub fn write_ova(
    raw: &File,
    out: &mut File,
    ovf: &OvfOptions,
    o: &Options,
) -> Result<OvaStats, DiskFmtError> {
    let disk_size = raw
        .metadata()
        .map_err(io_err("reading the raw image's size"))?
        .len();
    let mtime = u64::try_from(o.timestamp).unwrap_or(0);
    let mf_len = render_mf(&[0; 32], &[0; 32]).len() as u64;
    let head = |ovf_len: u64| BLOCK + padded(ovf_len) + BLOCK + padded(mf_len) + BLOCK;
    let reserve = head(render_ovf(u64::MAX, disk_size, ovf).len() as u64);

    out.set_len(0)
        .map_err(io_err("truncating the OVA output"))?;
    out.seek(SeekFrom::Start(reserve))
        .map_err(io_err("seeking in the OVA output"))?;
    let mut hw = HashWriter {
        inner: &*out,
        sha: Sha256::new(),
    };
    let vmdk = write_vmdk_stream(raw, &mut hw, o)?;
    let vmdk_sha = hw.sha.finalize();
    let vmdk_size = vmdk.output_size;

    let ovf_text = render_ovf(vmdk_size, disk_size, ovf);
    let ovf_sha = Sha256::digest(ovf_text.as_bytes());
    let mf_text = render_mf(&vmdk_sha, &ovf_sha);
    let start = head(ovf_text.len() as u64);
    if start < reserve {
        move_down(out, reserve, start, vmdk_size)?;
    }

    let mut headers = Vec::with_capacity(usize::try_from(start).unwrap_or(0));
    headers.extend_from_slice(&tar_header(OVF_NAME, ovf_text.len() as u64, mtime));
    headers.extend_from_slice(ovf_text.as_bytes());
    headers.resize(padded(headers.len() as u64) as usize, 0);
    headers.extend_from_slice(&tar_header(MF_NAME, mf_text.len() as u64, mtime));
    headers.extend_from_slice(mf_text.as_bytes());
    headers.resize(padded(headers.len() as u64) as usize, 0);
    headers.extend_from_slice(&tar_header(VMDK_NAME, vmdk_size, mtime));
    out.write_all_at(&headers, 0)
        .map_err(io_err("writing the OVA's tar headers"))?;

    // The VMDK is a whole number of blocks; then two zero blocks and the record padding.
    let end = start + padded(vmdk_size);
    let ova_size = (end + 2 * BLOCK).div_ceil(RECORD) * RECORD;
    out.set_len(end)
        .and_then(|_| out.set_len(ova_size))
        .map_err(io_err("finishing the OVA"))?;
    Ok(OvaStats { vmdk, ova_size })
}

/// Moves `len` bytes at `from` down to `to` (< `from`) within `f`.
fn move_down(f: &File, from: u64, to: u64, len: u64) -> Result<(), DiskFmtError> {
    let mut buf = vec![0u8; crate::scan::CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let b = &mut buf[..n];
        f.read_exact_at(b, from + done)
            .and_then(|_| f.write_all_at(b, to + done))
            .map_err(io_err("moving the VMDK within the OVA"))?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_header_checksum_and_fields() {
        let h = tar_header("disk.ovf", 1234, 1_700_000_000);
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(&h[100..108], b"0000644\0");
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut g = h;
        g[148..156].fill(b' ');
        assert_eq!(stored, g.iter().map(|&b| u32::from(b)).sum::<u32>());
        // Sizes of 8 GiB and more: base-256.
        let big = tar_header("disk.vmdk", 1 << 40, 0);
        assert_eq!(big[124], 0x80);
    }

    #[test]
    fn ovf_fields() {
        let o = OvfOptions {
            name: "a<b".into(),
            ..OvfOptions::default()
        };
        let x = render_ovf(12345, 3 << 30, &o);
        assert!(x.contains("ovf:size=\"12345\""));
        assert!(x.contains("ovf:capacity=\"3072\""));
        assert!(x.contains("<Name>a&lt;b</Name>"));
        assert!(x.contains("vmw:key=\"disk.EnableUUID\" vmw:value=\"true\""));
        assert!(x.contains("other3xLinux64Guest"));
        assert!(!x.contains("efiSecureBootEnabled"));
        let sb = OvfOptions {
            secureboot_certificate: Some(vec![0xde, 0xad]),
            arch: "arm64".into(),
            ..OvfOptions::default()
        };
        let y = render_ovf(1, 1 << 20, &sb);
        assert!(y.contains("uefi.secureBoot.PKDefault.value0\" vmw:value=\"dead\""));
        assert!(y.contains("efiSecureBootEnabled"));
        assert!(!y.contains("other3xLinux64Guest"));
    }
}
