//! Flags → profile: the override profile the command-line flags describe (Talos `root.go`),
//! merged onto the base profile with Talos's merge rules (docs/formats/profile.md).

use super::BuildArgs;
use crate::error::{Error, ExitCode, Result};
use crate::io::limits;
use crate::profile::{self, OutputKind, SdBootEnrollKeys};
use serde_json::{Map, Value, json};

/// Reads a file named by a flag: a regular file of at most `max` bytes of UTF-8 text.
fn read_arg_file(flag: &str, path: &str, max: u64) -> Result<String> {
    crate::io::read_text(
        std::path::Path::new(path),
        max,
        flag,
        ExitCode::InvalidInput,
    )
}

fn meta_flag(s: &str) -> Result<Value> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::invalid(format!("--meta {s:?}: expected KEY=VALUE")))?;
    let key = adv::env::parse_key(k).map_err(|e| Error::invalid(format!("--meta {s:?}: {e}")))?;
    let value = match v.strip_prefix('@') {
        Some(path) => read_arg_file(&format!("--meta {k}=@"), path, limits::META_VALUE)?,
        None => v.to_string(),
    };
    Ok(json!({"key": key, "value": value}))
}

fn overlay_options(opts: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for o in opts {
        if let Some(path) = o.strip_prefix('@') {
            let text = read_arg_file("--overlay-option", path, limits::SIDE_FILE)?;
            let v = profile::parse_yaml(&text, &format!("--overlay-option @{path}"))?;
            if let Value::Object(map) = v {
                m.extend(map);
            }
        } else {
            let (k, v) = o.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "--overlay-option {o:?}: expected k=v or @file.yaml"
                ))
            })?;
            let v = match v.strip_prefix('@') {
                Some(path) => {
                    read_arg_file(&format!("--overlay-option {k}"), path, limits::SIDE_FILE)?
                }
                None => v.to_string(),
            };
            m.insert(k.to_string(), Value::String(v));
        }
    }
    Ok(m)
}

/// The override profile the flags describe (Talos `root.go`), merged onto the base profile.
pub fn flags_profile(cli: &BuildArgs) -> Result<Value> {
    let container = |r: &str| json!({"imageRef": r, "forceInsecure": cli.insecure});
    // a local directory is an OCI layout, a local file a tarball, anything else a reference
    let asset = |r: &str| {
        let path = std::path::Path::new(r);
        if path.is_dir() {
            json!({"ociPath": r})
        } else if path.is_file() {
            json!({"tarballPath": r})
        } else {
            container(r)
        }
    };
    let mut input = Map::new();
    if let Some(r) = &cli.base_installer_image {
        input.insert("baseInstaller".into(), container(r));
    }
    if !cli.system_extension_images.is_empty() {
        let v: Vec<Value> = cli
            .system_extension_images
            .iter()
            .map(|r| asset(r))
            .collect();
        input.insert("systemExtensions".into(), Value::Array(v));
    }
    if let Some(c) = &cli.image_cache {
        // a local directory is an OCI layout, anything else an image reference
        let v = if std::path::Path::new(c).is_dir() {
            json!({"ociPath": c})
        } else {
            container(c)
        };
        input.insert("imageCache".into(), v);
    }
    if let Some(r) = &cli.overlay_image {
        input.insert("overlayInstaller".into(), asset(r));
    }
    let mut sb = Map::new();
    if cli.secureboot_include_well_known_certs {
        sb.insert("includeWellKnownCerts".into(), Value::Bool(true));
    }
    if let Some(a) = &cli.secureboot_signer_address {
        sb.insert("secureBootSigner".into(), json!({"signerAddress": a}));
    }
    if let Some(a) = &cli.pcr_signer_address {
        sb.insert("pcrSigner".into(), json!({"signerAddress": a}));
    }
    if !sb.is_empty() {
        input.insert("secureboot".into(), Value::Object(sb));
    }
    let mut over = json!({
        "baseProfileName": cli.profile(),
        "arch": cli.arch.clone().unwrap_or_default(),
        "platform": cli.platform.clone().unwrap_or_default(),
        "input": Value::Object(input),
    });
    let mut output = Map::new();
    if let Some(k) = &cli.output_kind {
        let kind = OutputKind::parse(k).ok_or_else(|| {
            Error::invalid(format!(
                "--output-kind {k:?}: not one of {}",
                OutputKind::NAMES.join(", ")
            ))
        })?;
        output.insert("kind".into(), Value::String(kind.as_str().into()));
    }
    if let Some(m) = &cli.secureboot_enroll_keys {
        SdBootEnrollKeys::parse(m).ok_or_else(|| {
            Error::invalid(format!(
                "--secureboot-enroll-keys {m:?}: not one of if-safe, manual, force, off"
            ))
        })?;
        output.insert("imageOptions".into(), json!({"sdBootEnrollKeys": m}));
        output.insert("isoOptions".into(), json!({"sdBootEnrollKeys": m}));
    }
    over["output"] = Value::Object(output);
    let meta = cli
        .meta
        .iter()
        .map(|m| meta_flag(m))
        .collect::<Result<Vec<_>>>()?;
    let embedded = match &cli.embedded_config_path {
        Some(p) => read_arg_file(
            "--embedded-config-path",
            &p.to_string_lossy(),
            limits::MACHINE_CONFIG,
        )?,
        None => String::new(),
    };
    over["customization"] = json!({
        "extraKernelArgs": cli.extra_kernel_args,
        "metaContents": meta,
        "embeddedMachineConfiguration": embedded,
    });
    if let Some(img) = &cli.overlay_image {
        over["overlay"] = json!({
            // empty: the base profile's board (an overlay's profile), else `default`
            "name": cli.overlay_name.clone().unwrap_or_default(),
            "image": asset(img),
            "options": Value::Object(overlay_options(&cli.overlay_options)?),
        });
    }
    Ok(over)
}
