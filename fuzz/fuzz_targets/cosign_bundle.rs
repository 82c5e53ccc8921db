//! Sigstore bundles (file bundles and cosign v3 image bundles) and cosign simple-signing
//! payloads (from registries and users).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("cosign_bundle"), |data: &[u8]| {
    let key = cosign::SigningKey::from_seed(b"fuzz").public_key();
    let v = cosign::Verifier::Key {
        path: "fuzz".into(),
        key,
    };
    let _ = cosign::verify_blob_bundle(&v, data, &[0u8; 32]);
    let _ = cosign::verify_image_bundle(&v, "sha256:00", data);
    let _ = cosign::payload::parse_payload(data);
});
