//! The phone's screen during stage-1: the framebuffer the kernel gives it (`/dev/fb0`, from
//! the bootloader's simple-framebuffer on a phone, from the virtio GPU's fbdev emulation on
//! the emulated phone), drawn with `mobix-screen`. Every scene is also written on the
//! console as a `SCREEN` line, so UART users read it and the host can check the picture;
//! a phone whose kernel gives no framebuffer boots exactly as before, on the console alone.

use crate::console;
use mobix_bootctl::console::Event;
use mobix_bootctl::screen::Scene;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

const FBIOGET_VSCREENINFO: libc::Ioctl = 0x4600 as libc::Ioctl;
const FBIOGET_FSCREENINFO: libc::Ioctl = 0x4602 as libc::Ioctl;
const KDSETMODE: libc::Ioctl = 0x4B3A as libc::Ioctl;
const KD_GRAPHICS: libc::c_ulong = 1;
const KD_TEXT: libc::c_ulong = 0;
const KDGETMODE: libc::Ioctl = 0x4B3B as libc::Ioctl;

/// Gives the screen back to the kernel's text console, if stage-1 took it: a console left
/// in graphics mode refuses every switch to another one (the kernel ignores them), so
/// logind could never bring a session on another console (a phone UI's) to the front.
/// Called once the system is up; the kernel redraws its console then.
pub fn give_back_console() {
    let Ok(tty) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty0") else { return };
    let mut mode: libc::c_int = 0;
    // SAFETY: KDGETMODE writes one int through the pointer, which outlives the call.
    let got = unsafe { libc::ioctl(tty.as_raw_fd(), KDGETMODE, &mut mode as *mut libc::c_int) };
    if got == 0 && mode as libc::c_ulong == KD_GRAPHICS {
        // SAFETY: KDSETMODE takes its mode as the argument itself.
        unsafe { libc::ioctl(tty.as_raw_fd(), KDSETMODE, KD_TEXT) };
    }
}

/// How pixels are laid out in the framebuffer (from `fb_var_screeninfo` and
/// `fb_fix_screeninfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub bits_per_pixel: u32,
    /// Bytes from one row to the next.
    pub line_length: u32,
    /// The visible part's first row and column in the (virtual) framebuffer.
    pub yoffset: u32,
    pub xoffset: u32,
    /// (offset, length) in bits of red, green and blue in a pixel.
    pub red: (u32, u32),
    pub green: (u32, u32),
    pub blue: (u32, u32),
}

impl Layout {
    /// The bytes of `frame` in this layout, one row of `line_length` bytes per screen row
    /// (the frame is the screen's size).
    #[cfg(test)]
    pub fn encode(&self, frame: &mobix_screen::Frame) -> Vec<u8> {
        self.encode_rows(frame, 0..self.height)
    }

    /// Whether a pixel's bytes are the frame's `0x00RRGGBB` in little-endian order (XRGB8888,
    /// as virtio-gpu's fbdev and many phones' simple-framebuffers are): then rows are copied.
    fn is_xrgb8888(&self) -> bool {
        self.bits_per_pixel == 32 && self.red == (16, 8) && self.green == (8, 8) && self.blue == (0, 8)
    }

