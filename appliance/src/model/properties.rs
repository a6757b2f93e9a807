//! Properties of the model's YAML and JSON readers that must hold for ANY input, as a
//! function that panics on a violation. Called by the cargo-fuzz target
//! `fuzz/fuzz_targets/model_yaml.rs` and by the corpus replay in `cargo test`
//! (`appliance/tests/fuzz_corpus.rs`). Pure; no IO.

use super::{Object, parse_documents, yaml, yaml_block};

/// Any bytes as a YAML stream: never a panic; what the block-subset reader reads, the
/// strict reader reads the same; every object read prints to YAML that reads back to the
/// same object, and its stored JSON reads back to the same object.
pub fn check_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(fast) = yaml_block::read(text) {
        let strict: Result<Vec<_>, _> = yaml::strict_documents(text).collect();
        assert_eq!(
            Ok(fast),
            strict,
            "the block-subset reader read what the strict reader reads otherwise"
        );
    }
    let Ok(objects) = parse_documents(text) else {
        return;
    };
    for obj in &objects {
        let again = parse_documents(&obj.to_yaml()).expect("printed YAML parses");
        assert_eq!(
            again,
            vec![obj.clone()],
            "YAML round trip changed the object"
        );
        let stored = Object::from_json(obj.kind(), &obj.to_json()).expect("stored JSON parses");
        assert_eq!(&stored, obj, "JSON round trip changed the object");
    }
}
