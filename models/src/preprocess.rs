//! The preprocessing contract: encoded image bytes -> the model's eval input.
//!
//! This module is pure Rust (no candle) and builds for `wasm32-unknown-unknown`:
//! the server, the training pipeline's validation path and the browser client all
//! call these functions, so a given file always becomes the same pixels.
//!
//! The steps are: decode (JPEG or PNG, guarded against bombs and truncation),
//! convert to 8-bit grayscale (ITU-R 601-2 luma, as PIL's `convert("L")`),
//! squish-resize to the model's square input size (bilinear convolution, as
//! PIL's resize), then normalise to three identical f32 channels with the model
//! card's mean and std.

use fast_image_resize as fr;
use image::{DynamicImage, GrayImage, ImageReader};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// Version of the preprocessing rule. Bump it whenever the pixels a given file
/// produces could change; clients send it with preprocessed tensors.
pub const SPEC_VERSION: u32 = 1;

/// Default cap on decoded pixels (width x height): 50 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

/// ImageNet statistics, used when a model was trained without `--normalize`
/// from a pretrained ImageNet body.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Per-channel normalisation of pixels scaled to 0..1: `(x - mean) / std`.
/// The one rule applied by training, validation, the server, device
/// augmentation and the browser.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Per-channel mean, applied after scaling pixels to 0..1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl Normalize {
    /// No normalisation: mean 0, std 1.
    pub const IDENTITY: Normalize = Normalize {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    /// ImageNet's statistics (a pretrained body trained without `--normalize`).
    pub const IMAGENET: Normalize = Normalize {
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
    };

    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        Self { mean, std }
    }

    /// The same statistics for the three (identical) channels.
    pub fn gray(mean: f32, std: f32) -> Self {
        Self::new([mean; 3], [std; 3])
    }

    /// Whether every mean is finite and every std positive.
    pub fn is_valid(&self) -> bool {
        self.std.iter().all(|s| s.is_finite() && *s > 0.0)
            && self.mean.iter().all(|m| m.is_finite())
    }

    /// One value of channel `c`, already scaled to 0..1.
    #[inline(always)]
    pub fn apply(&self, c: usize, unit: f32) -> f32 {
        (unit - self.mean[c]) / self.std[c]
    }

    /// A plane of 8-bit gray pixels -> channel `c` of the model input.
    #[inline]
    pub fn u8_plane(&self, c: usize, gray: &[u8], out: &mut [f32]) {
        for (o, &p) in out.iter_mut().zip(gray) {
            *o = self.apply(c, f32::from(p) / 255.0);
        }
    }

    /// A plane of gray values in 0..1 -> channel `c` of the model input.
    #[inline]
    pub fn unit_plane(&self, c: usize, unit: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(unit) {
            *o = self.apply(c, v);
        }
    }

    /// `chw` holds one plane of 0..1 values in its first channel and room for
    /// two more: all three channels normalised in place (CHW, 3 x `plane`).
    pub fn unit_to_chw_in_place(&self, chw: &mut [f32], plane: usize) {
        let (first, rest) = chw.split_at_mut(plane);
        for (c, ch) in rest.chunks_exact_mut(plane).enumerate() {
            self.unit_plane(c + 1, first, ch);
        }
        for v in first.iter_mut() {
            *v = self.apply(0, *v);
        }
    }
}

/// Everything a client needs to turn a file into the model's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessSpec {
    /// Version of the rule (see [`SPEC_VERSION`]).
    pub version: u32,
    /// Side of the square model input, in pixels.
    pub size: u32,
    /// How the image is fitted to the square: always `"squish"` (no crop, no padding).
    pub resize: String,
    /// Resampling filter: always `"bilinear"`.
    pub filter: String,
    /// Per-channel `mean` and `std` (flattened: the JSON keys are `mean` and `std`).
    #[serde(flatten)]
    pub normalize: Normalize,
}

impl PreprocessSpec {
    /// A spec for `size` with the given normalisation statistics.
    pub fn new(size: u32, normalize: Normalize) -> Self {
        Self {
            version: SPEC_VERSION,
            size,
            resize: "squish".into(),
            filter: "bilinear".into(),
            normalize,
        }
    }

    /// Checks that the spec is one this build can apply.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.version != SPEC_VERSION {
            return Err(PreprocessError::Spec(format!(
                "preprocessing spec version {} is not supported (this build applies version {SPEC_VERSION})",
                self.version
            )));
        }
        if self.size == 0 || self.size > 4096 {
            return Err(PreprocessError::Spec(format!(
                "input size {} is out of range (1..=4096)",
                self.size
            )));
        }
        if self.resize != "squish" || self.filter != "bilinear" {
            return Err(PreprocessError::Spec(format!(
                "resize {:?} with filter {:?} is not supported (only squish/bilinear)",
                self.resize, self.filter
            )));
        }
        if !self.normalize.is_valid() {
            return Err(PreprocessError::Spec(
                "normalisation mean must be finite and std positive".into(),
            ));
        }
        Ok(())
    }
}

