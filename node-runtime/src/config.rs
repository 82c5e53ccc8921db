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
    /// Links, their addresses and routes.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Everything else of `machine.network` (kept).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `machine.network.interfaces[]` (Talos's `Device`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Link name (`eth0`), or empty with `deviceSelector`.
    #[serde(default)]
    pub interface: String,
    /// Chooses the link when `interface` is empty.
    #[serde(default)]
    pub device_selector: Option<DeviceSelector>,
    /// `ip/prefix` addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The deprecated single address.
    #[serde(default)]
    pub cidr: String,
    /// Routes through this link.
    #[serde(default)]
    pub routes: Vec<InterfaceRoute>,
    /// MTU (0 = leave).
    #[serde(default)]
    pub mtu: u32,
    /// Run DHCP on the link (also when it has static addresses).
    #[serde(default)]
    pub dhcp: bool,
    /// Leave the link alone entirely.
    #[serde(default)]
    pub ignore: bool,
    /// Make this a bond of other links.
    #[serde(default)]
    pub bond: Option<Bond>,
    /// VLANs on this link.
    #[serde(default)]
    pub vlans: Vec<InterfaceVlan>,
    /// Everything else (`vip`, `wireguard`, `bridge`, `dhcpOptions`, …): kept, not applied.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `interfaces[].deviceSelector` (Talos's `NetworkDeviceSelector`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceSelector {
    /// Glob on the sysfs device path.
    #[serde(default)]
    pub bus_path: Option<String>,
    /// Glob on the MAC address (`52:54:00:*`).
    #[serde(default)]
    pub hardware_addr: Option<String>,
    /// Glob on `VENDOR:DEVICE` of a PCI device (`1AF4:1000`).
    #[serde(default, rename = "pciID")]
    pub pci_id: Option<String>,
    /// Kernel driver name.
    #[serde(default)]
    pub driver: Option<String>,
    /// Only physical (true) or only virtual (false) links.
    #[serde(default)]
    pub physical: Option<bool>,
}

/// `interfaces[].routes[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InterfaceRoute {
    /// Destination `ip/prefix`; empty or `0.0.0.0/0` is the default route.
    #[serde(default)]
    pub network: String,
    /// Gateway.
    #[serde(default)]
    pub gateway: String,
    /// Preferred source address.
    #[serde(default)]
    pub source: String,
    /// Metric (0 = Talos's default, 1024).
    #[serde(default)]
    pub metric: u32,
    /// Route MTU (accepted, not applied).
    #[serde(default)]
    pub mtu: u32,
}

/// `interfaces[].bond`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Bond {
    /// Member links.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// `balance-rr`, `active-backup`, `802.3ad`, …
    #[serde(default)]
    pub mode: String,
    /// Tuning options (kept, not applied).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `interfaces[].vlans[]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceVlan {
    /// VLAN id.
    #[serde(rename = "vlanId")]
    pub vlan_id: u16,
    /// `ip/prefix` addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The deprecated single address.
    #[serde(default)]
    pub cidr: String,
    /// Routes through the VLAN.
    #[serde(default)]
    pub routes: Vec<InterfaceRoute>,
    /// Run DHCP on the VLAN (not applied: DHCP runs on physical links).
    #[serde(default)]
    pub dhcp: bool,
    /// MTU.
    #[serde(default)]
    pub mtu: u32,
    /// Everything else (`vip`, `dhcpOptions`): kept, not applied.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
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
    #[serde(default)]
    ca: Option<CaText>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// `machine.ca` as written: base64 of PEM, as Talos writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaText {
    #[serde(default)]
    crt: String,
    #[serde(default)]
    key: String,
}

/// `machine.ca`: the CA the node's API certificate is issued by and client certificates
/// must chain to (docs/formats/api.md).
#[derive(Clone)]
pub struct Ca {
    /// The CA certificate (DER).
    pub cert_der: Vec<u8>,
    /// Its key (ECDSA P-256).
    pub key: pki::SigningKey,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        write!(f, "Ca({} bytes of certificate)", self.cert_der.len())
    }
}

impl CaText {
    /// Outer error: malformed text (the sender's error); inner: a CA this node cannot use.
    fn decode(&self) -> Result<Result<Ca, String>, String> {
        use base64::Engine as _;
        let text = |field: &str, v: &str| -> Result<String, String> {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|e| format!("field machine.ca.{field}: not base64: {e}"))?;
            String::from_utf8(raw).map_err(|_| format!("field machine.ca.{field}: not PEM text"))
        };
        let crt = text("crt", &self.crt)?;
        let cert_der =
            pki::from_pem(&crt, "CERTIFICATE").map_err(|e| format!("field machine.ca.crt: {e}"))?;
        let key = match pki::key_from_pem(&text("key", &self.key)?) {
            Ok(k) => k,
            Err(e @ pki::Error::Key(_)) => return Ok(Err(e.to_string())),
            Err(e) => return Err(format!("field machine.ca.key: {e}")),
        };
        pki::check_pair(&cert_der, &key).map_err(|e| format!("field machine.ca: {e}"))?;
        Ok(Ok(Ca { cert_der, key }))
    }
}