    /// The bytes of `rows` of `frame` in this layout, `line_length` bytes a row.
    pub fn encode_rows(&self, frame: &mobix_screen::Frame, rows: std::ops::Range<u32>) -> Vec<u8> {
        let bytes = (self.bits_per_pixel / 8) as usize;
        let (first, count) = (rows.start, rows.end.saturating_sub(rows.start));
        let mut out = vec![0u8; self.line_length as usize * count as usize];
        if self.is_xrgb8888() {
            let w = self.width.min(frame.width) as usize;
            for i in 0..count.min(frame.height.saturating_sub(first)) {
                let src = &frame.pixels[((first + i) * frame.width) as usize..][..w];
                let row = &mut out[(i * self.line_length) as usize..][..self.line_length as usize];
                let at = self.xoffset as usize * 4;
                for (dst, px) in row[at..at + 4 * w].chunks_exact_mut(4).zip(src) {
                    dst.copy_from_slice(&px.to_le_bytes());
                }
            }
            return out;
        }
        let channel = |v: u32, (offset, length): (u32, u32)| -> u32 {
            if length == 0 || length > 8 {
                return 0;
            }
            ((v & 0xff) >> (8 - length)) << offset
        };
        for i in 0..count.min(frame.height.saturating_sub(first)) {
            let y = first + i;
            let row = &mut out[(i * self.line_length) as usize..][..self.line_length as usize];
            for x in 0..self.width.min(frame.width) {
                let v = frame.pixels[(y * frame.width + x) as usize];
                let p = channel(v >> 16, self.red) | channel(v >> 8, self.green) | channel(v, self.blue);
                let at = (x + self.xoffset) as usize * bytes;
                if let Some(dst) = row.get_mut(at..at + bytes) {
                    dst.copy_from_slice(&p.to_le_bytes()[..bytes]);
                }
            }
        }
        out
    }
}

/// The screen, where the kernel gave one.
pub struct Screen {
    fb: File,
    layout: Layout,
    /// The last frame drawn, so that the next writes only the rows that changed.
    shown: std::cell::RefCell<Option<mobix_screen::Frame>>,
    /// The console's virtual terminal, switched to graphics so that the kernel's text
    /// console does not draw over the picture (and its cursor does not blink on it).
    _tty: Option<File>,
}

impl Screen {
    /// Opens `/dev/fb0` if there is one; where a DRM driver was loaded, waits up to a second
    /// for its framebuffer.
    pub fn open() -> Option<Screen> {
        let fb_wait = std::path::Path::new("/sys/class/drm/card0").exists();
        let t0 = std::time::Instant::now();
        let fb = loop {
            match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fb0") {
                Ok(f) => break f,
                Err(_) if fb_wait && t0.elapsed() < std::time::Duration::from_secs(1) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(_) => return None,
            }
        };
        let layout = match read_layout(&fb) {
            Ok(l) => l,
            Err(e) => {
                console::say(&format!("warning: /dev/fb0 cannot be drawn on: {e}"));
                return None;
            }
        };
        let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty0").ok();
        if let Some(t) = &tty {
            // SAFETY: KDSETMODE takes its mode as the argument itself.
            unsafe { libc::ioctl(t.as_raw_fd(), KDSETMODE, KD_GRAPHICS) };
        }
        console::say(&format!(
            "screen: /dev/fb0, {}x{} at {} bits per pixel",
            layout.width, layout.height, layout.bits_per_pixel
        ));
        Some(Screen { fb, layout, shown: Default::default(), _tty: tty })
    }

    fn draw(&self, scene: &Scene) -> Result<(), String> {
        let frame = mobix_screen::render(scene, self.layout.width, self.layout.height);
        let mut shown = self.shown.borrow_mut();
        // Only the rows that changed since the last frame (the first frame: all of them).
        let rows = self.layout.height.min(frame.height) as usize;
        let width = frame.width as usize;
        let changed = |y: usize| {
            shown.as_ref().is_none_or(|s: &mobix_screen::Frame| {
                s.pixels[y * width..(y + 1) * width] != frame.pixels[y * width..(y + 1) * width]
            })
        };
        let mut y = 0;
        while y < rows {
            if !changed(y) {
                y += 1;
                continue;
            }
            let start = y;
            while y < rows && changed(y) {
                y += 1;
            }
            let bytes = self.layout.encode_rows(&frame, start as u32..y as u32);
            let at = u64::from(self.layout.yoffset + start as u32) * u64::from(self.layout.line_length);
            self.fb.write_all_at(&bytes, at).map_err(|e| format!("writing /dev/fb0: {e}"))?;
        }
        *shown = Some(frame);
        Ok(())
    }
}

