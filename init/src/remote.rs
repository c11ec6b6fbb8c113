//! Remote unlock: while stage-1 asks for the PIN of the encrypted state, Debian's dropbear
//! (from the initramfs) takes ssh logins by root's keys on the phone's USB network (the
//! emulated phone: its Ethernet), and every login runs [`client`] (this program as
//! `mobix-unlock`), which hands the PIN it reads to the pad through a pipe and answers with
//! what came of it ([`UnlockReply`]).
//!
//! The server's host key is made on the phone the first time and kept in the LUKS2 header
//! as a token ([`UNLOCK_TOKEN`]), so that it stays across boots and flashes: a host that
//! learnt it from the running system (`phone-status`) can tell the phone from an impostor on
//! the link. Like every key of an initramfs ssh server, it is readable by whoever holds the
//! phone's storage (the header is not encrypted).

use crate::console::say;
use crate::sys::{self, Result};
use mobix_bootctl::contract::{RemoteUnlock, UnlockLink, UnlockReply, UNLOCK_PROGRAM, UNLOCK_TOKEN, USB_PHONE_ADDRESS};
use mobix_bootctl::pin::CRYPTSETUP;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the server's files live while stage-1 runs (the initramfs, freed at switch_root).
const DIR: &str = "/run/mobix-unlock";
/// The pipe the client writes the PIN to, a line.
const PIPE: &str = "/run/mobix-unlock/pin";
/// `<number>\n<reply line>\n`: the pad's latest answer, the number counting answers.
const OUTCOME: &str = "/run/mobix-unlock/outcome";
/// Present while the pad asks for the PIN that opens the state.
const ASKING: &str = "/run/mobix-unlock/asking";
const HOST_KEY: &str = "/run/mobix-unlock/host_key";
const DROPBEAR: &str = "/bin/dropbear";
const DROPBEARKEY: &str = "/bin/dropbearkey";

/// How long a client waits for the pad to answer: the longest wait after wrong PINs (five
/// minutes) and a slow key derivation.
const CLIENT_WAIT: Duration = Duration::from_secs(330);

/// The running server; stopped (and the Ethernet link taken down) when dropped.
pub struct Server {
    dropbear: Child,
    dhcp: Option<crate::debugshell::UsbServices>,
    ethernet: Option<String>,
    /// Whether stage-1 mounted /dev/pts for it (unmounted again: the system mounts its own).
    pts: bool,
    pipe: std::fs::File,
    answers: u32,
    /// The host key's public half (`ssh-ed25519 AAAA...`).
    pub host_key: String,
}

