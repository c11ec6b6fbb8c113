//! What `mobix device import` writes to a `device.yaml`, typed: a profile layer holding only
//! what the import knows (a family's values, defaults and what the owner must add are left
//! out, so the file reads as one written by hand). Its fields are the profile's own keys with
//! the loader's types ([`super::types`]); `tests/fast/deviceinfo.rs` loads every import of
//! the fixtures as a profile.

use super::types::{
    Arch, Compression, Dtb, Filesystem, PartitionName, PrebuiltKernel, Size, State, UsbNetwork, Vbmeta,
};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// A device profile as an import writes it, in the order a profile written by hand has its
/// keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceKeys {
    /// The tree's family the phone joins (its values apply where this layer sets none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    pub name: String,
    pub arch: Arch,
    pub identity: IdentityKeys,
    pub storage: StorageKeys,
    pub system: SystemKeys,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vbmeta: Option<Vbmeta>,
    /// None where the family names the kernel, or where the import knows of none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelKeys>,
    pub bootimg: BootImgKeys,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, VariantKeys>,
    pub console: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    pub stage1: Stage1Keys,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usb_network: Option<UsbNetwork>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityKeys {
    pub fastboot_products: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageKeys {
    pub sector_size: u32,
    pub partitions: Vec<PartitionKeys>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionKeys {
    pub name: PartitionName,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub slotted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemKeys {
    pub partition: PartitionName,
    pub filesystem: Filesystem,
    #[serde(serialize_with = "binary_size")]
    pub size: Size,
}

/// `kernel`: a Debian package or the owner's own files.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelKeys {
    Package(String),
    Prebuilt(PrebuiltKernel),
}

/// As a profile has it, `package: NAME` or `prebuilt: {...}` (serde's own enum form would
/// be a YAML tag).
impl Serialize for KernelKeys {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            KernelKeys::Package(name) => m.serialize_entry("package", name)?,
            KernelKeys::Prebuilt(files) => m.serialize_entry("prebuilt", files)?,
        }
        m.end()
    }
}

/// `bootimg`: what the import read; unset addresses are the profile's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BootImgKeys {
    pub header_version: u32,
    pub page_size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramdisk_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtb_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_patch_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_compression: Option<Compression>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtb: Option<Dtb>,
}

impl BootImgKeys {
    /// A header of `header_version` with `page_size` and nothing else said.
    pub fn new(header_version: u32, page_size: u32) -> BootImgKeys {
        BootImgKeys { header_version, page_size, ..Default::default() }
    }
}

/// `variants.NAME`: a variant differs only in its device trees.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantKeys {
    pub bootimg: VariantBootImg,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantBootImg {
    pub dtb: VariantDtb,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantDtb {
    pub files: Vec<String>,
}

impl VariantKeys {
    pub fn dtbs(files: Vec<String>) -> VariantKeys {
        VariantKeys { bootimg: VariantBootImg { dtb: VariantDtb { files } } }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage1Keys {
    pub modules: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
}

/// A size as a person writes it: `2GiB` where the bytes are whole GiB (MiB, KiB), else the
/// number.
fn binary_size<S: Serializer>(size: &Size, s: S) -> Result<S::Ok, S::Error> {
    let n = size.0;
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n != 0 && n % (1 << shift) == 0 {
            return s.serialize_str(&format!("{}{unit}", n >> shift));
        }
    }
    s.serialize_u64(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_in_the_largest_whole_unit() {
        let text = |n| {
            serde_norway::to_string(&SystemKeys {
                partition: PartitionName::try_from("userdata").unwrap(),
                filesystem: Filesystem::Ext4,
                size: Size(n),
            })
            .unwrap()
        };
        assert!(text(2 << 30).contains("size: 2GiB"), "{}", text(2 << 30));
        assert!(text(3 << 20).contains("size: 3MiB"));
        assert!(text(4097).contains("size: 4097"));
        let parsed: crate::profile::SystemPartition = serde_norway::from_str(&text(3 << 20)).unwrap();
        assert_eq!(parsed.size, Some(Size(3 << 20)), "what is written reads back as the same size");
    }
}
