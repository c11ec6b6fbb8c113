//! Draws stage-1's screens ([`Scene`]) into a plain RGB frame: the boot screen, the
//! generation menu, notices and the shell screens. The phone copies the frame to its
//! framebuffer; the host draws the same scene with this same code to know, pixel for pixel,
//! what the emulated phone's screen must show.
//!
//! Pure: a scene and a size in, pixels out; no device, no files. Text is embedded-graphics'
//! 10x20 ISO 8859-1 font, scaled by a whole factor to the panel (two at 720 pixels wide,
//! three at 1080), so about 34 characters fit a line on any phone.

use embedded_graphics::mono_font::{iso_8859_1::FONT_10X20, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Baseline, Text};
pub use mobix_bootctl::screen::{Label, MenuRow, Scene};

/// An RGB frame, row after row, one `0x00RRGGBB` per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u32>,
}

impl Frame {
    /// A frame of one colour.
    pub fn filled(width: u32, height: u32, rgb: u32) -> Frame {
        Frame { width, height, pixels: vec![rgb; width as usize * height as usize] }
    }

    /// The pixel at (x, y) as `[r, g, b]`.
    pub fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
        let v = self.pixels[(y * self.width + x) as usize];
        [(v >> 16) as u8, (v >> 8) as u8, v as u8]
    }

    /// Every pixel as three bytes, red first (the body of a binary PPM, as QEMU's
    /// `screendump` writes it).
    pub fn rgb_bytes(&self) -> Vec<u8> {
        self.pixels.iter().flat_map(|v| [(v >> 16) as u8, (v >> 8) as u8, *v as u8]).collect()
    }
}

/// The colours of stage-1's screens.
pub mod colour {
    pub const BACKGROUND: u32 = 0x10_14_18;
    pub const TEXT: u32 = 0xe8_ea_ed;
    pub const DIM: u32 = 0x8a_93_9c;
    pub const ACCENT: u32 = 0x4a_a3_df;
    pub const WARN: u32 = 0xf0_b4_29;
    pub const BAD: u32 = 0xe5_48_4d;
    pub const SELECTED: u32 = 0x2b_6c_b0;
    /// A PIN pad key's face.
    pub const KEY: u32 = 0x2a_30_37;
}

/// The font's cell and the gap between lines, in unscaled pixels.
const CELL_W: i32 = 10;
const LINE: i32 = 24;
/// The unscaled width a phone's screen is divided into (360: a scale of 2 at 720 pixels).
const BASE_WIDTH: u32 = 360;

/// The whole-number scale of the text on a `width` x `height` screen.
pub fn scale(width: u32, height: u32) -> u32 {
    (width / BASE_WIDTH).min(height / (BASE_WIDTH * 2)).max(1)
}

/// Draws `scene` on a `width` x `height` screen.
pub fn render(scene: &Scene, width: u32, height: u32) -> Frame {
    let mut frame = Frame::filled(width, height, colour::BACKGROUND);
    let s = scale(width, height);
    let mut page = Page::new(Canvas { frame: &mut frame, scale: s });
    match scene {
        Scene::Boot { device, generation, doing } => {
            page.header(device, colour::ACCENT);
            match generation {
                Some(g) => page.wrapped(&format!("Booting {}", g.words()), colour::TEXT),
                None => page.wrapped("Starting", colour::TEXT),
            }
            page.gap();
            page.wrapped(doing, colour::DIM);
        }
        Scene::Menu { device, rows, selected, idle_s } => {
            page.header(device, colour::ACCENT);
            page.wrapped("Generations", colour::TEXT);
            page.wrapped("Volume keys move, power boots", colour::DIM);
            page.gap();
            for (i, r) in rows.iter().enumerate() {
                page.menu_row(r, i == *selected);
            }
            page.gap();
            page.wrapped(&format!("Nothing pressed for {idle_s} s: the default boots"), colour::DIM);
        }
        Scene::Notice { device, title, text, generation } => {
            page.header(device, colour::WARN);
            page.wrapped(title, colour::WARN);
            page.gap();
            page.wrapped(text, colour::TEXT);
            if let Some(g) = generation {
                page.gap();
                page.wrapped(&format!("Booting {}", g.words()), colour::DIM);
            }
        }
        Scene::Pin { device, title, text, bad, entered, highlight } => {
            page.header(device, colour::ACCENT);
            page.wrapped(title, colour::TEXT);
            page.gap();
            page.wrapped(text, if *bad { colour::BAD } else { colour::DIM });
            page.gap();
            page.dots(*entered);
            page.pad(*highlight as usize);
        }
        Scene::Shell { device, title, why, reach } => {
            page.header(device, colour::BAD);
            page.wrapped(title, colour::BAD);
            page.gap();
            page.wrapped(why, colour::TEXT);
            page.gap();
            for r in reach {
                page.wrapped(r, colour::DIM);
            }
        }
    }
    frame
}

