//! `convert <qcow2|vhd|vmdk|ova> IN.raw OUT [cluster_size]`: converts a raw disk image with
//! diskfmt (used by `bench/disk-formats.sh`). The timestamp comes from `SOURCE_DATE_EPOCH`
//! (0 when unset), the UUID label is OUT's file name; prints the [`diskfmt::Stats`].

use diskfmt::{Options, OvfOptions};
use std::fs::File;
use std::path::Path;
use std::process::ExitCode;

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [format, input, output, rest @ ..] = args else {
        return Err("usage: convert <qcow2|vhd|vmdk|ova> IN.raw OUT [cluster_size]".into());
    };
    let o = Options {
        timestamp: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        label: Path::new(output)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let raw = File::open(input)?;
    // A new file rather than a truncated one: ext4 flushes a file truncated to zero when it is
    // closed (auto_da_alloc), which would be timed too.
    match std::fs::remove_file(output) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let mut out = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(output)?;
    match format.as_str() {
        "qcow2" => {
            let cs = match rest.first() {
                Some(c) => diskfmt::parse_qcow2_options(&format!("cluster_size={c}"))?,
                None => diskfmt::DEFAULT_CLUSTER_SIZE,
            };
            println!("{:?}", diskfmt::write_qcow2(&raw, &mut out, cs, &o)?);
        }
        "vhd" => println!("{:?}", diskfmt::write_vhd_fixed(&raw, &mut out, &o)?),
        "vmdk" => println!("{:?}", diskfmt::write_vmdk_stream(&raw, &mut out, &o)?),
        "ova" => println!(
            "{:?}",
            diskfmt::write_ova(&raw, &mut out, &OvfOptions::default(), &o)?
        ),
        f => return Err(format!("unknown format {f:?}").into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convert: {e}");
            ExitCode::FAILURE
        }
    }
}
