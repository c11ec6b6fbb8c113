#![no_main]
use libfuzzer_sys::fuzz_target;
use mobix::profile::deviceinfo;

// Any text: an error or profile keys, never a panic.
fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(di) = deviceinfo::parse(text, "fuzz") {
            let _ = deviceinfo::profile_keys(&di, Some(text), &deviceinfo::KernelChoice::Unknown);
            let prebuilt = deviceinfo::KernelChoice::Prebuilt { image: "Image".into(), dtbs: None };
            let _ = deviceinfo::profile_keys(&di, None, &prebuilt);
        }
    }
});
