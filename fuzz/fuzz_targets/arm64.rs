#![no_main]
use libfuzzer_sys::fuzz_target;
use mobix::format::arm64;

fuzz_target!(|data: &[u8]| {
    let _ = arm64::check_kernel(data);
    let _ = arm64::split_appended_dtbs(data);
});
