//! Any bytes as multi-document YAML into `model::parse_documents`: must not panic, and
//! whatever parses must print (YAML and JSON) and parse back to the same objects.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    appliance_fuzz::model::properties::check_yaml(data);
});
