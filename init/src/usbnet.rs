//! USB networking, made by stage-1 so that a phone whose running system fails can still
//! be reached: a configfs gadget with an NCM function (RNDIS where the kernel has no
//! NCM) on the phone's USB device controller, and the phone's address on its interface.
//! The running system's networkd then serves the host its address by DHCP.

use crate::sys::{self, Result};
use mobix_bootctl::contract::{UsbNetwork, USB_PHONE_ADDRESS};
use std::path::Path;

const CONFIGFS: &str = "/sys/kernel/config";

/// The gadget's network functions, the first the kernel has: NCM, else RNDIS.
const FUNCTIONS: [&str; 2] = ["ncm.usb0", "rndis.usb0"];

/// How long a device controller may take to appear after its modules are loaded (a real
/// phone's dwc3 probes only once its PHYs and regulators have).
pub const UDC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes the gadget and gives its interface the phone's address. Returns the interface's
/// name, or None when no USB device controller appeared within [`UDC_WAIT`].
pub fn start(cfg: &UsbNetwork) -> Result<Option<String>> {
    let t0 = std::time::Instant::now();
    let udc = loop {
        match first_udc() {
            Some(u) => break u,
            None if t0.elapsed() >= UDC_WAIT => return Ok(None),
            None => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    let gadgets = Path::new(CONFIGFS).join("usb_gadget");
    if !gadgets.is_dir() {
        sys::mount("configfs", CONFIGFS, Some("configfs"), 0, None)?;
    }
    if !gadgets.is_dir() {
        return Err(format!("{} is missing: the kernel has no USB gadget configfs (libcomposite)", gadgets.display()));
    }
    let g = gadgets.join("mobix");
    let w = |p: &Path, v: &str| std::fs::write(p, v).map_err(|e| format!("writing {}: {e}", p.display()));
    let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()));
    mkdir(&g)?;
    w(&g.join("idVendor"), &format!("0x{:04x}", cfg.vendor_id))?;
    w(&g.join("idProduct"), &format!("0x{:04x}", cfg.product_id))?;
    w(&g.join("bcdUSB"), "0x0200")?;
    let strings = g.join("strings/0x409");
    mkdir(&strings)?;
    w(&strings.join("manufacturer"), "mobix")?;
    w(&strings.join("product"), &cfg.product)?;
    w(&strings.join("serialnumber"), "mobix")?;
    let function = FUNCTIONS
        .iter()
        .map(|f| g.join("functions").join(f))
        .find(|f| f.is_dir() || std::fs::create_dir(f).is_ok())
        .ok_or("the kernel has neither the NCM nor the RNDIS gadget function (usb_f_ncm, usb_f_rndis)")?;
    let config = g.join("configs/c.1");
    mkdir(&config.join("strings/0x409"))?;
    w(&config.join("strings/0x409/configuration"), "USB network")?;
    let link = config.join(function.file_name().expect("named"));
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(&function, &link).map_err(|e| format!("linking {}: {e}", link.display()))?;
    }
    w(&g.join("UDC"), &udc)?;
    let ifname = std::fs::read_to_string(function.join("ifname"))
        .map_err(|e| format!("reading the gadget's interface name: {e}"))?
        .trim()
        .to_string();
    sys::set_ipv4(&ifname, USB_PHONE_ADDRESS, "255.255.255.0")?;
    Ok(Some(ifname))
}

/// The interface of the gadget stage-1 made, once the system runs (configfs moved along
/// with /sys); None without one.
pub fn gadget_ifname() -> Option<String> {
    let functions = Path::new(CONFIGFS).join("usb_gadget/mobix/functions");
    FUNCTIONS
        .iter()
        .find_map(|f| std::fs::read_to_string(functions.join(f).join("ifname")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty() && Path::new("/sys/class/net").join(n).exists())
}

fn first_udc() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/udc")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next()
}