/// The PIN pad's keys on a `width` x `height` screen, in [`mobix_bootctl::pin::PAD`]'s
/// order, each as pixels `(x, y, width, height)`: three columns, four rows, at the bottom of
/// the screen. Stage-1 finds the key under a tap with [`pad_key_at`].
pub fn pad_keys(width: u32, height: u32) -> [(u32, u32, u32, u32); 12] {
    let s = scale(width, height);
    let (cw, ch) = ((width / s) as i32, (height / s) as i32);
    let gap = PAD_GAP;
    let kw = ((cw - 2 * CELL_W - 2 * gap) / 3).max(1);
    let top = (ch - PAD_MARGIN - 4 * PAD_KEY_H - 3 * gap).max(0);
    std::array::from_fn(|i| {
        let (col, row) = ((i % 3) as i32, (i / 3) as i32);
        let x = CELL_W + col * (kw + gap);
        let y = top + row * (PAD_KEY_H + gap);
        (x as u32 * s, y as u32 * s, kw as u32 * s, PAD_KEY_H as u32 * s)
    })
}

/// The index in [`mobix_bootctl::pin::PAD`] of the key under the pixel (x, y), if any.
pub fn pad_key_at(width: u32, height: u32, x: u32, y: u32) -> Option<usize> {
    pad_keys(width, height).iter().position(|&(kx, ky, kw, kh)| x >= kx && x < kx + kw && y >= ky && y < ky + kh)
}

/// The PIN pad's keys' height, the gap between them and the room below them, unscaled.
const PAD_KEY_H: i32 = 56;
const PAD_GAP: i32 = 8;
const PAD_MARGIN: i32 = 40;

/// Text laid out top to bottom in the scaled coordinates of a canvas.
struct Page<'a> {
    canvas: Canvas<'a>,
    y: i32,
    columns: usize,
}

