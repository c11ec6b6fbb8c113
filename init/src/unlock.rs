//! Stage-1's encrypted state: the PIN asked on the screen (touch, keys, a keyboard, the
//! serial console), the state partition made on its first boot and opened at every later
//! one as `/dev/mapper/mobix-state`, with the initramfs's cryptsetup. Runs before a
//! generation is chosen, so a phone left at the PIN screen spends no trial's try.
//!
//! Nothing here ever formats over data: a new LUKS2 volume is made only on a blank
//! partition ([`StateArea::Blank`]); a wrong PIN only makes the next one wait.

use crate::console::say;
use crate::remote;
use crate::screen::Painter;
use crate::sys::{self, Result};
use mobix_bootctl::console::{Event, PinFor, Unlock};
use mobix_bootctl::contract::{Encryption, RemoteUnlock, UnlockReply, MIN_STATE};
use mobix_bootctl::pin::{self, PadInput, PadKey, PadStep, StateArea, CRYPTSETUP, MAPPER_NAME};
use mobix_bootctl::screen::Scene;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The bytes a LUKS2 volume of cryptsetup's defaults keeps before its data: its two headers
/// and the key slots' area (16 MiB).
const LUKS_AREA: usize = 16 << 20;

/// Where the PIN may also come from over ssh: the server's settings, the USB network
/// stage-1 brought up, a busybox for its DHCP server.
pub struct Remote<'a> {
    pub cfg: &'a RemoteUnlock,
    pub usb_if: Option<&'a str>,
    pub busybox: Option<std::path::PathBuf>,
}

