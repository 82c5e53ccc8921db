//! Extension service configuration (seed "Extension Services"): one YAML file per service in
//! `/usr/local/etc/containers/*.yaml`.
//!
//! Read when the services start (the last step of stage 2). In: the text of one file. Out: a
//! validated [`Service`] — or a [`ConfigError`], a one-line reason why the file is invalid
//! (unknown keys, wrong types, a bad name, a relative path, an unknown network check, a
//! missing `restart`…). Parsing is strict, as Talos's decoder is (`KnownFields`).

use crate::readiness;
use serde::Deserialize;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Where the root filesystems of the services live: `<CONTAINERS_ROOT>/<name>`.
pub const CONTAINERS_ROOT: &str = "/usr/local/lib/containers";

/// Restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Restart {
    /// Run once.
    Never,
    /// Restart after every exit.
    Always,
    /// Restart after a failed run, stop after a successful one.
    UntilSuccess,
}

impl Restart {
    /// Whether a run that ended with `success` is followed by another one.
    pub fn again(self, success: bool) -> bool {
        match self {
            Restart::Never => false,
            Restart::Always => true,
            Restart::UntilSuccess => !success,
        }
    }
}

/// One start condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dependency {
    /// Another service (`ext-<name>`, or a bare `<name>` of an extension service) is running
    /// (or finished successfully).
    Service(String),
    /// A path exists.
    Path(PathBuf),
    /// A readiness key of the node is set (`network.*`, `time`).
    Ready(&'static str),
    /// An ExtensionServiceConfig document for the service exists (never, yet).
    Configuration,
}

/// A mount in the service's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Host path (bind mounts) or device/name (other types).
    pub source: Option<PathBuf>,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// Filesystem type (`bind` for bind mounts).
    pub fstype: String,
    /// A bind mount (type `bind`, or a `bind`/`rbind` option).
    pub bind: bool,
    /// Recursive bind (`rbind`).
    pub recursive: bool,
    /// Read-only.
    pub readonly: bool,
    /// Other mount flags (`MS_NOSUID`…), as bits of `nix::mount::MsFlags`.
    pub flags: u64,
    /// Propagation flags (`MS_SHARED`, `MS_REC`…) to apply after mounting, if any.
    pub propagation: u64,
    /// Options passed to the filesystem (`size=…`), comma-joined.
    pub data: String,
}

/// A validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `name` (matches `[a-z0-9-_]+`).
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Entrypoint, relative to the container root (a leading `/` or `./` means the same).
    pub entrypoint: String,
    /// Arguments after the entrypoint.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub environment: Vec<String>,
    /// Deprecated `environmentFile`: waited for, then read (`KEY=VALUE` lines).
    pub environment_file: Option<PathBuf>,
    /// Mounts, in order.
    pub mounts: Vec<Mount>,
    /// Paths hidden in the container (`/dev/null` over files, an empty read-only tmpfs over
    /// directories).
    pub masked_paths: Vec<PathBuf>,
    /// Paths made read-only in the container.
    pub readonly_paths: Vec<PathBuf>,
    /// Keep the (ephemeral) root writable.
    pub writeable_rootfs: bool,
    /// Mount /sys read-write.
    pub writeable_sysfs: bool,
    /// Propagation of the container root (`MS_SHARED`…), if set.
    pub rootfs_propagation: Option<u64>,
    /// Start conditions.
    pub depends: Vec<Dependency>,
    /// Restart policy.
    pub restart: Restart,
    /// Copy the output to the console too.
    pub log_to_console: bool,
}

impl Service {
    /// The service id: `ext-<name>`.
    pub fn id(&self) -> String {
        format!("ext-{}", self.name)
    }

    /// The container root on the host.
    pub fn root(&self) -> PathBuf {
        Path::new(CONTAINERS_ROOT).join(&self.name)
    }

    /// The entrypoint as an absolute path inside the container.
    pub fn entrypoint_abs(&self) -> String {
        let rel = self
            .entrypoint
            .trim_start_matches("./")
            .trim_start_matches('/');
        format!("/{rel}")
    }
}

