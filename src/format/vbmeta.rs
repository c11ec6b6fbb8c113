//! AVB vbmeta images: the minimal top-level image that turns verification and/or verity
//! off on an unlocked phone, and a reader that reports any vbmeta header.
//!
//! Pipeline stage: format (pure). Layout reference: AOSP `external/avb/libavb/
//! avb_vbmeta_image.h` (`AvbVBMetaImageHeader`, 256 bytes, all fields big-endian) and
//! avbtool's `make_vbmeta_image`. With algorithm NONE and no descriptors both the
//! authentication and auxiliary blocks are empty, so the image is the header, zero-padded
//! to `padding_size`; for the same flags and padding it is byte-identical to avbtool 1.3.0.

pub const MAGIC: &[u8; 4] = b"AVB0";
pub const HEADER_SIZE: usize = 256;
/// `AVB_VBMETA_IMAGE_FLAGS_HASHTREE_DISABLED` (`--disable-verity`).
pub const FLAG_HASHTREE_DISABLED: u32 = 1;
/// `AVB_VBMETA_IMAGE_FLAGS_VERIFICATION_DISABLED` (`--disable-verification`).
pub const FLAG_VERIFICATION_DISABLED: u32 = 2;
/// What avbtool 1.3.0 writes as its release string; the same bytes as avbtool's output.
pub const DEFAULT_RELEASE: &str = "avbtool 1.3.0";
const RELEASE_SIZE: usize = 48;
/// The libavb minor version mobix understands (AVB_VERSION_MINOR of libavb 1.3).
const LIBAVB_MINOR: u32 = 3;

/// A vbmeta header's fields (avb_vbmeta_image.h names).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    pub required_libavb_version_major: u32,
    pub required_libavb_version_minor: u32,
    pub authentication_data_block_size: u64,
    pub auxiliary_data_block_size: u64,
    pub algorithm_type: u32,
    pub hash_offset: u64,
    pub hash_size: u64,
    pub signature_offset: u64,
    pub signature_size: u64,
    pub public_key_offset: u64,
    pub public_key_size: u64,
    pub public_key_metadata_offset: u64,
    pub public_key_metadata_size: u64,
    pub descriptors_offset: u64,
    pub descriptors_size: u64,
    pub rollback_index: u64,
    pub flags: u32,
    pub rollback_index_location: u32,
    pub release_string: String,
}

