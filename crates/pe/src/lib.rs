//! PE32+ images for UEFI: reading sections, appending sections the way Talos assembles a UKI
//! from systemd-stub, stripping COFF symbols, and the Authenticode image hash;
//! docs/formats/uki-secureboot.md.
//!
//! In: the bytes of a PE image (a stub, a UKI, systemd-boot), or section contents as readers.
//! Out: parsed headers and sections, an assembled image written to a `Write` (section data
//! streamed, never held whole), the Authenticode digest of an image.

use std::io::{Read, Write};

use sha2::Digest as _;

/// Errors of this crate; every message names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a PE32+ image, or a header points outside the file.
    #[error("not a usable PE32+ image: {0}")]
    Format(String),
    /// Valid, but refused (COFF symbols in a stub, too many sections, …).
    #[error("{0}")]
    Refused(String),
    /// Reading a section's source or writing the image failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`.
pub const DATA_READ: u32 = 0x0000_0040 | 0x4000_0000;
/// The data directory of the certificate table (Authenticode signatures).
pub const DIR_SECURITY: usize = 4;
/// At most this many sections (the PE format allows 96).
const MAX_SECTIONS: usize = 96;
/// Where the PE signature goes in an assembled image (Talos: `e_lfanew` = 0x80).
const PE_OFFSET: usize = 0x80;
const COFF_LEN: usize = 20;
const SECTION_LEN: usize = 40;

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name, up to 8 bytes (NUL padding removed; bytes that are not UTF-8 replaced).
    pub name: String,
    /// The name field as stored.
    pub raw_name: [u8; 8],
    /// Size in memory.
    pub virtual_size: u32,
    /// RVA.
    pub virtual_address: u32,
    /// Size in the file (a multiple of the file alignment).
    pub raw_size: u32,
    /// File offset of the data.
    pub raw_ptr: u32,
    /// Characteristics flags.
    pub characteristics: u32,
}

/// A parsed PE32+ image (headers only; data is read from the bytes on demand).
#[derive(Debug, Clone)]
pub struct Pe<'a> {
    data: &'a [u8],
    /// `e_lfanew`.
    pub pe_offset: usize,
    /// COFF machine.
    pub machine: u16,
    /// COFF time stamp.
    pub timestamp: u32,
    /// COFF symbol table pointer and count.
    pub symbols: (u32, u32),
    opt_offset: usize,
    opt_size: usize,
    /// Section alignment in memory.
    pub section_alignment: u32,
    /// Alignment of raw data in the file.
    pub file_alignment: u32,
    /// `SizeOfHeaders`.
    pub size_of_headers: u32,
    /// `SizeOfImage`.
    pub size_of_image: u32,
    /// The number of data directories.
    pub dirs: usize,
    /// Section headers, in table order.
    pub sections: Vec<Section>,
}

fn u16_at(d: &[u8], at: usize) -> Result<u16, Error> {
    d.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| Error::Format(format!("truncated at {at:#x}")))
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, Error> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::Format(format!("truncated at {at:#x}")))
}

fn align(v: u64, a: u64) -> u64 {
    if a == 0 { v } else { v.div_ceil(a) * a }
}