impl<'a> Page<'a> {
    fn new(canvas: Canvas<'a>) -> Page<'a> {
        let columns = ((canvas.size().width as i32 - 2 * CELL_W) / CELL_W).max(1) as usize;
        Page { canvas, y: LINE, columns }
    }

    fn text(&mut self, x: i32, line: &str, rgb: u32) {
        let style = MonoTextStyle::new(&FONT_10X20, colour_of(rgb));
        // Drawing into a frame cannot fail (its error type is Infallible).
        let _ = Text::with_baseline(line, Point::new(x, self.y), style, Baseline::Top).draw(&mut self.canvas);
    }

    fn line(&mut self, line: &str, rgb: u32) {
        self.text(CELL_W, line, rgb);
        self.y += LINE;
    }

    fn wrapped(&mut self, text: &str, rgb: u32) {
        for l in wrap(text, self.columns) {
            self.line(&l, rgb);
        }
    }

    fn gap(&mut self) {
        self.y += LINE / 2;
    }

    /// `mobix` and the phone's name over a rule in the screen's colour.
    fn header(&mut self, device: &str, rgb: u32) {
        self.line("mobix", rgb);
        self.wrapped(device, colour::DIM);
        self.y += LINE / 4;
        let width = self.canvas.size().width;
        self.canvas.fill(
            Rectangle::new(Point::new(CELL_W, self.y), Size::new(width.saturating_sub(2 * CELL_W as u32), 2)),
            rgb,
        );
        self.y += LINE;
    }

    /// A dot for each digit typed (never the digits), or a dash where there are none.
    fn dots(&mut self, n: u32) {
        const D: i32 = 12;
        let shown = n.min(((self.columns as i32 * CELL_W) / (D + D / 2)) as u32);
        if shown == 0 {
            self.line("-", colour::DIM);
            return;
        }
        for i in 0..shown as i32 {
            let at = Point::new(CELL_W + i * (D + D / 2), self.y + (LINE - D) / 2);
            self.canvas.fill(Rectangle::new(at, Size::new(D as u32, D as u32)), colour::TEXT);
        }
        self.y += LINE;
    }

    /// The pad's twelve keys ([`pad_keys`]), the highlighted one filled.
    fn pad(&mut self, highlight: usize) {
        let s = self.canvas.scale;
        let (w, h) = (self.canvas.frame.width, self.canvas.frame.height);
        for (i, (key, (x, y, kw, kh))) in mobix_bootctl::pin::PAD.iter().zip(pad_keys(w, h)).enumerate() {
            let (x, y, kw, kh) = ((x / s) as i32, (y / s) as i32, kw / s, kh / s);
            let face = if i == highlight { colour::SELECTED } else { colour::KEY };
            self.canvas.fill(Rectangle::new(Point::new(x, y), Size::new(kw, kh)), face);
            let label = key.label();
            let tx = x + (kw as i32 - CELL_W * label.len() as i32) / 2;
            let saved = self.y;
            self.y = y + (kh as i32 - 20) / 2;
            self.text(tx, &label, colour::TEXT);
            self.y = saved;
        }
    }

    /// A generation as two lines: number and date, then its state; the selected one on a
    /// bar, one that cannot boot from here dimmed.
    fn menu_row(&mut self, r: &MenuRow, selected: bool) {
        let width = self.canvas.size().width;
        let top = self.y - LINE / 8;
        if selected {
            let bar = Size::new(width.saturating_sub(CELL_W as u32), (2 * LINE + LINE / 4) as u32);
            self.canvas.fill(Rectangle::new(Point::new(CELL_W / 2, top), bar), colour::SELECTED);
        }
        let (main, sub) = match (selected, r.selectable) {
            (true, _) => (colour::TEXT, colour::TEXT),
            (false, true) => (colour::TEXT, colour::DIM),
            (false, false) => (colour::DIM, colour::DIM),
        };
        let number = match r.generation.date.as_str() {
            "" => format!("  Generation {}", r.generation.number),
            d => format!("  Generation {}  {d}", r.generation.number),
        };
        let mut state = r.state.clone();
        for extra in [r.note.as_str(), if r.default { "default" } else { "" }] {
            if !extra.is_empty() {
                state = format!("{state}, {extra}");
            }
        }
        let state = if r.state.starts_with("bad") && r.selectable && !selected {
            (format!("      {state}"), colour::BAD)
        } else {
            (format!("      {state}"), sub)
        };
        self.line(&clip(&number, self.columns), main);
        self.line(&clip(&state.0, self.columns), state.1);
        self.y += LINE / 4;
    }
}

/// Words filled into lines of at most `columns` characters; a longer word is cut.
pub fn wrap(text: &str, columns: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let mut word: Vec<char> = word.chars().collect();
            loop {
                let len = line.chars().count();
                let room = if len == 0 { columns } else { columns.saturating_sub(len + 1) };
                if word.len() <= room {
                    if len > 0 {
                        line.push(' ');
                    }
                    line.extend(&word);
                    break;
                }
                if len > 0 {
                    lines.push(std::mem::take(&mut line));
                    continue;
                }
                let rest = word.split_off(columns);
                lines.push(word.into_iter().collect());
                word = rest;
            }
        }
        lines.push(line);
    }
    lines
}

fn clip(line: &str, columns: usize) -> String {
    line.chars().take(columns).collect()
}

fn colour_of(rgb: u32) -> Rgb888 {
    Rgb888::new((rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8)
}

/// The other way: a colour as the frame's `0x00RRGGBB`.
fn packed(c: Rgb888) -> u32 {
    (u32::from(c.r()) << 16) | (u32::from(c.g()) << 8) | u32::from(c.b())
}

/// A frame seen through a whole-number scale: each point of the canvas is a square of
/// `scale` x `scale` pixels.
struct Canvas<'a> {
    frame: &'a mut Frame,
    scale: u32,
}

