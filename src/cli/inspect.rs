//! `mobix inspect <format> <info|unpack|pack>`: the face of every codec in `format/`, for
//! debugging a phone's images. `info` prints the fields (`--json` with the reference's
//! own field names); `unpack` writes the parts and a `<format>.json` into a directory;
//! `pack` rebuilds the file from such a directory, byte for byte.

use crate::format::{arm64, bootimg, compress, cpio, gpt, misc, sparse, vbmeta, vendor_boot};
use crate::util::{self, Fail};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fs;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

mod boot;
use boot::*;

#[derive(Subcommand, Debug)]
pub enum Format {
    /// Android boot images (header versions 0-4).
    #[command(subcommand)]
    Bootimg(Action),
    /// vendor_boot images (header versions 3-4).
    #[command(subcommand, name = "vendor-boot")]
    VendorBoot(Action),
    /// Android sparse images.
    #[command(subcommand)]
    Sparse(SparseAction),
    /// AVB vbmeta images.
    #[command(subcommand)]
    Vbmeta(VbmetaAction),
    /// GPT disk images.
    #[command(subcommand)]
    Gpt(Action),
    /// cpio (newc) archives, compressed or not.
    #[command(subcommand)]
    Cpio(CpioAction),
    /// The misc partition: bootloader message and A/B metadata.
    #[command(subcommand)]
    Misc(Action),
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Print the header fields.
    Info(InfoArgs),
    /// Write the parts and a JSON description into a directory.
    Unpack(UnpackArgs),
    /// Rebuild the file from a directory written by unpack.
    Pack(PackArgs),
}

#[derive(Subcommand, Debug)]
pub enum SparseAction {
    /// Print the header and the chunks.
    Info(InfoArgs),
    /// Expand to the raw image.
    Unpack(SparseUnpackArgs),
    /// Encode a raw image, or split a sparse image into pieces for a max-download-size.
    Pack(SparsePackArgs),
}

#[derive(Subcommand, Debug)]
pub enum VbmetaAction {
    /// Print the header and the descriptors.
    Info(InfoArgs),
    /// Write the header, descriptors and a JSON description into a directory.
    Unpack(UnpackArgs),
    /// Rebuild from an unpacked directory, or write the minimal image with verification
    /// and/or verity disabled.
    Pack(VbmetaPackArgs),
}

#[derive(Subcommand, Debug)]
pub enum CpioAction {
    /// List the entries.
    Info(InfoArgs),
    /// Extract the entries (tree/) and a JSON description into a directory.
    Unpack(UnpackArgs),
    /// Archive a directory deterministically (sorted, uid/gid 0, mtime 0); a directory
    /// written by unpack is archived as it was (its tree/, with its compression).
    Pack(CpioPackArgs),
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The image file.
    file: PathBuf,
    /// Print JSON (with a `version` field) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct UnpackArgs {
    /// The image file.
    file: PathBuf,
    /// Directory to write into (created if missing).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// Directory written by unpack.
    dir: PathBuf,
    /// The file to write.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct SparseUnpackArgs {
    /// The sparse image.
    file: PathBuf,
    /// The raw image to write.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct SparsePackArgs {
    /// A raw image (encoded), or with --split, a sparse image.
    file: PathBuf,
    /// The file to write; with --split, pieces OUT.0, OUT.1, ...
    #[arg(long, short)]
    out: PathBuf,
    /// Block size of the sparse image.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    block_size: u32,
    /// Write all-zero blocks as DONT_CARE instead of FILL 0 (only for images whose zero
    /// blocks carry no meaning).
    #[arg(long)]
    dont_care_zeros: bool,
    /// Cut FILE (raw or sparse) into sparse pieces of at most this many bytes, as fastboot
    /// does for a device's max-download-size.
    #[arg(long, value_name = "BYTES")]
    split: Option<u32>,
}

#[derive(Args, Debug)]
pub struct VbmetaPackArgs {
    /// Directory written by unpack (omit with --flags).
    dir: Option<PathBuf>,
    /// The file to write.
    #[arg(long, short)]
    out: PathBuf,
    /// Write the minimal image with these flags: 1 disables verity, 2 verification, 3 both.
    #[arg(long)]
    flags: Option<u32>,
    /// Padding of the minimal image.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    padding_size: u64,
}

