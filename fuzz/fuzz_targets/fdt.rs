#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packed) = mobix::format::fdt::pack(data) {
        assert_eq!(mobix::format::fdt::pack(&packed).expect("packed output packs"), packed);
    }
    // Finding nodes answers or errs on any input.
    let _ = mobix::format::fdt::find_compatible(data, "simple-framebuffer");
});
