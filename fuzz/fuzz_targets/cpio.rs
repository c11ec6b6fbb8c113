#![no_main]
use libfuzzer_sys::fuzz_target;
use mobix::format::cpio;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = cpio::read(data) {
        // What we read, we can write (when it is a tree the writer accepts).
        let _ = cpio::write(&entries);
    }
});