/// Starts the server for the state on `dev` (a LUKS2 volume). `usb_if` is the USB network
/// stage-1 brought up, `busybox` one to serve the host its address on it by DHCP.
pub fn start(cfg: &RemoteUnlock, dev: &Path, usb_if: Option<&str>, busybox: Option<&Path>) -> Result<Server> {
    let host_key = host_key(dev)?;
    accounts(cfg)?;
    let c = std::ffi::CString::new(PIPE).expect("no NUL");
    let _ = std::fs::remove_file(PIPE);
    // SAFETY: a valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(format!("making {PIPE}: {}", std::io::Error::last_os_error()));
    }
    // Read and write: a writer that comes and goes never leaves the reader at end of file.
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(PIPE)
        .map_err(|e| format!("opening {PIPE}: {e}"))?;
    let _ = std::fs::remove_file(OUTCOME);
    let (address, dhcp, ethernet) = match &cfg.link {
        UnlockLink::Usb => {
            let ifname = usb_if.ok_or("the USB network is not up")?;
            let dhcp = busybox.map(|b| crate::debugshell::dhcp_server(b, ifname));
            (USB_PHONE_ADDRESS.to_string(), dhcp, None)
        }
        UnlockLink::Ethernet { address } => {
            let ifname = first_ethernet(Duration::from_secs(5)).ok_or("no Ethernet interface appeared within 5 s")?;
            sys::set_ipv4(&ifname, address, "255.255.255.0")?;
            (address.clone(), None, Some(ifname))
        }
    };
    // A person's `ssh -t` gets a terminal (the PIN typed without echo).
    let _ = std::fs::create_dir_all("/dev/pts");
    let pts = match sys::mount("devpts", "/dev/pts", Some("devpts"), 0, Some("mode=0620,ptmxmode=0666")) {
        Ok(()) => true,
        Err(e) => {
            say(&format!("note: remote unlock: no terminals for ssh -t ({e})"));
            false
        }
    };
    let port = cfg.port.to_string();
    let spawned = Command::new(DROPBEAR)
        // Foreground, log to stderr (the console), keys only, no forwarding, and every
        // login runs the unlock whatever it asks for.
        .args(["-F", "-E", "-s", "-j", "-k", "-p", &port, "-r", HOST_KEY, "-P", "/run/mobix-unlock/dropbear.pid"])
        .args(["-c", "mobix-unlock"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    let dropbear = match spawned {
        Ok(c) => c,
        Err(e) => {
            undo(ethernet.as_deref(), pts);
            return Err(format!("starting {DROPBEAR}: {e}"));
        }
    };
    say(&format!("remote unlock: ssh root@{address} (port {port}) takes the PIN; host key {host_key}"));
    Ok(Server { dropbear, dhcp, ethernet, pts, pipe, answers: 0, host_key })
}

impl Server {
    /// The pipe the pad also waits on.
    pub fn pipe(&self) -> &std::fs::File {
        &self.pipe
    }

    /// Whether the pad asks for the PIN now (a client waits until it does).
    pub fn asking(&self, yes: bool) {
        if yes {
            let _ = std::fs::write(ASKING, "");
        } else {
            let _ = std::fs::remove_file(ASKING);
        }
    }

    /// Tells waiting clients what came of the last PIN.
    pub fn answer(&mut self, r: &UnlockReply) {
        self.answers += 1;
        let tmp = format!("{OUTCOME}.new");
        let _ = std::fs::write(&tmp, format!("{}\n{}\n", self.answers, r.line()))
            .and_then(|()| std::fs::rename(&tmp, OUTCOME));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.asking(false);
        // The clients read the last answer and end by themselves; then nothing of the
        // server outlives stage-1.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) && !processes("mobix-unlock").is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.dropbear.kill();
        let _ = self.dropbear.wait();
        for pid in processes("dropbear").into_iter().chain(processes("mobix-unlock")) {
            // SAFETY: a plain signal to a process of this boot.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.dhcp.take();
        undo(self.ethernet.as_deref(), self.pts);
        say("remote unlock: the ssh server stopped");
    }
}

/// Leaves the network card and /dev as the system expects to find them: the Ethernet
/// interface without its address and down (so that udev may rename it), /dev/pts not
/// mounted.
fn undo(ethernet: Option<&str>, pts: bool) {
    if let Some(i) = ethernet {
        if let Err(e) = sys::clear_ipv4(i) {
            say(&format!("warning: remote unlock: {e}"));
        }
    }
    if pts {
        let c = std::ffi::CString::new("/dev/pts").expect("no NUL");
        // SAFETY: a valid C string; a lazy unmount of a mount stage-1 made.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The host key from the state's LUKS2 header, made and kept there where it has none, in
/// [`HOST_KEY`]. Returns its public half.
pub fn host_key(dev: &Path) -> Result<String> {
    std::fs::create_dir_all(DIR).map_err(|e| format!("creating {DIR}: {e}"))?;
    let _ = std::fs::set_permissions(DIR, std::fs::Permissions::from_mode(0o700));
    let dump = Command::new(CRYPTSETUP)
        .args(["luksDump", "--dump-json-metadata"])
        .arg(dev)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {CRYPTSETUP}: {e}"))?;
    let kept = serde_json::from_slice::<serde_json::Value>(&dump.stdout).ok().and_then(|v| {
        let tokens = v.get("tokens")?.as_object()?.clone();
        tokens.values().find(|t| t["type"] == UNLOCK_TOKEN).and_then(|t| t["key"].as_str().map(str::to_string))
    });
    let _ = std::fs::remove_file(HOST_KEY);
    match kept.and_then(|hex| unhex(&hex)) {
        Some(bytes) => write_private(HOST_KEY, &bytes)?,
        None => {
            run(Command::new(DROPBEARKEY).args(["-t", "ed25519", "-f", HOST_KEY]), "making the host key")?;
            let bytes = std::fs::read(HOST_KEY).map_err(|e| format!("reading {HOST_KEY}: {e}"))?;
            let token = serde_json::json!({ "type": UNLOCK_TOKEN, "keyslots": [], "key": hex(&bytes) });
            let mut import = Command::new(CRYPTSETUP)
                .args(["token", "import", "--json-file", "-"])
                .arg(dev)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("running {CRYPTSETUP}: {e}"))?;
            if let Some(mut i) = import.stdin.take() {
                let _ = i.write_all(token.to_string().as_bytes());
            }
            let out = import.wait_with_output().map_err(|e| format!("waiting for {CRYPTSETUP}: {e}"))?;
            if out.status.success() {
                say("remote unlock: a new host key, kept in the LUKS header");
            } else {
                say(&format!(
                    "warning: remote unlock: keeping the new host key in the LUKS header failed ({}); it lasts this \
                     boot only",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    let public = run(Command::new(DROPBEARKEY).args(["-y", "-f", HOST_KEY]), "reading the host key")?;
    public
        .lines()
        .find(|l| l.starts_with("ssh-"))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .ok_or_else(|| format!("{DROPBEARKEY} -y printed no public key: {public}"))
}

/// root's account as dropbear reads it: its home, its keys, and the unlock as its shell.
fn accounts(cfg: &RemoteUnlock) -> Result<()> {
    let w = |p: &str, data: &str, mode: u32| write_mode(p, data.as_bytes(), mode);
    let _ = std::fs::create_dir_all("/etc");
    w("/etc/passwd", &format!("root:x:0:0:root:/root:{UNLOCK_PROGRAM}\n"), 0o644)?;
    w("/etc/shells", &format!("{UNLOCK_PROGRAM}\n"), 0o644)?;
    std::fs::create_dir_all("/root/.ssh").map_err(|e| format!("creating /root/.ssh: {e}"))?;
    for d in ["/root", "/root/.ssh"] {
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
    }
    w("/root/.ssh/authorized_keys", &(cfg.authorized_keys.join("\n") + "\n"), 0o600)?;
    let _ = std::fs::remove_file(UNLOCK_PROGRAM);
    std::os::unix::fs::symlink("/init", UNLOCK_PROGRAM).map_err(|e| format!("linking {UNLOCK_PROGRAM}: {e}"))
}

/// The first Ethernet interface (ARPHRD_ETHER, not a gadget's), waiting up to `wait` for
/// its driver.
fn first_ethernet(wait: Duration) -> Option<String> {
    let t0 = Instant::now();
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                let kind = std::fs::read_to_string(format!("/sys/class/net/{n}/type")).unwrap_or_default();
                kind.trim() == "1" && Path::new(&format!("/sys/class/net/{n}/device")).exists()
            })
            .collect();
        names.sort();
        if let Some(n) = names.into_iter().next() {
            return Some(n);
        }
        if t0.elapsed() >= wait {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The processes whose name (`comm`) is `name`.
fn processes(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("remote unlock: {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("remote unlock: {what}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_mode(path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("writing {path}: {e}"))?;
    f.write_all(data).map_err(|e| format!("writing {path}: {e}"))
}

fn write_private(path: &str, data: &[u8]) -> Result<()> {
    write_mode(path, data, 0o600)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `mobix-unlock`: what every remote unlock login runs. Reads the PIN (from a person at a
/// terminal without echo, or a line from a program), hands it to the pad, and prints the
/// pad's answer. Exit status 0: the state is open.
pub fn client() -> i32 {
    let reply = ask_pad();
    let sentence = match &reply {
        UnlockReply::Open => "The PIN is right: the phone goes on booting.".to_string(),
        UnlockReply::Wrong { failures, wait_s } => format!(
            "Wrong PIN ({failures} in a row).{}",
            if *wait_s > 0 { format!(" The phone takes the next one in {wait_s} s.") } else { String::new() }
        ),
        UnlockReply::Refused(why) => format!("Nothing was tried: {why}."),
    };
    eprintln!("{sentence}");
    println!("{}", reply.line());
    i32::from(reply != UnlockReply::Open)
}

fn ask_pad() -> UnlockReply {
    let refused = |why: &str| UnlockReply::Refused(why.to_string());
    if !Path::new(PIPE).exists() {
        return refused("the phone is not asking for a PIN");
    }
    let pin = match read_pin() {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    if !mobix_bootctl::pin::pad_takes(&pin) {
        return refused(&format!("a PIN is {} to {} digits", mobix_bootctl::pin::PIN_MIN, mobix_bootctl::pin::PIN_MAX));
    }
    // The pad asks only for the PIN that opens the state (not for a new one), and not
    // while it checks one.
    let t0 = Instant::now();
    while !Path::new(ASKING).exists() {
        if t0.elapsed() > Duration::from_secs(15) {
            return refused(
                "the phone is not asking for the PIN that opens its data (a new PIN is chosen on the phone)",
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = answers();
    let sent = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(PIPE)
        .and_then(|mut p| p.write_all(format!("{pin}\n").as_bytes()));
    if let Err(e) = sent {
        return refused(&format!("handing the PIN to the pad: {e}"));
    }
    let t0 = Instant::now();
    while t0.elapsed() < CLIENT_WAIT {
        std::thread::sleep(Duration::from_millis(100));
        if let Some((n, r)) = outcome() {
            if n > before {
                return r;
            }
        }
    }
    refused("the pad did not answer")
}

/// The PIN: at a terminal, asked for and typed without echo; else the first line.
fn read_pin() -> std::result::Result<String, String> {
    let mut line = Vec::new();
    // SAFETY: isatty on a descriptor the process has.
    let tty = unsafe { libc::isatty(0) } == 1;
    let _quiet = tty.then(|| {
        eprint!("PIN: ");
        sys::RawConsole::without(libc::ECHO)
    });
    let mut b = [0u8; 1];
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    loop {
        match stdin.read(&mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' || b[0] == b'\r' => break,
            Ok(_) if line.len() < 256 => line.push(b[0]),
            Ok(_) => return Err("the line is too long for a PIN".into()),
            Err(e) => return Err(format!("reading the PIN: {e}")),
        }
    }
    if tty {
        eprintln!();
    }
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}

fn answers() -> u32 {
    outcome().map_or(0, |(n, _)| n)
}

fn outcome() -> Option<(u32, UnlockReply)> {
    let s = std::fs::read_to_string(OUTCOME).ok()?;
    let (n, rest) = s.split_once('\n')?;
    Some((n.trim().parse().ok()?, UnlockReply::find(rest)?))
}

/// The PIN in bytes that came through the pipe, once a whole line has: None until then
/// (the bytes wait in `pending`).
pub fn take_line(pending: &mut Vec<u8>, bytes: &[u8]) -> Option<String> {
    pending.extend_from_slice(bytes);
    let end = pending.iter().position(|b| *b == b'\n')?;
    let line: Vec<u8> = pending.drain(..=end).collect();
    Some(String::from_utf8_lossy(&line).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_key_survives_its_hex_form() {
        let key = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(hex(&key), "00017f80ff");
        assert_eq!(unhex(&hex(&key)), Some(key.to_vec()));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_pin_is_taken_once_its_line_is_whole() {
        let mut pending = Vec::new();
        assert_eq!(take_line(&mut pending, b"13"), None);
        assert_eq!(take_line(&mut pending, b"57\n24"), Some("1357".into()));
        assert_eq!(pending, b"24");
        assert_eq!(take_line(&mut pending, b"68\r\n"), Some("2468".into()));
        assert!(pending.is_empty());
    }
}