#[derive(Args, Debug)]
pub struct CpioPackArgs {
    /// Directory to archive.
    dir: PathBuf,
    /// The archive to write.
    #[arg(long, short)]
    out: PathBuf,
    /// none, gzip, lz4, xz or zstd [default: as unpacked, else none].
    #[arg(long)]
    compression: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| util::user_error(e, format!("reading {}", path.display())))
}

fn bad<E: std::error::Error + Send + Sync + 'static>(path: &Path, what: &str) -> impl FnOnce(E) -> anyhow::Error {
    let msg = format!("{} is not a valid {what}", path.display());
    move |e| util::user_error(e, msg)
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    util::write_atomic(path, data)
}

fn write_json(dir: &Path, name: &str, v: &impl Serialize) -> Result<()> {
    write_file(&dir.join(name), (serde_json::to_string_pretty(v)? + "\n").as_bytes())
}

fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<T> {
    let p = dir.join(name);
    let text = fs::read_to_string(&p).map_err(|e| util::user_error(e, format!("reading {}", p.display())))?;
    serde_json::from_str(&text).map_err(|e| util::user_error(e, format!("parsing {}", p.display())))
}

/// Prints `v` as JSON, or as `key: value` lines.
fn print(v: &Value, json: bool) -> Result<()> {
    if json {
        let mut v = v.clone();
        v["version"] = json!(1);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    fn lines(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    lines(&key, x, out);
                }
            }
            Value::Array(a) if a.iter().all(|x| x.is_object()) => {
                for (i, x) in a.iter().enumerate() {
                    lines(&format!("{prefix}[{i}]"), x, out);
                }
            }
            other => out.push(format!("{prefix}: {}", other.to_string().trim_matches('"'))),
        }
    }
    let mut out = Vec::new();
    lines("", v, &mut out);
    println!("{}", out.join("\n"));
    Ok(())
}

fn hex32(v: u64) -> String {
    format!("{v:#010x}")
}

fn parse_hex(s: &str) -> Result<u64> {
    let t = s.trim();
    let r = match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| Fail::new(format!("{s:?} is not a number")).into())
}

/// A 32-bit header field: larger values are refused rather than cut off.
fn parse_hex32(s: &str) -> Result<u32> {
    u32::try_from(parse_hex(s)?).map_err(|_| Fail::new(format!("{s:?} does not fit in 32 bits")).into())
}

/// The file `name` in an unpacked directory, or nothing when the image had no such part.
fn read_optional(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let f = dir.join(name);
    if f.exists() {
        read(&f)
    } else {
        Ok(Vec::new())
    }
}

pub fn run(f: &Format) -> Result<()> {
    match f {
        Format::Bootimg(a) => bootimg_cmd(a),
        Format::VendorBoot(a) => vendor_boot_cmd(a),
        Format::Sparse(a) => sparse_cmd(a),
        Format::Vbmeta(a) => vbmeta_cmd(a),
        Format::Gpt(a) => gpt_cmd(a),
        Format::Cpio(a) => cpio_cmd(a),
        Format::Misc(a) => misc_cmd(a),
    }
}

// ---- boot images -------------------------------------------------------------------------

fn open(path: &Path) -> Result<fs::File> {
    fs::File::open(path).map_err(|e| util::user_error(e, format!("opening {}", path.display())))
}

