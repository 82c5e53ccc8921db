//! `nodectl`: the host-side client of node-runtime's API (docs/formats/api.md), in
//! talosctl's role and with its flags where they exist: `apply-config --insecure --nodes IP
//! --file F`, `version`, `get meta`, `reboot`.
//!
//! Only the maintenance API exists so far, which is insecure by design: `--insecure` is
//! required and the node's self-signed certificate is not verified (the authenticated API of
//! an installed node is issue 19). Exit codes: 0 done, 2 refused by the node or bad usage, 3
//! not supported, 4 the node cannot be reached or answered nonsense.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "nodectl",
    version,
    about = "Talk to a node's API (maintenance mode): apply-config, version, get meta, reboot"
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
    let node = cli
        .nodes
        .as_deref()
        .ok_or_else(|| Fail(2, "--nodes IP is required".into()))?;
    if !cli.insecure {
        return Err(Fail(
            3,
            "only the maintenance API exists so far: give --insecure (the authenticated API \
             of an installed node is not implemented yet)"
                .into(),
        ));
    }
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(true)
        .build();
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