#[derive(Debug, Default, Deserialize)]
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
    /// `machine.ca`: with it, the installed node serves its API with mutual TLS.
    pub ca: Option<Ca>,
    /// The `ImageVerificationConfig` rules, in order (the first whose pattern matches an
    /// image decides).
    pub image_rules: Vec<ImageRule>,
    /// The `WatchdogTimerConfig` document.
    pub watchdog: Option<Watchdog>,
    /// The `TrustedRootsConfig` documents, in order: CAs trusted besides Mozilla's roots for
    /// the configuration download and registry pulls.
    pub trusted_roots: Vec<TrustedRoots>,
    /// Whether there is a `v1alpha1` document (Talos's "complete for boot"). A configuration
    /// of other documents only (`TrustedRootsConfig`, …) is taken and kept active, and the node
    /// goes on waiting for a complete one.
    pub complete: bool,
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
    /// `machine.network` as the network's configuration layer (above META 0xa and the
    /// cmdline): hostname, nameservers, and each interface's link, addresses and routes, with
    /// `deviceSelector`s resolved against `links`. Links the configuration names run DHCP only
    /// with `dhcp: true`; `ignore: true` links are left alone.
    pub fn network_layer(&self, links: &[SysLink]) -> crate::net::config::ConfigLayer {
        use crate::net::config::{
            AddressSpec, BondMaster, ConfigLayer, HostnameSpec, LinkSpec, ResolverSpec, RouteSpec,
            Vlan,
        };
        let mut layer = ConfigLayer::default();
        let c = &mut layer.specs;
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
        let routes =
            |c: &mut crate::net::config::PlatformConfig, rs: &[InterfaceRoute], link: &str| {
                for r in rs {
                    let default =
                        r.network.is_empty() || r.network == "0.0.0.0/0" || r.network == "::/0";
                    c.routes.push(RouteSpec {
                        dst: if default {
                            String::new()
                        } else {
                            r.network.clone()
                        },
                        gateway: r.gateway.clone(),
                        src: r.source.clone(),
                        out_link_name: link.to_string(),
                        table: "main".into(),
                        priority: if r.metric == 0 { 1024 } else { r.metric },
                        protocol: "static".into(),
                        ..Default::default()
                    });
                }
            };
        let addresses =
            |c: &mut crate::net::config::PlatformConfig, a: &[String], cidr: &str, link: &str| {
                for addr in a
                    .iter()
                    .map(String::as_str)
                    .chain((!cidr.is_empty()).then_some(cidr))
                {
                    c.addresses.push(AddressSpec {
                        address: addr.to_string(),
                        link_name: link.to_string(),
                        ..Default::default()
                    });
                }
            };
        for (i, d) in self.network.interfaces.iter().enumerate() {
            let name = match &d.device_selector {
                None => d.interface.clone(),
                Some(sel) => match links.iter().find(|l| sel.matches(l)) {
                    Some(l) => l.name.clone(),
                    None => {
                        layer
                            .unmatched
                            .push(format!("machine.network.interfaces[{i}]"));
                        continue;
                    }
                },
            };
            if d.ignore {
                layer.no_dhcp.push(name);
                continue;
            }
            if d.dhcp && d.bond.is_none() {
                layer.dhcp.push(name.clone());
            } else {
                layer.no_dhcp.push(name.clone());
            }
            let (logical, kind, bond_master) = match &d.bond {
                Some(b) => (
                    true,
                    "bond".to_string(),
                    Some(BondMaster {
                        mode: b.mode.clone(),
                    }),
                ),
                None => (false, String::new(), None),
            };
            c.links.push(LinkSpec {
                name: name.clone(),
                logical,
                up: true,
                mtu: d.mtu,
                kind,
                bond_master,
                ..Default::default()
            });
            if let Some(b) = &d.bond {
                for m in &b.interfaces {
                    layer.no_dhcp.push(m.clone());
                    c.links.push(LinkSpec {
                        name: m.clone(),
                        up: true,
                        master_name: name.clone(),
                        ..Default::default()
                    });
                }
            }
            addresses(c, &d.addresses, &d.cidr, &name);
            routes(c, &d.routes, &name);
            for v in &d.vlans {
                let vname = format!("{name}.{}", v.vlan_id);
                c.links.push(LinkSpec {
                    name: vname.clone(),
                    logical: true,
                    up: true,
                    mtu: v.mtu,
                    kind: "vlan".into(),
                    parent_name: name.clone(),
                    vlan: Some(Vlan {
                        vlan_id: v.vlan_id,
                        protocol: "802.1q".into(),
                    }),
                    ..Default::default()
                });
                addresses(c, &v.addresses, &v.cidr, &vname);
                routes(c, &v.routes, &vname);
            }
        }
        layer
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WatchdogDoc {
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    timeout: String,
}

/// Talos's `WatchdogTimerConfig`: a hardware watchdog node-runtime arms and feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    /// The device, e.g. `/dev/watchdog0`.
    pub device: String,
    /// The timeout (Talos: at least 10 s, 1 min when not given).
    pub timeout: std::time::Duration,
}

/// A Go duration (`90s`, `2m`, `1m30s`, `1h`), whole seconds.
fn go_duration(s: &str) -> Result<std::time::Duration, String> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("{s:?} is not a duration like 30s, 2m or 1m30s")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 1m30s"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(format!("{s:?} is not a duration like 30s, 2m or 1m30s"));
    }
    Ok(std::time::Duration::from_secs(total))
}

