//! `cxr-wasm`: the preprocessing contract of `cxr_models::preprocess`, compiled to
//! WebAssembly so a browser (or Node) turns an X-ray file into exactly the
//! `size*size` grayscale bytes the server would compute, and uploads only those.
//!
//! The JS-facing API is three functions; `wasm-client/js/cxr.js` wraps them with
//! a `classify(url, bytes)` helper that talks to the cxr HTTP API.

use cxr_models::preprocess::{self as pp, DecodeLimits, PreprocessSpec};
use wasm_bindgen::prelude::*;

/// Why a file or a spec could not be used; the message is what JS sees.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid preprocessing spec JSON: {0}")]
    SpecJson(String),
    #[error(transparent)]
    Preprocess(#[from] pp::PreprocessError),
}

/// Parses a model card's `preprocess` object (JSON text) into a validated spec.
pub fn parse_spec(spec_json: &str) -> Result<PreprocessSpec, ClientError> {
    let spec: PreprocessSpec =
        serde_json::from_str(spec_json).map_err(|e| ClientError::SpecJson(e.to_string()))?;
    spec.validate()?;
    Ok(spec)
}

/// Encoded JPEG/PNG bytes + spec JSON -> `size*size` grayscale bytes (row-major).
/// The same function the server applies; errors carry the Rust message.
pub fn preprocess_native(bytes: &[u8], spec_json: &str) -> Result<Vec<u8>, ClientError> {
    let spec = parse_spec(spec_json)?;
    Ok(pp::preprocess_u8(bytes, &spec, DecodeLimits::default())?)
}

/// Preprocesses an encoded image (JPEG or PNG) with the model card's
/// `preprocess` spec (passed as JSON text). Returns a `Uint8Array` of
/// `size*size` grayscale pixels; throws an `Error` with the reason otherwise
/// (e.g. "not a supported image: expected JPEG or PNG").
#[wasm_bindgen]
pub fn preprocess(bytes: &[u8], spec_json: &str) -> Result<Vec<u8>, JsError> {
    preprocess_native(bytes, spec_json).map_err(|e| JsError::new(&e.to_string()))
}

/// The preprocessing rule version this build applies (`spec.version` must match).
#[wasm_bindgen]
pub fn spec_version() -> u32 {
    pp::SPEC_VERSION
}

/// Width and height of an encoded image, read from its header only.
#[wasm_bindgen]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub width: u32,
    pub height: u32,
}

/// Reads the dimensions of a JPEG or PNG without decoding its pixels.
#[wasm_bindgen]
pub fn decode_info(bytes: &[u8]) -> Result<ImageInfo, JsError> {
    decode_info_native(bytes).map_err(|e| JsError::new(&e.to_string()))
}

/// Native version of [`decode_info`].
pub fn decode_info_native(bytes: &[u8]) -> Result<ImageInfo, pp::PreprocessError> {
    if bytes.is_empty() {
        return Err(pp::PreprocessError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| pp::PreprocessError::UnknownFormat)?;
    if !matches!(format, image::ImageFormat::Jpeg | image::ImageFormat::Png) {
        return Err(pp::PreprocessError::UnknownFormat);
    }
    let (width, height) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| pp::PreprocessError::Decode(e.to_string()))?;
    Ok(ImageInfo { width, height })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{"version":1,"size":8,"resize":"squish","filter":"bilinear","mean":[0.5,0.5,0.5],"std":[0.25,0.25,0.25]}"#;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 5 + y * 3) as u8]));
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        buf.into_inner()
    }

    #[test]
    fn preprocess_matches_contract() {
        let bytes = png(30, 20);
        let spec = parse_spec(SPEC).unwrap();
        let want = pp::preprocess_u8(&bytes, &spec, DecodeLimits::default()).unwrap();
        assert_eq!(preprocess_native(&bytes, SPEC).unwrap(), want);
        assert_eq!(want.len(), 64);
    }

    #[test]
    fn errors_carry_messages() {
        let e = preprocess_native(b"hello", SPEC).unwrap_err().to_string();
        assert!(e.contains("not a supported image"), "{e}");
        let e = preprocess_native(&png(4, 4), "{}").unwrap_err().to_string();
        assert!(e.contains("invalid preprocessing spec JSON"), "{e}");
        let e = preprocess_native(&png(4, 4), &SPEC.replace("\"version\":1", "\"version\":7"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 7"), "{e}");
    }

    #[test]
    fn info_reads_header() {
        assert_eq!(
            decode_info_native(&png(33, 7)).unwrap(),
            ImageInfo {
                width: 33,
                height: 7
            }
        );
        assert!(decode_info_native(b"GIF89a").is_err());
    }
}
