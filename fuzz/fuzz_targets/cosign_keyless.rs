//! Keyless Sigstore bundles (Fulcio certificate with SCTs, Rekor v1/v2 entries with SETs,
//! inclusion proofs and checkpoints, RFC 3161 timestamps), verified against the `testing`
//! stand-in's trust root: file bundles and cosign v3 image bundles.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static VERIFIER: LazyLock<cosign::Verifier> = LazyLock::new(fuzz::keyless_verifier);

fuzz_target!(init: fuzz::write_seeds("cosign_keyless"), |data: &[u8]| {
    let _ = cosign::verify_blob_bundle(&VERIFIER, data, &fuzz::KEYLESS_FILE_SHA256);
    let _ = cosign::verify_image_bundle(&VERIFIER, fuzz::KEYLESS_IMAGE, data);
});
