//! What a factory request carries, as text: the asset path grammar (every name it accepts
//! becomes a profile the imager's validation accepts), installer registry names, the wizard's
//! form encoding (every value, escaped, is inert HTML), catalog files (`image-digests`,
//! `descriptions.yaml`, `overlays.yaml`), version tags (offered in semver order), durations,
//! and the control-character escaping of error bodies and logs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("factory_request"), |data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(a) = factory::path::parse(&text) {
        let v = a.profile("v1.14.0");
        imager::profile::resolve(v, "fuzz", std::path::Path::new("/usr/install"), &Default::default())
            .expect("a parsed asset path gives a valid profile");
    }
    let _ = factory::frontend::parse_name(&text);
    for (k, v) in factory::wizard::form(&text) {
        for s in [factory::wizard::esc(&k), factory::wizard::esc(&v)] {
            assert!(
                !s.contains(['<', '>', '"', '\'']) && !s.chars().any(|c| c.is_control() && c != '\n'),
                "{s:?}"
            );
        }
    }
    let files = ["image-digests", "descriptions.yaml", "overlays.yaml"]
        .into_iter()
        .map(|n| (n.to_string(), text.to_string()))
        .collect();
    let _ = factory::artifacts::extensions(&files, "fuzz");
    let _ = factory::artifacts::overlays(&files, "fuzz");
    let tags: Vec<String> = text.lines().map(str::to_string).collect();
    let offered = factory::artifacts::offered(&tags, "1.2.0", &[]);
    let parsed: Vec<_> = offered
        .iter()
        .map(|t| factory::artifacts::version(t).expect("an offered version parses"))
        .collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{offered:?}");
    let _ = factory::config::duration(&text);
    let clean = factory::http::clean(&text);
    assert!(!clean.chars().any(|c| c.is_control() && c != '\n'), "{clean:?}");
});
