//! The machine configuration (docs/formats/machine-config.md): Talos's `v1alpha1` document,
//! alone or among other documents of a multi-document YAML.
//!
//! In: the configuration's text (from `talos.config=URL`, and later the API or STATE). Out: a
//! [`MachineConfig`] with what node-runtime applies — `machine.install`, `machine.network`'s
//! hostname and nameservers, `machine.registries`, `machine.env` — and the list of everything
//! else, which is accepted, kept in the text and reported as not applied. Errors name the
//! field; the text is bounded by [`MAX_CONFIG`].

use serde::Deserialize;
use std::collections::BTreeMap;

/// Bound on a configuration's size.
pub const MAX_CONFIG: usize = 1 << 20;
/// Bound on the number of documents.
const MAX_DOCUMENTS: usize = 64;

/// `machine.install`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Install {
    /// The disk to install to, e.g. `/dev/vda`.
    #[serde(default)]
    pub disk: String,
    /// Chooses the disk when `disk` is empty.
    #[serde(default)]
    pub disk_selector: Option<DiskSelector>,
    /// The installer image.
    #[serde(default)]
    pub image: String,
    /// Extra kernel arguments of the installed system.
    #[serde(default)]
    pub extra_kernel_args: Vec<String>,
    /// Zero the disk first.
    #[serde(default)]
    pub wipe: bool,
    /// Everything else of `machine.install` (kept, not applied).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `machine.install.diskSelector` (the fields node-runtime matches; others are refused).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskSelector {
    /// Exact size (`8GB`, `6GiB`, bytes) or a range `>= 4GB`, `<= 10GB`.
    #[serde(default)]
    pub size: Option<String>,
    /// `/sys/block/<d>/device/model`.
    #[serde(default)]
    pub model: Option<String>,
    /// `/sys/block/<d>/device/serial` (or the disk's `serial`).
    #[serde(default)]
    pub serial: Option<String>,
    /// Disk type: `ssd`, `hdd`, `nvme`, `sd`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Bus path glob on the sysfs device path, e.g. `/pci0000:00/*`.
    #[serde(default)]
    pub bus_path: Option<String>,
}

/// `machine.network` (what node-runtime applies).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Hostname.
    #[serde(default)]
    pub hostname: String,
    /// Resolvers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Everything else of `machine.network` (kept).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Machine {
    #[serde(default)]
    install: Install,
    #[serde(default)]
    network: Network,
    #[serde(default)]
    registries: Option<oci::RegistriesConfig>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct V1Alpha1 {
    #[allow(dead_code)]
    version: String,
    machine: Machine,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// A machine configuration, parsed.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// The text as received (what is stored in STATE).
    pub text: String,
    /// `machine.install`.
    pub install: Install,
    /// `machine.network`.
    pub network: Network,
    /// `machine.registries` (mirrors for the installer pull).
    pub registries: oci::RegistriesConfig,
    /// `machine.env`.
    pub env: BTreeMap<String, String>,
    /// What is accepted and kept but not applied (`machine.kubelet`, `cluster`, `kind:
    /// KubespanConfig`, …), sorted.
    pub not_applied: Vec<String>,
}

/// Where an installation keeps its configuration.
pub const STORED: &str = "/system/state/config.yaml";

/// The configuration stored in STATE, reported on the console (`config source=state …`);
/// `None` when there is none or it does not parse (reported).
pub fn load_stored() -> Option<MachineConfig> {
    use crate::console::say;
    use std::io::Read;
    let mut text = String::new();
    let f = std::fs::File::open(STORED).ok()?;
    if let Err(e) = f.take(MAX_CONFIG as u64 + 1).read_to_string(&mut text) {
        say(&format!("config source=state error={:?}", e.to_string()));
        return None;
    }
    match parse(&text) {
        Ok(c) => {
            say(&format!(
                "config source=state hostname={} not-applied={}",
                if c.network.hostname.is_empty() {
                    "none"
                } else {
                    &c.network.hostname
                },
                c.not_applied.len()
            ));
            Some(c)
        }
        Err(e) => {
            say(&format!("config source=state error={e:?}"));
            None
        }
    }
}

impl MachineConfig {
    /// `machine.network`'s hostname and nameservers as the network's configuration layer
    /// (above META 0xa and the cmdline).
    pub fn network_layer(&self) -> crate::net::config::PlatformConfig {
        use crate::net::config::{HostnameSpec, PlatformConfig, ResolverSpec};
        let mut c = PlatformConfig::default();
        if !self.network.hostname.is_empty() {
            c.hostnames.push(HostnameSpec {
                hostname: self.network.hostname.clone(),
                domainname: String::new(),
            });
        }
        if !self.network.nameservers.is_empty() {
            c.resolvers.push(ResolverSpec {
                dns_servers: self.network.nameservers.clone(),
            });
        }
        c
    }
}