impl Canvas<'_> {
    fn fill(&mut self, area: Rectangle, rgb: u32) {
        let _ = self.fill_solid(&area, colour_of(rgb));
    }

    fn square(&mut self, x: i32, y: i32, w: u32, h: u32, rgb: u32) {
        let (fw, fh, s) = (self.frame.width, self.frame.height, self.scale);
        if x < 0 || y < 0 {
            return;
        }
        let (x0, y0) = (x as u32 * s, y as u32 * s);
        let (x1, y1) = ((x0 + w * s).min(fw), (y0 + h * s).min(fh));
        for yy in y0.min(fh)..y1 {
            let row = (yy * fw) as usize;
            self.frame.pixels[row + x0.min(fw) as usize..row + x1 as usize].fill(rgb);
        }
    }
}

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.frame.width / self.scale, self.frame.height / self.scale)
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        for Pixel(p, c) in pixels {
            self.square(p.x, p.y, 1, 1, packed(c));
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Rgb888) -> Result<(), Self::Error> {
        let a = area.intersection(&self.bounding_box());
        self.square(a.top_left.x, a.top_left.y, a.size.width, a.size.height, packed(color));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mobix_bootctl::screen::Menu;

    fn menu() -> Menu {
        Menu::new(
            (1..=4)
                .map(|n| MenuRow {
                    generation: Label { number: n, date: "2026-12-07".into() },
                    state: if n == 3 { "bad (health check)".into() } else { "good".into() },
                    selectable: n != 1,
                    note: if n == 1 { "other kernel".into() } else { String::new() },
                    default: n == 4,
                })
                .collect(),
        )
    }

    /// The rows of the frame that hold any pixel of `rgb`.
    fn rows_with(f: &Frame, rgb: u32) -> Vec<u32> {
        (0..f.height).filter(|y| (0..f.width).any(|x| f.pixels[(y * f.width + x) as usize] == rgb)).collect()
    }

    #[test]
    fn text_scales_with_the_panel() {
        assert_eq!((scale(720, 1440), scale(1080, 2340), scale(320, 480), scale(1440, 720)), (2, 3, 1, 1));
        let scene = Scene::Boot { device: "Phone".into(), generation: None, doing: "x".into() };
        let (small, big) = (render(&scene, 360, 720), render(&scene, 720, 1440));
        // The same picture, each pixel a 2x2 square.
        for (x, y) in [(15, 30), (20, 28), (12, 25), (100, 300)] {
            assert_eq!(small.rgb(x, y), big.rgb(2 * x, 2 * y), "({x}, {y})");
            assert_eq!(big.rgb(2 * x, 2 * y), big.rgb(2 * x + 1, 2 * y + 1));
        }
    }

    #[test]
    fn the_selection_bar_moves_with_the_keys() {
        use mobix_bootctl::screen::Input;
        let mut m = menu();
        let before = rows_with(&render(&m.scene("QEMU aarch64 phone", 30), 720, 1440), colour::SELECTED);
        m.press(Input::Down);
        let after = rows_with(&render(&m.scene("QEMU aarch64 phone", 30), 720, 1440), colour::SELECTED);
        assert!(!before.is_empty() && !after.is_empty());
        assert!(after[0] > *before.last().unwrap(), "the bar went down: {before:?} -> {after:?}");
        assert_eq!(before.len(), after.len(), "one row's bar each time");
    }

    #[test]
    fn screens_show_their_words_in_their_colours() {
        let (w, h) = (720, 1440);
        let notice = Scene::Notice {
            device: "Phone".into(),
            title: "Generation 8 failed".into(),
            text: "generation 8 failed its health check on all 3 tries; booting 7, the last good one".into(),
            generation: Some(Label { number: 7, date: "2026-12-06".into() }),
        };
        let f = render(&notice, w, h);
        assert!(!rows_with(&f, colour::WARN).is_empty(), "the notice's title is in the warning colour");
        assert!(rows_with(&f, colour::BAD).is_empty());
        let shell = Scene::Shell {
            device: "Phone".into(),
            title: "Nothing bootable".into(),
            why: "no generation on the system partition".into(),
            reach: vec!["telnet 172.16.42.1".into()],
        };
        assert!(!rows_with(&render(&shell, w, h), colour::BAD).is_empty());
        // Different scenes, different pictures; the same scene, the same picture.
        assert_ne!(f, render(&shell, w, h));
        assert_eq!(f, render(&notice, w, h));
        assert_eq!(f.rgb_bytes().len(), (w * h * 3) as usize);
    }

    #[test]
    fn long_text_wraps_within_the_screen() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("one\ntwo", 10), ["one", "two"]);
        assert_eq!(wrap("", 10), [""]);
        // Nothing is drawn into the right margin however long the text.
        let scene = Scene::Boot { device: "x".repeat(200), generation: None, doing: "y ".repeat(300) };
        let f = render(&scene, 720, 1440);
        let margin = (720 - CELL_W as u32 * 2)..720;
        assert!((0..1440).all(|y| margin.clone().all(|x| f.rgb(x, y) == f.rgb(719, 0))));
    }

    #[test]
    fn frames_of_odd_sizes_draw_without_a_panic() {
        let m = menu();
        for (w, h) in [(1, 1), (7, 3000), (3000, 7), (361, 721), (1080, 2340)] {
            let f = render(&m.scene("a phone with a long name that wraps", 5), w, h);
            assert_eq!(f.pixels.len(), (w * h) as usize);
        }
    }

    fn pin(entered: u32, highlight: u32) -> Scene {
        Scene::Pin {
            device: "Phone".into(),
            title: "Enter the PIN".into(),
            text: "Wrong PIN".into(),
            bad: true,
            entered,
            highlight,
        }
    }

    #[test]
    fn the_pin_pad_shows_a_dot_per_digit_and_its_highlighted_key() {
        let (w, h) = (720, 1440);
        let keys = pad_keys(w, h);
        // Three keys to a row, inside the screen, none overlapping the next.
        for (i, &(x, y, kw, kh)) in keys.iter().enumerate() {
            assert!(x + kw <= w && y + kh <= h && y > h / 3, "key {i}: {:?}", keys[i]);
            assert_eq!(pad_key_at(w, h, x + kw / 2, y + kh / 2), Some(i));
            if i % 3 < 2 {
                assert!(keys[i + 1].0 > x + kw);
            }
        }
        assert_eq!(pad_key_at(w, h, 5, 5), None);
        let f = render(&pin(3, 11), w, h);
        let (x, y, kw, kh) = keys[11];
        assert_eq!(f.rgb(x + 2, y + 2), [0x2b, 0x6c, 0xb0], "the highlighted key (OK) is filled");
        let (x0, y0, ..) = keys[0];
        assert_eq!(f.rgb(x0 + 2, y0 + 2), [0x2a, 0x30, 0x37]);
        assert!(kw > 100 && kh > 100);
        // The dots: as many squares of TEXT on the dots' row as digits.
        // The dots are the last thing drawn above the pad: read the row of them nearest it.
        let count = |f: &Frame| {
            let dots_row = (0..y0)
                .rev()
                .find(|&y| (0..f.width).any(|x| f.pixels[(y * f.width + x) as usize] == colour::TEXT))
                .expect("a row of dots");
            let mut runs = 0;
            let mut inside = false;
            for x in 0..f.width {
                let on = f.pixels[(dots_row * f.width + x) as usize] == colour::TEXT;
                runs += usize::from(on && !inside);
                inside = on;
            }
            runs
        };
        assert_eq!(count(&f), 3);
        assert_eq!(count(&render(&pin(6, 0), w, h)), 6);
        assert!(!rows_with(&f, colour::BAD).is_empty(), "a wrong PIN is said in red");
        // On a small screen the pad still fits.
        for &(x, y, kw, kh) in &pad_keys(320, 480) {
            assert!(x + kw <= 320 && y + kh <= 480);
        }
    }
}
