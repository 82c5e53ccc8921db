//! A pure-Rust `depmod`: regenerates the text metadata of a kernel module tree exactly as kmod's
//! `depmod -b BASE KVER` (kmod 30, Debian bookworm) writes it with an empty configuration
//! (`-C <empty dir>`: no `/etc/depmod.d`, so the search list is just the default `updates`).
//!
//! Written: `modules.dep`, `modules.alias`, `modules.softdep`, `modules.devname` (byte-identical
//! to depmod, including line order, dependency order and headers) and `modules.symbols` (same
//! lines as depmod, but sorted: depmod walks a hash table there). Out of scope: the binary
//! indexes (`modules.dep.bin`, `modules.alias.bin`, `modules.symbols.bin`,
//! `modules.builtin.bin`, `modules.builtin.alias.bin`), which libkmod (`modprobe`) reads instead
//! of the text files; stale ones must not be left next to regenerated text files.
//! `modules.order` is an input; `modules.builtin`/`modules.builtin.modinfo` only feed the binary
//! indexes (checked against kmod 30: a module file named like a built-in module still gets its
//! aliases from its own `.modinfo`), so they are not read.
//!
//! The algorithm follows kmod's `tools/depmod.c`:
//! * walk (`depmod_modules_search_dir`): every file ending in `.ko`, `.ko.xz` or `.ko.zst`
//!   (Debian's kmod has no zlib, so `.ko.gz` is not a module), entries named `build` or `source`
//!   skipped at every level, symlinks followed. Same-named modules (name = file name up to the
//!   first `.`, `-` → `_`, `modname_normalize`) are resolved by
//!   `depmod_module_is_higher_priority` with the default search list `updates`: a later module
//!   replaces an earlier one only if it lies under `updates/`. depmod walks in `readdir` order;
//!   this walk is sorted by file name, which only matters for duplicate names.
//! * module order (`depmod_modules_build_array`, `depmod_modules_sort`): the modules are taken
//!   in the iteration order of kmod's 512-bucket hash table keyed by module name
//!   (`hash_superfast`, entries of a bucket sorted by `strcmp`), then stably sorted by their line
//!   in `modules.order` (matched on the path with the extension cut to `.ko`); modules missing
//!   from `modules.order` keep the hash order after all listed ones. Without `modules.order`, or
//!   if one of its lines lacks the trailing newline, nothing is sorted.
//! * symbols (`depmod_load_modules`): each module's exported symbols are added in module
//!   order, a later exporter of the same name replacing the earlier one.
//! * dependencies (`depmod_load_module_dependencies`): each undefined symbol (plus unmatched
//!   `__versions` entries), a leading `.` removed, that some module exports makes that module a
//!   direct dependency (first occurrence order); `.modinfo` `depends=` is not used.
//! * `dep_sort_idx` (`depmod_calculate_dependencies`): a topological sort by Kahn's algorithm
//!   with a LIFO stack, seeded with the unused modules in module order; a module's dependencies
//!   are pushed in their first-occurrence order. A dependency cycle is an error (depmod fails
//!   too).
//! * `modules.dep` (`output_deps`): per module, all transitive dependencies sorted by
//!   `dep_sort_idx`. `modules.alias`/`modules.softdep`: `.modinfo` `alias=`/`softdep=` in file
//!   order. `modules.devname` (`output_devname`): the first `devname:` together with a
//!   `char-major-M-m`/`block-major-M-m` alias.
//!
//! Deliberate differences: depmod logs and skips an unreadable or corrupt module (listing it
//! without dependencies); [`generate`] fails with an error naming the file. Values that are not
//! UTF-8 (aliases, softdeps, exported symbols, paths) are errors too.

mod elf;

