//! `nodectl`: the host-side client of node-runtime's API (docs/formats/api.md), in
//! talosctl's role and with its flags where they exist: `gen config NAME ENDPOINT`,
//! `apply-config --insecure --nodes IP --file F`, `version`, `get meta`, `meta write|delete`,
//! `reset [--graceful] [--wipe-mode]`, `reboot`, `upgrade --image REF [--preserve] [--stage]`,
//! `services`, `logs SERVICE`, `dmesg`.
//!
//! Two ways to talk to a node: `--insecure` (the maintenance API: TLS without verifying the
//! node's certificate, no client certificate), or a client configuration (`--talosconfig`,
//! `$TALOSCONFIG`, else `~/.talos/config`, written by `gen config`): mutual TLS, the node's
//! certificate verified against the configuration's CA and a client certificate the CA
//! issued. Exit codes: 0 done, 2 refused by the node or bad usage, 3 neither way given,
//! 4 the node cannot be reached, refused the connection or answered nonsense, 6 files.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "nodectl",
    version,
    about = "Talk to a node's API: gen config, apply-config, version, get meta, meta write|delete, upgrade, services, logs, dmesg, reset, reboot"
)]
struct Cli {
    /// The node's address.
    #[arg(short = 'n', long = "nodes", global = true, value_name = "IP")]
    nodes: Option<String>,
    /// The API port.
    #[arg(long, global = true, default_value_t = 50000)]
    port: u16,
    /// Use the maintenance API: TLS without verifying the node's certificate, no client
    /// certificate (what Talos's maintenance mode accepts).
    #[arg(short = 'i', long, global = true)]
    insecure: bool,
    /// The client configuration (CA, client certificate and key, endpoints) for the
    /// authenticated API; default `$TALOSCONFIG`, else `~/.talos/config`.
    #[arg(long, global = true, value_name = "FILE")]
    talosconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a machine configuration; a node in maintenance installs it.
    ApplyConfig {
        /// The configuration (YAML).
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// The node's version.
    Version,
    /// Read a resource: `meta` (the META values).
    Get {
        /// `meta`.
        resource: String,
    },
    /// Reboot the node.
    Reboot,
    /// Change META on an installed node.
    Meta {
        #[command(subcommand)]
        what: Meta,
    },
    /// Wipe STATE and EPHEMERAL of an installed node and reboot it into maintenance mode.
    Reset {
        /// Stop the node's processes politely first (SIGTERM, up to 30 s).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        graceful: bool,
        /// `all` or `system-disk` (the same here: there are no user disks).
        #[arg(long, default_value = "all")]
        wipe_mode: String,
    },
    /// Upgrade an installed node to the version in an installer image (A/B: the running
    /// version stays the fallback).
    Upgrade {
        /// The installer image.
        #[arg(long)]
        image: String,
        /// Keep EPHEMERAL (`/var`); without it, EPHEMERAL is formatted again.
        #[arg(long)]
        preserve: bool,
        /// Store the upgrade in META and run it at the next reboot.
        #[arg(long)]
        stage: bool,
        /// Test hook: pause the installer for good at its most fragile point (the node
        /// honours it only with `node_runtime.test_install_pause` on its command line).
        #[arg(long, hide = true)]
        test_pause: bool,
    },
    /// The node's services and their states.
    Services,
    /// A service's log (its last 256 KiB).
    Logs {
        /// The service id (`ext-<name>`).
        service: String,
    },
    /// The kernel's log.
    Dmesg,
    /// Generate configurations.
    Gen {
        #[command(subcommand)]
        what: Gen,
    },
}

#[derive(Subcommand)]
enum Meta {
    /// Set KEY (`0x0a` or `10`) to VALUE.
    Write {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete KEY.
    Delete {
        /// The key.
        key: String,
    },
}

#[derive(Subcommand)]
enum Gen {
    /// A machine configuration pair (controlplane.yaml, worker.yaml) with a fresh CA in
    /// `machine.ca`, and the client configuration `talosconfig` with a client certificate
    /// that CA issued.
    Config {
        /// The cluster's name.
        cluster_name: String,
        /// The cluster's endpoint (`https://IP:6443`).
        cluster_endpoint: String,
        /// Where the three files go.
        #[arg(short = 'o', long, default_value = ".")]
        output_dir: PathBuf,
        /// `machine.install.disk`.
        #[arg(long, default_value = "/dev/sda")]
        install_disk: String,
        /// `machine.install.image`.
        #[arg(long, default_value = "ghcr.io/siderolabs/installer:v1.14.0")]
        install_image: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// The client configuration (talosctl's `talosconfig`).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct TalosConfig {
    context: String,
    contexts: std::collections::BTreeMap<String, Context>,
}

#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct Context {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    nodes: Vec<String>,
    /// base64 of the CA's PEM.
    ca: String,
    /// base64 of the client certificate's PEM.
    crt: String,
    /// base64 of the client key's PEM.
    key: String,
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(field: &str, s: &str) -> Result<Vec<u8>, Fail> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| Fail(2, format!("talosconfig {field}: not base64: {e}")))
}

/// The current context of the client configuration, when one is given or exists.
fn load_context(cli: &Cli) -> Result<Option<Context>, Fail> {
    let path = match (&cli.talosconfig, std::env::var_os("TALOSCONFIG")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".talos/config"),
            None => return Ok(None),
        },
    };
    if cli.talosconfig.is_none() && !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Fail(6, format!("--talosconfig {}: {e}", path.display())))?;
    if text.len() > 1 << 20 {
        return Err(Fail(2, format!("{}: larger than 1 MiB", path.display())));
    }
    let c: TalosConfig =
        serde_saphyr::from_str(&text).map_err(|e| Fail(2, format!("{}: {e}", path.display())))?;
    let ctx = c.contexts.get(&c.context).cloned().ok_or_else(|| {
        Fail(
            2,
            format!("{}: no context {:?}", path.display(), printable(&c.context)),
        )
    })?;
    Ok(Some(ctx))
}

