#![no_main]
//! Any bytes: parse as a boot image; what parses must write back and parse the same.
use libfuzzer_sys::fuzz_target;
use mobix::format::bootimg::BootImage;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = BootImage::parse(data) {
        if let Ok(bytes) = img.to_bytes() {
            assert!(BootImage::parse(&bytes).expect("our own output parses") == img);
        }
    }
});
