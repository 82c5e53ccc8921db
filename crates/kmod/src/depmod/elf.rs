//! A minimal, bounds-checked ELF64 little-endian reader: just what depmod needs from a kernel
//! module (section lookup by name, `.modinfo`, `__ksymtab_strings`, `__versions`, `.symtab` and
//! `.strtab`). Every offset read from the file is checked; garbage yields an [`ElfError`], never a
//! panic.
//!
//! The extraction rules mirror kmod's `libkmod/libkmod-elf.c` (`kmod_elf_new`,
//! `kmod_elf_get_section`, `kmod_elf_get_strings`, `kmod_elf_get_symbols`,
//! `kmod_elf_get_dependency_symbols`); where kmod silently skips a malformed piece this reader
//! reports it instead (see the individual functions).

/// Why a module file is not a usable ELF64 little-endian object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// Shorter than an ELF64 header.
    #[error("file is too short for an ELF64 header ({0} bytes)")]
    TooShort(usize),
    /// No `\x7fELF` magic (also what gzip-compressed modules look like: kmod as shipped by
    /// Debian is built without zlib, so it does not read them either).
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    /// `EI_CLASS` is not `ELFCLASS64`.
    #[error("unsupported ELF class {0} (only ELF64 is supported)")]
    Class(u8),
    /// `EI_DATA` is not `ELFDATA2LSB`.
    #[error("unsupported ELF data encoding {0} (only little-endian is supported)")]
    Encoding(u8),
    /// `e_shentsize` is not 64.
    #[error("unexpected section header size {0} (expected 64)")]
    SectionHeaderSize(u16),
    /// The section header table does not fit in the file.
    #[error(
        "section header table ({count} entries at offset {offset}) extends past the end of the file"
    )]
    SectionTable {
        /// `e_shoff`.
        offset: u64,
        /// `e_shnum`.
        count: u16,
    },
    /// `e_shstrndx` does not name a section.
    #[error("invalid section name table index {0}")]
    NameTableIndex(u16),
    /// A section's contents do not fit in the file.
    #[error("section {name} (offset {offset}, size {size}) extends past the end of the file")]
    SectionRange {
        /// Section name.
        name: String,
        /// `sh_offset`.
        offset: u64,
        /// `sh_size`.
        size: u64,
    },
    /// The section name table is empty or does not end with NUL.
    #[error("section name table is empty or not NUL-terminated")]
    NameTable,
    /// `.symtab` size is not a multiple of the symbol entry size.
    #[error(".symtab size {0} is not a multiple of 24")]
    SymtabSize(u64),
    /// A symbol name offset points outside `.strtab`.
    #[error(".symtab entry {index} has name offset {offset} outside .strtab ({len} bytes)")]
    SymbolName {
        /// Symbol index.
        index: usize,
        /// `st_name`.
        offset: u32,
        /// `.strtab` size.
        len: u64,
    },
}

const EHDR_SIZE: usize = 64;
const SHDR_SIZE: u64 = 64;
const SYM_SIZE: u64 = 24;
/// `struct modversion_info` on 64-bit: u64 crc + 56-byte name.
const MODVERSION_SIZE: u64 = 64;
const MODVERSION_CRC: u64 = 8;