impl WatchdogDoc {
    fn check(self) -> Result<Watchdog, String> {
        if self.api_version != "v1alpha1" {
            return Err(format!(
                "apiVersion {:?} (v1alpha1 expected)",
                self.api_version
            ));
        }
        if !self.device.starts_with("/dev/")
            || self.device.split('/').any(|c| c == "..")
            || self
                .device
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "field device: {:?} is not a /dev path",
                self.device
            ));
        }
        let timeout = if self.timeout.is_empty() {
            std::time::Duration::from_secs(60)
        } else {
            go_duration(&self.timeout).map_err(|e| format!("field timeout: {e}"))?
        };
        if timeout < std::time::Duration::from_secs(10) {
            return Err("field timeout: minimum value is 10s".into());
        }
        if timeout > std::time::Duration::from_secs(3600) {
            return Err("field timeout: at most 1h".into());
        }
        Ok(Watchdog {
            device: self.device,
            timeout,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TrustedRootsDoc {
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    certificates: String,
}

/// Talos's `TrustedRootsConfig`: extra certificate authorities, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedRoots {
    /// The document's name (unique among the configuration's `TrustedRootsConfig`s).
    pub name: String,
    /// The certificates, PEM text as given.
    pub pem: String,
    /// How many certificates it holds.
    pub count: usize,
}

/// Bound on the certificates of one configuration.
const MAX_TRUSTED_ROOTS: usize = 256;

impl TrustedRootsDoc {
    /// Talos takes the text as it is (unparsable blocks are skipped when the bundle is
    /// loaded); here every PEM block must be a certificate that parses, so that a broken CA
    /// is the sender's error and not a TLS failure later.
    fn check(self) -> Result<TrustedRoots, String> {
        if self.api_version != "v1alpha1" {
            return Err(format!(
                "TrustedRootsConfig apiVersion {:?} (v1alpha1 expected)",
                self.api_version
            ));
        }
        if self.name.is_empty() {
            return Err("name is required".into());
        }
        if self.name.chars().any(char::is_control) {
            return Err("control characters in name".into());
        }
        let count = cosign::certificates_from_pem(self.certificates.as_bytes())
            .map_err(|e| format!("field certificates: {e}"))?
            .len();
        if count == 0 {
            return Err("field certificates: no -----BEGIN CERTIFICATE-----".into());
        }
        Ok(TrustedRoots {
            name: self.name,
            pem: self.certificates,
            count,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageVerificationDoc {
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    rules: Vec<ImageRule>,
}

/// One rule of Talos's `ImageVerificationConfig` document.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageRule {
    /// Glob on `registry/repository` (`*` matches anything, `/` included).
    #[serde(default)]
    pub image: String,
    /// Pull matching images without verification.
    #[serde(default)]
    pub skip: bool,
    /// Refuse matching images.
    #[serde(default)]
    pub deny: bool,
    /// Fulcio certificate identity.
    #[serde(default)]
    pub keyless: Option<KeylessRule>,
    /// A cosign public key.
    #[serde(default)]
    pub public_key: Option<PublicKeyRule>,
}

/// `rules[].keyless`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeylessRule {
    /// OIDC issuer, exact.
    #[serde(default)]
    pub issuer: String,
    /// Certificate identity, exact.
    #[serde(default)]
    pub subject: String,
    /// Certificate identity, regular expression.
    #[serde(default)]
    pub subject_regex: String,
    /// Our addition: the Sigstore trusted root (JSON text). Talos fetches the public-good
    /// root by TUF at run time; node-runtime does not, so keyless rules must carry it.
    #[serde(default)]
    pub trusted_root: String,
}

/// `rules[].publicKey`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublicKeyRule {
    /// The PEM public key (Talos calls the field `certificate`).
    pub certificate: String,
}

impl ImageRule {
    /// Talos's validation of a rule.
    fn check(&self) -> Result<(), String> {
        if self.image.is_empty() {
            return Err("image must be specified".into());
        }
        if self.image.chars().any(char::is_control) {
            return Err("control characters in image".into());
        }
        let verifiers =
            usize::from(self.keyless.is_some()) + usize::from(self.public_key.is_some());
        match (self.skip, self.deny, verifiers) {
            (true, true, _) => return Err("skip and deny cannot both be true".into()),
            (true, _, 1..) | (_, true, 1..) => {
                return Err("verifiers cannot be configured if skip or deny is true".into());
            }
            (false, false, 0) => return Err("at least one verifier must be configured".into()),
            (_, _, 2..) => {
                return Err("only one of keyless or publicKey verifier can be configured".into());
            }
            _ => {}
        }
        if let Some(k) = &self.keyless {
            if k.issuer.is_empty() {
                return Err("keyless.issuer must be specified".into());
            }
            if k.subject.is_empty() && k.subject_regex.is_empty() {
                return Err("keyless.subject or keyless.subjectRegex must be specified".into());
            }
        }
        // the verifier is built here too, so that a bad key is the sender's error
        self.verifier().map(|_| ())
    }

    /// The cosign verifier of a rule with one (`None` for skip and deny rules).
    pub fn verifier(&self) -> Result<Option<cosign::Verifier>, String> {
        if let Some(p) = &self.public_key {
            let key = cosign::PublicKey::from_pem(p.certificate.as_bytes())
                .map_err(|e| format!("publicKey.certificate: {e}"))?;
            return Ok(Some(cosign::Verifier::Key {
                path: format!("rule {:?}", self.image),
                key,
            }));
        }
        if let Some(k) = &self.keyless {
            if k.trusted_root.is_empty() {
                return Err(
                    "keyless: node-runtime needs keyless.trustedRoot (the Sigstore trusted root \
                     JSON); it does not fetch one by TUF"
                        .into(),
                );
            }
            let trust_root = cosign::TrustRoot::from_json(k.trusted_root.as_bytes())
                .map_err(|e| format!("keyless.trustedRoot: {e}"))?;
            let identity = if k.subject_regex.is_empty() {
                cosign::Identity::Exact(k.subject.clone())
            } else {
                cosign::Identity::regexp(&k.subject_regex)
                    .map_err(|e| format!("keyless.subjectRegex: {e}"))?
            };
            return Ok(Some(cosign::Verifier::Keyless {
                identity,
                issuer: cosign::Issuer::Exact(k.issuer.clone()),
                trust_root,
            }));
        }
        Ok(None)
    }
}

impl MachineConfig {
    /// The CAs of its `TrustedRootsConfig` documents, PEM, one entry per document.
    pub fn extra_cas(&self) -> Vec<Vec<u8>> {
        self.trusted_roots
            .iter()
            .map(|r| r.pem.clone().into_bytes())
            .collect()
    }

    /// The first image-verification rule whose pattern matches `repository`.
    pub fn image_rule(&self, repository: &str) -> Option<&ImageRule> {
        self.image_rules.iter().find(|r| glob(&r.image, repository))
    }
}

/// A link name the kernel would take: 1–15 bytes, no `/`, whitespace or control characters.
fn link_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && !n
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

fn check_routes(routes: &[InterfaceRoute], at: &str) -> Result<(), String> {
    use crate::net::config::parse_prefix;
    for (j, r) in routes.iter().enumerate() {
        if !r.network.is_empty() {
            parse_prefix(&r.network).map_err(|e| format!("field {at}.routes[{j}].network: {e}"))?;
        }
        for (k, v) in [("gateway", &r.gateway), ("source", &r.source)] {
            if !v.is_empty() && v.parse::<std::net::IpAddr>().is_err() {
                return Err(format!(
                    "field {at}.routes[{j}].{k}: {v:?} is not an IP address"
                ));
            }
        }
        if r.gateway.is_empty() && r.network.is_empty() {
            return Err(format!(
                "field {at}.routes[{j}]: neither network nor gateway"
            ));
        }
    }
    Ok(())
}

fn check_addresses(addresses: &[String], cidr: &str, at: &str) -> Result<(), String> {
    for (j, a) in addresses.iter().enumerate() {
        crate::net::config::parse_prefix(a)
            .map_err(|e| format!("field {at}.addresses[{j}]: {e}"))?;
    }
    if !cidr.is_empty() {
        crate::net::config::parse_prefix(cidr).map_err(|e| format!("field {at}.cidr: {e}"))?;
    }
    Ok(())
}

/// Checks one `machine.network.interfaces[]` entry; the error names the field.
fn check_interface(d: &Interface, at: &str) -> Result<(), String> {
    match (d.interface.is_empty(), &d.device_selector) {
        (true, None) => {
            return Err(format!("field {at}: neither interface nor deviceSelector"));
        }
        (false, Some(_)) => {
            return Err(format!("field {at}: both interface and deviceSelector"));
        }
        (false, None) if !link_name_ok(&d.interface) => {
            return Err(format!(
                "field {at}.interface: {:?} is not a link name",
                d.interface
            ));
        }
        _ => {}
    }
    if let Some(sel) = &d.device_selector {
        let globs = [&sel.bus_path, &sel.hardware_addr, &sel.pci_id, &sel.driver];
        if globs.iter().all(|g| g.is_none()) && sel.physical.is_none() {
            return Err(format!("field {at}.deviceSelector: empty"));
        }
        if globs
            .iter()
            .flat_map(|g| g.iter())
            .any(|g| g.chars().any(char::is_control))
        {
            return Err(format!("field {at}.deviceSelector: control characters"));
        }
    }
    check_addresses(&d.addresses, &d.cidr, at)?;
    check_routes(&d.routes, at)?;
    if let Some(b) = &d.bond {
        if d.interface.is_empty() {
            return Err(format!(
                "field {at}.bond: a bond needs interface: (its name)"
            ));
        }
        for (j, m) in b.interfaces.iter().enumerate() {
            if !link_name_ok(m) {
                return Err(format!(
                    "field {at}.bond.interfaces[{j}]: {m:?} is not a link name"
                ));
            }
        }
        if !matches!(
            b.mode.as_str(),
            "" | "balance-rr"
                | "active-backup"
                | "balance-xor"
                | "broadcast"
                | "802.3ad"
                | "balance-tlb"
                | "balance-alb"
        ) {
            return Err(format!(
                "field {at}.bond.mode: {:?} is not a bond mode",
                b.mode
            ));
        }
    }
    for (j, v) in d.vlans.iter().enumerate() {
        if !d.interface.is_empty() && d.interface.len() + 1 + v.vlan_id.to_string().len() > 15 {
            return Err(format!(
                "field {at}.vlans[{j}]: the VLAN link {}.{} would be longer than 15 bytes",
                d.interface, v.vlan_id
            ));
        }
        if !(1..=4094).contains(&v.vlan_id) {
            return Err(format!(
                "field {at}.vlans[{j}].vlanId: {} is not 1-4094",
                v.vlan_id
            ));
        }
        let vat = format!("{at}.vlans[{j}]");
        check_addresses(&v.addresses, &v.cidr, &vat)?;
        check_routes(&v.routes, &vat)?;
    }
    Ok(())
}

/// What sysfs says about a network link, for `deviceSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysLink {
    /// Link name.
    pub name: String,
    /// MAC address, lower-case `aa:bb:…`.
    pub hardware_addr: String,
    /// The device path under `/sys/devices` (empty for virtual links).
    pub bus_path: String,
    /// `VENDOR:DEVICE` in upper-case hex for PCI devices.
    pub pci_id: String,
    /// Kernel driver.
    pub driver: String,
    /// Backed by a device (not virtual).
    pub physical: bool,
}

impl SysLink {
    /// The links in `/sys/class/net`, sorted by name.
    pub fn scan() -> Vec<SysLink> {
        let Ok(rd) = std::fs::read_dir("/sys/class/net") else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .take(1024)
            .collect();
        names.sort();
        names.iter().map(|n| SysLink::read(n)).collect()
    }

    fn read(name: &str) -> SysLink {
        let base = std::path::Path::new("/sys/class/net").join(name);
        let text = |p: &str| {
            std::fs::read_to_string(base.join(p))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let device = std::fs::canonicalize(base.join("device")).ok();
        let hex = |p: &str| text(p).trim_start_matches("0x").to_uppercase();
        let pci_id = if text("device/vendor").is_empty() {
            String::new()
        } else {
            format!("{}:{}", hex("device/vendor"), hex("device/device"))
        };
        SysLink {
            name: name.to_string(),
            hardware_addr: text("address").to_lowercase(),
            bus_path: device
                .as_ref()
                .map(|p| {
                    p.to_string_lossy()
                        .trim_start_matches("/sys/devices")
                        .to_string()
                })
                .unwrap_or_default(),
            pci_id,
            driver: std::fs::read_link(base.join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_default(),
            physical: device.is_some(),
        }
    }
}

impl DeviceSelector {
    /// Whether `l` matches every field that is set.
    pub fn matches(&self, l: &SysLink) -> bool {
        let g = |pat: &Option<String>, v: &str| pat.as_ref().is_none_or(|p| glob(p, v));
        g(&self.bus_path, &l.bus_path)
            && g(
                &self.hardware_addr.as_ref().map(|s| s.to_lowercase()),
                &l.hardware_addr,
            )
            && g(&self.pci_id.as_ref().map(|s| s.to_uppercase()), &l.pci_id)
            && g(&self.driver, &l.driver)
            && self.physical.is_none_or(|p| p == l.physical)
    }
}

/// Talos's glob (`*` matches any run of characters, `/` included; no other metacharacters).
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else if let Some(at) = rest.find(p) {
            rest = &rest[at + p.len()..];
        } else {
            return false;
        }
    }
    true
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
    let mut image_rules: Vec<ImageRule> = Vec::new();
    let mut watchdog: Option<Watchdog> = None;
    let mut trusted_roots: Vec<TrustedRoots> = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        if d.is_null() {
            continue;
        }
        if d.get("kind").and_then(|k| k.as_str()) == Some("TrustedRootsConfig") {
            let doc: TrustedRootsDoc = serde_path_to_error::deserialize(d)
                .map_err(|e| format!("document {}: field {}: {}", i + 1, e.path(), e.inner()))?;
            let r = doc
                .check()
                .map_err(|e| format!("document {} (TrustedRootsConfig): {e}", i + 1))?;
            if trusted_roots.iter().any(|x| x.name == r.name) {
                return Err(format!("duplicate document: TrustedRootsConfig/{}", r.name));
            }
            if trusted_roots.iter().map(|x| x.count).sum::<usize>() + r.count > MAX_TRUSTED_ROOTS {
                return Err(format!(
                    "more than {MAX_TRUSTED_ROOTS} trusted root certificates"
                ));
            }
            trusted_roots.push(r);
            continue;
        }
        if d.get("kind").and_then(|k| k.as_str()) == Some("WatchdogTimerConfig") {
            let doc: WatchdogDoc = serde_path_to_error::deserialize(d)
                .map_err(|e| format!("document {}: field {}: {}", i + 1, e.path(), e.inner()))?;
            if watchdog.is_some() {
                return Err("more than one WatchdogTimerConfig document".into());
            }
            watchdog = Some(
                doc.check()
                    .map_err(|e| format!("document {} (WatchdogTimerConfig): {e}", i + 1))?,
            );
            continue;
        }
        if d.get("kind").and_then(|k| k.as_str()) == Some("ImageVerificationConfig") {
            let doc: ImageVerificationDoc = serde_path_to_error::deserialize(d)
                .map_err(|e| format!("document {}: field {}: {}", i + 1, e.path(), e.inner()))?;
            if doc.api_version != "v1alpha1" {
                return Err(format!(
                    "document {}: ImageVerificationConfig apiVersion {:?} (v1alpha1 expected)",
                    i + 1,
                    doc.api_version
                ));
            }
            for (j, r) in doc.rules.into_iter().enumerate() {
                r.check()
                    .map_err(|e| format!("document {}: field rules[{j}]: {e}", i + 1))?;
                // a later document's rule for the same pattern replaces the earlier one
                match image_rules
                    .iter_mut()
                    .find(|x: &&mut ImageRule| x.image == r.image)
                {
                    Some(x) => *x = r,
                    None => image_rules.push(r),
                }
            }
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
    if main.is_none()
        && not_applied.is_empty()
        && image_rules.is_empty()
        && watchdog.is_none()
        && trusted_roots.is_empty()
    {
        return Err("no documents".into());
    }
    let complete = main.is_some();
    let v = main.unwrap_or_default();
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
    for (i, d) in v.machine.network.interfaces.iter().enumerate() {
        let at = format!("machine.network.interfaces[{i}]");
        check_interface(d, &at)?;
        for k in d.other.keys() {
            not_applied.push(format!("{at}.{k}"));
        }
        if let Some(b) = &d.bond {
            for k in b.other.keys() {
                not_applied.push(format!("{at}.bond.{k}"));
            }
            // DHCP runs on physical links only
            if d.dhcp {
                not_applied.push(format!("{at}.dhcp"));
            }
        }
        for (j, vl) in d.vlans.iter().enumerate() {
            for k in vl.other.keys() {
                not_applied.push(format!("{at}.vlans[{j}].{k}"));
            }
            if vl.dhcp {
                not_applied.push(format!("{at}.vlans[{j}].dhcp"));
            }
        }
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
    for (k, v) in &m.env {
        let name_ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(format!(
                "field machine.env: {k:?} is not an environment variable name"
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(format!("field machine.env.{k}: control characters"));
        }
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
        ca: match &m.ca {
            Some(c) if !c.crt.is_empty() && !c.key.is_empty() => match c.decode()? {
                Ok(ca) => Some(ca),
                Err(why) => {
                    // a CA this node cannot use (Ed25519, …) turns the API off, not the
                    // configuration down
                    not_applied.push(format!("machine.ca ({why}: no API)"));
                    None
                }
            },
            Some(c) if !c.crt.is_empty() => {
                // a Talos worker's configuration: the CA certificate without its key
                not_applied.push("machine.ca (no key: no API)".into());
                None
            }
            Some(c) if !c.key.is_empty() => {
                return Err("field machine.ca: a key without crt".into());
            }
            _ => None,
        },
        image_rules,
        watchdog,
        trusted_roots,
        complete,
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
                "machine.type"
            ]
        );
    }

    fn eth(name: &str, mac: &str, driver: &str) -> SysLink {
        SysLink {
            name: name.into(),
            hardware_addr: mac.into(),
            bus_path: format!("/pci0000:00/0000:00:0{}.0/virtio1", name.len()),
            pci_id: "1AF4:1000".into(),
            driver: driver.into(),
            physical: true,
        }
    }

    #[test]
    fn network_interfaces_become_the_configuration_layer() {
        let c = parse(
            "version: v1alpha1\nmachine:\n  network:\n    hostname: node-a\n    nameservers: [1.1.1.1]\n    \
             interfaces:\n      - deviceSelector:\n          hardwareAddr: '52:54:00:*'\n          \
             driver: virtio_net\n        dhcp: true\n        addresses: [192.168.77.5/24]\n        \
             routes:\n          - network: 0.0.0.0/0\n            gateway: 192.168.77.1\n          \
             - network: 198.51.100.0/24\n            gateway: 192.168.77.1\n            metric: 100\n        \
             vlans:\n          - vlanId: 42\n            cidr: 10.42.0.2/24\n            dhcp: true\n      \
             - interface: bond0\n        dhcp: true\n        bond:\n          interfaces: [eth1, eth2]\n          \
             mode: active-backup\n          miimon: 100\n        mtu: 9000\n      \
             - interface: eth3\n        ignore: true\n      \
             - deviceSelector:\n          driver: e1000\n        addresses: [10.9.9.9/8]\n        \
             vip:\n          ip: 1.2.3.4\n",
        )
        .unwrap();
        assert_eq!(
            c.not_applied,
            [
                "machine.network.interfaces[0].vlans[0].dhcp",
                "machine.network.interfaces[1].bond.miimon",
                "machine.network.interfaces[1].dhcp",
                "machine.network.interfaces[3].vip",
            ]
        );
        let links = [
            eth("eth0", "52:54:00:12:34:56", "virtio_net"),
            eth("eth1", "52:54:01:00:00:01", "e1000e"),
        ];
        let l = c.network_layer(&links);
        assert_eq!(l.unmatched, ["machine.network.interfaces[3]"]);
        assert_eq!(l.dhcp, ["eth0"]);
        assert_eq!(l.no_dhcp, ["bond0", "eth1", "eth2", "eth3"]);
        let s = &l.specs;
        assert_eq!(s.hostnames[0].hostname, "node-a");
        assert_eq!(s.resolvers[0].dns_servers, ["1.1.1.1"]);
        let names: Vec<(&str, &str, &str, u32)> = s
            .links
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.kind.as_str(),
                    l.master_name.as_str(),
                    l.mtu,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("eth0", "", "", 0),
                ("eth0.42", "vlan", "", 0),
                ("bond0", "bond", "", 9000),
                ("eth1", "", "bond0", 0),
                ("eth2", "", "bond0", 0),
            ]
        );
        assert_eq!(s.links[1].parent_name, "eth0");
        assert_eq!(
            s.links[2].bond_master.as_ref().unwrap().mode,
            "active-backup"
        );
        let addrs: Vec<(&str, &str)> = s
            .addresses
            .iter()
            .map(|a| (a.address.as_str(), a.link_name.as_str()))
            .collect();
        assert_eq!(
            addrs,
            [("192.168.77.5/24", "eth0"), ("10.42.0.2/24", "eth0.42")]
        );
        let routes: Vec<(&str, &str, &str, u32)> = s
            .routes
            .iter()
            .map(|r| {
                (
                    r.dst.as_str(),
                    r.gateway.as_str(),
                    r.out_link_name.as_str(),
                    r.priority,
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("", "192.168.77.1", "eth0", 1024),
                ("198.51.100.0/24", "192.168.77.1", "eth0", 100)
            ]
        );
    }

    #[test]
    fn device_selectors_match_every_field_given() {
        let l = eth("eth0", "52:54:00:12:34:56", "virtio_net");
        let sel = |y: &str| -> DeviceSelector { serde_saphyr::from_str(y).unwrap() };
        assert!(sel("hardwareAddr: '52:54:00:*'").matches(&l));
        assert!(sel("hardwareAddr: '52:54:00:12:34:56'\ndriver: virtio_net").matches(&l));
        assert!(!sel("hardwareAddr: '52:54:00:*'\ndriver: e1000").matches(&l));
        assert!(sel("pciID: 1af4:1000").matches(&l));
        assert!(sel("busPath: '/pci0000:00/*'\nphysical: true").matches(&l));
        assert!(!sel("physical: false").matches(&l));
    }

    #[test]
    fn image_verification_rules() {
        let pem = cosign::SigningKey::from_seed(b"k").public_key().to_pem();
        let key = pem
            .lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>();
        let doc = format!(
            "version: v1alpha1\nmachine: {{}}\n---\napiVersion: v1alpha1\nkind: ImageVerificationConfig\n\
             rules:\n  - image: '127.0.0.1:*/signed/*'\n    publicKey:\n      certificate: |\n{key}  \
             - image: 'docker.io/*'\n    skip: true\n  - image: '*'\n    deny: true\n"
        );
        let c = parse(&doc).unwrap();
        assert!(c.not_applied.is_empty(), "{:?}", c.not_applied);
        let r = c.image_rule("127.0.0.1:5000/signed/installer").unwrap();
        assert!(matches!(
            r.verifier(),
            Ok(Some(cosign::Verifier::Key { .. }))
        ));
        assert!(matches!(
            c.image_rule("docker.io/library/x").unwrap().verifier(),
            Ok(None)
        ));
        assert!(c.image_rule("ghcr.io/a/b").unwrap().deny);
        // Talos's validation
        for (rule, want) in [
            ("  - image: x/*\n", "at least one verifier"),
            (
                "  - image: x/*\n    skip: true\n    deny: true\n",
                "skip and deny",
            ),
            ("  - skip: true\n", "image must be specified"),
            (
                "  - image: x/*\n    keyless:\n      issuer: https://i\n",
                "subject or keyless.subjectRegex",
            ),
            (
                "  - image: x/*\n    keyless:\n      issuer: https://i\n      subject: a@b\n",
                "trustedRoot",
            ),
            (
                "  - image: x/*\n    publicKey:\n      certificate: nope\n",
                "publicKey.certificate",
            ),
            ("  - image: x/*\n    skip: true\n    nope: 1\n", "nope"),
        ] {
            let e = parse(&format!(
                "version: v1alpha1\nmachine: {{}}\n---\napiVersion: v1alpha1\nkind: ImageVerificationConfig\nrules:\n{rule}"
            ))
            .unwrap_err();
            assert!(e.contains(want), "{rule:?}: {e}");
        }
    }

    #[test]
    fn machine_ca_the_node_cannot_use_turns_the_api_off() {
        use base64::Engine as _;
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let key = pki::new_key().unwrap();
        let cert = pki::issue("O=talos", &key, &pki::Kind::Ca, None, 0, 4_000_000_000).unwrap();
        let crt = b64(&pki::to_pem("CERTIFICATE", &cert));
        let good = b64(&pki::to_pem("PRIVATE KEY", &pki::key_pkcs8(&key).unwrap()));
        let doc = |k: &str| {
            format!("version: v1alpha1\nmachine:\n  ca:\n    crt: {crt}\n    key: '{k}'\n")
        };
        let c = parse(&doc(&good)).unwrap();
        assert!(c.ca.is_some() && c.not_applied.is_empty());
        // a Talos worker: the certificate without the key
        let c = parse(&doc("")).unwrap();
        assert!(c.ca.is_none());
        assert_eq!(c.not_applied, ["machine.ca (no key: no API)"]);
        // Talos's default Ed25519 CA
        let ed =
            b64("-----BEGIN ED25519 PRIVATE KEY-----\nAA==\n-----END ED25519 PRIVATE KEY-----\n");
        let c = parse(&doc(&ed)).unwrap();
        assert!(c.ca.is_none());
        assert!(c.not_applied[0].contains("Ed25519"), "{:?}", c.not_applied);
        // another CA's key
        let other = b64(&pki::to_pem(
            "PRIVATE KEY",
            &pki::key_pkcs8(&pki::new_key().unwrap()).unwrap(),
        ));
        assert!(parse(&doc(&other)).unwrap_err().contains("does not belong"));
    }

    #[test]
    fn watchdog_timer_config() {
        let doc = |body: &str| {
            parse(&format!(
                "version: v1alpha1\nmachine: {{}}\n---\napiVersion: v1alpha1\nkind: WatchdogTimerConfig\n{body}"
            ))
        };
        let w = doc("device: /dev/watchdog0\ntimeout: 1m30s\n").unwrap();
        assert!(w.not_applied.is_empty());
        assert_eq!(
            w.watchdog,
            Some(Watchdog {
                device: "/dev/watchdog0".into(),
                timeout: std::time::Duration::from_secs(90)
            })
        );
        let d = doc("device: /dev/watchdog0\n").unwrap().watchdog.unwrap();
        assert_eq!(d.timeout.as_secs(), 60);
        for (body, want) in [
            (
                "device: /dev/watchdog0\ntimeout: 5s\n",
                "minimum value is 10s",
            ),
            ("device: /dev/watchdog0\ntimeout: soon\n", "not a duration"),
            ("device: watchdog0\n", "not a /dev path"),
            ("device: /dev/../x\n", "not a /dev path"),
            ("device: /dev/watchdog0\nextra: 1\n", "extra"),
        ] {
            let e = doc(body).unwrap_err();
            assert!(e.contains(want), "{body:?}: {e}");
        }
    }

    #[test]
    fn trusted_roots_documents() {
        let key = pki::new_key().unwrap();
        let pem = pki::to_pem(
            "CERTIFICATE",
            &pki::issue(
                "CN=lab CA",
                &key,
                &pki::Kind::Ca,
                None,
                1_700_000_000,
                1_900_000_000,
            )
            .unwrap(),
        );
        let doc = |name: &str, certs: &str| {
            format!(
                "apiVersion: v1alpha1\nkind: TrustedRootsConfig\nname: {name}\ncertificates: |\n{}",
                certs
                    .lines()
                    .map(|l| format!("  {l}\n"))
                    .collect::<String>()
            )
        };
        // alone: an incomplete configuration
        let c = parse(&doc("lab", &format!("# the lab\n{pem}{pem}"))).unwrap();
        assert!(!c.complete);
        assert_eq!(c.trusted_roots.len(), 1);
        assert_eq!(c.trusted_roots[0].count, 2);
        assert_eq!(
            c.extra_cas(),
            vec![format!("# the lab\n{pem}{pem}").into_bytes()]
        );
        // beside a v1alpha1 document: complete, two documents of distinct names
        let c = parse(&format!(
            "version: v1alpha1\nmachine: {{}}\n---\n{}---\n{}",
            doc("a", &pem),
            doc("b", &pem)
        ))
        .unwrap();
        assert!(c.complete);
        assert_eq!(c.extra_cas().len(), 2);
        // an unknown kind alone is kept, not applied, and incomplete
        let c = parse("kind: X\n").unwrap();
        assert!(!c.complete && c.not_applied == ["kind: X"]);
        for (text, want) in [
            (
                format!("{}---\n{}", doc("a", &pem), doc("a", &pem)),
                "duplicate document: TrustedRootsConfig/a",
            ),
            (
                doc("a", "not a certificate"),
                "no -----BEGIN CERTIFICATE-----",
            ),
            (
                doc("a", &pem.replace("CERTIFICATE", "PUBLIC KEY")),
                "expected CERTIFICATE blocks, found PUBLIC KEY",
            ),
            (
                doc(
                    "a",
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                "not a DER X.509 certificate",
            ),
            (
                doc("a", &pem).replace("v1alpha1", "v1"),
                "apiVersion \"v1\"",
            ),
            (format!("{}extra: 1\n", doc("a", &pem)), "unknown field"),
            (doc("''", &pem), "name is required"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
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
            ("", "no documents"),
            ("---\n---\n", "no documents"),
            (
                "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - addresses: []\n",
                "neither interface nor deviceSelector",
            ),
            (
                "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - interface: 'a/b'\n",
                "not a link name",
            ),
            (
                "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.0.1]\n",
                "interfaces[0].addresses[0]",
            ),
            (
                "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - interface: eth0\n        routes:\n          - gateway: x\n",
                "routes[0].gateway",
            ),
            (
                "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - interface: eth0\n        vlans:\n          - vlanId: 0\n",
                "vlanId",
            ),
            (
                "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - deviceSelector:\n          nope: 1\n",
                "deviceSelector",
            ),
            (
                "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - interface: enx001122334455\n        vlans:\n          - vlanId: 42\n",
                "longer than 15 bytes",
            ),
            (
                "version: v1alpha1\nmachine:\n  ca:\n    key: QQ==\n",
                "a key without crt",
            ),
            (
                "version: v1alpha1\nmachine:\n  ca:\n    crt: '%%%'\n    key: QQ==\n",
                "machine.ca.crt: not base64",
            ),
            ("version: v1alpha1\nmachine: {}\n\u{1b}[2J", "control"),
            (
                "version: v1alpha1\nmachine:\n  env:\n    A=B: x\n",
                "not an environment variable name",
            ),
            (
                "version: v1alpha1\nmachine:\n  env:\n    A: \"\\e[2J\"\n",
                "machine.env.A: control characters",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
