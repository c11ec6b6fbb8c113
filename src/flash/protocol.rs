//! The fastboot protocol without any I/O: commands as the host sends them, replies as the
//! device sends them, and the lenient reading of variable values that real bootloaders
//! need (AOSP's fastboot client and fastbootd are the reference). Both the client and the
//! emulated phone's device side use these.

use mobix_bootctl::contract::Slot;

/// Longest command a device accepts (fastboot's `FB_COMMAND_SZ`).
pub const MAX_COMMAND: usize = 4096;
/// Longest reply: 4 bytes of kind, then the message (fastboot's `FB_RESPONSE_SZ`).
pub const MAX_REPLY: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("command of {0} bytes is longer than fastboot's {MAX_COMMAND}")]
    CommandTooLong(usize),
    #[error("command {0:?} holds a NUL or a newline")]
    BadCommand(String),
    #[error("reply {0:?} is not OKAY, FAIL, DATA, INFO or TEXT")]
    BadReply(String),
    #[error("DATA reply with a size that is not 8 hex digits: {0:?}")]
    BadDataSize(String),
    #[error("download of {0} bytes: fastboot sizes are 32-bit")]
    TooBig(u64),
}

/// What the host asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    GetVar(String),
    /// Announce a data phase of this many bytes.
    Download(u32),
    Flash(String),
    Erase(String),
    /// `set_active:a` or `set_active:b` (a leading `_` is accepted); another slot is
    /// [`Command::Other`], which a device refuses.
    SetActive(Slot),
    /// Boot what was downloaded, from RAM.
    Boot,
    Continue,
    Reboot,
    RebootBootloader,
    /// Anything else, as sent (`oem …`, `flashing unlock`, …).
    Other(String),
}

impl Command {
    /// The bytes on the wire: ASCII, no trailing NUL.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let text = match self {
            Command::GetVar(v) => format!("getvar:{v}"),
            Command::Download(n) => format!("download:{n:08x}"),
            Command::Flash(p) => format!("flash:{p}"),
            Command::Erase(p) => format!("erase:{p}"),
            Command::SetActive(s) => format!("set_active:{s}"),
            Command::Boot => "boot".into(),
            Command::Continue => "continue".into(),
            Command::Reboot => "reboot".into(),
            Command::RebootBootloader => "reboot-bootloader".into(),
            Command::Other(s) => s.clone(),
        };
        if text.contains(['\0', '\n']) {
            return Err(Error::BadCommand(text));
        }
        if text.len() > MAX_COMMAND {
            return Err(Error::CommandTooLong(text.len()));
        }
        Ok(text.into_bytes())
    }

    /// A command as a device reads it (unknown ones become `Other`).
    pub fn parse(b: &[u8]) -> Command {
        let text = String::from_utf8_lossy(b).trim_end_matches('\0').to_string();
        let arg = |p: &str| text.strip_prefix(p).map(str::to_string);
        if let Some(v) = arg("getvar:") {
            Command::GetVar(v)
        } else if let Some(n) = arg("download:").and_then(|h| u32::from_str_radix(&h, 16).ok()) {
            Command::Download(n)
        } else if let Some(p) = arg("flash:") {
            Command::Flash(p)
        } else if let Some(p) = arg("erase:") {
            Command::Erase(p)
        } else if let Some(s) = arg("set_active:").as_deref().and_then(Slot::parse) {
            Command::SetActive(s)
        } else {
            match text.as_str() {
                "boot" => Command::Boot,
                "continue" => Command::Continue,
                "reboot" => Command::Reboot,
                "reboot-bootloader" => Command::RebootBootloader,
                _ => Command::Other(text),
            }
        }
    }

    /// How the command shows in logs and `--dry-run`, as `fastboot` would be asked for it.
    pub fn show(&self) -> String {
        String::from_utf8_lossy(&self.encode().unwrap_or_default()).into_owned()
    }
}

/// What the device answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done; the rest is a value (getvar) or empty.
    Okay(String),
    /// Refused, with the device's reason.
    Fail(String),
    /// Ready for a data phase of this many bytes.
    Data(u32),
    /// A progress message; more replies follow.
    Info(String),
    /// Raw text to print; more replies follow.
    Text(String),
}