impl<'a> Pe<'a> {
    /// Parses the headers of `data`.
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        if data.get(..2) != Some(b"MZ") {
            return Err(Error::Format("no MZ signature".into()));
        }
        let pe_offset = u32_at(data, 0x3c)? as usize;
        if data.get(pe_offset..pe_offset + 4) != Some(b"PE\0\0") {
            return Err(Error::Format(format!("no PE signature at {pe_offset:#x}")));
        }
        let coff = pe_offset + 4;
        let machine = u16_at(data, coff)?;
        let nsections = u16_at(data, coff + 2)? as usize;
        let timestamp = u32_at(data, coff + 4)?;
        let symbols = (u32_at(data, coff + 8)?, u32_at(data, coff + 12)?);
        let opt_size = u16_at(data, coff + 16)? as usize;
        let opt_offset = coff + COFF_LEN;
        if u16_at(data, opt_offset)? != 0x20b {
            return Err(Error::Format("not PE32+ (optional header magic)".into()));
        }
        if opt_size < 112 || opt_offset + opt_size > data.len() {
            return Err(Error::Format(format!(
                "optional header of {opt_size} bytes"
            )));
        }
        let section_alignment = u32_at(data, opt_offset + 32)?;
        let file_alignment = u32_at(data, opt_offset + 36)?;
        let size_of_image = u32_at(data, opt_offset + 56)?;
        let size_of_headers = u32_at(data, opt_offset + 60)?;
        let dirs = (u32_at(data, opt_offset + 108)? as usize).min((opt_size - 112) / 8);
        if nsections > MAX_SECTIONS {
            return Err(Error::Format(format!("{nsections} sections")));
        }
        if !file_alignment.is_power_of_two() || !section_alignment.is_power_of_two() {
            return Err(Error::Format("alignment is not a power of two".into()));
        }
        let table = opt_offset + opt_size;
        let mut sections = Vec::with_capacity(nsections);
        for i in 0..nsections {
            let at = table + i * SECTION_LEN;
            let raw = data
                .get(at..at + SECTION_LEN)
                .ok_or_else(|| Error::Format("truncated section table".into()))?;
            let name_len = raw[..8].iter().position(|b| *b == 0).unwrap_or(8);
            let mut raw_name = [0u8; 8];
            raw_name.copy_from_slice(&raw[..8]);
            let s = Section {
                name: String::from_utf8_lossy(&raw[..name_len]).into_owned(),
                raw_name,
                virtual_size: u32_at(raw, 8)?,
                virtual_address: u32_at(raw, 12)?,
                raw_size: u32_at(raw, 16)?,
                raw_ptr: u32_at(raw, 20)?,
                characteristics: u32_at(raw, 36)?,
            };
            if s.raw_size > 0 && (s.raw_ptr as usize + s.raw_size as usize) > data.len() {
                return Err(Error::Format(format!(
                    "section {} data is past the end of the file",
                    s.name
                )));
            }
            sections.push(s);
        }
        Ok(Self {
            data,
            pe_offset,
            machine,
            timestamp,
            symbols,
            opt_offset,
            opt_size,
            section_alignment,
            file_alignment,
            size_of_headers,
            size_of_image,
            dirs,
            sections,
        })
    }

    /// A section's contents: its raw data cut to its virtual size (the rest is padding).
    pub fn section_data(&self, s: &Section) -> &'a [u8] {
        let len = s.raw_size.min(if s.virtual_size == 0 {
            s.raw_size
        } else {
            s.virtual_size
        }) as usize;
        let at = s.raw_ptr as usize;
        self.data.get(at..at + len).unwrap_or_default()
    }

    /// The first section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Data directory `i` as (RVA or file offset, size).
    pub fn dir(&self, i: usize) -> Option<(u32, u32)> {
        if i >= self.dirs {
            return None;
        }
        let at = self.opt_offset + 112 + 8 * i;
        Some((u32_at(self.data, at).ok()?, u32_at(self.data, at + 4).ok()?))
    }

    /// The certificate table (Authenticode signatures): file offset and size, if signed.
    pub fn certificate_table(&self) -> Option<(usize, usize)> {
        self.dir(DIR_SECURITY)
            .filter(|(at, size)| *at != 0 && *size != 0)
            .map(|(at, size)| (at as usize, size as usize))
    }

    /// The PKCS#7 blobs of the certificate table (`WIN_CERTIFICATE` entries of type
    /// `PKCS_SIGNED_DATA`).
    pub fn signatures(&self) -> Vec<&'a [u8]> {
        let Some((at, size)) = self.certificate_table() else {
            return Vec::new();
        };
        let Some(table) = self.data.get(at..at.saturating_add(size)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= table.len() {
            let len = u32_at(table, i).unwrap_or(0) as usize;
            let kind = u16_at(table, i + 6).unwrap_or(0);
            if len < 8 || i + len > table.len() {
                break;
            }
            if kind == 2 {
                out.push(&table[i + 8..i + len]);
            }
            i += align(len as u64, 8) as usize;
        }
        out
    }

    /// The Authenticode digest (SHA-256) of the image: the headers without the checksum and
    /// the certificate-table entry, the sections in file order, and any data after them up to
    /// the certificate table.
    pub fn authenticode_sha256(&self) -> Result<[u8; 32], Error> {
        let mut h = sha2::Sha256::new();
        let d = self.data;
        let checksum = self.opt_offset + 64;
        let cert_dir = self.opt_offset + 112 + 8 * DIR_SECURITY;
        let headers = (self.size_of_headers as usize).min(d.len());
        if self.dirs <= DIR_SECURITY || cert_dir + 8 > headers {
            return Err(Error::Format("no certificate-table directory".into()));
        }
        h.update(&d[..checksum]);
        h.update(&d[checksum + 4..cert_dir]);
        h.update(&d[cert_dir + 8..headers]);
        let mut sections: Vec<&Section> = self.sections.iter().filter(|s| s.raw_size > 0).collect();
        sections.sort_by_key(|s| s.raw_ptr);
        // as the specification (and EDK2) count it: the data after SizeOfHeaders plus every
        // section's raw size, up to the file's end less the certificate table
        let mut hashed = headers;
        for s in sections {
            let at = s.raw_ptr as usize;
            let data = d
                .get(at..at + s.raw_size as usize)
                .ok_or_else(|| Error::Format(format!("section {} is truncated", s.name)))?;
            h.update(data);
            hashed += s.raw_size as usize;
        }
        let stop = d
            .len()
            .saturating_sub(self.certificate_table().map_or(0, |(_, n)| n));
        if stop > hashed {
            h.update(&d[hashed..stop]);
        }
        Ok(h.finalize().into())
    }
}