/// The screen, drawn by a thread of its own: it loads the screen's modules (a GPU driver is
/// large, and loading it under an emulator takes a fifth of a second) while stage-1 goes on
/// looking for the system partition, opens the framebuffer, and draws each scene it is given,
/// in order.
pub struct Painter {
    device: String,
    /// The screen's width and height, once it is open.
    size: std::sync::Arc<std::sync::OnceLock<(u32, u32)>>,
    to: Option<std::sync::mpsc::Sender<Scene>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Painter {
    pub fn start(device: &str, modules: Vec<String>) -> Painter {
        let (to, scenes) = std::sync::mpsc::channel::<Scene>();
        let size = std::sync::Arc::new(std::sync::OnceLock::new());
        let size_of_screen = size.clone();
        let thread = std::thread::Builder::new()
            .name("screen".into())
            .spawn(move || {
                for m in &modules {
                    if let Err(e) = crate::sys::load_module(std::path::Path::new(m)) {
                        console::say(&format!("warning: the screen's module {m}: {e}"));
                    }
                }
                let screen = Screen::open();
                if let Some(s) = &screen {
                    let _ = size_of_screen.set((s.layout.width, s.layout.height));
                }
                for scene in scenes {
                    show(screen.as_ref(), &scene);
                }
            })
            .map_err(|e| console::say(&format!("warning: no screen: {e}")))
            .ok();
        Painter { device: device.to_string(), size, to: thread.as_ref().map(|_| to), thread }
    }

    /// The screen's width and height, where it is open.
    pub fn size(&self) -> Option<(u32, u32)> {
        self.size.get().copied()
    }

    /// The phone's name, as the screens show it.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Draws `scene` once what was given before is drawn (and says it on the console then).
    pub fn show(&self, scene: Scene) {
        match &self.to {
            Some(to) => {
                let _ = to.send(scene);
            }
            None => show(None, &scene),
        }
    }

    /// Waits until everything given is drawn, at most `limit` (a driver that hangs must not
    /// hold the boot).
    pub fn finish(mut self, limit: std::time::Duration) {
        drop(self.to.take());
        let t0 = std::time::Instant::now();
        if let Some(t) = self.thread.take() {
            while !t.is_finished() {
                if t0.elapsed() > limit {
                    console::say(&format!("warning: the screen is not drawn after {}s; going on", limit.as_secs()));
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let _ = t.join();
        }
    }
}

/// Shows `scene` on the screen, if there is one, and writes it on the console either way.
fn show(screen: Option<&Screen>, scene: &Scene) {
    if let Some(s) = screen {
        if let Err(e) = s.draw(scene) {
            console::say(&format!("warning: {e}"));
        }
    }
    console::report(&Event::Screen(scene.clone()));
}

fn read_layout(fb: &File) -> Result<Layout, String> {
    // fb_var_screeninfo is 40 u32s; fb_fix_screeninfo is 80 bytes on 64-bit kernels.
    let mut var = [0u32; 40];
    let mut fix = [0u64; 10];
    // SAFETY: each ioctl fills a buffer at least as large as its struct.
    unsafe {
        if libc::ioctl(fb.as_raw_fd(), FBIOGET_VSCREENINFO, var.as_mut_ptr()) < 0 {
            return Err(format!("FBIOGET_VSCREENINFO: {}", std::io::Error::last_os_error()));
        }
        if libc::ioctl(fb.as_raw_fd(), FBIOGET_FSCREENINFO, fix.as_mut_ptr()) < 0 {
            return Err(format!("FBIOGET_FSCREENINFO: {}", std::io::Error::last_os_error()));
        }
    }
    let fix: Vec<u8> = fix.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let line_length = u32::from_ne_bytes([fix[48], fix[49], fix[50], fix[51]]);
    layout_of(&var, line_length)
}

/// The layout from `fb_var_screeninfo`'s words and `fb_fix_screeninfo`'s line length.
fn layout_of(var: &[u32; 40], line_length: u32) -> Result<Layout, String> {
    let l = Layout {
        width: var[0],
        height: var[1],
        xoffset: var[4],
        yoffset: var[5],
        bits_per_pixel: var[6],
        red: (var[8], var[9]),
        green: (var[11], var[12]),
        blue: (var[14], var[15]),
        line_length,
    };
    if !matches!(l.bits_per_pixel, 16 | 24 | 32) {
        return Err(format!("{} bits per pixel (16, 24 or 32 can be drawn)", l.bits_per_pixel));
    }
    if l.width == 0 || l.height == 0 || line_length < (l.width + l.xoffset) * l.bits_per_pixel / 8 {
        return Err(format!("a {}x{} screen in rows of {line_length} bytes", l.width, l.height));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(bpp: u32, rgb: [(u32, u32); 3]) -> [u32; 40] {
        let mut v = [0u32; 40];
        v[0] = 4;
        v[1] = 2;
        v[6] = bpp;
        (v[8], v[9]) = rgb[0];
        (v[11], v[12]) = rgb[1];
        (v[14], v[15]) = rgb[2];
        v
    }

    #[test]
    fn frames_are_packed_as_the_framebuffer_says() {
        let mut frame = mobix_screen::Frame::filled(4, 2, 0x10_20_30);
        frame.pixels[1] = 0xff_80_01;
        // XRGB8888, as virtio-gpu's fbdev gives it, with rows padded to 20 bytes.
        let x = layout_of(&var(32, [(16, 8), (8, 8), (0, 8)]), 20).unwrap();
        let b = x.encode(&frame);
        assert_eq!(b.len(), 40);
        assert_eq!(&b[0..8], &[0x30, 0x20, 0x10, 0, 0x01, 0x80, 0xff, 0]);
        assert_eq!(&b[16..20], &[0, 0, 0, 0], "the padding stays");
        assert_eq!(&b[20..24], &[0x30, 0x20, 0x10, 0]);
        // ABGR, as some phones' simple-framebuffers are.
        let a = layout_of(&var(32, [(0, 8), (8, 8), (16, 8)]), 16).unwrap();
        assert_eq!(&a.encode(&frame)[4..8], &[0xff, 0x80, 0x01, 0]);
        // RGB565.
        let r = layout_of(&var(16, [(11, 5), (5, 6), (0, 5)]), 8).unwrap();
        let p = u16::from_le_bytes([r.encode(&frame)[2], r.encode(&frame)[3]]);
        assert_eq!((p >> 11, (p >> 5) & 0x3f, p & 0x1f), (0x1f, 0x20, 0));
    }

    #[test]
    fn rows_encode_as_the_whole_frame_does_in_the_fast_and_the_general_way() {
        let mut frame = mobix_screen::Frame::filled(4, 3, 0x01_02_03);
        frame.pixels[5] = 0xaa_bb_cc;
        let x = layout_of(&var(32, [(16, 8), (8, 8), (0, 8)]), 20).unwrap();
        let mut general = x;
        general.red = (16, 7); // not XRGB8888: the per-channel way, which keeps 7 bits of red
        assert!(x.is_xrgb8888() && !general.is_xrgb8888());
        let whole = x.encode(&frame);
        assert_eq!(x.encode_rows(&frame, 1..2), whole[20..40].to_vec());
        assert_eq!(&whole[24..28], &[0xcc, 0xbb, 0xaa, 0]);
        assert_eq!(&general.encode_rows(&frame, 1..2)[4..8], &[0xcc, 0xbb, 0x55, 0]);
    }

    #[test]
    fn layouts_that_cannot_be_drawn_are_refused() {
        assert!(layout_of(&var(8, [(0, 3), (3, 3), (6, 2)]), 4).is_err());
        assert!(layout_of(&var(32, [(16, 8), (8, 8), (0, 8)]), 8).is_err(), "rows shorter than the width");
    }
}
