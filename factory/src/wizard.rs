//! The web wizard (docs/formats/factory.md, "Wizard"): server-rendered HTML forms, no
//! script and no build step. `GET /` picks the version (a GET form: changing it reloads the
//! page with that version's extensions), platform, architecture, extensions, kernel
//! arguments; `POST /wizard` creates the schematic and answers with its ID, its YAML, the
//! download links, the PXE URL and the installer image reference, as factory.talos.dev's
//! last page does.

use crate::service::{Factory, FactoryError};
use imager::profile::Platform;
use std::fmt::Write as _;

/// `s` with HTML's special characters escaped (text and attribute values).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => o.push(c),
        }
    }
    o
}

/// Decodes `application/x-www-form-urlencoded` text into pairs (`+` is a space, `%XX` a
/// byte; invalid UTF-8 is replaced).
pub fn form(text: &str) -> Vec<(String, String)> {
    let dec = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .take(1024)
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (dec(k), dec(v))
        })
        .collect()
}

fn one<'a>(f: &'a [(String, String)], key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

const STYLE: &str = "body{font-family:sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}\
fieldset{margin:1rem 0;border:1px solid #ccc}label{display:block;margin:.2rem 0}\
code,pre{background:#f4f4f4;padding:.1rem .3rem}pre{padding:.6rem;overflow-x:auto}\
li{margin:.25rem 0}.note{color:#666;font-size:.9em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>\n{body}\n</body></html>\n",
        esc(title),
        esc(title)
    )
}

/// The disk image name of `platform` (its built-in profile's format and compression), if
/// the platform's profile makes a disk image.
fn disk_image_name(platform: &str, arch: &str) -> Option<String> {
    let p = imager::profile::builtin(platform).ok()?;
    if p["output"]["kind"].as_str()? != "image" {
        return None;
    }
    let format = p["output"]["imageOptions"]["diskFormat"]
        .as_str()
        .unwrap_or("raw");
    let out = match p["output"]["outFormat"].as_str().unwrap_or("raw") {
        "raw" => "",
        o => o,
    };
    Some(format!("{platform}-{arch}.{format}{out}"))
}