/// Where a new section's contents come from.
#[derive(Debug)]
pub enum Source {
    /// Bytes in memory (small sections: `.osrel`, `.cmdline`, …).
    Bytes(Vec<u8>),
    /// A file, streamed (`.linux`, `.initrd`).
    File(std::path::PathBuf),
}

impl Source {
    fn len(&self) -> Result<u64, Error> {
        match self {
            Source::Bytes(b) => Ok(b.len() as u64),
            Source::File(p) => std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| Error::Io {
                    what: format!("reading {}", p.display()),
                    source: e,
                }),
        }
    }

    /// Copies the contents into `w`, returning how many bytes.
    fn copy_to(&self, w: &mut dyn Write) -> Result<u64, Error> {
        let io = |what: String| move |e| Error::Io { what, source: e };
        match self {
            Source::Bytes(b) => w
                .write_all(b)
                .map(|_| b.len() as u64)
                .map_err(io("writing".into())),
            Source::File(p) => {
                let mut f =
                    std::fs::File::open(p).map_err(io(format!("opening {}", p.display())))?;
                std::io::copy(&mut f, w).map_err(io(format!("copying {}", p.display())))
            }
        }
    }

    /// Feeds the contents to `f` in pieces.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8])) -> Result<(), Error> {
        match self {
            Source::Bytes(b) => {
                f(b);
                Ok(())
            }
            Source::File(p) => {
                let io = |e| Error::Io {
                    what: format!("reading {}", p.display()),
                    source: e,
                };
                let mut r = std::fs::File::open(p).map_err(io)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = r.read(&mut buf).map_err(io)?;
                    if n == 0 {
                        return Ok(());
                    }
                    f(&buf[..n]);
                }
            }
        }
    }
}

