//! The OCI layout walk: `index.json`, nested indexes, manifests, configs and blobs, as read
//! from a layout directory. The input is up to eight documents separated by NUL bytes:
//! the first is `index.json`, the others are blobs. In a document, `@N` stands for the
//! digest and `#N` for the size of document N (N > the referring document's own number),
//! so that the fuzzer can build graphs whose digests check out.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(init: fuzz::write_seeds("oci_layout"), |data: &[u8]| {
    let docs: Vec<&[u8]> = data.split(|b| *b == 0).take(8).collect();
    let mut done: Vec<Option<(String, Vec<u8>)>> = vec![None; docs.len()];
    for i in (0..docs.len()).rev() {
        let mut text = docs[i].to_vec();
        for (j, d) in done.iter().enumerate().skip(i + 1) {
            let Some((digest, bytes)) = d else { continue };
            text = replace(&text, format!("@{j}").as_bytes(), digest.as_bytes());
            text = replace(&text, format!("#{j}").as_bytes(), bytes.len().to_string().as_bytes());
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&text)));
        done[i] = Some((digest, text));
    }
    let dir = fuzz::scratch("oci");
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs dir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("marker");
    for (i, d) in done.iter().enumerate() {
        let Some((digest, bytes)) = d else { continue };
        let path = if i == 0 {
            dir.join("index.json")
        } else {
            blobs.join(digest.trim_start_matches("sha256:"))
        };
        std::fs::write(path, bytes).expect("write");
    }
    let _ = oci::layout::read_layout(&dir, "amd64");
});

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}