/// `GET /`: the form.
pub fn index(f: &Factory, q: &[(String, String)]) -> Result<String, FactoryError> {
    let versions = f.versions()?;
    let newest = versions
        .iter()
        .rev()
        .find(|v| crate::artifacts::version(v).is_some_and(|v| v.pre.is_empty()))
        .or(versions.last())
        .cloned()
        .unwrap_or_default();
    let version = one(q, "version")
        .filter(|v| versions.iter().any(|x| x == v))
        .map(str::to_string)
        .unwrap_or(newest);
    let mut b = String::new();
    b.push_str("<p>Describe the system: the factory turns the choice into a schematic ID, and every asset of that ID is built on first download.</p>\n");
    // the version is chosen first: its catalog lists the extensions
    b.push_str(
        "<form method=\"get\" action=\"/\" id=\"version-form\"><fieldset><legend>Version</legend>",
    );
    b.push_str("<select name=\"version\" id=\"version\">");
    for v in versions.iter().rev() {
        let sel = if *v == version { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{0}\"{sel}>{0}</option>", esc(v));
    }
    b.push_str("</select> <button type=\"submit\" id=\"choose-version\">Choose</button></fieldset></form>\n");
    if version.is_empty() {
        b.push_str("<p>No version is available yet.</p>");
        return Ok(page("Image Factory", &b));
    }
    b.push_str("<form method=\"post\" action=\"/wizard\" id=\"schematic-form\">");
    let _ = write!(
        b,
        "<input type=\"hidden\" name=\"version\" value=\"{}\">",
        esc(&version)
    );
    b.push_str("<fieldset><legend>Hardware and platform</legend><select name=\"platform\" id=\"platform\">");
    for p in Platform::ALL.iter().filter(|p| !p.is_empty()) {
        let sel = if *p == "metal" { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{0}\"{sel}>{0}</option>", esc(p));
    }
    b.push_str("</select>");
    // single-board computers: the version's official overlays
    let overlays = f.overlays(&version)?;
    if !overlays.is_empty() {
        b.push_str("<label>Board (single-board computers, arm64) <select name=\"overlay\" id=\"overlay\"><option value=\"\" selected>none</option>");
        for o in &overlays {
            let _ = write!(
                b,
                "<option value=\"{}|{}\">{} ({})</option>",
                esc(&o.image),
                esc(&o.name),
                esc(&o.name),
                esc(&o.image)
            );
        }
        b.push_str("</select></label>");
    }
    b.push_str("</fieldset>");
    b.push_str("<fieldset><legend>Architecture</legend>");
    for (i, a) in ["amd64", "arm64"].iter().enumerate() {
        let checked = if i == 0 { " checked" } else { "" };
        let _ = write!(
            b,
            "<label><input type=\"radio\" name=\"arch\" value=\"{a}\" id=\"arch-{a}\"{checked}> {a}</label>"
        );
    }
    b.push_str("</fieldset><fieldset><legend>System extensions</legend>");
    let exts = f.extensions(&version)?;
    if exts.is_empty() {
        b.push_str("<p class=\"note\">This version has no official extensions.</p>");
    }
    for e in exts.iter() {
        let id = format!("ext-{}", e.name.replace('/', "-"));
        let _ = write!(
            b,
            "<label><input type=\"checkbox\" name=\"ext\" value=\"{}\" id=\"{}\"> <code>{}</code> {} <span class=\"note\">{}</span></label>",
            esc(&e.name),
            esc(&id),
            esc(&e.name),
            esc(&e.description),
            esc(&e.author)
        );
    }
    b.push_str("</fieldset><fieldset><legend>Customization</legend>");
    b.push_str("<label>Extra kernel arguments (space separated) <input type=\"text\" name=\"args\" id=\"args\" size=\"60\"></label>");
    if f.secureboot.is_some() {
        b.push_str("<label><input type=\"checkbox\" name=\"secureboot\" value=\"1\" id=\"secureboot\"> SecureBoot <span class=\"note\">(UEFI only: signed boot loader and UKI, keys enrolled on first boot)</span></label>");
    } else {
        b.push_str("<label><input type=\"checkbox\" name=\"secureboot\" value=\"1\" id=\"secureboot\" disabled> SecureBoot <span class=\"note\">(needs SecureBoot signing keys, which this factory is not configured with)</span></label>");
    }
    b.push_str(
        "</fieldset><button type=\"submit\" id=\"create\">Create schematic</button></form>\n",
    );
    Ok(page("Image Factory", &b))
}