/// Parses a configuration: exactly one `version: v1alpha1` document (other documents are
/// kept as not applied).
pub fn parse(text: &str) -> Result<MachineConfig, String> {
    if text.len() > MAX_CONFIG {
        return Err(format!("more than {MAX_CONFIG} bytes"));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err("control characters in the text".into());
    }
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("invalid YAML: {e}"))?;
    if docs.len() > MAX_DOCUMENTS {
        return Err(format!("more than {MAX_DOCUMENTS} documents"));
    }
    let mut main = None;
    let mut not_applied = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        if d.is_null() {
            continue;
        }
        match (d.get("version").and_then(|v| v.as_str()), d.get("kind")) {
            (Some("v1alpha1"), None) => {
                if main.is_some() {
                    return Err("more than one v1alpha1 document".into());
                }
                let v: V1Alpha1 = serde_path_to_error::deserialize(d).map_err(|e| {
                    format!("document {}: field {}: {}", i + 1, e.path(), e.inner())
                })?;
                main = Some(v);
            }
            (_, Some(k)) => not_applied.push(format!(
                "kind: {}",
                k.as_str().map_or_else(|| k.to_string(), str::to_string)
            )),
            _ => {
                return Err(format!(
                    "document {}: neither version: v1alpha1 nor a kind",
                    i + 1
                ));
            }
        }
    }
    let v = main.ok_or("no v1alpha1 document (version: v1alpha1, machine: …)")?;
    for k in v.other.keys() {
        not_applied.push(k.clone());
    }
    for k in v.machine.other.keys() {
        not_applied.push(format!("machine.{k}"));
    }
    for k in v.machine.install.other.keys() {
        not_applied.push(format!("machine.install.{k}"));
    }
    for k in v.machine.network.other.keys() {
        not_applied.push(format!("machine.network.{k}"));
    }
    not_applied.sort();
    let m = v.machine;
    for (i, a) in m.install.extra_kernel_args.iter().enumerate() {
        if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "field machine.install.extraKernelArgs[{i}]: {a:?} is not one kernel argument"
            ));
        }
    }
    if !m.install.disk.is_empty() && !m.install.disk.starts_with("/dev/") {
        return Err(format!(
            "field machine.install.disk: {:?} is not a /dev path",
            m.install.disk
        ));
    }
    if m.install.disk.split('/').any(|c| c == "..") {
        return Err("field machine.install.disk: `..` in the path".into());
    }
    Ok(MachineConfig {
        text: text.to_string(),
        install: m.install,
        network: m.network,
        registries: m.registries.unwrap_or_default(),
        env: m.env,
        not_applied,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn applies_what_it_knows_and_lists_the_rest() {
        let c = parse(
            "version: v1alpha1\nmachine:\n  type: controlplane\n  install:\n    disk: /dev/vda\n    \
             image: 10.0.2.2:5000/installer:v1\n    wipe: true\n    bootloader: true\n  \
             network:\n    hostname: node-1\n    interfaces: []\n  registries:\n    mirrors:\n      \
             10.0.2.2:5000:\n        endpoints: [http://10.0.2.2:5000]\n  env:\n    A: b\n\
             cluster:\n  name: c\n---\napiVersion: v1alpha1\nkind: KubespanEndpointsConfig\n",
        )
        .unwrap();
        assert_eq!(c.install.disk, "/dev/vda");
        assert!(c.install.wipe);
        assert_eq!(c.network.hostname, "node-1");
        assert_eq!(c.env["A"], "b");
        assert_eq!(
            c.registries.mirrors["10.0.2.2:5000"].endpoints,
            ["http://10.0.2.2:5000"]
        );
        assert_eq!(
            c.not_applied,
            [
                "cluster",
                "kind: KubespanEndpointsConfig",
                "machine.install.bootloader",
                "machine.network.interfaces",
                "machine.type"
            ]
        );
    }

    #[test]
    fn refuses_what_it_cannot_take() {
        for (text, want) in [
            ("machine: {}\n", "neither version"),
            ("version: v1alpha1\n", "field"),
            (
                "version: v1alpha1\nmachine:\n  install:\n    disk: vda\n",
                "not a /dev path",
            ),
            (
                "version: v1alpha1\nmachine:\n  install:\n    disk: [1]\n",
                "machine.install.disk",
            ),
            (
                "version: v1alpha1\nmachine:\n  install:\n    extraKernelArgs: [\"a b\"]\n",
                "extraKernelArgs[0]",
            ),
            (
                "version: v1alpha1\nmachine:\n  install:\n    diskSelector:\n      nope: 1\n",
                "diskSelector",
            ),
            (
                "version: v1alpha1\nmachine: {}\n---\nversion: v1alpha1\nmachine: {}\n",
                "more than one",
            ),
            ("kind: X\n", "no v1alpha1"),
            ("version: v1alpha1\nmachine: {}\n\u{1b}[2J", "control"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