pub use elf::ElfError;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Errors of [`generate`] and [`Output::write_to`].
#[derive(Debug, thiserror::Error)]
pub enum DepmodError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A module is not a valid ELF64 little-endian object.
    #[error("{}: corrupt module: {source}", path.display())]
    Elf {
        /// The module at fault.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ElfError,
    },
    /// A compressed module could not be decompressed.
    #[error("{}: cannot decompress: {source}", path.display())]
    Decompress {
        /// The module at fault.
        path: PathBuf,
        /// The decoder error.
        #[source]
        source: io::Error,
    },
    /// A module carries `.modinfo` or symbol text that cannot be written (not UTF-8).
    #[error("{}: bad module info: {reason}", path.display())]
    Modinfo {
        /// The module at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A path below the module directory is not valid UTF-8.
    #[error("{}: path is not valid UTF-8", .0.display())]
    NonUtf8Path(PathBuf),
    /// Directories nest too deeply (a symlink loop).
    #[error("{}: directories nest too deeply (symlink loop?)", .0.display())]
    TooDeep(PathBuf),
    /// More modules than depmod's 16-bit indexes allow.
    #[error("{0} modules: depmod supports at most 65534")]
    TooManyModules(usize),
    /// Modules depend on each other in a cycle (depmod fails as well).
    #[error("modules in dependency cycles: {}", .0.join(", "))]
    Cycle(Vec<String>),
}

/// The text files depmod writes, in depmod's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// `modules.dep`.
    pub dep: String,
    /// `modules.alias`.
    pub alias: String,
    /// `modules.softdep`.
    pub softdep: String,
    /// `modules.symbols`, lines sorted (header first).
    pub symbols: String,
    /// `modules.devname`.
    pub devname: String,
}

