//! The emulated phone in fastboot mode: the device side of the protocol over TCP on
//! loopback, writing into the phone's GPT disk (the profile's partitions and slots, its
//! product name, a small max-download-size so that images are split as on real phones).
//! Sparse images are expanded with DONT_CARE left alone, as bootloaders do, so a flash in
//! several pieces works; `set_active` changes misc as the boot_control HAL does.

use super::{patch_partition, punch_hole, read_partition, write_sparse_at, Layout};
use crate::flash::protocol::{Command, Reply};
use crate::flash::tcp::Tcp;
use crate::format::{misc, sparse};
use anyhow::Result;
use mobix_bootctl::contract::Slot;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::PathBuf;

/// The device's end of a connection: whole packets, or for USB, what one read returns.
trait Link {
    /// Receives the next packet; `max` bounds what a USB read asks for (TCP frames are
    /// whole anyway).
    fn recv(&mut self, max: usize) -> std::io::Result<Vec<u8>>;
    fn send(&mut self, data: &[u8]) -> std::io::Result<()>;
    fn close(&mut self);
}

impl Link for Tcp {
    fn recv(&mut self, _max: usize) -> std::io::Result<Vec<u8>> {
        Tcp::recv(self)
    }
    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        Tcp::send(self, data)
    }
    fn close(&mut self) {
        Tcp::close(self)
    }
}

impl Link for crate::flash::usb::Gadget {
    fn recv(&mut self, max: usize) -> std::io::Result<Vec<u8>> {
        crate::flash::usb::Gadget::recv(self, max)
    }
    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        crate::flash::usb::Gadget::send(self, data)
    }
    fn close(&mut self) {}
}

/// What a command read asks for: fastboot commands are at most 4 KiB.
const COMMAND_MAX: usize = 4096;
/// One read of download data.
const DATA_MAX: usize = 1 << 20;

/// What the device answers and how it behaves.
pub struct Device {
    pub disk: PathBuf,
    pub layout: Layout,
    pub product: String,
    pub serialno: String,
    pub max_download: u32,
    /// Whether the phone has A/B slots (boot_a/boot_b).
    pub ab: bool,
    /// For tests of interrupted flashing: drop the connection once this many bytes of
    /// download data have arrived (over the whole session).
    pub drop_after: Option<u64>,
}

/// Why serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Left {
    /// `reboot` or `continue`: the phone leaves fastboot mode.
    Reboot,
    /// `boot`: start the downloaded boot image from RAM (on the current slot).
    BootRam { image: Vec<u8>, slot: Option<Slot> },
    /// The connection was dropped on purpose (`drop_after`).
    Dropped,
}

struct Session {
    buffer: Vec<u8>,
    received: u64,
}

impl Device {
    fn partition(&self, name: &str) -> Option<(u64, u64)> {
        self.layout.find(name)
    }

    fn misc_control(&self) -> Option<misc::BootloaderControl> {
        let raw =
            read_partition(&self.disk, &self.layout, "misc", misc::CONTROL_OFFSET as u64, misc::CONTROL_SIZE).ok()?;
        let c = misc::BootloaderControl::decode(raw[..].try_into().ok()?);
        c.crc_ok().then_some(c)
    }

    fn current_slot(&self) -> Slot {
        let raw = read_partition(&self.disk, &self.layout, "misc", misc::CONTROL_OFFSET as u64, misc::CONTROL_SIZE);
        raw.ok()
            .and_then(|r| misc::select_slot(r[..].try_into().ok()?, false).ok())
            .and_then(|s| s.slot)
            .and_then(Slot::from_index)
            .unwrap_or(Slot::A)
    }

