//! What stage-1 needs for an encrypted state: cryptsetup and the kernel's crypt modules,
//! and for its remote unlock dropbear and the link it serves on.

use crate::profile::Profile;
use mobix_bootctl::contract::UnlockLink;

/// cryptsetup in its package, as the initramfs carries it for an encrypted state.
pub(super) const CRYPTSETUP_PROGRAM: &str = "sbin/cryptsetup";

/// The modules stage-1 loads for an encrypted state: device-mapper's crypt target, XTS and
/// AES with the ARMv8 crypto extensions (NEON where a CPU lacks them), and the kernel's
/// cipher interface for programs, with which cryptsetup reads its key slots.
pub(super) const CRYPT_MODULES: &[&str] = &["dm_crypt", "xts", "aes_ce_blk", "aes_neon_blk", "algif_skcipher"];

/// dropbear in its package, and the program that makes its host key: stage-1's remote
/// unlock server.
pub(super) const DROPBEAR_PROGRAMS: &[&str] = &["usr/sbin/dropbear", "usr/bin/dropbearkey"];

/// The emulated phone's network card, which stage-1 serves remote unlock on.
const EMULATED_NIC_MODULE: &str = "virtio_net";

/// [`CRYPT_MODULES`], the loop device's module where the state follows the system image in
/// its partition (stage-1 opens it through a loop device from there), and the network
/// card's where remote unlock is served on an Ethernet link.
pub(super) fn crypt_modules(d: &crate::profile::Device, link: Option<&UnlockLink>) -> Vec<String> {
    let mut m: Vec<String> = CRYPT_MODULES.iter().map(|m| m.to_string()).collect();
    if d.persistent_state_start() > 0 {
        m.push("loop".into());
    }
    if let Some(UnlockLink::Ethernet { .. }) = link {
        m.push(EMULATED_NIC_MODULE.into());
    }
    m
}

/// Where stage-1 serves remote unlock (checked by the profile: a device with a USB network,
/// or the emulated phone's network).
pub(super) fn unlock_link(profile: &Profile) -> Option<UnlockLink> {
    let d = &profile.device;
    if !(profile.system.state.encrypted() && profile.system.state.remote_unlock) {
        return None;
    }
    match (&d.usb_network, &d.qemu) {
        (Some(_), _) => Some(UnlockLink::Usb),
        (None, Some(_)) => Some(UnlockLink::Ethernet { address: mobix_bootctl::contract::QEMU_GUEST_ADDRESS.into() }),
        (None, None) => None,
    }
}