fn gen_config(
    name: &str,
    endpoint: &str,
    dir: &std::path::Path,
    disk: &str,
    image: &str,
    force: bool,
) -> Result<(), Fail> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    for (what, v) in [
        ("cluster name", name),
        ("endpoint", endpoint),
        ("--install-disk", disk),
        ("--install-image", image),
    ] {
        if v.is_empty() || v.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
            return Err(Fail(
                2,
                format!("{what} {:?}: empty or not printable", printable(v)),
            ));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let from = now.saturating_sub(3600);
    let pk = |e: pki::Error| Fail(4, format!("generating keys: {e}"));
    let ca_key = pki::new_key().map_err(pk)?;
    let ca = pki::issue(
        "O=talos",
        &ca_key,
        &pki::Kind::Ca,
        None,
        from,
        now + 10 * 365 * 86400,
    )
    .map_err(pk)?;
    let client_key = pki::new_key().map_err(pk)?;
    let issuer = pki::Issuer {
        cert_der: &ca,
        key: &ca_key,
    };
    let client = pki::issue(
        "O=os:admin",
        &client_key,
        &pki::Kind::Client,
        Some(&issuer),
        from,
        now + 365 * 86400,
    )
    .map_err(pk)?;
    let ca_pem = pki::to_pem("CERTIFICATE", &ca);
    let ca_key_pem = pki::to_pem("PRIVATE KEY", &pki::key_pkcs8(&ca_key).map_err(pk)?);
    let machine = |kind: &str| {
        format!(
            "version: v1alpha1\ndebug: false\npersist: true\nmachine:\n  type: {kind}\n  ca:\n    \
             crt: {}\n    key: {}\n  install:\n    disk: \"{disk}\"\n    image: \"{image}\"\n    \
             wipe: false\ncluster:\n  clusterName: \"{name}\"\n  controlPlane:\n    endpoint: \"{endpoint}\"\n",
            b64(&ca_pem),
            b64(&ca_key_pem)
        )
    };
    // https://host:port, https://[v6]:port
    let authority = endpoint
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    }
    .to_string();
    if host.is_empty() {
        return Err(Fail(
            2,
            format!("endpoint {:?}: no host", printable(endpoint)),
        ));
    }
    let mut contexts = std::collections::BTreeMap::new();
    contexts.insert(
        name.to_string(),
        Context {
            endpoints: vec![host],
            nodes: Vec::new(),
            ca: b64(&ca_pem),
            crt: b64(&pki::to_pem("CERTIFICATE", &client)),
            key: b64(&pki::to_pem(
                "PRIVATE KEY",
                &pki::key_pkcs8(&client_key).map_err(pk)?,
            )),
        },
    );
    let talosconfig = serde_json::to_string_pretty(&TalosConfig {
        context: name.to_string(),
        contexts,
    })
    .map_err(|e| Fail(4, e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| Fail(6, format!("{}: {e}", dir.display())))?;
    for (file, text) in [
        ("controlplane.yaml", machine("controlplane")),
        ("worker.yaml", machine("worker")),
        ("talosconfig", talosconfig + "\n"),
    ] {
        let p = dir.join(file);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).mode(0o600);
        if force {
            o.create(true).truncate(true);
        } else {
            o.create_new(true);
        }
        let mut f = o
            .open(&p)
            .map_err(|e| Fail(6, format!("{}: {e} (--force overwrites)", p.display())))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Fail(6, format!("{}: {e}", p.display())))?;
        println!("created {}", p.display());
    }
    Ok(())
}

