//! Any bytes as multi-document YAML into `model::parse_documents`: must not panic, and
//! whatever parses must print (YAML and JSON) and parse back to the same objects.
#![no_main]

use appliance_fuzz::model::{Object, parse_documents};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = parse_documents(text) else {
        return;
    };
    for obj in &objects {
        let again = parse_documents(&obj.to_yaml()).expect("printed YAML parses");
        assert_eq!(again, vec![obj.clone()], "YAML round trip changed the object");
        let stored = Object::from_json(obj.kind(), &obj.to_json()).expect("stored JSON parses");
        assert_eq!(&stored, obj, "JSON round trip changed the object");
    }
});