fn sparse_cmd(a: &SparseAction) -> Result<()> {
    match a {
        SparseAction::Info(i) => {
            let layout =
                sparse::Layout::from_sparse(BufReader::new(open(&i.file)?)).map_err(bad(&i.file, "sparse image"))?;
            let mut f = BufReader::new(open(&i.file)?);
            let (h, _) = sparse::read_header(&mut f).map_err(bad(&i.file, "sparse image"))?;
            let chunks: Vec<Value> = layout
                .chunks()
                .iter()
                .map(|c| match c {
                    sparse::Chunk::Raw { blocks } => json!({"type": "raw", "blocks": blocks}),
                    sparse::Chunk::Fill { blocks, value } => {
                        json!({"type": "fill", "blocks": blocks, "fill": hex32(*value as u64)})
                    }
                    sparse::Chunk::DontCare { blocks } => json!({"type": "dont_care", "blocks": blocks}),
                })
                .collect();
            let v = json!({
                "blk_sz": h.block_size,
                "total_blks": h.total_blocks,
                "total_chunks": h.total_chunks,
                "image_checksum": hex32(h.image_checksum as u64),
                "expanded_size": h.total_blocks as u64 * h.block_size as u64,
                "chunks": chunks,
            });
            print(&v, i.json)
        }
        SparseAction::Unpack(u) => {
            let input = BufReader::new(open(&u.file)?);
            let tmp = util::tmp_sibling(&u.out);
            let mut w = BufWriter::new(fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
            let res = sparse::decode_to(input, &mut w).map_err(bad(&u.file, "sparse image"));
            if let Err(e) = res.and_then(|_| w.flush().map_err(Into::into)) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            drop(w);
            fs::rename(&tmp, &u.out)?;
            Ok(())
        }
        SparseAction::Pack(p) => {
            let input = util::map_file(&p.file)?;
            let layout = if input.len() >= 4 && u32::from_le_bytes(input[..4].try_into().unwrap()) == sparse::MAGIC {
                sparse::Layout::from_sparse(std::io::Cursor::new(&input[..])).map_err(bad(&p.file, "sparse image"))?
            } else {
                let zeros = if p.dont_care_zeros { sparse::Zeros::DontCare } else { sparse::Zeros::Fill };
                sparse::Layout::from_raw_slice(&input, p.block_size, zeros).map_err(bad(&p.file, "raw image"))?
            };
            let pieces = match p.split {
                Some(max) => layout.split(max).map_err(|e| util::user_error(e, "splitting"))?,
                None => vec![layout],
            };
            for (i, piece) in pieces.iter().enumerate() {
                let out =
                    if p.split.is_some() { PathBuf::from(format!("{}.{i}", p.out.display())) } else { p.out.clone() };
                let tmp = util::tmp_sibling(&out);
                let mut w = BufWriter::with_capacity(
                    1 << 20,
                    fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
                );
                let res = piece
                    .write_slice(&input, &mut w)
                    .map_err(|e| util::user_error(e, format!("writing {}", out.display())));
                if let Err(e) = res.and_then(|_| w.flush().map_err(Into::into)) {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
                drop(w);
                fs::rename(&tmp, &out)?;
            }
            if p.split.is_some() {
                eprintln!("mobix: wrote {} pieces {}.0 ..", pieces.len(), p.out.display());
            }
            Ok(())
        }
    }
}

// ---- vbmeta ------------------------------------------------------------------------------

fn vbmeta_cmd(a: &VbmetaAction) -> Result<()> {
    match a {
        VbmetaAction::Info(i) => {
            let bytes = read(&i.file)?;
            let (h, d) = vbmeta::parse(&bytes).map_err(bad(&i.file, "vbmeta image"))?;
            let mut v = serde_json::to_value(&h)?;
            v["descriptors"] = serde_json::to_value(&d)?;
            v["hashtree_disabled"] = json!(h.flags & vbmeta::FLAG_HASHTREE_DISABLED != 0);
            v["verification_disabled"] = json!(h.flags & vbmeta::FLAG_VERIFICATION_DISABLED != 0);
            print(&v, i.json)
        }
        VbmetaAction::Unpack(u) => {
            // vbmeta is unpacked as a whole: the header fields for reading, the image itself
            // for packing (its blocks are signed; rebuilding them is not mobix's business).
            let bytes = read(&u.file)?;
            let (h, d) = vbmeta::parse(&bytes).map_err(bad(&u.file, "vbmeta image"))?;
            write_json(&u.out, "vbmeta.json", &json!({"header": h, "descriptors": d}))?;
            write_file(&u.out.join("vbmeta.img"), &bytes)
        }
        VbmetaAction::Pack(p) => {
            let bytes = match (&p.dir, p.flags) {
                (None, Some(flags)) => vbmeta::disabled(flags, vbmeta::DEFAULT_RELEASE, p.padding_size)
                    .map_err(|e| util::user_error(e, "making vbmeta"))?,
                (Some(dir), None) => {
                    let mut bytes = read(&dir.join("vbmeta.img"))?;
                    let (h, _) = vbmeta::parse(&bytes).map_err(bad(&dir.join("vbmeta.img"), "vbmeta image"))?;
                    let j: Value = read_json(dir, "vbmeta.json")?;
                    let flags = j["header"]["flags"]
                        .as_u64()
                        .ok_or_else(|| Fail::new("vbmeta.json: header.flags is not a number"))?;
                    if flags as u32 as u64 != flags {
                        return Err(Fail::new(format!("vbmeta.json: flags {flags} does not fit 32 bits")).into());
                    }
                    // Only the flags are editable (as fastboot's --disable-verity patches
                    // them); the rest is signed.
                    if flags as u32 != h.flags {
                        bytes[120..124].copy_from_slice(&(flags as u32).to_be_bytes());
                    }
                    bytes
                }
                _ => return Err(Fail::new("give either an unpacked directory or --flags").into()),
            };
            write_file(&p.out, &bytes)
        }
    }
}

// ---- gpt ---------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct GptPartJson {
    name: String,
    type_guid: String,
    unique_guid: String,
    first_lba: u64,
    last_lba: u64,
    attributes: String,
    file: String,
}

#[derive(Serialize, Deserialize)]
struct GptJson {
    sector_size: u64,
    disk_guid: String,
    disk_size: u64,
    partitions: Vec<GptPartJson>,
}

fn gpt_cmd(a: &Action) -> Result<()> {
    match a {
        Action::Info(i) => {
            let t = gpt::read(&mut open(&i.file)?, None).map_err(bad(&i.file, "GPT disk"))?;
            let mut v = serde_json::to_value(&t)?;
            for (p, pv) in t.partitions.iter().zip(v["partitions"].as_array_mut().unwrap()) {
                pv["offset"] = json!(p.offset(t.sector_size));
                pv["size"] = json!(p.size(t.sector_size));
                pv["attributes"] = json!(format!("{:#018x}", p.attributes));
            }
            print(&v, i.json)
        }
        Action::Unpack(u) => {
            let mut f = open(&u.file)?;
            let t = gpt::read(&mut f, None).map_err(bad(&u.file, "GPT disk"))?;
            let disk_size = f.metadata()?.len();
            fs::create_dir_all(&u.out)?;
            let mut parts = Vec::new();
            for p in &t.partitions {
                let file = format!("{}.img", p.name);
                let mut src = open(&u.file)?;
                use std::io::{Read, Seek, SeekFrom};
                src.seek(SeekFrom::Start(p.offset(t.sector_size)))?;
                let mut dst = BufWriter::new(fs::File::create(u.out.join(&file))?);
                std::io::copy(&mut src.take(p.size(t.sector_size)), &mut dst)?;
                dst.flush()?;
                parts.push(GptPartJson {
                    name: p.name.clone(),
                    type_guid: p.type_guid.to_string(),
                    unique_guid: p.unique_guid.to_string(),
                    first_lba: p.first_lba,
                    last_lba: p.last_lba,
                    attributes: format!("{:#018x}", p.attributes),
                    file,
                });
            }
            write_json(
                &u.out,
                "gpt.json",
                &GptJson {
                    sector_size: t.sector_size,
                    disk_guid: t.disk_guid.to_string(),
                    disk_size,
                    partitions: parts,
                },
            )
        }
        Action::Pack(p) => gpt_pack(p),
    }
}

fn gpt_pack(p: &PackArgs) -> Result<()> {
    let j: GptJson = read_json(&p.dir, "gpt.json")?;
    let guid =
        |s: &str| gpt::Guid::parse(s).ok_or_else(|| anyhow::Error::new(Fail::new(format!("{s:?} is not a GUID"))));
    // Recreate the table with each partition where it was.
    let mut partitions = Vec::with_capacity(j.partitions.len());
    for part in &j.partitions {
        partitions.push(gpt::Partition {
            name: part.name.clone(),
            type_guid: guid(&part.type_guid)?,
            unique_guid: guid(&part.unique_guid)?,
            first_lba: part.first_lba,
            last_lba: part.last_lba,
            attributes: parse_hex(&part.attributes)?,
        });
    }
    let table = gpt::Table { sector_size: j.sector_size, disk_guid: guid(&j.disk_guid)?, partitions };
    let tmp = util::tmp_sibling(&p.out);
    let written = (|| -> Result<()> {
        let mut f = fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
        f.set_len(j.disk_size)?;
        gpt::write(&mut f, &table).map_err(bad(&p.dir.join("gpt.json"), "GPT table"))?;
        for (part, file) in table.partitions.iter().zip(&j.partitions) {
            use std::io::{Seek, SeekFrom};
            let path = p.dir.join(&file.file);
            let mut src = open(&path)?;
            let room = part.size(j.sector_size);
            if src.metadata()?.len() > room {
                return Err(Fail::new(format!(
                    "{} is larger than partition {} ({room} bytes)",
                    path.display(),
                    part.name
                ))
                .into());
            }
            f.seek(SeekFrom::Start(part.offset(j.sector_size)))?;
            std::io::copy(&mut src, &mut f)?;
        }
        f.sync_all()?;
        Ok(())
    })();
    match written {
        Ok(()) => Ok(fs::rename(&tmp, &p.out)?),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

// ---- cpio --------------------------------------------------------------------------------

fn cpio_entries(path: &Path) -> Result<(compress::Compression, Vec<cpio::Entry>)> {
    let bytes = read(path)?;
    let c = compress::Compression::detect(&bytes);
    let raw = compress::decompress(&bytes, 4 << 30).map_err(bad(path, "compressed archive"))?;
    let entries = cpio::read(&raw).map_err(bad(path, "cpio archive"))?;
    Ok((c, entries))
}

fn cpio_cmd(a: &CpioAction) -> Result<()> {
    match a {
        CpioAction::Info(i) => {
            let (c, entries) = cpio_entries(&i.file)?;
            let list: Vec<Value> = entries
                .iter()
                .map(|e| {
                    let (kind, size, target) = match &e.kind {
                        cpio::Kind::Dir => ("dir", 0, None),
                        cpio::Kind::File(d) => ("file", d.len(), None),
                        cpio::Kind::Symlink(t) => ("symlink", t.len(), Some(t.clone())),
                    };
                    json!({"name": e.path, "type": kind, "mode": format!("{:o}", e.perm), "filesize": size, "target": target})
                })
                .collect();
            print(&json!({"compression": c.name(), "entries": list}), i.json)
        }
        CpioAction::Unpack(u) => {
            // DIR/tree holds the entries, DIR/cpio.json how they were compressed.
            let (c, entries) = cpio_entries(&u.file)?;
            let tree = u.out.join("tree");
            fs::create_dir_all(&tree)?;
            use std::os::unix::fs::PermissionsExt;
            for e in &entries {
                // cpio::read only returns clean relative paths.
                let target = tree.join(&e.path);
                match &e.kind {
                    cpio::Kind::Dir => fs::create_dir_all(&target)?,
                    cpio::Kind::File(d) => fs::write(&target, d)?,
                    cpio::Kind::Symlink(t) => std::os::unix::fs::symlink(t, &target)?,
                }
            }
            // Modes last, children first, so read-only directories can still be filled.
            for e in entries.iter().rev() {
                if !matches!(e.kind, cpio::Kind::Symlink(_)) {
                    fs::set_permissions(tree.join(&e.path), fs::Permissions::from_mode(e.perm))?;
                }
            }
            write_json(&u.out, "cpio.json", &json!({"compression": c.name()}))?;
            eprintln!("mobix: unpacked {} entries ({}) into {}", entries.len(), c.name(), tree.display());
            Ok(())
        }
        CpioAction::Pack(p) => {
            let unpacked = p.dir.join("cpio.json").is_file() && p.dir.join("tree").is_dir();
            let (root, recorded) = if unpacked {
                let j: Value = read_json(&p.dir, "cpio.json")?;
                (p.dir.join("tree"), j["compression"].as_str().map(String::from))
            } else {
                (p.dir.clone(), None)
            };
            let name = p.compression.clone().or(recorded).unwrap_or_else(|| "none".into());
            let c: compress::Compression = serde_json::from_value(json!(name))
                .map_err(|_| Fail::new(format!("unknown compression {name:?} (none, gzip, lz4, xz, zstd)")))?;
            let mut entries = Vec::new();
            util::walk(&root, &mut |rel, m| {
                use std::os::unix::fs::PermissionsExt;
                let perm = m.permissions().mode() & 0o7777;
                let ft = m.file_type();
                let e = if ft.is_dir() {
                    cpio::Entry { path: rel.to_string(), perm, kind: cpio::Kind::Dir }
                } else if ft.is_symlink() {
                    cpio::Entry::symlink(rel, fs::read_link(root.join(rel))?.to_string_lossy().into_owned())
                } else if ft.is_file() {
                    cpio::Entry::file(rel, perm, fs::read(root.join(rel))?)
                } else {
                    return Err(std::io::Error::other(format!(
                        "{rel} is a special file; mobix archives hold files, directories and symlinks"
                    )));
                };
                entries.push(e);
                Ok(true)
            })
            .map_err(|e| util::user_error(e, format!("reading {}", root.display())))?;
            let archive = cpio::write(&entries).map_err(|e| util::user_error(e, "writing the archive"))?;
            write_file(&p.out, &compress::compress(&archive, c)?)
        }
    }
}

// ---- misc --------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct MiscJson {
    misc_size: usize,
    bootloader_message: Value,
    bootloader_control: Value,
}

fn misc_cmd(a: &Action) -> Result<()> {
    match a {
        Action::Info(i) => {
            let bytes = read(&i.file)?;
            let (bcb, ctrl) = misc::read(&bytes).map_err(bad(&i.file, "misc partition"))?;
            let mut c = serde_json::to_value(ctrl)?;
            c["slot_suffix"] = json!(String::from_utf8_lossy(&ctrl.slot_suffix).trim_end_matches('\0'));
            c["magic"] = json!(hex32(ctrl.magic as u64));
            c["crc_ok"] = json!(ctrl.crc_ok());
            c["crc32_le"] = json!(hex32(ctrl.crc32_le as u64));
            let mut v = json!({"bootloader_message": bcb, "bootloader_control": c});
            if let Ok(sel) = misc::select_slot(
                &bytes[misc::CONTROL_OFFSET..misc::CONTROL_OFFSET + misc::CONTROL_SIZE].try_into().unwrap(),
                false,
            ) {
                v["bootloader_would_boot"] = json!(sel.slot.map(misc::slot_letter).map(String::from));
            }
            print(&v, i.json)
        }
        Action::Unpack(u) => {
            // The whole image is kept (vendor space, wipe package, ...), the two structures
            // are described in misc.json; pack applies what was edited there.
            let bytes = read(&u.file)?;
            let (bcb, ctrl) = misc::read(&bytes).map_err(bad(&u.file, "misc partition"))?;
            fs::create_dir_all(&u.out)?;
            write_file(&u.out.join("misc.img"), &bytes)?;
            write_json(
                &u.out,
                "misc.json",
                &MiscJson {
                    misc_size: bytes.len(),
                    bootloader_message: serde_json::to_value(bcb)?,
                    bootloader_control: serde_json::to_value(ctrl)?,
                },
            )
        }
        Action::Pack(p) => {
            let mut bytes = read(&p.dir.join("misc.img"))?;
            let (bcb, ctrl) = misc::read(&bytes).map_err(bad(&p.dir.join("misc.img"), "misc partition"))?;
            let j: MiscJson = read_json(&p.dir, "misc.json")?;
            let new_bcb: misc::BootloaderMessage = serde_json::from_value(j.bootloader_message)
                .map_err(|e| util::user_error(e, "misc.json: bootloader_message"))?;
            let mut new_ctrl: misc::BootloaderControl = serde_json::from_value(j.bootloader_control)
                .map_err(|e| util::user_error(e, "misc.json: bootloader_control"))?;
            if new_bcb != bcb {
                let enc = new_bcb.encode().map_err(|e| util::user_error(e, "misc.json: bootloader_message"))?;
                bytes[..misc::BCB_SIZE].copy_from_slice(&enc);
            }
            if new_ctrl != ctrl {
                // An edit gets a fresh CRC, as the HAL writes it.
                let enc = new_ctrl.encode();
                bytes[misc::CONTROL_OFFSET..misc::CONTROL_OFFSET + misc::CONTROL_SIZE].copy_from_slice(&enc);
            }
            write_file(&p.out, &bytes)
        }
    }
}
