//! Fastboot over USB, both ends.
//!
//! The host side ([`Usb`]) finds the device by its fastboot interface (class 0xff, subclass
//! 0x42, protocol 0x03), claims it and moves whole packets over its two bulk endpoints with
//! nusb (usbfs, no libusb). Each command or reply is one bulk transfer; a download's data
//! goes out in 1 MiB transfers, a few in flight at once so the bus never idles.
//!
//! The device side ([`Gadget`]) is what a phone running Linux does in fastboot mode: a USB
//! gadget made in configfs whose one function is FunctionFS, with the same interface and
//! endpoints. `mobix run --fastboot --usb` serves the emulated phone's disk through it; the
//! USB test runs both ends in one VM, connected by the kernel's dummy_hcd.

use nusb::descriptors::TransferType;
use nusb::transfer::{Buffer, Bulk, Direction, In, Out};
use nusb::MaybeFuture;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fastboot interface: vendor-specific class, subclass 0x42, protocol 3.
pub const CLASS: u8 = 0xff;
pub const SUBCLASS: u8 = 0x42;
pub const PROTOCOL: u8 = 0x03;
/// Google's fastboot USB ids, which the stock client and udev rules know.
pub const VENDOR_ID: u16 = 0x18d1;
pub const PRODUCT_ID: u16 = 0x4ee0;

/// One bulk transfer of download data.
const CHUNK: usize = 1 << 20;
/// Transfers of data kept in flight.
const IN_FLIGHT: usize = 4;
/// How long a write may take before the device counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a reply may take (erasing or writing a large partition can be slow, and a
/// device that is busy does not answer at all until it is done).
const READ_TIMEOUT: Duration = Duration::from_secs(600);

/// A fastboot device found on the USB bus.
#[derive(Debug, Clone)]
pub struct Found {
    pub serial: String,
    pub bus_path: String,
    info: nusb::DeviceInfo,
    interface: u8,
}

/// Every USB device with a fastboot interface.
pub fn list() -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for d in nusb::list_devices().wait()? {
        let Some(i) =
            d.interfaces().find(|i| i.class() == CLASS && i.subclass() == SUBCLASS && i.protocol() == PROTOCOL)
        else {
            continue;
        };
        let bus_path =
            format!("{}-{}", d.busnum(), d.port_chain().iter().map(|p| p.to_string()).collect::<Vec<_>>().join("."));
        found.push(Found {
            serial: d.serial_number().unwrap_or("").to_string(),
            bus_path,
            interface: i.interface_number(),
            info: d,
        });
    }
    Ok(found)
}

