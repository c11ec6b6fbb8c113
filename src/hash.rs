//! Digests: SHA-256 values, their hex form (pins in `mobix.lock`, manifests) and the
//! 32-character base-32 form that names store paths (Nix's alphabet, no e/o/u/t).
//!
//! Pure, except [`sha256_file`] and [`sha256_tree`], which read what they are given.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::path::Path;

/// A SHA-256 digest. Only built from bytes or from validated hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

/// In JSON a digest is its lowercase hex, as sha256sum prints it; anything else is refused.
impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256Digest::parse_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a lowercase hex sha256")))
    }
}

impl Sha256Digest {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Sha256Digest(b)
    }
    pub fn of(data: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(data).into())
    }
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn parse_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Sha256Digest(out))
    }
    /// The 160-bit, 32-character name part of a store path.
    pub fn store_hash(&self) -> String {
        nix32(&self.0[..20])
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}
impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

pub const NIX32_ALPHABET: &[u8; 32] = mobix_bootctl::stream::HASH_ALPHABET;

/// Base-32 as Nix prints hashes (least significant 5-bit group last).
pub fn nix32(bytes: &[u8]) -> String {
    let len = (bytes.len() * 8).div_ceil(5);
    let mut s = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = (bytes[i] as u16) >> j;
        let hi = if i + 1 < bytes.len() { (bytes[i + 1] as u16) << (8 - j) } else { 0 };
        s.push(NIX32_ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    s
}

/// An incremental hasher for streams.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Self {
        Hasher(Sha256::new())
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> Sha256Digest {
        Sha256Digest(self.0.finalize().into())
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn sha256_file(path: &Path) -> std::io::Result<Sha256Digest> {
    mobix_bootctl::content::file(path).map(Sha256Digest)
}

/// Hashes a directory tree by content: relative paths in byte order, file type, the
/// executable bit, file contents and symlink targets. Timestamps, owners and the tree's own
/// location do not count, so the same sources hash the same in any checkout. Entries for
/// which `skip` returns true (relative path) are left out with everything below them.
pub fn sha256_tree(root: &Path, skip: &dyn Fn(&str) -> bool) -> std::io::Result<Sha256Digest> {
    mobix_bootctl::content::tree(root, skip).map(Sha256Digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_its_hex_in_json_and_nothing_else_parses() {
        let d = Sha256Digest::of(b"mobix");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.hex()));
        assert_eq!(serde_json::from_str::<Sha256Digest>(&json).unwrap(), d);
        for bad in ["\"abc\"", &format!("\"{}\"", d.hex().to_uppercase()), "12"] {
            assert!(serde_json::from_str::<Sha256Digest>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nix32_matches_nix() {
        // `nix-hash --type sha256 --to-base32` of sha256("") is this string in Nix.
        let d = Sha256Digest::of(b"");
        assert_eq!(nix32(d.bytes()), "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
        assert_eq!(d.store_hash().len(), 32);
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(Sha256Digest::parse_hex(&d.hex()), Some(d));
        assert_eq!(Sha256Digest::parse_hex("xyz"), None);
        assert_eq!(Sha256Digest::parse_hex(&d.hex().to_uppercase()), None);
    }
}