/// Opens the encrypted state `enc` as `/dev/mapper/mobix-state` (making it on a blank
/// partition), loading `modules` first; a partition holding a plain filesystem is left as
/// it is (encrypting it would format over the owner's data), and stage-2 mounts that. An
/// error is a state that cannot be opened: stage-1 shows it and gives the rescue shell.
/// While it asks for the PIN of an existing state, `remote` serves the unlock over ssh;
/// the server's public host key comes back where it ran.
pub fn open_state(
    enc: &Encryption,
    modules: &[String],
    screen: &Painter,
    remote: Option<Remote>,
) -> Result<Option<String>> {
    for m in modules {
        if let Err(e) = sys::load_module(Path::new(m)) {
            say(&format!("note: module {m} not loaded ({e}); another one serves"));
        }
    }
    let part = sys::wait_for_partition(&enc.partition, Duration::from_secs(10))?;
    // A state after the system image in its partition is reached through a loop device
    // from there, held open here until the device mapper holds it.
    let (dev, held) = if enc.offset == 0 {
        (part, None)
    } else {
        let size = sys::device_bytes(&part)?;
        if size < enc.offset + MIN_STATE {
            // Stage-2 says the same and keeps /var and /home in memory.
            say(&format!(
                "warning: {} ({}) has {} MiB after the system image, too little for the state; nothing encrypted",
                part.display(),
                enc.partition,
                size.saturating_sub(enc.offset) >> 20
            ));
            return Ok(None);
        }
        let (lo, held) = sys::loop_device(&part, enc.offset)?;
        say(&format!(
            "the state follows the system image in {} ({}) from byte {}: {}",
            part.display(),
            enc.partition,
            enc.offset,
            lo.display()
        ));
        (lo, Some(held))
    };
    let _ = std::fs::create_dir_all("/run/cryptsetup");
    let head = sys::read_at(&dev, 0, pin::PROBE_BYTES)?;
    let mut pad = Pad::open(screen);
    let area = pin::classify(&head);
    if matches!(area, StateArea::Unknown | StateArea::Luks { first_header: false }) {
        // The rescue shell that follows has no losetup: the loop device stays for it.
        std::mem::forget(held);
    }
    match area {
        StateArea::Ext4 => {
            say(&format!(
                "warning: {} ({}) holds a plain filesystem: the state stays unencrypted (encrypting it would \
                 format over it; see the manual, docs/encryption.md)",
                dev.display(),
                enc.partition
            ));
            Ok(None)
        }
        StateArea::Unknown => Err(format!(
            "{} ({}{}) holds neither a LUKS volume nor a filesystem mobix knows; it is left untouched{}",
            dev.display(),
            enc.partition,
            if enc.offset > 0 { " after the system image" } else { "" },
            if enc.offset > 0 {
                // What Android left on userdata, at a first install.
                "; if this is the phone's first mobix system, flash it again with `mobix flash --erase-state`"
            } else {
                ""
            }
        )),
        StateArea::Luks { first_header: false } => Err(format!(
            "the LUKS header at the start of {} ({}) is damaged (its second copy is there); nothing was changed: \
             `cryptsetup repair {}` in this shell may restore it",
            dev.display(),
            enc.partition,
            dev.display()
        )),
        StateArea::Blank => {
            let pin = pad.choose();
            say(&format!("making the encrypted state on {} ({})", dev.display(), enc.partition));
            pad.busy("making the encrypted storage for your data");
            let mut format = Command::new(CRYPTSETUP);
            format.args(["luksFormat", "--batch-mode", "--type", "luks2", "--label", "mobix-state", "--key-file", "-"]);
            if let Some(k) = enc.kdf {
                say(&format!(
                    "key slot cost as the profile says: {} KiB, {} ms (lowered for an emulated phone)",
                    k.memory_kib, k.iter_time_ms
                ));
                format.args(["--pbkdf-memory", &k.memory_kib.to_string(), "--iter-time", &k.iter_time_ms.to_string()]);
            }
            let out = cryptsetup(format.arg(&dev), &pin)?;
            if !out.ok() {
                // The partition was blank: make it blank again, so that a half-written
                // header does not ask the next boot for a PIN that opens nothing.
                let blanked = match sys::write_at(&dev, 0, &vec![0u8; LUKS_AREA]) {
                    Ok(()) => "it is blank again: the next boot asks for a new PIN".to_string(),
                    Err(e) => format!("blanking it again failed too: {e}"),
                };
                return Err(format!("cryptsetup luksFormat {} failed: {}; {blanked}", dev.display(), out));
            }
            let opened = open(&dev, &pin)?;
            if !opened.ok() {
                return Err(format!("opening the new encrypted state failed: {opened}"));
            }
            crate::console::report(&Event::Unlock(Unlock::Open { made: true }));
            // The remote unlock's host key, made now: the running system reports it, so
            // that a deploy can trust the server at the next boot.
            match remote {
                Some(_) => match remote::host_key(&dev) {
                    Ok(k) => Ok(Some(k)),
                    Err(e) => {
                        say(&format!("warning: no remote unlock host key yet: {e}"));
                        Ok(None)
                    }
                },
                None => Ok(None),
            }
        }
        StateArea::Luks { first_header: true } => {
            // Stopped (its clients answered first) when this returns.
            let mut server = remote.and_then(|r| {
                remote::start(r.cfg, &dev, r.usb_if, r.busybox.as_deref())
                    .map_err(|e| say(&format!("warning: no remote unlock: {e}")))
                    .ok()
            });
            let host_key = server.as_ref().map(|s| s.host_key.clone());
            let mut failures = 0u32;
            let mut trouble = None;
            loop {
                let pin = pad.ask(trouble.take(), server.as_ref());
                pad.busy("checking the PIN");
                let why = open(&dev, &pin)?;
                if why.ok() {
                    crate::console::report(&Event::Unlock(Unlock::Open { made: false }));
                    tell(&mut server, UnlockReply::Open);
                    return Ok(host_key);
                }
                if why.code != Some(pin::CRYPTSETUP_WRONG_KEY) {
                    let why = format!(
                        "cryptsetup cannot open {} ({}): {}; nothing was changed",
                        dev.display(),
                        enc.partition,
                        why
                    );
                    tell(&mut server, UnlockReply::Refused(why.clone()));
                    return Err(why);
                }
                failures += 1;
                let wait = pin::wait_after(failures);
                crate::console::report(&Event::Unlock(Unlock::Wrong { failures, wait_s: wait }));
                tell(&mut server, UnlockReply::Wrong { failures, wait_s: wait });
                for left in (1..=wait).rev() {
                    pad.show("Wrong PIN", &format!("Try again in {left} s"), true);
                    std::thread::sleep(Duration::from_secs(1));
                }
                trouble = Some(format!("Wrong PIN ({failures} in a row). Try again."));
            }
        }
    }
}