    fn getvar(&self, name: &str) -> Reply {
        let exists = |p: &str| self.partition(p).is_some();
        let ok = |v: String| Reply::Okay(v);
        let fail = || Reply::Fail("unknown variable".into());
        if let Some(p) = name.strip_prefix("has-slot:") {
            return if exists(&format!("{p}_a")) {
                ok("yes".into())
            } else if exists(p) {
                ok("no".into())
            } else {
                fail()
            };
        }
        if let Some(p) = name.strip_prefix("partition-size:") {
            return self.partition(p).map_or_else(fail, |(_, size)| ok(format!("0x{size:016X}")));
        }
        if let Some(p) = name.strip_prefix("partition-type:") {
            return if exists(p) { ok("raw".into()) } else { fail() };
        }
        if let Some(p) = name.strip_prefix("is-logical:") {
            return if exists(p) { ok("no".into()) } else { fail() };
        }
        match name {
            "version" => ok("0.4".into()),
            "version-bootloader" => ok("mobix-emulated-1".into()),
            "product" => ok(self.product.clone()),
            "serialno" => ok(self.serialno.clone()),
            "max-download-size" => ok(format!("0x{:X}", self.max_download)),
            "slot-count" if self.ab => ok("2".into()),
            "current-slot" if self.ab => ok(self.current_slot().to_string()),
            "secure" => ok("no".into()),
            "unlocked" => ok("yes".into()),
            "is-userspace" => ok("no".into()),
            _ => fail(),
        }
    }

    fn flash(&self, name: &str, data: &[u8]) -> Reply {
        let Some((start, size)) = self.partition(name) else {
            return Reply::Fail(format!("no partition {name}"));
        };
        let res = (|| -> Result<()> {
            let mut f = fs::OpenOptions::new().write(true).open(&self.disk)?;
            if data.len() >= 4 && data[..4] == sparse::MAGIC.to_le_bytes() {
                write_sparse_at(&f, start, size, name, data)?;
            } else {
                anyhow::ensure!(data.len() as u64 <= size, "the image ({} bytes) is larger than {name}", data.len());
                f.seek(SeekFrom::Start(start))?;
                f.write_all(data)?;
            }
            f.sync_all()?;
            Ok(())
        })();
        match res {
            Ok(()) => Reply::Okay(String::new()),
            Err(e) => Reply::Fail(format!("{e:#}")),
        }
    }

    fn erase(&self, name: &str) -> Reply {
        let Some((start, size)) = self.partition(name) else {
            return Reply::Fail(format!("no partition {name}"));
        };
        if fs::OpenOptions::new().write(true).open(&self.disk).is_ok_and(|f| punch_hole(&f, start, size)) {
            return Reply::Okay(String::new());
        }
        let zeros = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < size {
            let n = (size - off).min(zeros.len() as u64) as usize;
            if let Err(e) = patch_partition(&self.disk, &self.layout, name, off, &zeros[..n]) {
                return Reply::Fail(format!("{e:#}"));
            }
            off += n as u64;
        }
        Reply::Okay(String::new())
    }

    fn set_active(&self, slot: Slot) -> Reply {
        if !self.ab {
            return Reply::Fail("this device has no slots".into());
        }
        let mut c = self.misc_control().unwrap_or_else(|| misc::BootloaderControl::uboot_default(2));
        if let Err(e) = c.set_active(slot) {
            return Reply::Fail(e.to_string());
        }
        match patch_partition(&self.disk, &self.layout, "misc", misc::CONTROL_OFFSET as u64, &c.encode()) {
            Ok(()) => Reply::Okay(String::new()),
            Err(e) => Reply::Fail(format!("{e:#}")),
        }
    }

    /// Serves connections one after another until the host reboots the phone (or, in a
    /// test, the connection is dropped on purpose). `log` gets one line per command.
    pub fn serve(&self, listener: &TcpListener, log: &dyn Fn(&str)) -> Result<Left> {
        let mut s = Session { buffer: Vec::new(), received: 0 };
        loop {
            let (stream, _) = listener.accept()?;
            let mut t = match Tcp::accept(stream) {
                Ok(t) => t,
                Err(e) => {
                    log(&format!("handshake failed: {e}"));
                    continue;
                }
            };
            match self.session(&mut t, &mut s, log) {
                Ok(Some(left)) => return Ok(left),
                Ok(None) => {}
                Err(e) => log(&format!("connection ended: {e}")),
            }
        }
    }