/// A failure with its exit code.
struct Fail(i32, String);

fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn call(
    cli: &Cli,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, serde_json::Value), Fail> {
    let ctx = if cli.insecure {
        None
    } else {
        load_context(cli)?
    };
    let node = cli
        .nodes
        .clone()
        .or_else(|| {
            ctx.as_ref()
                .and_then(|c| c.nodes.first().or(c.endpoints.first()).cloned())
        })
        .ok_or_else(|| Fail(2, "--nodes IP is required".into()))?;
    let node = node.as_str();
    let tls = match (&ctx, cli.insecure) {
        (_, true) => ureq::tls::TlsConfig::builder()
            .disable_verification(true)
            .build(),
        (Some(c), false) => {
            use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts};
            let ca = Certificate::from_pem(&unb64("ca", &c.ca)?)
                .map_err(|e| Fail(2, format!("talosconfig ca: {e}")))?;
            let crt = Certificate::from_pem(&unb64("crt", &c.crt)?)
                .map_err(|e| Fail(2, format!("talosconfig crt: {e}")))?;
            let key = PrivateKey::from_pem(&unb64("key", &c.key)?)
                .map_err(|e| Fail(2, format!("talosconfig key: {e}")))?;
            ureq::tls::TlsConfig::builder()
                .root_certs(RootCerts::Specific(std::sync::Arc::new(vec![ca])))
                .client_cert(Some(ClientCert::new_with_certs(&[crt], key)))
                .build()
        }
        (None, false) => {
            return Err(Fail(
                3,
                "no client configuration (--talosconfig, $TALOSCONFIG, ~/.talos/config; \
                 `nodectl gen config` writes one); a node in maintenance takes --insecure"
                    .into(),
            ));
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let host = if node.contains(':') && !node.starts_with('[') {
        format!("[{node}]")
    } else {
        node.to_string()
    };
    let url = format!("https://{host}:{}{path}", cli.port);
    let resp = match (method, body) {
        ("POST", Some(b)) => agent
            .post(&url)
            .header("content-type", "application/yaml")
            .send(b),
        ("POST", None) => agent.post(&url).send_empty(),
        ("PUT", Some(b)) => agent
            .put(&url)
            .header("content-type", "application/octet-stream")
            .send(b),
        ("DELETE", _) => agent.delete(&url).call(),
        _ => agent.get(&url).call(),
    }
    .map_err(|e| Fail(4, format!("{url}: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp
        .into_body()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| Fail(4, format!("{url}: reading the answer: {e}")))?;
    let v = serde_json::from_str(&text)
        .map_err(|e| Fail(4, format!("{url}: the answer is not JSON: {e}")))?;
    Ok((status, v))
}

fn error_of(v: &serde_json::Value) -> String {
    printable(v["error"].as_str().unwrap_or("(no message)"))
}

fn run(cli: &Cli) -> Result<(), Fail> {
    match &cli.command {
        Command::Gen {
            what:
                Gen::Config {
                    cluster_name,
                    cluster_endpoint,
                    output_dir,
                    install_disk,
                    install_image,
                    force,
                },
        } => gen_config(
            cluster_name,
            cluster_endpoint,
            output_dir,
            install_disk,
            install_image,
            *force,
        )?,
        Command::ApplyConfig { file } => {
            let data = std::fs::read(file)
                .map_err(|e| Fail(2, format!("--file {}: {e}", file.display())))?;
            let (status, v) = call(cli, "POST", "/v1/apply-config", Some(&data))?;
            if status != 200 {
                return Err(Fail(
                    2,
                    format!("the node refused the configuration: {}", error_of(&v)),
                ));
            }
            println!(
                "applied: install disk {}",
                printable(
                    v["installDisk"]
                        .as_str()
                        .filter(|d| !d.is_empty())
                        .unwrap_or("none")
                )
            );
            if let Some(na) = v["notApplied"].as_array().filter(|a| !a.is_empty()) {
                let names: Vec<String> = na
                    .iter()
                    .filter_map(|s| s.as_str())
                    .map(printable)
                    .collect();
                println!("not applied (kept): {}", names.join(", "));
            }
            if v["complete"] == serde_json::Value::Bool(false) {
                println!(
                    "incomplete (no v1alpha1 document): the node stays in maintenance, with \
                     this configuration active"
                );
            }
        }
        Command::Version => {
            let (status, v) = call(cli, "GET", "/v1/version", None)?;
            if status != 200 {
                return Err(Fail(4, error_of(&v)));
            }
            for k in ["version", "arch", "kernel", "maintenance"] {
                let val = match &v[k] {
                    serde_json::Value::String(s) => printable(s),
                    other => other.to_string(),
                };
                println!("{k}: {val}");
            }
        }
        Command::Get { resource } => {
            if resource != "meta" {
                return Err(Fail(2, format!("get {resource:?}: only `meta` is known")));
            }
            let (status, v) = call(cli, "GET", "/v1/meta", None)?;
            if status != 200 {
                return Err(Fail(4, error_of(&v)));
            }
            if let Some(m) = v["values"].as_object() {
                for (k, val) in m {
                    println!(
                        "{}  {}",
                        printable(k),
                        printable(val.as_str().unwrap_or(""))
                    );
                }
            }
        }
        Command::Meta { what } => {
            let (method, key, body) = match what {
                Meta::Write { key, value } => ("PUT", key, Some(value.as_bytes())),
                Meta::Delete { key } => ("DELETE", key, None),
            };
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(Fail(
                    2,
                    format!("META key {:?}: 0xNN or a number", printable(key)),
                ));
            }
            let (status, v) = call(cli, method, &format!("/v1/meta/{key}"), body)?;
            if status != 200 {
                return Err(Fail(2, error_of(&v)));
            }
            println!(
                "{} {}",
                if method == "PUT" {
                    "written"
                } else {
                    "deleted"
                },
                printable(v["key"].as_str().unwrap_or(""))
            );
        }
        Command::Reset {
            graceful,
            wipe_mode,
        } => {
            let body = serde_json::json!({"graceful": graceful, "wipeMode": wipe_mode}).to_string();
            let (status, v) = call(cli, "POST", "/v1/reset", Some(body.as_bytes()))?;
            if status != 200 {
                return Err(Fail(2, error_of(&v)));
            }
            println!(
                "resetting (wipe mode {})",
                printable(v["wipeMode"].as_str().unwrap_or(""))
            );
        }
        Command::Upgrade {
            image,
            preserve,
            stage,
            test_pause,
        } => {
            let body = serde_json::json!({
                "image": image, "preserve": preserve, "stage": stage, "testPause": test_pause,
            })
            .to_string();
            let (status, v) = call(cli, "POST", "/v1/upgrade", Some(body.as_bytes()))?;
            if status != 200 {
                return Err(Fail(2, error_of(&v)));
            }
            println!(
                "upgrade {}: {}",
                printable(v["upgrade"].as_str().unwrap_or("")),
                printable(image)
            );
        }
        Command::Services => {
            let (status, v) = call(cli, "GET", "/v1/services", None)?;
            if status != 200 {
                return Err(Fail(4, error_of(&v)));
            }
            println!("SERVICE STATE PID RESTARTS");
            for s in v["services"].as_array().into_iter().flatten() {
                let f = |k: &str| match &s[k] {
                    serde_json::Value::String(x) => printable(x),
                    serde_json::Value::Null => "-".into(),
                    other => other.to_string(),
                };
                println!("{} {} {} {}", f("id"), f("state"), f("pid"), f("restarts"));
            }
        }
        Command::Logs { service } => {
            if service.is_empty()
                || !service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(Fail(
                    2,
                    format!("service {:?}: not a service id", printable(service)),
                ));
            }
            let (status, v) = call(cli, "GET", &format!("/v1/logs/{service}"), None)?;
            if status != 200 {
                return Err(Fail(2, error_of(&v)));
            }
            print_text(v["log"].as_str().unwrap_or(""));
        }
        Command::Dmesg => {
            let (status, v) = call(cli, "GET", "/v1/dmesg", None)?;
            if status != 200 {
                return Err(Fail(4, error_of(&v)));
            }
            print_text(v["dmesg"].as_str().unwrap_or(""));
        }
        Command::Reboot => {
            let (status, v) = call(cli, "POST", "/v1/reboot", None)?;
            if status != 200 {
                return Err(Fail(4, error_of(&v)));
            }
            println!("rebooting");
        }
    }
    Ok(())
}

/// Prints lines of text from the node, terminal control bytes made visible.
fn print_text(t: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for l in t.lines() {
        let _ = writeln!(out, "{}", printable(l));
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Err(Fail(code, msg)) = run(&cli) {
        eprintln!("error: {msg}");
        std::process::exit(code);
    }
}
