//! Boot image header v3/v4 and vendor_boot v3/v4 against fixtures packed independently
//! from AOSP's bootimg.h by `tests/fixtures/bootimg/gen.py` (Debian's mkbootimg cannot
//! write them). Our writers must produce these bytes, and our readers must read them.

use mobix::format::{bootimg, vendor_boot};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bootimg").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn same(ours: &[u8], theirs: &[u8], what: &str) {
    let first = ours.iter().zip(theirs).position(|(a, b)| a != b);
    assert!(
        ours.len() == theirs.len() && first.is_none(),
        "{what}: differs at {first:?} (lengths {} vs {})",
        ours.len(),
        theirs.len()
    );
}

#[test]
fn boot_v3_v4_match_the_reference_layout() {
    for (v, name, sig) in [(3, "boot-v3.img", false), (4, "boot-v4.img", false), (4, "boot-v4-sig.img", true)] {
        let mut img = bootimg::sample(v);
        if sig {
            img.boot_signature = vec![0xaa; bootimg::V4_SIGNATURE_SIZE];
        }
        let theirs = fixture(name);
        same(&img.to_bytes().unwrap(), &theirs, name);
        assert!(bootimg::BootImage::parse(&theirs).unwrap() == img, "{name} parses to the model");
    }
}

#[test]
fn vendor_boot_v3_v4_match_the_reference_layout() {
    for (v, name) in [(3, "vendor_boot-v3.img"), (4, "vendor_boot-v4.img")] {
        let img = vendor_boot::sample(v);
        let theirs = fixture(name);
        same(&img.to_bytes().unwrap(), &theirs, name);
        assert!(vendor_boot::VendorBootImage::parse(&theirs).unwrap() == img, "{name} parses to the model");
    }
}

#[test]
fn vbmeta_matches_avbtools_layout() {
    use mobix::format::vbmeta;
    for flags in [2u32, 3] {
        let name = format!("vbmeta-flags{flags}.img");
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vbmeta").join(&name);
        let theirs = std::fs::read(&p).unwrap();
        same(&vbmeta::disabled(flags, vbmeta::DEFAULT_RELEASE, 4096).unwrap(), &theirs, &name);
        let (h, descriptors) = vbmeta::parse(&theirs).unwrap();
        assert_eq!(h.flags, flags);
        assert!(descriptors.is_empty());
    }
}

/// A/B metadata packed by gcc from boot_control_definition.h's struct layout
/// (tests/fixtures/misc/gen.c): our decoder reads every field, our encoder gives the bytes.
#[test]
fn misc_matches_gccs_struct_layout() {
    use mobix::format::misc;
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/misc/misc-ab.bin");
    let bytes = std::fs::read(&p).unwrap();
    let (bcb, ctrl) = misc::read(&bytes).unwrap();
    assert_eq!(bcb.command, "boot-recovery");
    assert_eq!(bcb.recovery, "recovery\n--wipe_data\n");
    assert_eq!(&ctrl.slot_suffix, b"_b\0\0");
    assert!(ctrl.crc_ok());
    assert_eq!((ctrl.version, ctrl.nb_slot, ctrl.recovery_tries_remaining, ctrl.merge_status), (1, 2, 5, 6));
    let (a, b) = (ctrl.slot_info[0], ctrl.slot_info[1]);
    assert_eq!((a.priority, a.tries_remaining, a.successful_boot, a.verity_corrupted), (14, 1, true, false));
    assert_eq!((b.priority, b.tries_remaining, b.successful_boot, b.verity_corrupted), (15, 6, false, true));
    let mut again = ctrl;
    assert_eq!(&again.encode()[..], &bytes[2048..2080]);
    assert_eq!(&bcb.encode().unwrap()[..], &bytes[..2048]);
}