    /// Serves fastboot as a USB gadget until the host reboots the phone. A host that goes
    /// away (unplugged, reset) is waited for again.
    pub fn serve_usb(&self, gadget: &mut crate::flash::usb::Gadget, log: &dyn Fn(&str)) -> Result<Left> {
        let mut s = Session { buffer: Vec::new(), received: 0 };
        loop {
            match self.session(gadget, &mut s, log) {
                Ok(Some(left)) => return Ok(left),
                Ok(None) => {}
                Err(e) => {
                    log(&format!("USB: {e}"));
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }

    /// One connection; Some when the phone leaves fastboot mode.
    fn session(&self, t: &mut dyn Link, s: &mut Session, log: &dyn Fn(&str)) -> Result<Option<Left>> {
        loop {
            let packet = match t.recv(COMMAND_MAX) {
                Ok(p) => p,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let cmd = Command::parse(&packet);
            log(&cmd.show());
            let reply = match &cmd {
                Command::GetVar(v) if v == "all" => {
                    for name in ["version", "product", "serialno", "max-download-size", "slot-count", "current-slot"] {
                        if let Reply::Okay(v) = self.getvar(name) {
                            t.send(&Reply::Info(format!("{name}:{v}")).encode())?;
                        }
                    }
                    Reply::Okay(String::new())
                }
                Command::GetVar(v) => self.getvar(v),
                Command::Download(n) if *n > self.max_download => {
                    Reply::Fail(format!("download of {n} bytes is over max-download-size {}", self.max_download))
                }
                Command::Download(n) => {
                    t.send(&Reply::Data(*n).encode())?;
                    s.buffer.clear();
                    while s.buffer.len() < *n as usize {
                        let chunk = match t.recv((*n as usize - s.buffer.len()).min(DATA_MAX)) {
                            Ok(c) => c,
                            Err(e) => {
                                log(&format!("the host went away during the download: {e}"));
                                return Ok(None);
                            }
                        };
                        s.received += chunk.len() as u64;
                        if self.drop_after.is_some_and(|limit| s.received >= limit) {
                            log(&format!("dropping the connection after {} bytes (as asked)", s.received));
                            t.close();
                            return Ok(Some(Left::Dropped));
                        }
                        s.buffer.extend_from_slice(&chunk);
                    }
                    if s.buffer.len() != *n as usize {
                        Reply::Fail(format!("received {} bytes, announced {n}", s.buffer.len()))
                    } else {
                        Reply::Okay(String::new())
                    }
                }
                Command::Flash(p) => {
                    let r = self.flash(p, &s.buffer);
                    s.buffer.clear();
                    r
                }
                Command::Erase(p) => self.erase(p),
                Command::SetActive(slot) => self.set_active(*slot),
                Command::Reboot | Command::Continue => {
                    t.send(&Reply::Okay(String::new()).encode())?;
                    return Ok(Some(Left::Reboot));
                }
                Command::RebootBootloader => Reply::Okay(String::new()),
                Command::Boot if s.buffer.is_empty() => Reply::Fail("nothing downloaded to boot".into()),
                Command::Boot => {
                    t.send(&Reply::Okay(String::new()).encode())?;
                    let slot = self.ab.then(|| self.current_slot());
                    return Ok(Some(Left::BootRam { image: std::mem::take(&mut s.buffer), slot }));
                }
                Command::Other(c) => match c.strip_prefix("set_active:") {
                    Some(s) => Reply::Fail(format!("no slot {s}")),
                    None => Reply::Fail(format!("unknown command {c}")),
                },
            };
            if let Reply::Fail(m) = &reply {
                log(&format!("  FAIL {m}"));
            }
            t.send(&reply.encode())?;
        }
    }
}
