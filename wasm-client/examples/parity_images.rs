//! Writes the synthetic images of the WASM/native parity check into a folder:
//! JPEG and PNG, gray/RGB/RGBA/16-bit, odd and tiny and large sizes.
//!
//! `cargo run --release -p cxr-wasm --example parity_images -- OUT_DIR`

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use std::path::Path;

/// Deterministic "X-ray-ish" texture: smooth gradients, a disc and
/// high-frequency noise, so resampling and JPEG rounding are both exercised.
fn value(x: u32, y: u32, w: u32, h: u32, seed: u32) -> u8 {
    let (fx, fy) = (x as f32 / w.max(1) as f32, y as f32 / h.max(1) as f32);
    let (dx, dy) = (fx - 0.5, fy - 0.45);
    let disc = if dx * dx + dy * dy < 0.09 { 60.0 } else { 0.0 };
    let mut s = x.wrapping_mul(374_761_393)
        ^ y.wrapping_mul(668_265_263)
        ^ seed.wrapping_mul(2_246_822_519);
    s = (s ^ (s >> 13)).wrapping_mul(1_274_126_177);
    let noise = (s >> 24) as f32 / 255.0 * 40.0 - 20.0;
    (40.0 + 120.0 * fx + 50.0 * (fy * 9.0).sin() + disc + noise).clamp(0.0, 255.0) as u8
}

fn gray(w: u32, h: u32, seed: u32) -> DynamicImage {
    DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| {
        Luma([value(x, y, w, h, seed)])
    }))
}

fn rgb(w: u32, h: u32, seed: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
        let v = value(x, y, w, h, seed);
        Rgb([v, v.wrapping_add((x % 7) as u8 * 9), 255 - v])
    }))
}

fn save(img: &DynamicImage, dir: &Path, name: &str, fmt: ImageFormat) {
    let path = dir.join(name);
    img.save_with_format(&path, fmt)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: parity_images OUT_DIR");
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).expect("create output folder");
    let (j, p) = (ImageFormat::Jpeg, ImageFormat::Png);
    let sizes: &[(u32, u32)] = &[
        (333, 517),
        (2000, 1500),
        (1, 1),
        (2, 3),
        (7, 5),
        (224, 224),
        (225, 223),
        (64, 4000),
        (1024, 1024),
        (2000, 2000),
    ];
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let seed = i as u32 + 1;
        save(&gray(w, h, seed), dir, &format!("gray_{w}x{h}.jpg"), j);
        save(&gray(w, h, seed), dir, &format!("gray_{w}x{h}.png"), p);
        save(&rgb(w, h, seed), dir, &format!("rgb_{w}x{h}.jpg"), j);
        save(&rgb(w, h, seed), dir, &format!("rgb_{w}x{h}.png"), p);
    }
    // PNG colour types the server may meet: gray+alpha, RGBA, 16-bit gray and RGB.
    let (w, h) = (301, 187);
    let g = gray(w, h, 99).to_luma8();
    let la = ImageBuffer::from_fn(w, h, |x, y| LumaA([g.get_pixel(x, y).0[0], (x * 3) as u8]));
    save(&DynamicImage::ImageLumaA8(la), dir, "graya_301x187.png", p);
    let c = rgb(w, h, 98).to_rgb8();
    let rgba = ImageBuffer::from_fn(w, h, |x, y| {
        let [r, gg, b] = c.get_pixel(x, y).0;
        Rgba([r, gg, b, 255 - (y as u8)])
    });
    save(&DynamicImage::ImageRgba8(rgba), dir, "rgba_301x187.png", p);
    let g16 = ImageBuffer::from_fn(w, h, |x, y| {
        Luma([u16::from(g.get_pixel(x, y).0[0]) * 257 + (x % 200) as u16])
    });
    save(
        &DynamicImage::ImageLuma16(g16),
        dir,
        "gray16_301x187.png",
        p,
    );
    save(
        &DynamicImage::ImageRgb16(rgb(w, h, 97).to_rgb16()),
        dir,
        "rgb16_301x187.png",
        p,
    );
    // A quality sweep of one JPEG (different quantisation tables).
    let img = rgb(640, 480, 7);
    for q in [30u8, 75, 95, 100] {
        let path = dir.join(format!("rgb_640x480_q{q}.jpg"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, q)
            .encode_image(&img)
            .expect("encode jpeg");
    }
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    println!("wrote {n} images to {}", dir.display());
}