/// Writes `stub` with `sections` appended, as Talos assembles a UKI: a fresh DOS header with
/// `e_lfanew` = 0x80, the stub's COFF and optional headers with `TimeDateStamp` = `timestamp`,
/// linker version and checksum zeroed, section count, code/data sizes, `SizeOfHeaders` and
/// `SizeOfImage` recomputed; the stub's sections keep their RVAs and are moved after the new
/// headers; the new sections follow the stub's last one, each at the section alignment,
/// with characteristics initialized data + read. A stub with COFF symbols is refused (strip
/// it first, [`strip_symbols`]). Returns the number of bytes written.
pub fn assemble(
    stub: &[u8],
    sections: &[(&str, Source)],
    timestamp: u32,
    w: &mut dyn Write,
) -> Result<u64, Error> {
    let pe = Pe::parse(stub)?;
    if pe.symbols != (0, 0) {
        return Err(Error::Refused(format!(
            "the stub carries a COFF symbol table ({} symbols at {:#x}); strip it first",
            pe.symbols.1, pe.symbols.0
        )));
    }
    if pe.certificate_table().is_some() {
        return Err(Error::Refused(
            "the stub is signed; use an unsigned stub".into(),
        ));
    }
    let total = pe.sections.len() + sections.len();
    if total > MAX_SECTIONS {
        return Err(Error::Refused(format!(
            "{total} sections (at most {MAX_SECTIONS})"
        )));
    }
    for (name, _) in sections {
        if name.is_empty() || name.len() > 8 {
            return Err(Error::Refused(format!(
                "section name {name:?} is not 1 to 8 bytes"
            )));
        }
    }
    let (fa, sa) = (
        u64::from(pe.file_alignment),
        u64::from(pe.section_alignment),
    );
    if !(512..=0x10000).contains(&fa) || sa < fa || sa > 0x10_0000 {
        return Err(Error::Refused(format!(
            "file alignment {fa:#x} / section alignment {sa:#x} (512 B..64 KiB, at most 1 MiB)"
        )));
    }
    let headers_len = align(
        (PE_OFFSET + 4 + COFF_LEN + pe.opt_size + SECTION_LEN * total) as u64,
        fa,
    );
    // the stub's sections, moved after the (maybe longer) headers in file order
    let mut table: Vec<Section> = pe.sections.clone();
    let mut raw_at = headers_len;
    let mut order: Vec<usize> = (0..table.len()).collect();
    order.sort_by_key(|i| table[*i].raw_ptr);
    for i in order {
        if table[i].raw_size > 0 {
            table[i].raw_ptr = raw_at as u32;
            raw_at += align(u64::from(table[i].raw_size), fa);
        }
    }
    let mut va = pe
        .sections
        .iter()
        .map(|s| {
            let vs = if s.virtual_size == 0 {
                s.raw_size
            } else {
                s.virtual_size
            };
            u64::from(s.virtual_address) + u64::from(vs)
        })
        .max()
        .unwrap_or(u64::from(pe.size_of_headers));
    let mut new = Vec::new();
    for (name, src) in sections {
        let len = src.len()?;
        va = align(va, sa);
        let raw = align(len, fa);
        if va + len > u64::from(u32::MAX) || raw_at + raw > u64::from(u32::MAX) {
            return Err(Error::Refused("the image would exceed 4 GiB".into()));
        }
        let mut raw_name = [0u8; 8];
        raw_name[..name.len()].copy_from_slice(name.as_bytes());
        new.push(Section {
            name: (*name).to_string(),
            raw_name,
            virtual_size: len as u32,
            virtual_address: va as u32,
            raw_size: raw as u32,
            raw_ptr: if raw == 0 { 0 } else { raw_at as u32 },
            characteristics: DATA_READ,
        });
        va += len;
        raw_at += raw;
    }
    table.extend(new);
    let size_of_image = align(va, sa);
    if size_of_image > u64::from(u32::MAX) {
        return Err(Error::Refused("the image would exceed 4 GiB".into()));
    }
    // the headers are mapped below the first section: they must not reach into it
    if let Some(first) = pe.sections.iter().map(|s| s.virtual_address).min()
        && headers_len > u64::from(first)
    {
        return Err(Error::Refused(format!(
            "{total} sections need {headers_len:#x} bytes of headers, past the stub's first section at {first:#x}"
        )));
    }

    // headers
    let mut h = vec![0u8; headers_len as usize];
    h[..0x40].copy_from_slice(&stub[..0x40]);
    h[0x3c..0x40].copy_from_slice(&(PE_OFFSET as u32).to_le_bytes());
    h[PE_OFFSET..PE_OFFSET + 4].copy_from_slice(b"PE\0\0");
    let coff = PE_OFFSET + 4;
    h[coff..coff + COFF_LEN].copy_from_slice(&stub[pe.pe_offset + 4..pe.pe_offset + 4 + COFF_LEN]);
    h[coff + 2..coff + 4].copy_from_slice(&(total as u16).to_le_bytes());
    h[coff + 4..coff + 8].copy_from_slice(&timestamp.to_le_bytes());
    let opt = coff + COFF_LEN;
    h[opt..opt + pe.opt_size].copy_from_slice(&stub[pe.opt_offset..pe.opt_offset + pe.opt_size]);
    h[opt + 2] = 0; // MajorLinkerVersion
    h[opt + 3] = 0; // MinorLinkerVersion
    let (mut code, mut data) = (0u64, 0u64);
    for s in &table {
        if s.characteristics & 0x20 != 0 {
            code += u64::from(s.raw_size);
        }
        if s.characteristics & 0x40 != 0 {
            data += u64::from(s.raw_size);
        }
    }
    h[opt + 4..opt + 8].copy_from_slice(&(code as u32).to_le_bytes());
    h[opt + 8..opt + 12].copy_from_slice(&(data as u32).to_le_bytes());
    h[opt + 56..opt + 60].copy_from_slice(&(size_of_image as u32).to_le_bytes());
    h[opt + 60..opt + 64].copy_from_slice(&(headers_len as u32).to_le_bytes());
    h[opt + 64..opt + 68].copy_from_slice(&0u32.to_le_bytes()); // CheckSum
    let st = opt + pe.opt_size;
    for (i, s) in table.iter().enumerate() {
        let at = st + i * SECTION_LEN;
        h[at..at + 8].copy_from_slice(&s.raw_name);
        h[at + 8..at + 12].copy_from_slice(&s.virtual_size.to_le_bytes());
        h[at + 12..at + 16].copy_from_slice(&s.virtual_address.to_le_bytes());
        h[at + 16..at + 20].copy_from_slice(&s.raw_size.to_le_bytes());
        h[at + 20..at + 24].copy_from_slice(&s.raw_ptr.to_le_bytes());
        // relocations and line numbers: none
        h[at + 36..at + 40].copy_from_slice(&s.characteristics.to_le_bytes());
    }
    let io = |what: &str| {
        let what = what.to_string();
        move |e| Error::Io { what, source: e }
    };
    w.write_all(&h).map_err(io("writing the PE headers"))?;
    let mut written = h.len() as u64;
    let pad = |w: &mut dyn Write, n: u64| -> Result<(), Error> {
        std::io::copy(&mut std::io::repeat(0).take(n), w)
            .map(|_| ())
            .map_err(io("padding a section"))
    };
    // the stub's sections, in file order, then the new ones
    let mut stub_sections: Vec<&Section> = pe.sections.iter().filter(|s| s.raw_size > 0).collect();
    stub_sections.sort_by_key(|s| s.raw_ptr);
    for s in stub_sections {
        let at = s.raw_ptr as usize;
        let bytes = &stub[at..at + s.raw_size as usize];
        w.write_all(bytes).map_err(io("writing a stub section"))?;
        let raw = align(u64::from(s.raw_size), fa);
        pad(w, raw - u64::from(s.raw_size))?;
        written += raw;
    }
    for ((name, src), s) in sections.iter().zip(&table[pe.sections.len()..]) {
        let n = src.copy_to(w)?;
        if n != u64::from(s.virtual_size) {
            return Err(Error::Refused(format!(
                "section {name} changed size while it was written"
            )));
        }
        pad(w, u64::from(s.raw_size) - n)?;
        written += u64::from(s.raw_size);
    }
    Ok(written)
}