/// Limits applied while decoding untrusted bytes.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Maximum width x height, checked against the header before any pixel is decoded.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Why bytes could not become a model input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PreprocessError {
    #[error("empty input: no image bytes were given")]
    Empty,
    #[error("not a supported image: expected JPEG or PNG")]
    UnknownFormat,
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {max} pixels")]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        max: u64,
    },
    #[error("image has a zero dimension ({width}x{height})")]
    ZeroSize { width: u32, height: u32 },
    #[error("could not decode image: {0}")]
    Decode(String),
    #[error("invalid preprocessing spec: {0}")]
    Spec(String),
    #[error("resize failed: {0}")]
    Resize(String),
    #[error("expected {expected} bytes of {size}x{size} grayscale input, got {got}")]
    TensorSize {
        expected: usize,
        got: usize,
        size: u32,
    },
}

/// Decodes JPEG or PNG bytes to 8-bit grayscale, refusing bombs and broken files.
pub fn decode_gray(bytes: &[u8], limits: DecodeLimits) -> Result<GrayImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| PreprocessError::UnknownFormat)?;
    if !matches!(format, image::ImageFormat::Jpeg | image::ImageFormat::Png) {
        return Err(PreprocessError::UnknownFormat);
    }
    // Read the header alone first: a decompression bomb is refused before any
    // pixel buffer is allocated.
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 {
        return Err(PreprocessError::ZeroSize { width, height });
    }
    if pixels > limits.max_pixels {
        return Err(PreprocessError::TooLarge {
            width,
            height,
            pixels,
            max: limits.max_pixels,
        });
    }
    // A JPEG cut short still decodes (the decoder fills the rest with grey):
    // refuse it unless its end-of-image marker is there.
    if format == image::ImageFormat::Jpeg && !bytes.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(PreprocessError::Decode(
            "truncated JPEG: no end-of-image marker".into(),
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut img_limits = image::Limits::default();
    // The allocation cap is a second line of defence after the header check.
    img_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(img_limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    let img =
        DynamicImage::from_decoder(decoder).map_err(|e| PreprocessError::Decode(e.to_string()))?;
    Ok(to_gray(img))
}

/// Converts any decoded image to 8-bit grayscale with ITU-R 601-2 luma
/// (`L = R*299/1000 + G*587/1000 + B*114/1000`, PIL's fixed-point rounding).
pub fn to_gray(img: DynamicImage) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(g) => g,
        DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => img.to_luma8(),
        other => {
            let rgb = other.to_rgb8();
            let (w, h) = rgb.dimensions();
            let data = rgb
                .as_raw()
                .chunks_exact(3)
                .map(|p| luma601(p[0], p[1], p[2]))
                .collect();
            // The buffer length is w*h by construction.
            GrayImage::from_raw(w, h, data).unwrap_or_else(|| GrayImage::new(w, h))
        }
    }
}

#[inline]
fn luma601(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// Squish-resizes a grayscale image to `width` x `height` (aspect ratio not kept),
/// with a bilinear convolution filter (antialiased when shrinking, as PIL).
pub fn squish_resize(
    img: &GrayImage,
    width: u32,
    height: u32,
) -> Result<GrayImage, PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::Resize(format!(
            "target size {width}x{height} has a zero side"
        )));
    }
    if img.dimensions() == (width, height) {
        return Ok(img.clone());
    }
    let (sw, sh) = img.dimensions();
    let src = fr::images::ImageRef::new(sw, sh, img.as_raw(), fr::PixelType::U8)
        .map_err(|e| PreprocessError::Resize(e.to_string()))?;
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8);
    let mut resizer = fr::Resizer::new();
    let options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    resizer
        .resize(&src, &mut dst, &options)
        .map_err(|e| PreprocessError::Resize(e.to_string()))?;
    GrayImage::from_raw(width, height, dst.into_vec()).ok_or_else(|| {
        PreprocessError::Resize("resizer returned a buffer of the wrong size".into())
    })
}

/// Bytes -> `size*size` grayscale u8 pixels, row-major: the model input before
/// normalisation. This is what the browser computes locally and uploads.
pub fn preprocess_u8(
    bytes: &[u8],
    spec: &PreprocessSpec,
    limits: DecodeLimits,
) -> Result<Vec<u8>, PreprocessError> {
    spec.validate()?;
    let gray = decode_gray(bytes, limits)?;
    Ok(squish_resize(&gray, spec.size, spec.size)?.into_raw())
}

/// Grayscale u8 pixels (`size*size`) -> normalised CHW f32 with 3 identical channels.
pub fn normalize(gray: &[u8], spec: &PreprocessSpec) -> Result<Vec<f32>, PreprocessError> {
    let n = spec.size as usize * spec.size as usize;
    if gray.len() != n {
        return Err(PreprocessError::TensorSize {
            expected: n,
            got: gray.len(),
            size: spec.size,
        });
    }
    let mut out = vec![0.0; 3 * n];
    if n == 0 {
        return Ok(out);
    }
    for (c, plane) in out.chunks_exact_mut(n).enumerate() {
        spec.normalize.u8_plane(c, gray, plane);
    }
    Ok(out)
}

