#![no_main]
use libfuzzer_sys::fuzz_target;
use mobix::format::vendor_boot::VendorBootImage;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = VendorBootImage::parse(data) {
        if let Ok(bytes) = img.to_bytes() {
            assert!(VendorBootImage::parse(&bytes).expect("our own output parses") == img);
        }
    }
});