fn rd_u16(d: &[u8], off: u64) -> Option<u16> {
    let o = usize::try_from(off).ok()?;
    let b = d.get(o..o.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn rd_u32(d: &[u8], off: u64) -> Option<u32> {
    let o = usize::try_from(off).ok()?;
    let b: [u8; 4] = d.get(o..o.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn rd_u64(d: &[u8], off: u64) -> Option<u64> {
    let o = usize::try_from(off).ok()?;
    let b: [u8; 8] = d.get(o..o.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// The NUL-terminated string at `off` (bounded by the end of `d`; empty if `off` is outside).
fn cstr(d: &[u8], off: u64) -> &[u8] {
    let Some(rest) = usize::try_from(off).ok().and_then(|o| d.get(o..)) else {
        return &[];
    };
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    &rest[..end]
}

/// Splits a string-table section the way `kmod_elf_get_strings` does: leading NUL padding is
/// skipped, a remainder of at most one byte yields nothing, otherwise every non-empty
/// NUL-separated string is returned (a final string without NUL included).
pub(crate) fn split_strings(mut s: &[u8]) -> Vec<&[u8]> {
    while s.len() > 1 && s[0] == 0 {
        s = &s[1..];
    }
    if s.len() <= 1 {
        return Vec::new();
    }
    s.split(|&b| b == 0).filter(|x| !x.is_empty()).collect()
}

/// A parsed ELF64 little-endian image.
pub(crate) struct Elf<'a> {
    data: &'a [u8],
    shoff: u64,
    shnum: u16,
    /// Section name string table (`e_shstrndx`).
    names: &'a [u8],
}

/// `.symtab` with its `.strtab` (and the file offset of `.strtab`: names are read up to their
/// NUL like kmod does).
struct Symtab<'a> {
    symtab: &'a [u8],
    stroff: u64,
    strtab: &'a [u8],
}

/// One section header (the fields depmod needs).
struct Shdr {
    name: u32,
    offset: u64,
    size: u64,
}

impl<'a> Elf<'a> {
    /// Checks the header like `kmod_elf_new`: magic, class, encoding, section header size,
    /// section table inside the file, and a NUL-terminated section name table.
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        // kmod: size must be strictly larger than the header
        if data.len() <= EHDR_SIZE {
            return Err(ElfError::TooShort(data.len()));
        }
        if data[4] != 2 {
            return Err(ElfError::Class(data[4]));
        }
        if data[5] != 1 {
            return Err(ElfError::Encoding(data[5]));
        }
        let field16 = |off| rd_u16(data, off).ok_or(ElfError::TooShort(data.len()));
        let shoff = rd_u64(data, 0x28).ok_or(ElfError::TooShort(data.len()))?;
        let shentsize = field16(0x3a)?;
        let shnum = field16(0x3c)?;
        let shstrndx = field16(0x3e)?;
        if u64::from(shentsize) != SHDR_SIZE {
            return Err(ElfError::SectionHeaderSize(shentsize));
        }
        let table_end = (u64::from(shnum) * SHDR_SIZE).checked_add(shoff);
        if table_end.is_none_or(|e| e > data.len() as u64) {
            return Err(ElfError::SectionTable {
                offset: shoff,
                count: shnum,
            });
        }
        let mut elf = Elf {
            data,
            shoff,
            shnum,
            names: &[],
        };
        if shstrndx == 0 || shstrndx >= shnum {
            return Err(ElfError::NameTableIndex(shstrndx));
        }
        let sh = elf.shdr(shstrndx);
        let names = elf.body(&sh).ok_or_else(|| ElfError::SectionRange {
            name: "(section names)".into(),
            offset: sh.offset,
            size: sh.size,
        })?;
        if names.last() != Some(&0) {
            return Err(ElfError::NameTable);
        }
        elf.names = names;
        Ok(elf)
    }

    /// Header of section `idx` (`idx < shnum`, so inside the file: checked in `parse`).
    fn shdr(&self, idx: u16) -> Shdr {
        let base = self.shoff + u64::from(idx) * SHDR_SIZE;
        Shdr {
            name: rd_u32(self.data, base).unwrap_or(0),
            offset: rd_u64(self.data, base + 24).unwrap_or(u64::MAX),
            size: rd_u64(self.data, base + 32).unwrap_or(u64::MAX),
        }
    }

    fn body(&self, sh: &Shdr) -> Option<&'a [u8]> {
        let end = sh.offset.checked_add(sh.size)?;
        let (o, e) = (usize::try_from(sh.offset).ok()?, usize::try_from(end).ok()?);
        self.data.get(o..e)
    }

    /// Contents of the first section (index ≥ 1) called `name`, with its file offset, like
    /// `kmod_elf_get_section`. Unlike kmod, which skips a section whose contents lie outside the
    /// file, a matching section out of range is an error.
    pub(crate) fn section(&self, name: &str) -> Result<Option<(u64, &'a [u8])>, ElfError> {
        for i in 1..self.shnum {
            let sh = self.shdr(i);
            if u64::from(sh.name) >= self.names.len() as u64 {
                continue;
            }
            if cstr(self.names, u64::from(sh.name)) != name.as_bytes() {
                continue;
            }
            return match self.body(&sh) {
                Some(b) => Ok(Some((sh.offset, b))),
                None => Err(ElfError::SectionRange {
                    name: name.into(),
                    offset: sh.offset,
                    size: sh.size,
                }),
            };
        }
        Ok(None)
    }

    /// `.symtab` and `.strtab` (by name, as kmod looks them up), if both exist.
    fn symtab(&self) -> Result<Option<Symtab<'a>>, ElfError> {
        let Some((stroff, strtab)) = self.section(".strtab")? else {
            return Ok(None);
        };
        let Some((_, symtab)) = self.section(".symtab")? else {
            return Ok(None);
        };
        if !(symtab.len() as u64).is_multiple_of(SYM_SIZE) {
            return Err(ElfError::SymtabSize(symtab.len() as u64));
        }
        Ok(Some(Symtab {
            symtab,
            stroff,
            strtab,
        }))
    }

    /// `(index, st_name, st_shndx)` of every symbol after the null symbol.
    fn symbols(symtab: &[u8]) -> impl Iterator<Item = (usize, u32, u16)> + '_ {
        symtab
            .chunks_exact(SYM_SIZE as usize)
            .enumerate()
            .skip(1)
            .map(|(i, s)| {
                let name = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                let shndx = u16::from_le_bytes([s[6], s[7]]);
                (i, name, shndx)
            })
    }

    /// Symbol name `off` of `.strtab` at file offset `stroff` (kmod reads up to the NUL).
    fn symbol_name(
        &self,
        index: usize,
        off: u32,
        stroff: u64,
        strtab: &[u8],
    ) -> Result<&'a [u8], ElfError> {
        if u64::from(off) >= strtab.len() as u64 {
            return Err(ElfError::SymbolName {
                index,
                offset: off,
                len: strtab.len() as u64,
            });
        }
        Ok(cstr(self.data, stroff + u64::from(off)))
    }

    /// The strings of `.modinfo` (`key=value`), in file order; none without the section.
    pub(crate) fn modinfo(&self) -> Result<Vec<&'a [u8]>, ElfError> {
        Ok(self
            .section(".modinfo")?
            .map(|(_, b)| split_strings(b))
            .unwrap_or_default())
    }

    /// Exported symbols, like `kmod_elf_get_symbols`: the names of the `__crc_*` symbols of
    /// `.symtab` (prefix removed) when there are any (modversions kernels), else every string of
    /// `__ksymtab_strings`.
    pub(crate) fn exported_symbols(&self) -> Result<Vec<&'a [u8]>, ElfError> {
        const CRC: &[u8] = b"__crc_";
        if let Some(Symtab {
            symtab,
            stroff,
            strtab,
        }) = self.symtab()?
        {
            let mut out = Vec::new();
            for (i, name_off, _) in Self::symbols(symtab) {
                let name = self.symbol_name(i, name_off, stroff, strtab)?;
                if let Some(sym) = name.strip_prefix(CRC) {
                    out.push(sym);
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        Ok(self
            .section("__ksymtab_strings")?
            .map(|(_, b)| split_strings(b))
            .unwrap_or_default())
    }

    /// Symbols the module needs, like `kmod_elf_get_dependency_symbols`: every undefined
    /// (`st_shndx == SHN_UNDEF`), non-empty symbol of `.symtab` in table order, then the
    /// `__versions` entries that matched none of them (`module_layout`), in their order.
    /// Without `.symtab`/`.strtab` the module needs nothing (kmod behaves the same).
    pub(crate) fn dependency_symbols(&self) -> Result<Vec<&'a [u8]>, ElfError> {
        let Some(Symtab {
            symtab,
            stroff,
            strtab,
        }) = self.symtab()?
        else {
            return Ok(Vec::new());
        };
        // __versions: ignored when absent or not a whole number of entries (as kmod does)
        let versions: Vec<&[u8]> = match self.section("__versions")? {
            Some((off, b)) if (b.len() as u64).is_multiple_of(MODVERSION_SIZE) => {
                (0..b.len() as u64 / MODVERSION_SIZE)
                    .map(|i| cstr(self.data, off + i * MODVERSION_SIZE + MODVERSION_CRC))
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut visited = vec![false; versions.len()];
        let mut out = Vec::new();
        for (i, name_off, shndx) in Self::symbols(symtab) {
            if shndx != 0 {
                continue;
            }
            let name = self.symbol_name(i, name_off, stroff, strtab)?;
            if name.is_empty() {
                continue;
            }
            if let Some(v) = versions.iter().position(|v| *v == name) {
                visited[v] = true;
            }
            out.push(name);
        }
        out.extend(
            versions
                .iter()
                .zip(&visited)
                .filter(|(_, seen)| !**seen)
                .map(|(v, _)| *v),
        );
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an ELF64 LE relocatable with the given named sections (plus the null section and
    /// `.shstrtab`, which comes last).
    pub(crate) fn build(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut name_offs = Vec::new();
        for (n, _) in sections {
            name_offs.push(names.len() as u32);
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        let shstr_name = names.len() as u32;
        names.extend_from_slice(b".shstrtab\0");
        let mut out = vec![0u8; 64];
        let mut placed = Vec::new();
        for (_, body) in sections {
            placed.push((out.len() as u64, body.len() as u64));
            out.extend_from_slice(body);
        }
        let shstr_off = out.len() as u64;
        out.extend_from_slice(&names);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        let shnum = sections.len() as u16 + 2;
        out.extend_from_slice(&[0u8; 64]);
        let mut shdr = |name: u32, off: u64, size: u64| {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&1u32.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&h);
        };
        for (i, (off, size)) in placed.iter().enumerate() {
            shdr(name_offs[i], *off, *size);
        }
        shdr(shstr_name, shstr_off, names.len() as u64);
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&(shnum - 1).to_le_bytes());
        out
    }

    /// A `.symtab` body: the null symbol then `(st_name, st_shndx)` entries.
    pub(crate) fn symtab(syms: &[(u32, u16)]) -> Vec<u8> {
        let mut out = vec![0u8; 24];
        for (name, shndx) in syms {
            let mut s = [0u8; 24];
            s[0..4].copy_from_slice(&name.to_le_bytes());
            s[4] = 0x10; // STB_GLOBAL
            s[6..8].copy_from_slice(&shndx.to_le_bytes());
            out.extend_from_slice(&s);
        }
        out
    }

    #[test]
    fn strings_like_kmod() {
        assert_eq!(
            split_strings(b"\0\0a=1\0\0b=2\0"),
            vec![&b"a=1"[..], b"b=2"]
        );
        assert_eq!(split_strings(b"a=1\0b"), vec![&b"a=1"[..], b"b"]);
        assert!(split_strings(b"\0\0\0").is_empty());
        assert!(split_strings(b"x").is_empty());
        assert!(split_strings(b"").is_empty());
    }

    #[test]
    fn sections_symbols_versions() {
        let strtab = b"\0foo\0__crc_foo\0bar\0local\0";
        let st = symtab(&[(1, 0), (5, 3), (15, 0), (19, 2), (0, 0)]);
        let mut versions = Vec::new();
        for n in ["bar", "module_layout"] {
            let mut e = [0u8; 64];
            e[8..8 + n.len()].copy_from_slice(n.as_bytes());
            versions.extend_from_slice(&e);
        }
        let f = build(&[
            (".modinfo", b"alias=x\0softdep=pre: y\0"),
            (".strtab", strtab),
            (".symtab", &st),
            ("__versions", &versions),
            ("__ksymtab_strings", b"ignored\0"),
        ]);
        let e = Elf::parse(&f).unwrap();
        assert_eq!(
            e.modinfo().unwrap(),
            vec![&b"alias=x"[..], b"softdep=pre: y"]
        );
        assert_eq!(e.exported_symbols().unwrap(), vec![&b"foo"[..]]);
        assert_eq!(
            e.dependency_symbols().unwrap(),
            vec![&b"foo"[..], b"bar", b"module_layout"]
        );
    }

    #[test]
    fn no_symtab_falls_back() {
        let f = build(&[("__ksymtab_strings", b"\0a\0b\0")]);
        let e = Elf::parse(&f).unwrap();
        assert_eq!(e.exported_symbols().unwrap(), vec![&b"a"[..], b"b"]);
        assert!(e.dependency_symbols().unwrap().is_empty());
        assert!(e.modinfo().unwrap().is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let f = build(&[
            (".modinfo", b"alias=x"),
            (".strtab", b"\0abc\0"),
            (".symtab", &symtab(&[(1, 0)])),
        ]);
        // every truncation and every single-byte corruption: errors allowed, panics not
        for len in 0..f.len() {
            if let Ok(e) = Elf::parse(&f[..len]) {
                let _ = (e.modinfo(), e.exported_symbols(), e.dependency_symbols());
            }
        }
        for i in 0..f.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut g = f.clone();
                g[i] = v;
                if let Ok(e) = Elf::parse(&g) {
                    let _ = (e.modinfo(), e.exported_symbols(), e.dependency_symbols());
                }
            }
        }
    }
}