impl Reply {
    pub fn parse(b: &[u8]) -> Result<Reply, Error> {
        let text = String::from_utf8_lossy(b).into_owned();
        let (kind, rest) = text.split_at(text.len().min(4));
        let rest = rest.to_string();
        Ok(match kind {
            "OKAY" => Reply::Okay(rest),
            "FAIL" => Reply::Fail(rest),
            "INFO" => Reply::Info(rest),
            "TEXT" => Reply::Text(rest),
            "DATA" => {
                if rest.len() != 8 {
                    return Err(Error::BadDataSize(rest));
                }
                Reply::Data(u32::from_str_radix(&rest, 16).map_err(|_| Error::BadDataSize(rest.clone()))?)
            }
            _ => return Err(Error::BadReply(text)),
        })
    }

    /// The bytes on the wire (messages cut to fit [`MAX_REPLY`]).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, rest) = match self {
            Reply::Okay(s) => ("OKAY", s.clone()),
            Reply::Fail(s) => ("FAIL", s.clone()),
            Reply::Info(s) => ("INFO", s.clone()),
            Reply::Text(s) => ("TEXT", s.clone()),
            Reply::Data(n) => ("DATA", format!("{n:08x}")),
        };
        let mut out = kind.as_bytes().to_vec();
        let mut rest = rest.into_bytes();
        rest.truncate(MAX_REPLY - 4);
        out.extend(rest);
        out
    }
}

/// A number as bootloaders write it: `0x10000000`, or bare hex `10000000` (some send
/// `partition-size` so; fastboot itself reads bare values as hex, and so does this).
pub fn parse_number(s: &str) -> Option<u64> {
    let t = s.trim();
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    if hex.is_empty() {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// `has-slot:*`, `is-logical:*`: yes or no.
pub fn parse_yes(s: &str) -> bool {
    s.trim().eq_ignore_ascii_case("yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_as_the_stock_client_sends_them() {
        for (c, wire) in [
            (Command::GetVar("max-download-size".into()), "getvar:max-download-size"),
            (Command::Download(20000), "download:00004e20"),
            (Command::Flash("boot_a".into()), "flash:boot_a"),
            (Command::Erase("dtbo".into()), "erase:dtbo"),
            (Command::SetActive(Slot::B), "set_active:b"),
            (Command::Reboot, "reboot"),
            (Command::Boot, "boot"),
        ] {
            assert_eq!(c.encode().unwrap(), wire.as_bytes());
            assert_eq!(Command::parse(wire.as_bytes()), c);
        }
        assert_eq!(Command::parse(b"set_active:_a"), Command::SetActive(Slot::A));
        assert_eq!(Command::parse(b"set_active:c"), Command::Other("set_active:c".into()), "mobix knows two slots");
        assert_eq!(Command::parse(b"oem unlock"), Command::Other("oem unlock".into()));
        assert_eq!(Command::GetVar("x".repeat(5000)).encode(), Err(Error::CommandTooLong(5007)));
        assert!(matches!(Command::Flash("a\nb".into()).encode(), Err(Error::BadCommand(_))));
    }

    #[test]
    fn replies_parse_and_refuse_garbage() {
        assert_eq!(Reply::parse(b"OKAY0x10000000").unwrap(), Reply::Okay("0x10000000".into()));
        assert_eq!(Reply::parse(b"DATA00004e20").unwrap(), Reply::Data(0x4e20));
        assert_eq!(Reply::parse(b"FAILunknown command").unwrap(), Reply::Fail("unknown command".into()));
        assert_eq!(Reply::parse(b"INFOerasing").unwrap(), Reply::Info("erasing".into()));
        assert!(Reply::parse(b"DATA12").is_err());
        assert!(Reply::parse(b"DATAzzzzzzzz").is_err());
        assert!(Reply::parse(b"HELLO").is_err());
        assert!(Reply::parse(b"").is_err());
        for r in [Reply::Okay("a".into()), Reply::Data(7), Reply::Fail("no".into())] {
            assert_eq!(Reply::parse(&r.encode()).unwrap(), r);
        }
        assert_eq!(Reply::Fail("x".repeat(400)).encode().len(), MAX_REPLY);
    }

    #[test]
    fn variables_are_read_leniently() {
        assert_eq!(parse_number("0x10000000"), Some(0x1000_0000));
        assert_eq!(parse_number(" 0000000003000000 "), Some(0x300_0000));
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("zz"), None);
        assert!(parse_yes("yes") && !parse_yes("no") && !parse_yes(""));
    }
}