/// containerd's default masked paths (used when `maskedPaths` is not set).
pub const DEFAULT_MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths (used when `readonlyPaths` is not set).
pub const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    name: String,
    container: RawContainer,
    #[serde(default)]
    depends: Vec<RawDependency>,
    restart: Restart,
    #[serde(default)]
    log_to_console: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawContainer {
    entrypoint: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    environment: Vec<String>,
    #[serde(default)]
    environment_file: Option<String>,
    #[serde(default)]
    mounts: Vec<RawMount>,
    #[serde(default)]
    security: RawSecurity,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSecurity {
    #[serde(default)]
    masked_paths: Option<Vec<String>>,
    #[serde(default)]
    readonly_paths: Option<Vec<String>>,
    #[serde(default)]
    writeable_rootfs: bool,
    #[serde(default)]
    writeable_sysfs: bool,
    #[serde(default)]
    rootfs_propagation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    #[serde(default)]
    source: Option<String>,
    destination: String,
    #[serde(default, rename = "type")]
    typ: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    network: Option<Vec<String>>,
    #[serde(default)]
    time: Option<bool>,
    #[serde(default)]
    configuration: Option<bool>,
}

/// Why a service file is invalid: the `reason` of its `service-invalid` console line (one
/// line of text).
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read(std::io::Error),
    /// Not YAML of the expected shape: the first line of the decoder's message.
    Syntax(String),
    /// `name` does not match `[a-z0-9-_]+`.
    Name(String),
    /// `container.entrypoint` is empty.
    EmptyEntrypoint,
    /// `container.environment[index]` is not `KEY=VALUE`.
    Environment {
        /// Index in the list.
        index: usize,
        /// The entry.
        entry: String,
    },
    /// A path that must be absolute is not.
    NotAbsolute {
        /// Where it is (`container.mounts[0].source`…).
        field: String,
        /// The path.
        path: String,
    },
    /// A path contains `..`.
    ParentDir {
        /// Where it is.
        field: String,
        /// The path.
        path: String,
    },
    /// `container.mounts[mount].options` has an empty option.
    EmptyMountOption {
        /// Index of the mount.
        mount: usize,
    },
    /// A bind mount without a source.
    BindWithoutSource {
        /// Index of the mount.
        mount: usize,
    },
    /// A mount with neither a type nor a `bind`/`rbind` option.
    NoMountType {
        /// Index of the mount.
        mount: usize,
        /// Its destination.
        destination: String,
    },
    /// `container.security.rootfsPropagation` is not a propagation.
    Propagation(String),
    /// `depends[dep].service` is empty.
    EmptyServiceDependency {
        /// Index of the dependency.
        dep: usize,
    },
    /// `depends[dep].network` is an empty list.
    EmptyNetworkDependency {
        /// Index of the dependency.
        dep: usize,
    },
    /// `depends[dep].network` names an unknown check.
    UnknownNetworkCheck {
        /// Index of the dependency.
        dep: usize,
        /// The check.
        check: String,
    },
    /// `depends[dep]` has none of the known forms.
    EmptyDependency {
        /// Index of the dependency.
        dep: usize,
    },
    /// An earlier file defines a service with the same name.
    DuplicateName(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(e) => write!(f, "reading: {e}"),
            Self::Syntax(m) => f.write_str(m),
            Self::Name(n) => write!(f, "name {n:?} does not match [a-z0-9-_]+"),
            Self::EmptyEntrypoint => f.write_str("container.entrypoint is empty"),
            Self::Environment { index, entry } => write!(
                f,
                "container.environment[{index}] {entry:?} is not KEY=VALUE"
            ),
            Self::NotAbsolute { field, path } => {
                write!(f, "{field} {path:?} is not an absolute path")
            }
            Self::ParentDir { field, path } => write!(f, "{field} {path:?} contains \"..\""),
            Self::EmptyMountOption { mount } => {
                write!(f, "container.mounts[{mount}].options: empty option")
            }
            Self::BindWithoutSource { mount } => {
                write!(f, "container.mounts[{mount}]: a bind mount needs a source")
            }
            Self::NoMountType { mount, destination } => write!(
                f,
                "container.mounts[{mount}]: no type and no bind/rbind option (what is mounted on {destination}?)"
            ),
            Self::Propagation(p) => write!(
                f,
                "container.security.rootfsPropagation: unknown value {p:?}"
            ),
            Self::EmptyServiceDependency { dep } => write!(f, "depends[{dep}].service: empty"),
            Self::EmptyNetworkDependency { dep } => {
                write!(f, "depends[{dep}].network: empty list")
            }
            Self::UnknownNetworkCheck { dep, check } => write!(
                f,
                "depends[{dep}].network: unknown check {check:?} (addresses, connectivity, hostname, etcfiles)"
            ),
            Self::EmptyDependency { dep } => write!(
                f,
                "depends[{dep}]: empty (one of service, path, network, time, configuration)"
            ),
            Self::DuplicateName(n) => write!(f, "duplicate service name {n:?}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Whether `name` matches `[a-z0-9-_]+`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// An absolute path without `..` components.
fn abs_path(what: &str, p: &str) -> Result<PathBuf, ConfigError> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(ConfigError::NotAbsolute {
            field: what.to_string(),
            path: p.to_string(),
        });
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(ConfigError::ParentDir {
            field: what.to_string(),
            path: p.to_string(),
        });
    }
    Ok(path.to_path_buf())
}

/// Bits of a propagation option (`rshared`…), if it is one.
fn propagation_flag(opt: &str) -> Option<u64> {
    use nix::mount::MsFlags as F;
    let f = match opt {
        "private" => F::MS_PRIVATE,
        "rprivate" => F::MS_PRIVATE | F::MS_REC,
        "shared" => F::MS_SHARED,
        "rshared" => F::MS_SHARED | F::MS_REC,
        "slave" => F::MS_SLAVE,
        "rslave" => F::MS_SLAVE | F::MS_REC,
        "unbindable" => F::MS_UNBINDABLE,
        "runbindable" => F::MS_UNBINDABLE | F::MS_REC,
        _ => return None,
    };
    Some(f.bits())
}

fn parse_mount(i: usize, m: RawMount) -> Result<Mount, ConfigError> {
    use nix::mount::MsFlags as F;
    let what = format!("container.mounts[{i}]");
    let destination = abs_path(&format!("{what}.destination"), &m.destination)?;
    let fstype = m.typ.unwrap_or_default();
    let mut bind = fstype == "bind";
    let (mut recursive, mut readonly) = (false, false);
    let (mut flags, mut propagation) = (F::empty(), 0u64);
    let mut data = Vec::new();
    for o in &m.options {
        let (set, clear) = match o.as_str() {
            "bind" => {
                bind = true;
                continue;
            }
            "rbind" => {
                bind = true;
                recursive = true;
                continue;
            }
            "ro" => {
                readonly = true;
                continue;
            }
            "rw" => {
                readonly = false;
                continue;
            }
            "defaults" => continue,
            "nosuid" => (F::MS_NOSUID, F::empty()),
            "suid" => (F::empty(), F::MS_NOSUID),
            "nodev" => (F::MS_NODEV, F::empty()),
            "dev" => (F::empty(), F::MS_NODEV),
            "noexec" => (F::MS_NOEXEC, F::empty()),
            "exec" => (F::empty(), F::MS_NOEXEC),
            "sync" => (F::MS_SYNCHRONOUS, F::empty()),
            "async" => (F::empty(), F::MS_SYNCHRONOUS),
            "dirsync" => (F::MS_DIRSYNC, F::empty()),
            "noatime" => (F::MS_NOATIME, F::empty()),
            "atime" => (F::empty(), F::MS_NOATIME),
            "nodiratime" => (F::MS_NODIRATIME, F::empty()),
            "diratime" => (F::empty(), F::MS_NODIRATIME),
            "relatime" => (F::MS_RELATIME, F::empty()),
            "norelatime" => (F::empty(), F::MS_RELATIME),
            "strictatime" => (F::MS_STRICTATIME, F::empty()),
            other => {
                if let Some(p) = propagation_flag(other) {
                    propagation = p;
                } else if other.is_empty() {
                    return Err(ConfigError::EmptyMountOption { mount: i });
                } else {
                    data.push(other.to_string());
                }
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    let source = match (&m.source, bind) {
        (Some(s), true) => Some(abs_path(&format!("{what}.source"), s)?),
        (None, true) => return Err(ConfigError::BindWithoutSource { mount: i }),
        (Some(s), false) => Some(PathBuf::from(s)),
        (None, false) => None,
    };
    if !bind && (fstype.is_empty() || fstype == "none") {
        return Err(ConfigError::NoMountType {
            mount: i,
            destination: m.destination,
        });
    }
    Ok(Mount {
        source,
        destination,
        fstype: if bind { "bind".into() } else { fstype },
        bind,
        recursive,
        readonly,
        flags: flags.bits(),
        propagation,
        data: data.join(","),
    })
}

fn parse_dependency(i: usize, d: RawDependency) -> Result<Vec<Dependency>, ConfigError> {
    let what = format!("depends[{i}]");
    let mut out = Vec::new();
    if let Some(s) = d.service {
        if s.is_empty() {
            return Err(ConfigError::EmptyServiceDependency { dep: i });
        }
        out.push(Dependency::Service(s));
    }
    if let Some(p) = d.path {
        out.push(Dependency::Path(abs_path(&format!("{what}.path"), &p)?));
    }
    if let Some(n) = d.network {
        if n.is_empty() {
            return Err(ConfigError::EmptyNetworkDependency { dep: i });
        }
        for k in n {
            let key = match k.as_str() {
                "addresses" => readiness::NET_ADDRESSES,
                "connectivity" => readiness::NET_CONNECTIVITY,
                "hostname" => readiness::NET_HOSTNAME,
                "etcfiles" => readiness::NET_ETCFILES,
                _ => {
                    return Err(ConfigError::UnknownNetworkCheck { dep: i, check: k });
                }
            };
            out.push(Dependency::Ready(key));
        }
    }
    let mut any_flag = false;
    if let Some(t) = d.time {
        any_flag = true;
        if t {
            out.push(Dependency::Ready(readiness::TIME));
        }
    }
    if let Some(c) = d.configuration {
        any_flag = true;
        if c {
            out.push(Dependency::Configuration);
        }
    }
    if out.is_empty() && !any_flag {
        return Err(ConfigError::EmptyDependency { dep: i });
    }
    Ok(out)
}

/// Parses and validates the text of `file`.
pub fn parse(file: &Path, text: &str) -> Result<Service, ConfigError> {
    let raw: RawSpec = serde_saphyr::from_str(text).map_err(|e| {
        // the first line has the position and the message (a source snippet follows)
        let t = e.to_string();
        let first = t.lines().next().unwrap_or_default().trim();
        ConfigError::Syntax(first.strip_prefix("error: ").unwrap_or(first).to_string())
    })?;
    if !valid_name(&raw.name) {
        return Err(ConfigError::Name(raw.name));
    }
    let c = raw.container;
    if c.entrypoint.trim().is_empty() {
        return Err(ConfigError::EmptyEntrypoint);
    }
    for (i, e) in c.environment.iter().enumerate() {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains('\0') => {}
            _ => {
                return Err(ConfigError::Environment {
                    index: i,
                    entry: e.clone(),
                });
            }
        }
    }
    let environment_file = c
        .environment_file
        .map(|p| abs_path("container.environmentFile", &p))
        .transpose()?;
    let mounts = c
        .mounts
        .into_iter()
        .enumerate()
        .map(|(i, m)| parse_mount(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let paths = |what: &str, v: Option<Vec<String>>, default: &[&str]| {
        match v {
            Some(v) => v,
            None => default.iter().map(|s| s.to_string()).collect(),
        }
        .iter()
        .enumerate()
        .map(|(i, p)| abs_path(&format!("container.security.{what}[{i}]"), p))
        .collect::<Result<Vec<_>, _>>()
    };
    let s = c.security;
    let masked_paths = paths("maskedPaths", s.masked_paths, DEFAULT_MASKED)?;
    let readonly_paths = paths("readonlyPaths", s.readonly_paths, DEFAULT_READONLY)?;
    let rootfs_propagation = match s.rootfs_propagation.as_deref() {
        None | Some("") => None,
        Some(p) => {
            Some(propagation_flag(p).ok_or_else(|| ConfigError::Propagation(p.to_string()))?)
        }
    };
    let mut depends = Vec::new();
    for (i, d) in raw.depends.into_iter().enumerate() {
        depends.extend(parse_dependency(i, d)?);
    }
    Ok(Service {
        name: raw.name,
        file: file.to_path_buf(),
        entrypoint: c.entrypoint,
        args: c.args,
        environment: c.environment,
        environment_file,
        mounts,
        masked_paths,
        readonly_paths,
        writeable_rootfs: s.writeable_rootfs,
        writeable_sysfs: s.writeable_sysfs,
        rootfs_propagation,
        depends,
        restart: raw.restart,
        log_to_console: raw.log_to_console,
    })
}

/// The outcome of discovering a directory: valid services and `(file, reason)` of invalid
/// ones, in file-name order.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Valid services.
    pub services: Vec<Service>,
    /// Invalid files with the reason.
    pub invalid: Vec<(PathBuf, ConfigError)>,
}

/// Reads `<dir>/*.yaml` (sorted by file name). A missing directory gives nothing. A name
/// used by an earlier file makes the later file invalid.
pub fn discover(dir: &Path) -> Discovered {
    let mut out = Discovered::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let res = std::fs::read_to_string(&f)
            .map_err(ConfigError::Read)
            .and_then(|t| parse(&f, &t));
        match res {
            Ok(s) if out.services.iter().any(|o| o.name == s.name) => {
                out.invalid.push((f, ConfigError::DuplicateName(s.name)));
            }
            Ok(s) => out.services.push(s),
            Err(reason) => out.invalid.push((f, reason)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nix::mount::MsFlags as F;

    const GOOD: &str = r#"
name: hello-world_2
container:
  entrypoint: ./hello-world
  environment:
    - XDG_RUNTIME_DIR=/run
    - EMPTY=
  args:
     - -f
  mounts:
    - source: /var/log/audit
      destination: /var/log/audit
      type: bind
      options:
        - rshared
        - bind
        - ro
    - source: tmpfs
      destination: /scratch
      type: tmpfs
      options: [nosuid, size=1m]
  security:
    writeableRootfs: true
    maskedPaths: []
depends:
   - configuration: true
   - service: cri
   - path: /run/machined/machined.sock
   - network:
       - addresses
       - connectivity
       - hostname
       - etcfiles
   - time: true
restart: untilSuccess
logToConsole: true
"#;

    fn p(text: &str) -> Result<Service, ConfigError> {
        parse(Path::new("/x/t.yaml"), text)
    }

    /// The reason `text` is invalid.
    fn reason(text: &str) -> String {
        p(text).expect_err(text).to_string()
    }

    fn minimal(extra: &str) -> String {
        format!("name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\n{extra}")
    }

    #[test]
    fn parses_the_seed_example() {
        let s = p(GOOD).unwrap();
        assert_eq!(s.name, "hello-world_2");
        assert_eq!(s.id(), "ext-hello-world_2");
        assert_eq!(
            s.root(),
            Path::new("/usr/local/lib/containers/hello-world_2")
        );
        assert_eq!(s.entrypoint_abs(), "/hello-world");
        assert_eq!(s.args, ["-f"]);
        assert_eq!(s.environment, ["XDG_RUNTIME_DIR=/run", "EMPTY="]);
        assert_eq!(s.restart, Restart::UntilSuccess);
        assert!(s.log_to_console);
        assert!(s.writeable_rootfs);
        assert!(!s.writeable_sysfs);
        assert!(s.masked_paths.is_empty());
        assert_eq!(s.readonly_paths.len(), DEFAULT_READONLY.len());
        assert_eq!(
            s.depends,
            vec![
                Dependency::Configuration,
                Dependency::Service("cri".into()),
                Dependency::Path("/run/machined/machined.sock".into()),
                Dependency::Ready(readiness::NET_ADDRESSES),
                Dependency::Ready(readiness::NET_CONNECTIVITY),
                Dependency::Ready(readiness::NET_HOSTNAME),
                Dependency::Ready(readiness::NET_ETCFILES),
                Dependency::Ready(readiness::TIME),
            ]
        );
        let m = &s.mounts[0];
        assert!(m.bind && m.readonly && !m.recursive);
        assert_eq!(m.source.as_deref(), Some(Path::new("/var/log/audit")));
        assert_eq!(m.propagation, (F::MS_SHARED | F::MS_REC).bits());
        let t = &s.mounts[1];
        assert!(!t.bind);
        assert_eq!(t.fstype, "tmpfs");
        assert_eq!(t.flags, F::MS_NOSUID.bits());
        assert_eq!(t.data, "size=1m");
    }

    #[test]
    fn defaults() {
        let s = p(&minimal("")).unwrap();
        assert!(s.depends.is_empty() && s.mounts.is_empty() && s.args.is_empty());
        assert!(!s.log_to_console && !s.writeable_rootfs);
        assert_eq!(s.masked_paths.len(), DEFAULT_MASKED.len());
        assert_eq!(s.restart, Restart::Never);
        // `time: false` is no dependency at all
        let s = p(&minimal("depends:\n  - time: false\n")).unwrap();
        assert!(s.depends.is_empty());
        // leading slash means the same as ./
        let s = p("name: a\ncontainer:\n  entrypoint: /bin/a\nrestart: always\n").unwrap();
        assert_eq!(s.entrypoint_abs(), "/bin/a");
        assert_eq!(s.restart, Restart::Always);
    }

    #[test]
    fn name_pattern() {
        for ok in ["a", "a-b_c", "0x1", "hello-world"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "A", "a.b", "a/b", "a b", "ü", "../x"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let e = reason("name: Hello\ncontainer:\n  entrypoint: ./a\nrestart: never\n");
        assert!(e.contains("[a-z0-9-_]+"), "{e}");
    }

    #[test]
    fn rejects_bad_fields() {
        let cases: &[(&str, &str)] = &[
            // unknown keys anywhere
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\nbogus: 1\n",
                "bogus",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  entrypiont: x\nrestart: never\n",
                "entrypiont",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  security:\n    writableRootfs: true\nrestart: never\n",
                "writableRootfs",
            ),
            // required fields
            ("name: a\ncontainer:\n  entrypoint: ./a\n", "restart"),
            (
                "name: a\ncontainer:\n  args: [x]\nrestart: never\n",
                "entrypoint",
            ),
            ("container:\n  entrypoint: ./a\nrestart: never\n", "name"),
            (
                "name: a\ncontainer:\n  entrypoint: \"\"\nrestart: never\n",
                "entrypoint",
            ),
            // bad values
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: sometimes\n",
                "sometimes",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\nlogToConsole: maybe\n",
                "line 5 column 15: invalid boolean",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  environment: [NOEQUALS]\nrestart: never\n",
                "KEY=VALUE",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  environment: [\"=v\"]\nrestart: never\n",
                "KEY=VALUE",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  args: x\nrestart: never\n",
                "line 4 column 9: expected sequence",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  mounts:\n    - source: rel\n      destination: /d\n      type: bind\nrestart: never\n",
                "absolute",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  mounts:\n    - source: /s\n      destination: d\n      type: bind\nrestart: never\n",
                "absolute",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  mounts:\n    - source: /s\n      destination: /d/../../etc\n      options: [rbind]\nrestart: never\n",
                "..",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  mounts:\n    - destination: /d\n      type: bind\nrestart: never\n",
                "source",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  mounts:\n    - source: /s\n      destination: /d\nrestart: never\n",
                "no type",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  mounts:\n    - source: /s\n      destination: /d\n      type: bind\n      uidMappings: []\nrestart: never\n",
                "uidMappings",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  security:\n    rootfsPropagation: sideways\nrestart: never\n",
                "sideways",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  security:\n    maskedPaths: [proc/kcore]\nrestart: never\n",
                "absolute",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\n  environmentFile: env\nrestart: never\n",
                "absolute",
            ),
            // depends forms
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\ndepends:\n  - network: [addresses, wifi]\n",
                "wifi",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\ndepends:\n  - network: []\n",
                "empty",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\ndepends:\n  - path: relative/p\n",
                "absolute",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\ndepends:\n  - {}\n",
                "empty",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\ndepends:\n  - disk: sda\n",
                "disk",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\ndepends:\n  - time: yes please\n",
                "line 6 column 11: invalid boolean",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\ndepends:\n  - service: \"\"\n",
                "empty",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\ndepends: cri\n",
                "line 5 column 10: expected sequence",
            ),
            // not YAML of the right shape at all
            ("", ""),
            ("- a\n- b\n", ""),
            ("name: [unclosed\n", ""),
        ];
        for (text, needle) in cases {
            let e = reason(text);
            assert!(
                e.contains(needle),
                "reason for {text:?} should mention {needle:?}: {e}"
            );
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    /// The reasons are console text (`service-invalid … reason="…"`): exact strings.
    #[test]
    fn reason_texts() {
        let m = |mount: &str| {
            minimal("").replace("restart:", &format!("  mounts:\n    - {mount}\nrestart:"))
        };
        let cases: &[(String, &str)] = &[
            (
                "name: Hello\ncontainer:\n  entrypoint: ./a\nrestart: never\n".into(),
                "name \"Hello\" does not match [a-z0-9-_]+",
            ),
            (
                "name: a\ncontainer:\n  entrypoint: \"\"\nrestart: never\n".into(),
                "container.entrypoint is empty",
            ),
            (
                minimal("").replace("restart:", "  environment: [\"=v\"]\nrestart:"),
                "container.environment[0] \"=v\" is not KEY=VALUE",
            ),
            (
                m("{source: rel, destination: /d, type: bind}"),
                "container.mounts[0].source \"rel\" is not an absolute path",
            ),
            (
                m("{source: /s, destination: /d/../x, type: bind}"),
                "container.mounts[0].destination \"/d/../x\" contains \"..\"",
            ),
            (
                m("{source: /s, destination: /d, type: bind, options: [\"\"]}"),
                "container.mounts[0].options: empty option",
            ),
            (
                m("{destination: /d, type: bind}"),
                "container.mounts[0]: a bind mount needs a source",
            ),
            (
                m("{source: /s, destination: /d}"),
                "container.mounts[0]: no type and no bind/rbind option (what is mounted on /d?)",
            ),
            (
                minimal("").replace(
                    "restart:",
                    "  security:\n    rootfsPropagation: sideways\nrestart:",
                ),
                "container.security.rootfsPropagation: unknown value \"sideways\"",
            ),
            (
                minimal("depends:\n  - service: \"\"\n"),
                "depends[0].service: empty",
            ),
            (
                minimal("depends:\n  - time: true\n  - network: []\n"),
                "depends[1].network: empty list",
            ),
            (
                minimal("depends:\n  - network: [wifi]\n"),
                "depends[0].network: unknown check \"wifi\" (addresses, connectivity, hostname, etcfiles)",
            ),
            (
                minimal("depends:\n  - {}\n"),
                "depends[0]: empty (one of service, path, network, time, configuration)",
            ),
            (
                minimal("depends:\n  - path: p\n"),
                "depends[0].path \"p\" is not an absolute path",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(reason(text), *want);
        }
        assert_eq!(
            ConfigError::DuplicateName("a".into()).to_string(),
            "duplicate service name \"a\""
        );
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            ConfigError::Read(e).to_string(),
            "reading: permission denied"
        );
    }

    #[test]
    fn depends_forms() {
        let s = p(&minimal(
            "depends:\n  - service: ext-b\n    path: /system/x\n  - network: [hostname]\n  - configuration: false\n",
        ))
        .unwrap();
        assert_eq!(
            s.depends,
            vec![
                Dependency::Service("ext-b".into()),
                Dependency::Path("/system/x".into()),
                Dependency::Ready(readiness::NET_HOSTNAME),
            ]
        );
    }

    #[test]
    fn mount_options() {
        let s = p("name: a\ncontainer:\n  entrypoint: ./a\n  mounts:\n    - source: /system/s\n      destination: /s\n      options: [rbind, rw, nosuid, nodev, suid, rslave]\nrestart: never\n").unwrap();
        let m = &s.mounts[0];
        assert!(m.bind && m.recursive && !m.readonly);
        assert_eq!(m.fstype, "bind");
        assert_eq!(m.flags, F::MS_NODEV.bits());
        assert_eq!(m.propagation, (F::MS_SLAVE | F::MS_REC).bits());
    }

    #[test]
    fn discovers_sorted_and_reports_invalid_and_duplicates() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.yaml"), minimal("")).unwrap();
        std::fs::write(d.path().join("a.yaml"), "name: bad!\n").unwrap();
        std::fs::write(d.path().join("c.yaml"), minimal("")).unwrap();
        std::fs::write(
            d.path().join("d.yaml"),
            minimal("").replace("name: a", "name: d"),
        )
        .unwrap();
        std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
        let r = discover(d.path());
        let names: Vec<&str> = r.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(r.services[0].file, d.path().join("b.yaml"));
        let bad: Vec<String> = r
            .invalid
            .iter()
            .map(|(f, _)| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(bad, ["a.yaml", "c.yaml"]);
        assert!(
            r.invalid[1].1.to_string().contains("duplicate"),
            "{:?}",
            r.invalid
        );
        assert!(discover(&d.path().join("missing")).services.is_empty());
    }
}