impl Output {
    /// The files in depmod's write order, by name.
    pub fn files(&self) -> [(&'static str, &str); 5] {
        [
            ("modules.dep", &self.dep),
            ("modules.alias", &self.alias),
            ("modules.softdep", &self.softdep),
            ("modules.symbols", &self.symbols),
            ("modules.devname", &self.devname),
        ]
    }

    /// Writes the files into `moddir`, each atomically (`<name>.tmp`, mode 0644, then rename).
    /// The binary indexes are not written.
    pub fn write_to(&self, moddir: &Path) -> Result<(), DepmodError> {
        use std::os::unix::fs::OpenOptionsExt;
        for (name, text) in self.files() {
            let tmp = moddir.join(format!("{name}.tmp"));
            let dst = moddir.join(name);
            let io = |path: &Path| {
                let path = path.to_path_buf();
                move |source| DepmodError::Io { path, source }
            };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all(text.as_bytes()).map_err(io(&tmp))?;
            drop(f);
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        }
        Ok(())
    }
}

/// Module file extensions depmod (kmod 30, +XZ +ZSTD -ZLIB) recognises.
const EXTS: [&str; 3] = [".ko", ".ko.xz", ".ko.zst"];
/// Directory depth beyond which the walk gives up (symlink loops).
const MAX_DEPTH: usize = 64;
/// Decompressed size limit (hostile input).
const MAX_MODULE: u64 = 1 << 30;
/// kmod's `PATH_MAX`-sized `fgets` buffer for `modules.order`.
const LINE_MAX: usize = 4096;

/// Module name of a file name, kmod's `modname_normalize`: up to the first `.`, `-` → `_`.
fn modname(file_name: &str) -> String {
    file_name.split('.').next().unwrap_or("").replace('-', "_")
}

/// kmod's `hash_superfast` (Paul Hsieh), on a little-endian host with signed `char`.
fn hash_superfast(key: &[u8]) -> u32 {
    let sc = |b: u8| i32::from(b as i8) as u32;
    let mut hash = key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        hash = hash.wrapping_add(u32::from(u16::from_le_bytes([c[0], c[1]])));
        let tmp = (u32::from(u16::from_le_bytes([c[2], c[3]])) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    match *chunks.remainder() {
        [a, b, c] => {
            hash = hash.wrapping_add(u32::from(u16::from_le_bytes([a, b])));
            hash ^= hash << 16;
            hash ^= sc(c) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        [a, b] => {
            hash = hash.wrapping_add(u32::from(u16::from_le_bytes([a, b])));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        [a] => {
            hash = hash.wrapping_add(sc(a));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash = hash.wrapping_add(hash >> 6);
    hash
}

/// A module file found by the walk.
struct Found {
    /// Path relative to the module directory, `/`-separated.
    relpath: String,
    /// Path on disk.
    path: PathBuf,
    name: String,
    /// Length of the directory part of `relpath` including the final `/`.
    dirlen: usize,
}

/// Whether a file name ends in a module extension (`path_ends_with_kmod_ext`).
fn is_module_name(name: &[u8]) -> bool {
    EXTS.iter()
        .any(|x| name.len() > x.len() && name.ends_with(x.as_bytes()))
}

/// Sorted recursive walk collecting module files (depmod's `depmod_modules_search_dir`).
/// `rel` is the directory's path relative to the module directory, with a trailing `/`.
fn walk(dir: &Path, rel: &[u8], depth: usize, out: &mut Vec<Found>) -> Result<(), DepmodError> {
    use std::os::unix::ffi::OsStrExt;
    if depth > MAX_DEPTH {
        return Err(DepmodError::TooDeep(dir.to_path_buf()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DepmodError::Io { path, source }
    };
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = e.map_err(io(dir))?.file_name();
        if name != "build" && name != "source" {
            entries.push(name);
        }
    }
    entries.sort_unstable();
    for name in entries {
        let path = dir.join(&name);
        let bytes = name.as_bytes();
        let relpath = [rel, bytes].concat();
        // like fstatat(): symlinks are followed; depmod logs and skips what it cannot stat,
        // this walk only tolerates that for entries that are not named like modules
        let md = match std::fs::metadata(&path) {
            Ok(md) => md,
            Err(_) if !is_module_name(bytes) => continue,
            Err(source) => return Err(DepmodError::Io { path, source }),
        };
        if md.is_dir() {
            walk(&path, &[&relpath[..], b"/"].concat(), depth + 1, out)?;
        } else if md.is_file() && is_module_name(bytes) {
            let (Ok(relpath), Some(file)) = (String::from_utf8(relpath), name.to_str()) else {
                return Err(DepmodError::NonUtf8Path(path));
            };
            out.push(Found {
                name: modname(file),
                relpath,
                path,
                dirlen: rel.len(),
            });
        }
    }
    Ok(())
}

/// The module set after depmod's duplicate-name resolution with the default search list
/// (`updates`): a later module replaces an earlier one only if it lies under `updates/`.
fn resolve(found: Vec<Found>) -> Vec<Found> {
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut slots: Vec<Option<Found>> = Vec::new();
    for f in found {
        match by_name.get(&f.name) {
            None => {
                by_name.insert(f.name.clone(), slots.len());
                slots.push(Some(f));
            }
            Some(&i) => {
                if f.relpath.starts_with("updates/") {
                    slots[i] = Some(f);
                }
            }
        }
    }
    slots.into_iter().flatten().collect()
}

/// `sort_idx` of each module from `modules.order` (`depmod_modules_sort`), or `None` when
/// depmod would not sort (no `modules.order`, or a line without its newline).
fn order_indexes(text: &[u8], uncrelpaths: &HashMap<&[u8], usize>, n: usize) -> Option<Vec<i64>> {
    // fgets() into a PATH_MAX buffer: chunks end after '\n' or at LINE_MAX - 1 bytes
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        let take = nl.min(LINE_MAX - 1);
        let chunk = &rest[..take];
        rest = &rest[take..];
        // strlen()
        let len = chunk.iter().position(|&b| b == 0).unwrap_or(chunk.len());
        chunks.push(&chunk[..len]);
    }
    if chunks
        .iter()
        .any(|c| !c.is_empty() && c.last() != Some(&b'\n'))
    {
        return None;
    }
    let total = chunks.len() as i64 + 1;
    let mut sort_idx = vec![1i64; n];
    for (i, c) in chunks.iter().enumerate() {
        let Some((_, line)) = c.split_last() else {
            continue;
        };
        if let Some(&m) = uncrelpaths.get(line) {
            sort_idx[m] = i as i64 + 1 - total;
        }
    }
    Some(sort_idx)
}

/// What depmod reads from one module.
struct ModData {
    exports: Vec<Vec<u8>>,
    deps: Vec<Vec<u8>>,
    /// `.modinfo` entries with key `alias` or `softdep`, in file order: (is_alias, value).
    info: Vec<(bool, String)>,
}

/// Reads a module, decompressing by magic like `kmod_file_open` (xz, zstd; anything else is
/// read as is).
fn read_module(path: &Path) -> Result<Vec<u8>, DepmodError> {
    let raw = std::fs::read(path).map_err(|source| DepmodError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let dec = |r: &mut dyn Read| -> Result<Vec<u8>, DepmodError> {
        let mut out = Vec::new();
        r.take(MAX_MODULE + 1)
            .read_to_end(&mut out)
            .map_err(|source| DepmodError::Decompress {
                path: path.to_path_buf(),
                source,
            })?;
        if out.len() as u64 > MAX_MODULE {
            return Err(DepmodError::Decompress {
                path: path.to_path_buf(),
                source: io::Error::other("decompressed module larger than 1 GiB"),
            });
        }
        Ok(out)
    };
    if raw.starts_with(b"\xfd7zXZ\0") {
        dec(&mut liblzma::read::XzDecoder::new_multi_decoder(&raw[..]))
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut d = zstd::stream::read::Decoder::new(&raw[..]).map_err(|source| {
            DepmodError::Decompress {
                path: path.to_path_buf(),
                source,
            }
        })?;
        dec(&mut d)
    } else {
        Ok(raw)
    }
}

/// Parses one module file.
fn load(path: &Path) -> Result<ModData, DepmodError> {
    parse_module(path, &read_module(path)?)
}

/// Parses one (decompressed) module image as depmod does: its ELF sections, the aliases and
/// soft dependencies of `.modinfo`, the exported and the needed symbols. Returns how many of
/// each it found. The fuzz target `modules_dep` drives it.
pub fn inspect_module(data: &[u8]) -> Result<(usize, usize, usize), DepmodError> {
    let m = parse_module(Path::new("<module>"), data)?;
    Ok((m.info.len(), m.exports.len(), m.deps.len()))
}

fn parse_module(path: &Path, data: &[u8]) -> Result<ModData, DepmodError> {
    let elf_err = |source| DepmodError::Elf {
        path: path.to_path_buf(),
        source,
    };
    let e = elf::Elf::parse(data).map_err(elf_err)?;
    let utf8 = |b: &[u8], what: &str| {
        String::from_utf8(b.to_vec()).map_err(|_| DepmodError::Modinfo {
            path: path.to_path_buf(),
            reason: format!("{what} is not UTF-8: {}", String::from_utf8_lossy(b)),
        })
    };
    let mut info = Vec::new();
    for s in e.modinfo().map_err(elf_err)? {
        // kmod_module_get_info: key up to the first '=', value after it ("" without '=')
        let (key, value) = match s.iter().position(|&b| b == b'=') {
            Some(p) => (&s[..p], &s[p + 1..]),
            None => (s, &s[s.len()..]),
        };
        let is_alias = key == b"alias";
        if is_alias || key == b"softdep" {
            info.push((is_alias, utf8(value, "modinfo value")?));
        }
    }
    let mut exports = Vec::new();
    for s in e.exported_symbols().map_err(elf_err)? {
        utf8(s, "exported symbol")?;
        exports.push(s.to_vec());
    }
    let deps = e
        .dependency_symbols()
        .map_err(elf_err)?
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    Ok(ModData {
        exports,
        deps,
        info,
    })
}

/// Loads all modules on a few threads; results in input order, the first error (in that
/// order) wins.
fn load_all(paths: &[&Path]) -> Result<Vec<ModData>, DepmodError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(paths.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<ModData, DepmodError>)> = Vec::with_capacity(paths.len());
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = paths.get(i) else { break };
                        done.push((i, load(p)));
                    }
                    done
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(done) => results.extend(done),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
    });
    // every index was taken exactly once
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Parses `%u` like glibc `sscanf`: optional blanks, optional sign, decimal digits (saturating
/// `unsigned long`, then truncated to `unsigned int`). Returns the value and the rest.
fn scan_u(s: &str) -> Option<(u32, &str)> {
    let s = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let mut v: u64 = 0;
    let mut overflow = false;
    for b in s[..digits].bytes() {
        match v
            .checked_mul(10)
            .and_then(|x| x.checked_add(u64::from(b - b'0')))
        {
            Some(x) => v = x,
            None => overflow = true,
        }
    }
    if overflow {
        v = u64::MAX;
    } else if neg {
        v = v.wrapping_neg();
    }
    Some((v as u32, &s[digits..]))
}

/// `sscanf(value, "<prefix>%u-%u", &maj, &min) == 2`.
fn scan_major_minor(value: &str, prefix: &str) -> Option<(u32, u32)> {
    let (major, rest) = scan_u(value.strip_prefix(prefix)?)?;
    let (minor, _) = scan_u(rest.strip_prefix('-')?)?;
    Some((major, minor))
}

/// The `modules.devname` line of a module (`output_devname`).
fn devname_line(name: &str, info: &[(bool, String)]) -> Option<String> {
    let mut devname = None;
    let mut dev = None;
    for (_, value) in info.iter().filter(|(is_alias, _)| *is_alias) {
        if let Some(d) = value.strip_prefix("devname:") {
            devname = Some(d);
        } else if let Some((ma, mi)) = scan_major_minor(value, "char-major-") {
            dev = Some(('c', ma, mi));
        } else if let Some((ma, mi)) = scan_major_minor(value, "block-major-") {
            dev = Some(('b', ma, mi));
        }
        if devname.is_some() && dev.is_some() {
            break;
        }
    }
    let (t, ma, mi) = dev?;
    Some(format!("{name} {} {t}{ma}:{mi}\n", devname?))
}

/// Computes depmod's text outputs for the module directory `moddir` (`<base>/lib/modules/<kver>`
/// or `<base>/usr/lib/modules/<kver>`): walks it for `*.ko`, `*.ko.xz`, `*.ko.zst` (sorted walk,
/// depmod's search rules with the default `updates` priority) and reads `modules.order` if
/// present. See the module documentation for the exact rules.
///
/// The binary indexes (`modules.*.bin`) are out of scope.
pub fn generate(moddir: &Path) -> Result<Output, DepmodError> {
    let mut found = Vec::new();
    walk(moddir, b"", 0, &mut found)?;
    let mut mods = resolve(found);
    if mods.len() >= usize::from(u16::MAX) {
        return Err(DepmodError::TooManyModules(mods.len()));
    }

    // module array: hash iteration order of modules_by_name (512 buckets), then modules.order
    mods.sort_by_cached_key(|m| (hash_superfast(m.name.as_bytes()) % 512, m.name.clone()));
    let order_path = moddir.join("modules.order");
    let order = match std::fs::read(&order_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(DepmodError::Io {
                path: order_path,
                source,
            });
        }
    };
    if let Some(order) = order {
        // uncrelpath: the relative path cut after "<dir>/<modname length>.ko"
        let uncrel: HashMap<&[u8], usize> = mods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let r = m.relpath.as_bytes();
                (&r[..(m.dirlen + m.name.len() + 3).min(r.len())], i)
            })
            .collect();
        if let Some(idx) = order_indexes(&order, &uncrel, mods.len()) {
            let mut keyed: Vec<(i64, Found)> = idx.into_iter().zip(mods).collect();
            keyed.sort_by_key(|(k, _)| *k); // stable, like glibc's merge-sort qsort
            mods = keyed.into_iter().map(|(_, m)| m).collect();
        }
    }
    let n = mods.len();

    let paths: Vec<&Path> = mods.iter().map(|m| m.path.as_path()).collect();
    let data = load_all(&paths)?;

    // symbol table: a later module (in array order) replaces an earlier owner
    let mut symbols: HashMap<&[u8], usize> = HashMap::new();
    for (i, d) in data.iter().enumerate() {
        for s in &d.exports {
            if !s.is_empty() {
                symbols.insert(s, i);
            }
        }
    }

    // direct dependencies in first-occurrence order, and user counts
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut users = vec![0usize; n];
    for (i, d) in data.iter().enumerate() {
        for s in &d.deps {
            let s = s.strip_prefix(b".").unwrap_or(s);
            let Some(&owner) = symbols.get(s) else {
                continue;
            };
            if !deps[i].contains(&owner) {
                deps[i].push(owner);
                users[owner] += 1;
            }
        }
    }

    // topological sort (depmod_calculate_dependencies)
    let mut dep_sort_idx = vec![usize::MAX; n];
    let mut left = users.clone();
    let mut roots: Vec<usize> = (0..n).filter(|&i| left[i] == 0).collect();
    let mut sorted = 0;
    while let Some(src) = roots.pop() {
        dep_sort_idx[src] = sorted;
        sorted += 1;
        for &dst in &deps[src] {
            left[dst] -= 1;
            if left[dst] == 0 {
                roots.push(dst);
            }
        }
    }
    if sorted < n {
        let cyclic = (0..n)
            .filter(|&i| left[i] > 0)
            .map(|i| mods[i].relpath.clone())
            .collect();
        return Err(DepmodError::Cycle(cyclic));
    }

    let mut out = Output {
        dep: String::new(),
        alias: "# Aliases extracted from modules themselves.\n".into(),
        softdep: "# Soft dependencies extracted from modules themselves.\n".into(),
        symbols: String::new(),
        devname: "# Device nodes to trigger on-demand module loading.\n".into(),
    };
    let mut seen = vec![usize::MAX; n];
    let mut stack = Vec::new();
    for (i, m) in mods.iter().enumerate() {
        // all transitive dependencies, sorted by dep_sort_idx
        let mut all = Vec::new();
        stack.clear();
        stack.extend(deps[i].iter().copied());
        while let Some(d) = stack.pop() {
            if seen[d] == i {
                continue;
            }
            seen[d] = i;
            all.push(d);
            stack.extend(deps[d].iter().copied());
        }
        all.sort_unstable_by_key(|&d| dep_sort_idx[d]);
        out.dep.push_str(&m.relpath);
        out.dep.push(':');
        for d in all {
            out.dep.push(' ');
            out.dep.push_str(&mods[d].relpath);
        }
        out.dep.push('\n');

        for (is_alias, value) in &data[i].info {
            if *is_alias {
                out.alias.push_str(&format!("alias {value} {}\n", m.name));
            } else {
                out.softdep
                    .push_str(&format!("softdep {} {value}\n", m.name));
            }
        }
        if let Some(l) = devname_line(&m.name, &data[i].info) {
            out.devname.push_str(&l);
        }
    }

    let mut lines: Vec<String> = symbols
        .iter()
        .map(|(s, &owner)| {
            // exports were checked to be UTF-8 in load()
            format!(
                "alias symbol:{} {}\n",
                String::from_utf8_lossy(s),
                mods[owner].name
            )
        })
        .collect();
    lines.sort_unstable();
    out.symbols = "# Aliases for symbols, used by symbol_request().\n".into();
    for l in lines {
        out.symbols.push_str(&l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::elf::tests::{build, symtab};
    use super::*;

    #[test]
    fn names_and_hash() {
        assert_eq!(modname("nls-cp437.ko.zst"), "nls_cp437");
        assert_eq!(modname("a.b.ko"), "a");
        // values computed with kmod's C hash_superfast (gcc, x86_64: signed char)
        let cases: [(&[u8], u32); 10] = [
            (b"", 0),
            (b"a", 291415938),
            (b"ab", 1366002500),
            (b"abc", 3535673738),
            (b"abcd", 3671636187),
            (b"dummy", 1976054971),
            (b"nls_cp437", 1444019541),
            (b"\xe9", 1776944832),
            (b"ab\xe9", 3034567861),
            (b"abcde\xff\xfe", 983671080),
        ];
        for (k, h) in cases {
            assert_eq!(hash_superfast(k), h, "{k:?}");
        }
    }

    #[test]
    fn scanf_u() {
        assert_eq!(
            scan_major_minor("char-major-10-235", "char-major-"),
            Some((10, 235))
        );
        assert_eq!(scan_major_minor("char-major-10-*", "char-major-"), None);
        assert_eq!(
            scan_major_minor("char-major- 4-+5x", "char-major-"),
            Some((4, 5))
        );
        assert_eq!(
            scan_major_minor("char-major--1-0", "char-major-"),
            Some((u32::MAX, 0))
        );
        assert_eq!(scan_major_minor("block-major-8-0", "char-major-"), None);
    }

    #[test]
    fn devname_first_complete_pair() {
        let info = |v: &[&str]| v.iter().map(|s| (true, s.to_string())).collect::<Vec<_>>();
        assert_eq!(
            devname_line(
                "fuse",
                &info(&["devname:fuse", "char-major-10-229", "devname:x"])
            ),
            Some("fuse fuse c10:229\n".into())
        );
        assert_eq!(devname_line("m", &info(&["devname:a"])), None);
        assert_eq!(
            devname_line(
                "m",
                &info(&["block-major-8-1", "char-major-1-2", "devname:d"])
            ),
            Some("m d c1:2\n".into())
        );
    }

    #[test]
    fn order_file_rules() {
        let mut u: HashMap<&[u8], usize> = HashMap::new();
        u.insert(b"kernel/a.ko", 0);
        u.insert(b"kernel/b.ko", 1);
        assert_eq!(
            order_indexes(b"kernel/b.ko\nkernel/x.ko\nkernel/a.ko\n", &u, 3),
            Some(vec![-1, -3, 1])
        );
        // a line without newline: depmod does not sort at all
        assert_eq!(order_indexes(b"kernel/b.ko\nkernel/a.ko", &u, 3), None);
        assert_eq!(order_indexes(b"", &u, 2), Some(vec![1, 1]));
    }

    fn module(modinfo: &[u8], strtab: &[u8], syms: &[(u32, u16)]) -> Vec<u8> {
        build(&[
            (".modinfo", modinfo),
            (".strtab", strtab),
            (".symtab", &symtab(syms)),
        ])
    }

    #[test]
    fn small_tree() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        std::fs::create_dir_all(m.join("kernel/x")).unwrap();
        std::fs::create_dir_all(m.join("updates")).unwrap();
        std::fs::create_dir_all(m.join("build/y")).unwrap();
        // a exports fa; b needs fa, exports fb; c needs fb
        let a = module(
            b"alias=devname:foo\0alias=char-major-10-1\0",
            b"\0__crc_fa\0",
            &[(1, 2)],
        );
        let b = module(b"softdep=pre: a\0", b"\0fa\0__crc_fb\0", &[(1, 0), (4, 2)]);
        let c = module(b"alias=c-thing\0", b"\0fb\0", &[(1, 0)]);
        std::fs::write(m.join("kernel/x/a-mod.ko"), &a).unwrap();
        std::fs::write(m.join("kernel/x/b.ko"), &b).unwrap();
        std::fs::write(m.join("updates/c.ko"), &c).unwrap();
        std::fs::write(m.join("kernel/x/c.ko"), &a).unwrap(); // shadowed by updates/c.ko
        std::fs::write(m.join("build/y/z.ko"), &a).unwrap(); // skipped
        std::fs::write(
            m.join("modules.order"),
            "kernel/x/b.ko\nkernel/x/a-mod.ko\n",
        )
        .unwrap();
        let o = generate(m).unwrap();
        assert_eq!(
            o.dep,
            "kernel/x/b.ko: kernel/x/a-mod.ko\nkernel/x/a-mod.ko:\nupdates/c.ko: kernel/x/b.ko kernel/x/a-mod.ko\n"
        );
        assert_eq!(
            o.alias,
            "# Aliases extracted from modules themselves.\nalias devname:foo a_mod\nalias char-major-10-1 a_mod\nalias c-thing c\n"
        );
        assert_eq!(
            o.softdep,
            "# Soft dependencies extracted from modules themselves.\nsoftdep b pre: a\n"
        );
        assert_eq!(
            o.devname,
            "# Device nodes to trigger on-demand module loading.\na_mod foo c10:1\n"
        );
        assert_eq!(
            o.symbols,
            "# Aliases for symbols, used by symbol_request().\nalias symbol:fa a_mod\nalias symbol:fb b\n"
        );
        o.write_to(m).unwrap();
        assert_eq!(
            std::fs::read_to_string(m.join("modules.dep")).unwrap(),
            o.dep
        );
        assert!(!m.join("modules.dep.tmp").exists());
    }

    #[test]
    fn walk_rules() {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        let plain = module(b"", b"\0", &[]);
        for d in ["a", "b", "updates/x", "updates/y", "source/z"] {
            std::fs::create_dir_all(m.join(d)).unwrap();
        }
        std::fs::write(m.join("a/dup.ko"), &plain).unwrap(); // first of two: kept
        std::fs::write(m.join("b/dup.ko"), &plain).unwrap();
        std::fs::write(m.join("a/up.ko"), &plain).unwrap(); // replaced by updates/
        std::fs::write(m.join("updates/x/up.ko"), &plain).unwrap();
        std::fs::write(m.join("updates/y/up.ko"), &plain).unwrap(); // later updates/ wins
        std::fs::write(m.join("source/z/s.ko"), &plain).unwrap(); // "source" skipped
        std::fs::write(m.join("a/gz.ko.gz"), &plain).unwrap(); // not a module for Debian's kmod
        std::fs::write(m.join("a/.ko"), &plain).unwrap(); // name must be longer than the ext
        std::os::unix::fs::symlink(m.join("a/dup.ko"), m.join("b/link.ko")).unwrap();
        std::os::unix::fs::symlink(m.join("nowhere"), m.join("b/dangling")).unwrap();
        let junk = std::ffi::OsStr::from_bytes(b"junk-\xff");
        std::fs::write(m.join(junk), b"").unwrap();
        // no modules.order: kmod's hash order (up, dup, link)
        assert_eq!(
            generate(m).unwrap().dep,
            "updates/y/up.ko:\na/dup.ko:\nb/link.ko:\n"
        );
        // a module named with invalid UTF-8, a dangling module symlink: errors
        let bad = m.join(std::ffi::OsStr::from_bytes(b"b/bad-\xff.ko"));
        std::fs::write(&bad, &plain).unwrap();
        assert!(matches!(generate(m), Err(DepmodError::NonUtf8Path(p)) if p == bad));
        std::fs::remove_file(&bad).unwrap();
        std::os::unix::fs::symlink(m.join("nowhere"), m.join("b/gone.ko")).unwrap();
        let err = generate(m).unwrap_err().to_string();
        assert!(err.contains("b/gone.ko"), "{err}");
    }

    #[test]
    fn cycle_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let a = module(b"", b"\0__crc_fa\0fb\0", &[(1, 2), (10, 0)]);
        let b = module(b"", b"\0__crc_fb\0fa\0", &[(1, 2), (10, 0)]);
        std::fs::write(t.path().join("a.ko"), &a).unwrap();
        std::fs::write(t.path().join("b.ko"), &b).unwrap();
        match generate(t.path()) {
            Err(DepmodError::Cycle(m)) => assert_eq!(m.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corrupt_modules_name_the_file() {
        let t = tempfile::tempdir().unwrap();
        let good = module(b"alias=x\0", b"\0", &[]);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("truncated", good[..40].to_vec(), "too short"),
            (
                "magic",
                b"not an elf file at all, but long enough to pass the size check.....".to_vec(),
                "bad magic",
            ),
            (
                "shoff",
                {
                    let mut g = good.clone();
                    g[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
                    g
                },
                "section header table",
            ),
            (
                "secrange",
                {
                    // .modinfo is section 1: make its offset point past the end
                    let mut g = good.clone();
                    let shoff = u64::from_le_bytes(g[0x28..0x30].try_into().unwrap()) as usize;
                    g[shoff + 64 + 24..shoff + 64 + 32]
                        .copy_from_slice(&(1u64 << 40).to_le_bytes());
                    g
                },
                "section .modinfo",
            ),
            ("symtab", module(b"", b"\0", &[(99, 0)]), "outside .strtab"),
            ("utf8", module(b"alias=\xff\0", b"\0", &[]), "not UTF-8"),
            ("xz", b"\xfd7zXZ\0garbage".to_vec(), "decompress"),
        ];
        for (name, bytes, want) in cases {
            let d = t.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let f = d.join(format!("{name}.ko"));
            std::fs::write(&f, bytes).unwrap();
            let err = generate(&d).unwrap_err().to_string();
            assert!(err.contains(f.to_str().unwrap()), "{name}: {err}");
            assert!(err.contains(want), "{name}: {err}");
        }
        // .modinfo without a final NUL: the last string still counts (kmod does the same)
        let d = t.path().join("nonul");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("m.ko"), module(b"alias=a\0alias=b", b"\0", &[])).unwrap();
        assert_eq!(
            generate(&d).unwrap().alias,
            "# Aliases extracted from modules themselves.\nalias a m\nalias b m\n"
        );
    }
}
