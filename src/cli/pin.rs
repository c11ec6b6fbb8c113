//! `mobix config hash-pin`: the crypt(3) hash of a phone's PIN, for a user's
//! `hashed_password` (the phone UI's lock screen unlocks with it).

use crate::util::Fail;
use anyhow::{Context, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// The alphabet of crypt(3) salts.
const SALT_CHARS: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `$6$SALT$HASH`: SHA-512 crypt with the default 5000 rounds, as `openssl passwd -6` and
/// glibc's crypt(3) write it (PAM's pam_unix checks it).
pub fn sha512_crypt(secret: &str, salt: &str) -> Result<String> {
    let hash = sha_crypt::sha512_crypt_b64(secret.as_bytes(), salt.as_bytes(), &sha_crypt::Sha512Params::default())
        .map_err(|e| anyhow::anyhow!("hashing: {e:?}"))?;
    Ok(format!("$6${salt}${hash}"))
}

/// A fresh 16-character salt from the kernel's random numbers.
fn salt() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| SALT_CHARS[(*b & 63) as usize] as char).collect())
}

/// What a PIN may be: what the lock screen's keypad (or keyboard) can type on one line.
fn check(pin: &str) -> Result<()> {
    if pin.is_empty() {
        return Err(Fail::new("the PIN is empty").hint("type the PIN the lock screen should accept").into());
    }
    if pin.chars().any(char::is_control) {
        return Err(Fail::new("the PIN has control characters")
            .hint("a PIN is digits (or a password's letters)")
            .into());
    }
    Ok(())
}

/// Reads the PIN (asked twice, not echoed, on a terminal; one line otherwise) and prints
/// its hash.
pub fn cmd_hash_pin() -> Result<ExitCode> {
    let stdin = std::io::stdin();
    let pin = if stdin.is_terminal() {
        let first = ask("PIN: ")?;
        let again = ask("PIN again: ")?;
        if first != again {
            return Err(Fail::new("the two PINs differ").hint("run it again and type the same PIN twice").into());
        }
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).context("reading the PIN from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    check(&pin)?;
    if !pin.chars().all(|c| c.is_ascii_digit()) {
        eprintln!("mobix: note: the PIN has more than digits; the lock screen's keypad then needs its keyboard");
    }
    println!("{}", sha512_crypt(&pin, &salt()?)?);
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal with echo off, restoring the terminal's mode afterwards.
fn ask(prompt: &str) -> Result<String> {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is stdin, a terminal (checked by the caller); saved outlives the call.
    let got = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if got {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above, with a termios copied from the terminal's own.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if got {
        // SAFETY: restores what tcgetattr returned.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    eprintln!();
    read.context("reading the PIN")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SHA-crypt specification's own example (its first test vector).
    #[test]
    fn hashes_as_the_sha_crypt_specification_does() {
        assert_eq!(
            sha512_crypt("Hello world!", "saltstring").unwrap(),
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
    }

    /// The reference: OpenSSL's `passwd -6` (which the manual names as the other way to
    /// make one) gives the same hash for the same PIN and salt.
    #[test]
    fn hashes_as_openssl_passwd_does() {
        let salt = salt().unwrap();
        let o = std::process::Command::new("openssl")
            .args(["passwd", "-6", "-salt", &salt, "2468"])
            .output()
            .expect("openssl (scripts/setup installs it)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), sha512_crypt("2468", &salt).unwrap());
    }

    #[test]
    fn salts_are_sixteen_crypt_characters_and_differ() {
        let (a, b) = (salt().unwrap(), salt().unwrap());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| SALT_CHARS.contains(&c)), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn an_empty_or_control_pin_is_refused() {
        assert!(check("").is_err());
        assert!(check("12\u{1b}34").is_err());
        assert!(check("1234").is_ok());
    }
}
