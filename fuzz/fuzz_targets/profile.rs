#![no_main]
//! The YAML profile loader on any text: an error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mobix::profile::parse_device(text, "fuzz/device.yaml");
    }
});
