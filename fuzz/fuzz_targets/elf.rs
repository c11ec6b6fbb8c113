#![no_main]
use libfuzzer_sys::fuzz_target;
use mobix::format::elf;

fuzz_target!(|data: &[u8]| {
    let _ = elf::read(data);
});