/// A descriptor's tag and size (descriptors are reported, not interpreted).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Descriptor {
    pub tag: u64,
    pub num_bytes_following: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("vbmeta image is {0} bytes, shorter than its 256-byte header")]
    Truncated(usize),
    #[error("bad magic {0:02x?} (expected \"AVB0\")")]
    BadMagic([u8; 4]),
    #[error("requires libavb {major}.{minor}; mobix reads 1.0 to 1.{LIBAVB_MINOR}")]
    UnsupportedVersion { major: u32, minor: u32 },
    #[error("release string is not NUL-terminated within its 48 bytes")]
    ReleaseNotTerminated,
    #[error("{block} block size {size} is not a multiple of 64")]
    BlockSize { block: &'static str, size: u64 },
    #[error("{block} blocks end at {end}, past the {len}-byte image")]
    BlocksPastEnd { block: &'static str, end: u64, len: usize },
    #[error("{field} at {offset}+{size} lies outside the {block} block ({block_size} bytes)")]
    FieldOutside { field: &'static str, offset: u64, size: u64, block: &'static str, block_size: u64 },
    #[error("descriptor {index} at offset {offset} runs past the descriptors ({size} bytes)")]
    DescriptorPastEnd { index: usize, offset: u64, size: u64 },
    #[error("release string {0:?} does not fit 47 bytes")]
    ReleaseTooLong(String),
    #[error("padding size {0} is not positive")]
    BadPadding(u64),
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

/// The minimal top-level vbmeta with `flags`, zero-padded to `padding_size` (avbtool's
/// `make_vbmeta_image --flags F --padding_size P`; 4096 is what phones are flashed with).
pub fn disabled(flags: u32, release: &str, padding_size: u64) -> Result<Vec<u8>, Error> {
    if release.len() >= RELEASE_SIZE {
        return Err(Error::ReleaseTooLong(release.to_string()));
    }
    if padding_size == 0 {
        return Err(Error::BadPadding(padding_size));
    }
    let mut h = vec![0u8; HEADER_SIZE];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&1u32.to_be_bytes()); // required_libavb_version_major
    h[120..124].copy_from_slice(&flags.to_be_bytes());
    h[128..128 + release.len()].copy_from_slice(release.as_bytes());
    let len = (HEADER_SIZE as u64).div_ceil(padding_size) * padding_size;
    h.resize(len as usize, 0);
    Ok(h)
}

/// Reads and checks a vbmeta image's header the way libavb does, and lists descriptors.
pub fn parse(b: &[u8]) -> Result<(Header, Vec<Descriptor>), Error> {
    if b.len() < HEADER_SIZE {
        return Err(Error::Truncated(b.len()));
    }
    if &b[..4] != MAGIC {
        return Err(Error::BadMagic(b[..4].try_into().unwrap()));
    }
    let (major, minor) = (be32(b, 4), be32(b, 8));
    if major != 1 || minor > LIBAVB_MINOR {
        return Err(Error::UnsupportedVersion { major, minor });
    }
    let release = &b[128..176];
    if release[RELEASE_SIZE - 1] != 0 {
        return Err(Error::ReleaseNotTerminated);
    }
    let end = release.iter().position(|&c| c == 0).unwrap_or(RELEASE_SIZE);
    let h = Header {
        required_libavb_version_major: major,
        required_libavb_version_minor: minor,
        authentication_data_block_size: be64(b, 12),
        auxiliary_data_block_size: be64(b, 20),
        algorithm_type: be32(b, 28),
        hash_offset: be64(b, 32),
        hash_size: be64(b, 40),
        signature_offset: be64(b, 48),
        signature_size: be64(b, 56),
        public_key_offset: be64(b, 64),
        public_key_size: be64(b, 72),
        public_key_metadata_offset: be64(b, 80),
        public_key_metadata_size: be64(b, 88),
        descriptors_offset: be64(b, 96),
        descriptors_size: be64(b, 104),
        rollback_index: be64(b, 112),
        flags: be32(b, 120),
        rollback_index_location: be32(b, 124),
        release_string: String::from_utf8_lossy(&release[..end]).into_owned(),
    };
    let auth = h.authentication_data_block_size;
    let aux = h.auxiliary_data_block_size;
    for (block, size) in [("authentication", auth), ("auxiliary", aux)] {
        if size % 64 != 0 {
            return Err(Error::BlockSize { block, size });
        }
    }
    let total = (HEADER_SIZE as u64).checked_add(auth).and_then(|x| x.checked_add(aux));
    match total {
        Some(end) if end <= b.len() as u64 => {}
        _ => {
            return Err(Error::BlocksPastEnd {
                block: "authentication and auxiliary",
                end: total.unwrap_or(u64::MAX),
                len: b.len(),
            })
        }
    }
    let within = |field: &'static str, offset: u64, size: u64, block: &'static str, block_size: u64| {
        if offset.checked_add(size).is_none_or(|e| e > block_size) {
            Err(Error::FieldOutside { field, offset, size, block, block_size })
        } else {
            Ok(())
        }
    };
    within("hash", h.hash_offset, h.hash_size, "authentication", auth)?;
    within("signature", h.signature_offset, h.signature_size, "authentication", auth)?;
    within("public key", h.public_key_offset, h.public_key_size, "auxiliary", aux)?;
    within("public key metadata", h.public_key_metadata_offset, h.public_key_metadata_size, "auxiliary", aux)?;
    within("descriptors", h.descriptors_offset, h.descriptors_size, "auxiliary", aux)?;
    let aux_start = HEADER_SIZE + auth as usize;
    let desc =
        &b[aux_start + h.descriptors_offset as usize..aux_start + (h.descriptors_offset + h.descriptors_size) as usize];
    let mut descriptors = Vec::new();
    let mut off = 0u64;
    while off < desc.len() as u64 {
        let index = descriptors.len();
        if off + 16 > desc.len() as u64 {
            return Err(Error::DescriptorPastEnd { index, offset: off, size: desc.len() as u64 });
        }
        let tag = be64(desc, off as usize);
        let following = be64(desc, off as usize + 8);
        let next = off.checked_add(16).and_then(|x| x.checked_add(following));
        match next {
            Some(n) if n <= desc.len() as u64 => off = n,
            _ => return Err(Error::DescriptorPastEnd { index, offset: off, size: desc.len() as u64 }),
        }
        descriptors.push(Descriptor { tag, num_bytes_following: following });
    }
    Ok((h, descriptors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_image_layout() {
        let b = disabled(FLAG_VERIFICATION_DISABLED, DEFAULT_RELEASE, 4096).unwrap();
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[..8], b"AVB0\0\0\0\x01");
        assert_eq!(b[123], 2, "flags, big-endian");
        assert_eq!(&b[128..141], b"avbtool 1.3.0");
        assert!(b[141..].iter().all(|&x| x == 0));
        let (h, d) = parse(&b).unwrap();
        assert_eq!(h.flags, 2);
        assert_eq!(h.release_string, "avbtool 1.3.0");
        assert!(d.is_empty());
        assert_eq!(disabled(3, DEFAULT_RELEASE, 1).unwrap().len(), 256);
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let good = disabled(3, DEFAULT_RELEASE, 4096).unwrap();
        assert_eq!(parse(&good[..100]).err(), Some(Error::Truncated(100)));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(parse(&bad), Err(Error::BadMagic(_))));
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&9u32.to_be_bytes());
        assert!(matches!(parse(&bad), Err(Error::UnsupportedVersion { minor: 9, .. })));
        let mut bad = good.clone();
        bad[128..176].fill(b'a');
        assert_eq!(parse(&bad).err(), Some(Error::ReleaseNotTerminated));
        let mut bad = good.clone();
        bad[20..28].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(matches!(parse(&bad), Err(Error::BlocksPastEnd { .. })));
        let mut bad = good.clone();
        bad[20..28].copy_from_slice(&64u64.to_be_bytes()); // aux block of 64
        bad[104..112].copy_from_slice(&128u64.to_be_bytes()); // descriptors larger than it
        assert!(matches!(parse(&bad), Err(Error::FieldOutside { field: "descriptors", .. })));
        let mut bad = good;
        bad[20..28].copy_from_slice(&64u64.to_be_bytes());
        bad[104..112].copy_from_slice(&64u64.to_be_bytes());
        bad[256 + 8..256 + 16].copy_from_slice(&1000u64.to_be_bytes());
        assert!(matches!(parse(&bad), Err(Error::DescriptorPastEnd { index: 0, .. })));
    }
}
