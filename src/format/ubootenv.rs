//! U-Boot's environment image (what `mkenvimage` writes and `env` loads from flash): a
//! little-endian CRC-32 over the data area, then `name=value` strings each ending in NUL,
//! an empty string ending the list, and padding to the environment's size.

use super::crc32::crc32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("environment variable name {0:?} is empty or holds '=' or NUL")]
    BadName(String),
    #[error("the value of {0} holds NUL")]
    BadValue(String),
    #[error("the environment needs {need} bytes but its area holds {size}")]
    TooBig { need: usize, size: usize },
}

/// Padding byte of the unused area (erased flash, as `mkenvimage` pads by default).
pub const PAD: u8 = 0xff;

/// An environment image of `size` bytes holding `vars` in order.
pub fn encode(vars: &[(&str, &str)], size: usize) -> Result<Vec<u8>, Error> {
    let mut data = Vec::new();
    for (k, v) in vars {
        if k.is_empty() || k.contains(['=', '\0']) {
            return Err(Error::BadName(k.to_string()));
        }
        if v.contains('\0') {
            return Err(Error::BadValue(k.to_string()));
        }
        data.extend_from_slice(k.as_bytes());
        data.push(b'=');
        data.extend_from_slice(v.as_bytes());
        data.push(0);
    }
    data.push(0);
    if data.len() + 4 > size {
        return Err(Error::TooBig { need: data.len() + 4, size });
    }
    data.resize(size - 4, PAD);
    let mut out = crc32(&data).to_le_bytes().to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

/// The variables of an environment image, or `None` when its CRC is wrong (U-Boot then
/// falls back to its built-in environment).
pub fn decode(img: &[u8]) -> Option<Vec<(String, String)>> {
    let (crc, data) = (img.get(..4)?, img.get(4..)?);
    if crc32(data).to_le_bytes() != crc {
        return None;
    }
    let mut vars = Vec::new();
    for s in data.split(|&b| b == 0) {
        if s.is_empty() {
            break;
        }
        let s = String::from_utf8_lossy(s);
        let (k, v) = s.split_once('=')?;
        vars.push((k.to_string(), v.to_string()));
    }
    Some(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let img = encode(&[("bootdelay", "0"), ("bootcmd", "echo hi; poweroff")], 64).unwrap();
        assert_eq!(img.len(), 64);
        assert_eq!(&img[4..16], b"bootdelay=0\0");
        assert_eq!(img[4 + 12 + 26], 0, "the list ends with an empty string");
        assert!(img[4 + 12 + 27..].iter().all(|&b| b == PAD));
        assert_eq!(
            decode(&img).unwrap(),
            vec![("bootdelay".into(), "0".into()), ("bootcmd".into(), "echo hi; poweroff".into())]
        );
        let mut bad = img.clone();
        bad[10] ^= 1;
        assert_eq!(decode(&bad), None);
    }

    #[test]
    fn refuses_what_u_boot_could_not_read() {
        assert_eq!(encode(&[("a=b", "c")], 64), Err(Error::BadName("a=b".into())));
        assert_eq!(encode(&[("a", "c\0")], 64), Err(Error::BadValue("a".into())));
        assert!(matches!(encode(&[("a", &"x".repeat(100))], 64), Err(Error::TooBig { .. })));
    }
}