/// Tells the remote unlock's waiting clients, where it runs, what came of a PIN.
fn tell(server: &mut Option<remote::Server>, r: UnlockReply) {
    if let Some(s) = server {
        s.answer(&r);
    }
}

/// How cryptsetup ended: its exit code and what it said on stderr.
struct Outcome {
    code: Option<i32>,
    said: String,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "exit status {c}: {}", self.said),
            None => write!(f, "killed: {}", self.said),
        }
    }
}

/// `cryptsetup open` of `dev` as `/dev/mapper/mobix-state` with `pin`.
fn open(dev: &Path, pin: &str) -> Result<Outcome> {
    cryptsetup(Command::new(CRYPTSETUP).args(["open", "--key-file", "-"]).arg(dev).arg(MAPPER_NAME), pin)
}

/// Runs cryptsetup with the PIN on its standard input (`--key-file -`: read to its end,
/// no newline), never on its command line.
fn cryptsetup(cmd: &mut Command, pin: &str) -> Result<Outcome> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {CRYPTSETUP}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(pin.as_bytes()).map_err(|e| format!("giving cryptsetup the PIN: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("waiting for cryptsetup: {e}"))?;
    let said = String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ");
    Ok(Outcome { code: out.status.code(), said })
}

/// The PIN pad on the screen, with the inputs it takes.
struct Pad<'a> {
    screen: &'a Painter,
    keys: Vec<std::fs::File>,
    touch: Vec<sys::Touch>,
    pad: pin::Pad,
    title: String,
    text: String,
    bad: bool,
    /// The console without echo from the pad's opening on, so that digits typed there as
    /// soon as the PIN is asked (or between two asks) are never shown or logged.
    _raw: sys::RawConsole,
}