/// `POST /wizard`: creates the schematic and lists what can be downloaded.
pub fn create(
    f: &Factory,
    body: &[u8],
    base: &str,
    registry_host: &str,
) -> Result<String, FactoryError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| FactoryError::BadRequest("the form is not UTF-8".into()))?;
    let fields = form(text);
    let version = one(&fields, "version").unwrap_or_default().to_string();
    f.check_version(&version)?;
    let platform = one(&fields, "platform").unwrap_or("metal");
    if Platform::parse(platform).is_none() || platform.is_empty() {
        return Err(FactoryError::BadRequest(format!(
            "unknown platform {:?}",
            crate::service::clip(platform)
        )));
    }
    let arch = match one(&fields, "arch").unwrap_or("amd64") {
        a @ ("amd64" | "arm64") => a,
        a => {
            return Err(FactoryError::BadRequest(format!(
                "unknown architecture {:?}",
                crate::service::clip(a)
            )));
        }
    };
    let secureboot = one(&fields, "secureboot").is_some();
    if secureboot && f.secureboot.is_none() {
        return Err(FactoryError::BadRequest(
            "SecureBoot needs signing keys this factory is not configured with".into(),
        ));
    }
    let sb = if secureboot { "-secureboot" } else { "" };
    let mut s = schematic::Schematic::default();
    s.customization.extra_kernel_args = one(&fields, "args")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    s.customization.system_extensions.official_extensions = fields
        .iter()
        .filter(|(k, _)| k == "ext")
        .map(|(_, v)| v.clone())
        .collect();
    if let Some(o) = one(&fields, "overlay").filter(|o| !o.is_empty()) {
        let (image, name) = o.split_once('|').ok_or_else(|| {
            FactoryError::BadRequest(format!("invalid overlay {:?}", crate::service::clip(o)))
        })?;
        s.overlay.image = image.to_string();
        s.overlay.name = name.to_string();
    }
    let yaml = s
        .canonical()
        .map_err(|e| FactoryError::BadRequest(format!("invalid schematic: {e}")))?;
    let (id, text) = f.create_schematic(yaml.as_bytes(), false)?;
    let img = format!("{base}/image/{id}/{version}");
    let mut links: Vec<(String, String)> =
        vec![("ISO".into(), format!("{img}/{platform}-{arch}{sb}.iso"))];
    if let Some(d) = disk_image_name(platform, arch) {
        let d = d.replacen(
            &format!("{platform}-{arch}"),
            &format!("{platform}-{arch}{sb}"),
            1,
        );
        links.push(("Disk image".into(), format!("{img}/{d}")));
    }
    if !secureboot {
        links.extend([
            ("Kernel".into(), format!("{img}/kernel-{arch}")),
            ("Initramfs".into(), format!("{img}/initramfs-{arch}.xz")),
        ]);
    }
    links.extend([
        (
            "Kernel command line".into(),
            format!("{img}/cmdline-{platform}-{arch}{sb}"),
        ),
        ("UKI".into(), format!("{img}/{platform}-{arch}{sb}-uki.efi")),
        (
            "Installer tarball".into(),
            format!("{img}/{platform}-installer-{arch}{sb}.tar"),
        ),
    ]);
    let mut b = String::new();
    let _ = write!(
        b,
        "<p>Your schematic ID is <code id=\"schematic-id\">{}</code>.</p><pre id=\"schematic-yaml\">{}</pre>",
        esc(&id),
        esc(&text)
    );
    b.push_str("<h2>Downloads</h2><ul id=\"downloads\">");
    for (label, url) in &links {
        let _ = write!(
            b,
            "<li>{}: <a href=\"{}\" id=\"{}\">{}</a></li>",
            esc(label),
            esc(url),
            esc(&format!("link-{}", label.to_lowercase().replace(' ', "-"))),
            esc(url)
        );
    }
    b.push_str("</ul>");
    let _ = write!(
        b,
        "<h2>PXE</h2><p>iPXE script: <code id=\"pxe-url\">{}</code></p>",
        esc(&format!("{base}/pxe/{id}/{version}/{platform}-{arch}{sb}"))
    );
    let _ = write!(
        b,
        "<h2>Installer image</h2><p>For installs and upgrades: <code id=\"installer-image\">{}</code></p>",
        esc(&format!(
            "{registry_host}/{platform}-installer{sb}/{id}:{version}"
        ))
    );
    b.push_str("<p><a href=\"/\">Start again</a></p>");
    Ok(page("Your image", &b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn forms_and_escapes() {
        let f = form(
            "version=v1.14.0&ext=siderolabs%2Fhello&ext=a%2Fb&args=console%3DttyS0+noapic&x=%zz&y=%4&z=%\u{e9}a",
        );
        assert_eq!(one(&f, "z"), Some("%\u{e9}a"));
        assert_eq!(one(&f, "version"), Some("v1.14.0"));
        let exts: Vec<&str> = f
            .iter()
            .filter(|(k, _)| k == "ext")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(exts, ["siderolabs/hello", "a/b"]);
        assert_eq!(one(&f, "args"), Some("console=ttyS0 noapic"));
        assert_eq!(one(&f, "x"), Some("%zz"));
        assert_eq!(one(&f, "y"), Some("%4"));
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(esc("a\u{1b}[31mb"), "a[31mb");
    }

    #[test]
    fn disk_images_of_platforms() {
        assert_eq!(
            disk_image_name("metal", "amd64").as_deref(),
            Some("metal-amd64.raw.zst")
        );
        assert!(
            disk_image_name("aws", "arm64")
                .unwrap()
                .starts_with("aws-arm64.")
        );
    }
}