/// The host end: the claimed interface's two bulk endpoints.
pub struct Usb {
    out: nusb::Endpoint<Bulk, Out>,
    inp: nusb::Endpoint<Bulk, In>,
    name: String,
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl Usb {
    /// Opens the fastboot device whose serial number (or bus path, `1-2.3`) is `which`,
    /// or the only one when `which` is None.
    pub fn open(which: Option<&str>) -> io::Result<Usb> {
        let all = list()?;
        let mut matching: Vec<&Found> =
            all.iter().filter(|f| which.is_none_or(|w| f.serial == w || f.bus_path == w)).collect();
        let f = match (matching.len(), which) {
            (1, _) => matching.remove(0),
            (0, Some(w)) => {
                let seen: Vec<String> = all.iter().map(|f| format!("{} ({})", f.serial, f.bus_path)).collect();
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "no USB fastboot device with serial number {w}; {}",
                        if seen.is_empty() {
                            "none is connected".to_string()
                        } else {
                            format!("seen: {}", seen.join(", "))
                        }
                    ),
                ));
            }
            (0, None) => {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no USB fastboot device is connected"));
            }
            _ => {
                let seen: Vec<String> = matching.iter().map(|f| format!("{} ({})", f.serial, f.bus_path)).collect();
                return Err(other(format!("several USB fastboot devices: {}; name one", seen.join(", "))));
            }
        };
        let device = f.info.open().wait()?;
        let iface = device.detach_and_claim_interface(f.interface).wait()?;
        let desc = iface.descriptor().ok_or_else(|| other("the fastboot interface has no descriptor"))?;
        let bulk = |dir: Direction| {
            desc.endpoints()
                .find(|e| e.transfer_type() == TransferType::Bulk && e.direction() == dir)
                .map(|e| e.address())
        };
        let (Some(out_addr), Some(in_addr)) = (bulk(Direction::Out), bulk(Direction::In)) else {
            return Err(other("the fastboot interface lacks a bulk IN or OUT endpoint"));
        };
        let out = iface.endpoint::<Bulk, Out>(out_addr)?;
        let inp = iface.endpoint::<Bulk, In>(in_addr)?;
        Ok(Usb { out, inp, name: format!("usb:{}", if f.serial.is_empty() { &f.bus_path } else { &f.serial }) })
    }

    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Waits for the oldest write in flight.
    fn complete_one(&mut self) -> io::Result<()> {
        let c = self.out.wait_next_complete(WRITE_TIMEOUT).ok_or_else(|| {
            self.out.cancel_all();
            io::Error::new(io::ErrorKind::TimedOut, "the device took no data for 30 s")
        })?;
        c.status.map_err(io::Error::from)
    }

    fn drain(&mut self) -> io::Result<()> {
        while self.out.pending() > 0 {
            self.complete_one()?;
        }
        Ok(())
    }

    /// Sends one packet as one bulk transfer; data packets are queued (a few in flight),
    /// their outcome checked by the next send or receive.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        while self.out.pending() >= IN_FLIGHT {
            self.complete_one()?;
        }
        let mut buf = self.out.allocate(data.len().max(1));
        buf.extend_from_slice(data);
        self.out.submit(buf);
        if data.len() < CHUNK {
            // A command, or the tail of a download: nothing follows until the reply.
            self.drain()?;
        }
        Ok(())
    }

    /// Receives one packet (a reply of at most 256 bytes, in one transfer).
    pub fn recv(&mut self) -> io::Result<Vec<u8>> {
        self.drain()?;
        let len = 4096usize.div_ceil(self.inp.max_packet_size()) * self.inp.max_packet_size();
        let c = self.inp.transfer_blocking(Buffer::new(len), READ_TIMEOUT);
        match c.status {
            Ok(()) => Ok(c.buffer.into_vec()),
            Err(nusb::transfer::TransferError::Cancelled) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from the device in {} s", READ_TIMEOUT.as_secs()),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

// ---- the device side ------------------------------------------------------------------

const FFS_DESCRIPTORS_MAGIC_V2: u32 = 3;
const FFS_STRINGS_MAGIC: u32 = 2;
const FFS_HAS_FS_DESC: u32 = 1;
const FFS_HAS_HS_DESC: u32 = 2;

/// The FunctionFS descriptor blob: one interface with a bulk OUT (ep1) and a bulk IN (ep2)
/// endpoint, at full speed (64-byte packets) and high speed (512).
pub fn ffs_descriptors() -> Vec<u8> {
    let set = |packet: u16| {
        let mut d = vec![9, 4, 0, 0, 2, CLASS, SUBCLASS, PROTOCOL, 1];
        for address in [0x01u8, 0x82] {
            d.extend_from_slice(&[7, 5, address, 2]);
            d.extend_from_slice(&packet.to_le_bytes());
            d.push(0);
        }
        d
    };
    let body: Vec<u8> = [set(64), set(512)].concat();
    let mut v = Vec::new();
    v.extend_from_slice(&FFS_DESCRIPTORS_MAGIC_V2.to_le_bytes());
    v.extend_from_slice(&((20 + body.len()) as u32).to_le_bytes());
    v.extend_from_slice(&(FFS_HAS_FS_DESC | FFS_HAS_HS_DESC).to_le_bytes());
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&body);
    v
}

/// The FunctionFS strings blob: the interface's name, in US English.
pub fn ffs_strings() -> Vec<u8> {
    let name = b"fastboot\0";
    let mut v = Vec::new();
    v.extend_from_slice(&FFS_STRINGS_MAGIC.to_le_bytes());
    v.extend_from_slice(&((16 + 2 + name.len()) as u32).to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&0x0409u16.to_le_bytes());
    v.extend_from_slice(name);
    v
}

const CONFIGFS: &str = "/sys/kernel/config";
const FFS_MOUNT: &str = "/dev/usb-ffs/fastboot";

/// The device end: a configfs gadget bound to a USB device controller, its fastboot
/// function served through FunctionFS. Dropping it unbinds and removes the gadget.
pub struct Gadget {
    dir: PathBuf,
    /// The endpoints (ep1, ep2); closed before the gadget is unbound.
    eps: Option<(fs::File, fs::File)>,
    /// The thread reading ep0's events, and its stop flag.
    events: Option<(std::sync::Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>)>,
    pub udc: String,
}

fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| other("a NUL in a mount argument"));
    let (s, t, f) = (c(source)?, c(target)?, c(fstype)?);
    // SAFETY: plain C strings that outlive the call; no data argument.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mounting {fstype} on {target}: {e}")));
    }
    Ok(())
}