/// Bytes -> normalised CHW f32 input, the full eval-time rule.
pub fn preprocess(
    bytes: &[u8],
    spec: &PreprocessSpec,
    limits: DecodeLimits,
) -> Result<Vec<f32>, PreprocessError> {
    let gray = preprocess_u8(bytes, spec, limits)?;
    normalize(&gray, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Luma, Rgb, RgbImage};

    fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, fmt).expect("encode");
        buf.into_inner()
    }

    fn spec(size: u32) -> PreprocessSpec {
        PreprocessSpec::new(size, Normalize::gray(0.5, 0.25))
    }

    fn gradient(w: u32, h: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| Luma([((x * 7 + y * 3) % 256) as u8]))
    }

    #[test]
    fn png_gray_becomes_size_squared_bytes() {
        let bytes = encode(
            &DynamicImage::ImageLuma8(gradient(300, 200)),
            ImageFormat::Png,
        );
        let out = preprocess_u8(&bytes, &spec(64), DecodeLimits::default()).unwrap();
        assert_eq!(out.len(), 64 * 64);
        assert!(out.iter().any(|&p| p > 100) && out.iter().any(|&p| p < 50));
    }

    #[test]
    fn rgb_uses_601_luma() {
        let img = RgbImage::from_pixel(8, 8, Rgb([255, 0, 0]));
        let g = to_gray(DynamicImage::ImageRgb8(img));
        assert_eq!(g.get_pixel(0, 0).0[0], 76); // PIL: 255*299/1000 = 76.2
    }

    #[test]
    fn jpeg_rgb_and_gray_decode() {
        let rgb = RgbImage::from_fn(120, 90, |x, _| Rgb([x as u8, x as u8, x as u8]));
        let bytes = encode(&DynamicImage::ImageRgb8(rgb), ImageFormat::Jpeg);
        let out = preprocess(&bytes, &spec(32), DecodeLimits::default()).unwrap();
        assert_eq!(out.len(), 3 * 32 * 32);
        // The three channels are identical.
        assert_eq!(out[..1024], out[1024..2048]);
        assert_eq!(out[..1024], out[2048..]);
    }

    #[test]
    fn normalisation_uses_spec() {
        let s = spec(2);
        let out = normalize(&[0, 255, 128, 64], &s).unwrap();
        assert!((out[0] - (-2.0)).abs() < 1e-6);
        assert!((out[1] - 2.0).abs() < 1e-6);
        assert_eq!(
            normalize(&[0, 1, 2], &s),
            Err(PreprocessError::TensorSize {
                expected: 4,
                got: 3,
                size: 2
            })
        );
    }

    #[test]
    fn rejects_bad_bytes() {
        let l = DecodeLimits::default();
        assert_eq!(decode_gray(&[], l), Err(PreprocessError::Empty));
        assert_eq!(
            decode_gray(b"hello, not an image", l),
            Err(PreprocessError::UnknownFormat)
        );
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
        assert_eq!(decode_gray(gif, l), Err(PreprocessError::UnknownFormat));
        let full = encode(
            &DynamicImage::ImageLuma8(gradient(200, 200)),
            ImageFormat::Jpeg,
        );
        for cut in [3, 20, full.len() / 2] {
            let r = decode_gray(&full[..cut], l);
            assert!(r.is_err(), "truncated jpeg of {cut} bytes decoded");
        }
        let png = encode(
            &DynamicImage::ImageLuma8(gradient(200, 200)),
            ImageFormat::Png,
        );
        assert!(decode_gray(&png[..png.len() / 2], l).is_err());
    }

    #[test]
    fn rejects_oversized_before_decoding() {
        let bytes = encode(
            &DynamicImage::ImageLuma8(gradient(100, 100)),
            ImageFormat::Png,
        );
        let err = decode_gray(&bytes, DecodeLimits { max_pixels: 9_999 }).unwrap_err();
        assert!(matches!(
            err,
            PreprocessError::TooLarge { pixels: 10_000, .. }
        ));
        // A PNG header declaring 100000 x 100000 pixels with no data behind it.
        let mut bomb = bytes[..8].to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend(100_000u32.to_be_bytes());
        ihdr.extend(100_000u32.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        for (kind, data) in [
            (&b"IHDR"[..], ihdr),
            (b"IDAT", vec![0x78, 0x9c, 0x03, 0x00]),
            (b"IEND", vec![]),
        ] {
            let mut body = kind.to_vec();
            body.extend(&data);
            bomb.extend((data.len() as u32).to_be_bytes());
            bomb.extend(&body);
            bomb.extend(crc32(&body).to_be_bytes());
        }
        let err = decode_gray(&bomb, DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, PreprocessError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn spec_is_validated() {
        let mut s = spec(64);
        s.version = 99;
        assert!(matches!(s.validate(), Err(PreprocessError::Spec(_))));
        let mut s = spec(64);
        s.normalize.std = [0.0; 3];
        assert!(s.validate().is_err());
        assert!(spec(0).validate().is_err());
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