/// `image` without its COFF symbol and string tables (which must be at the end of the file,
/// after every section, as linkers put them): pointer and count zeroed, the tail cut.
pub fn strip_symbols(image: &[u8]) -> Result<Vec<u8>, Error> {
    let pe = Pe::parse(image)?;
    let (ptr, count) = pe.symbols;
    if (ptr, count) == (0, 0) {
        return Ok(image.to_vec());
    }
    // after every section and the headers (the section table included)
    let table_end = pe.opt_offset + pe.opt_size + SECTION_LEN * pe.sections.len();
    let end = pe
        .sections
        .iter()
        .map(|s| s.raw_ptr as usize + s.raw_size as usize)
        .chain([pe.size_of_headers as usize, table_end])
        .max()
        .unwrap_or(table_end);
    if (ptr as usize) < end || ptr as usize > image.len() || pe.certificate_table().is_some() {
        return Err(Error::Refused(
            "the symbol table is not at the end of the image".into(),
        ));
    }
    let mut out = image[..ptr as usize].to_vec();
    let coff = pe.pe_offset + 4;
    out[coff + 8..coff + 16].fill(0);
    Ok(out)
}

/// The kernel release of an x86 bzImage (`6.1.0-28-amd64`): the boot protocol header's
/// version string (offset at 0x20E, + 0x200), up to its first space; `None` when absent.
pub fn bzimage_release(kernel: &[u8]) -> Option<String> {
    if kernel.get(0x202..0x206) != Some(b"HdrS") {
        return None;
    }
    let off = usize::from(u16::from_le_bytes([
        *kernel.get(0x20e)?,
        *kernel.get(0x20f)?,
    ])) + 0x200;
    let s = kernel.get(off..(off + 256).min(kernel.len()))?;
    let end = s.iter().position(|b| *b == 0 || *b == b' ')?;
    let v = std::str::from_utf8(&s[..end]).ok()?;
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic())).then(|| v.to_string())
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;