fn umount(target: &str) {
    if let Ok(t) = CString::new(target) {
        // SAFETY: a C string that outlives the call.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Gadget {
    /// Makes the gadget (`serial` as its serial number, `product` as its product string)
    /// and binds it to the first USB device controller. Needs root, configfs and the
    /// libcomposite and usb_f_fs modules.
    pub fn start(serial: &str, product: &str) -> io::Result<Gadget> {
        let udc = fs::read_dir("/sys/class/udc")
            .ok()
            .and_then(|d| {
                let mut names: Vec<String> =
                    d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                names.into_iter().next()
            })
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "this machine has no USB device controller (/sys/class/udc)")
            })?;
        let gadgets = Path::new(CONFIGFS).join("usb_gadget");
        if !gadgets.is_dir() {
            // configfs may just not be mounted yet.
            let _ = mount("none", CONFIGFS, "configfs");
            if !gadgets.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} does not exist: is configfs mounted and libcomposite loaded?", gadgets.display()),
                ));
            }
        }
        let dir = gadgets.join("mobix-fastboot");
        fs::create_dir_all(&dir)?;
        write_attr(&dir.join("idVendor"), &format!("0x{VENDOR_ID:04x}"))?;
        write_attr(&dir.join("idProduct"), &format!("0x{PRODUCT_ID:04x}"))?;
        write_attr(&dir.join("bcdUSB"), "0x0200")?;
        let strings = dir.join("strings/0x409");
        fs::create_dir_all(&strings)?;
        write_attr(&strings.join("manufacturer"), "mobix")?;
        write_attr(&strings.join("product"), product)?;
        write_attr(&strings.join("serialnumber"), serial)?;
        let config = dir.join("configs/c.1");
        fs::create_dir_all(config.join("strings/0x409"))?;
        write_attr(&config.join("strings/0x409/configuration"), "fastboot")?;
        let function = dir.join("functions/ffs.fastboot");
        if !function.exists() {
            fs::create_dir(&function).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e} (is usb_f_fs loaded?)", function.display()))
            })?;
        }
        let link = config.join("ffs.fastboot");
        if !link.exists() {
            std::os::unix::fs::symlink(&function, &link)?;
        }
        fs::create_dir_all(FFS_MOUNT)?;
        if !Path::new(FFS_MOUNT).join("ep0").exists() {
            mount("fastboot", FFS_MOUNT, "functionfs")?;
        }
        let mut ep0 = fs::OpenOptions::new().read(true).write(true).open(Path::new(FFS_MOUNT).join("ep0"))?;
        ep0.write_all(&ffs_descriptors()).map_err(|e| other(format!("writing the descriptors to ep0: {e}")))?;
        ep0.write_all(&ffs_strings()).map_err(|e| other(format!("writing the strings to ep0: {e}")))?;
        let ep_out = fs::OpenOptions::new().read(true).open(Path::new(FFS_MOUNT).join("ep1"))?;
        let ep_in = fs::OpenOptions::new().write(true).open(Path::new(FFS_MOUNT).join("ep2"))?;
        // ep0 carries events (bind, enable, setup requests): read them so they never pile
        // up. Never in a blocking read: one holds FunctionFS's lock, and unbinding the gadget
        // waits for that lock (a deadlock, seen with Linux 6.1), so poll and look at `stop`.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let events = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ev = [0u8; 12 * 4];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut p = libc::pollfd { fd: ep0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                    // SAFETY: one valid pollfd for the duration of the call.
                    let r = unsafe { libc::poll(&mut p, 1, 100) };
                    if r > 0 && p.revents & libc::POLLIN != 0 && ep0.read(&mut ev).is_err() {
                        break;
                    }
                }
            })
        };
        write_attr(&dir.join("UDC"), &udc)?;
        Ok(Gadget { dir, eps: Some((ep_out, ep_in)), events: Some((stop, events)), udc })
    }

    /// Reads up to `max` bytes: one transfer from the host, or part of one.
    pub fn recv(&mut self, max: usize) -> io::Result<Vec<u8>> {
        // Requests are whole packets: a read shorter than the host's packet would lose the rest.
        let len = max.max(1).div_ceil(512) * 512;
        let mut buf = vec![0u8; len];
        let (ep_out, _) = self.eps.as_mut().ok_or_else(|| other("the gadget is stopped"))?;
        let n = ep_out.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let (_, ep_in) = self.eps.as_mut().ok_or_else(|| other("the gadget is stopped"))?;
        ep_in.write_all(data)
    }
}

impl Drop for Gadget {
    fn drop(&mut self) {
        self.eps = None;
        if let Some((stop, thread)) = self.events.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = thread.join();
        }
        let _ = fs::write(self.dir.join("UDC"), "\n");
        umount(FFS_MOUNT);
        let _ = fs::remove_file(self.dir.join("configs/c.1/ffs.fastboot"));
        let _ = fs::remove_dir(self.dir.join("configs/c.1/strings/0x409"));
        let _ = fs::remove_dir(self.dir.join("configs/c.1"));
        let _ = fs::remove_dir(self.dir.join("functions/ffs.fastboot"));
        let _ = fs::remove_dir(self.dir.join("strings/0x409"));
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_have_the_fastboot_interface_at_both_speeds() {
        let d = ffs_descriptors();
        assert_eq!(u32::from_le_bytes(d[4..8].try_into().unwrap()) as usize, d.len());
        // Header (20) + 2 x (interface 9 + 2 endpoints x 7).
        assert_eq!(d.len(), 20 + 2 * 23);
        let fs = &d[20..43];
        assert_eq!(&fs[..9], &[9, 4, 0, 0, 2, 0xff, 0x42, 3, 1]);
        assert_eq!(&fs[9..16], &[7, 5, 0x01, 2, 64, 0, 0]);
        let hs = &d[43..];
        assert_eq!(&hs[16..23], &[7, 5, 0x82, 2, 0, 2, 0]);
        let s = ffs_strings();
        assert_eq!(u32::from_le_bytes(s[4..8].try_into().unwrap()) as usize, s.len());
        assert!(s.ends_with(b"fastboot\0"));
    }
}