impl<'a> Pad<'a> {
    fn open(screen: &'a Painter) -> Pad<'a> {
        Pad {
            screen,
            keys: sys::key_devices(),
            touch: sys::touch_devices(),
            pad: pin::Pad::new(),
            title: String::new(),
            text: String::new(),
            bad: false,
            _raw: sys::RawConsole::new(),
        }
    }

    /// Shows a screen of the unlock (the pad as it is, with these words).
    fn show(&mut self, title: &str, text: &str, bad: bool) {
        (self.title, self.text, self.bad) = (title.to_string(), text.to_string(), bad);
        self.draw();
    }

    /// The boot screen while cryptsetup works.
    fn busy(&self, doing: &str) {
        let device = self.screen.device().to_string();
        self.screen.show(Scene::Boot { device, generation: None, doing: doing.to_string() });
    }

    fn draw(&self) {
        self.screen.show(Scene::Pin {
            device: self.screen.device().to_string(),
            title: self.title.clone(),
            text: self.text.clone(),
            bad: self.bad,
            entered: self.pad.entered() as u32,
            highlight: self.pad.highlight() as u32,
        });
    }

    /// A new PIN, typed twice alike.
    fn choose(&mut self) -> String {
        let mut trouble = None;
        loop {
            let (text, bad) = match trouble.take() {
                Some(t) => (t, true),
                None => ("This phone encrypts your data. Choose a PIN of 4 digits or more.".to_string(), false),
            };
            let first = self.read(PinFor::Choose, "Choose a PIN", &text, bad, None);
            let again = self.read(PinFor::Again, "Enter the PIN again", "The same PIN once more", false, None);
            if first == again {
                return first;
            }
            say("the two PINs differ; choose again");
            trouble = Some("The two PINs differ. Choose a PIN again.".into());
        }
    }

    /// The PIN of the encrypted state (from the pad, or over ssh through `remote`).
    fn ask(&mut self, trouble: Option<String>, remote: Option<&remote::Server>) -> String {
        let (text, bad) = match trouble {
            Some(t) => (t, true),
            None => ("Your data is encrypted. Enter the PIN to start.".to_string(), false),
        };
        if let Some(r) = remote {
            r.asking(true);
        }
        let pin = self.read(PinFor::Unlock, "Enter the PIN", &text, bad, remote);
        if let Some(r) = remote {
            r.asking(false);
        }
        pin
    }

    /// Reads one PIN from whichever input gives it (`remote`'s pipe among them).
    fn read(&mut self, purpose: PinFor, title: &str, text: &str, bad: bool, remote: Option<&remote::Server>) -> String {
        crate::console::report(&Event::Unlock(Unlock::Ask(purpose)));
        say("type the PIN on the phone, or its digits here, then Enter");
        self.show(title, text, bad);
        let mut pending = Vec::new();
        loop {
            let pipe = remote.map(|r| r.pipe());
            let Some(input) = sys::next_input_or_tap(Duration::from_secs(3600), &self.keys, &mut self.touch, pipe)
            else {
                continue;
            };
            let inputs: Vec<PadInput> = match input {
                sys::Input::Remote(bytes) => match remote::take_line(&mut pending, &bytes) {
                    // The client sends only what the pad takes.
                    Some(p) if pin::pad_takes(&p) => {
                        say("the PIN came over ssh (remote unlock)");
                        crate::console::report(&Event::Unlock(Unlock::Typed { digits: p.len() as u32 }));
                        return p;
                    }
                    _ => vec![],
                },
                sys::Input::Console(bytes) => bytes
                    .iter()
                    .filter_map(|b| match b {
                        b'0'..=b'9' => Some(PadInput::Key(PadKey::Digit(b - b'0'))),
                        0x7f | 0x08 => Some(PadInput::Key(PadKey::Erase)),
                        b'\r' | b'\n' => Some(PadInput::Key(PadKey::Done)),
                        _ => None,
                    })
                    .collect(),
                sys::Input::Key(code) => match code {
                    sys::KEY_VOLUMEUP | sys::KEY_UP => vec![PadInput::Previous],
                    sys::KEY_VOLUMEDOWN | sys::KEY_DOWN => vec![PadInput::Next],
                    sys::KEY_POWER => vec![PadInput::Press],
                    sys::KEY_ENTER | sys::KEY_KPENTER => vec![PadInput::Key(PadKey::Done)],
                    c => match sys::pin_key(c) {
                        Some(10) => vec![PadInput::Key(PadKey::Erase)],
                        Some(d) => vec![PadInput::Key(PadKey::Digit(d))],
                        None => vec![],
                    },
                },
                sys::Input::Tap(x, y) => match self.screen.size() {
                    Some((w, h)) => {
                        let (px, py) = ((x as u64 * w as u64 / 65536) as u32, (y as u64 * h as u64 / 65536) as u32);
                        match mobix_screen::pad_key_at(w, h, px, py) {
                            Some(i) => vec![PadInput::Key(pin::PAD[i])],
                            None => vec![],
                        }
                    }
                    None => vec![],
                },
            };
            for i in inputs {
                match self.pad.press(i) {
                    PadStep::Stay => {}
                    PadStep::TooShort => {
                        (self.text, self.bad) = (format!("A PIN has {} digits or more.", pin::PIN_MIN), true);
                    }
                    PadStep::Submit(p) => {
                        crate::console::report(&Event::Unlock(Unlock::Typed { digits: p.len() as u32 }));
                        return p;
                    }
                }
            }
            self.draw();
        }
    }
}
