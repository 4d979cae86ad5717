//! Reading request bodies safely: size caps, content types, multipart parts,
//! dataset names confined to `--datasets-root`, and zip uploads extracted
//! without zip-slip or zip bombs.

use super::error::ApiError;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The request's media type, lower-case, without parameters ("" when absent).
pub fn media_type(req: &HttpRequest) -> String {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn declared_len(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!(
        "the upload is over the limit of {} MB (--max-upload-mb)",
        limit >> 20
    ))
}

/// The whole body, at most `limit` bytes (413 beyond).
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if declared_len(req).is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request("bad_body", format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Bytes,
}

/// Every part of a multipart/form-data body; `limit` caps the total size.
pub async fn read_multipart(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Vec<Part>, ApiError> {
    if declared_len(req).is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut mp = actix_multipart::Multipart::new(req.headers(), payload);
    let mut parts = Vec::new();
    let mut total = 0usize;
    while let Some(field) = mp.next().await {
        let mut field = field.map_err(|e| {
            ApiError::bad_request("bad_multipart", format!("malformed multipart body: {e}"))
        })?;
        let name = field.name().unwrap_or("").to_string();
        let filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(str::to_string);
        let mut buf = BytesMut::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request("bad_multipart", format!("malformed multipart body: {e}"))
            })?;
            total += chunk.len();
            if total > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        parts.push(Part {
            name,
            filename,
            data: buf.freeze(),
        });
        if parts.len() > 1024 {
            return Err(ApiError::too_large("more than 1024 parts in one request"));
        }
    }
    Ok(parts)
}

/// A dataset folder name under the datasets root: no absolute paths, no `..`,
/// and after resolving symlinks it must still lie inside the root.
pub fn resolve_dataset(root: Option<&Path>, name: &str) -> Result<PathBuf, ApiError> {
    let Some(root) = root else {
        return Err(ApiError::bad_request(
            "no_datasets_root",
            "the server has no --datasets-root: upload the dataset as a zip (multipart field dataset_zip)",
        ));
    };
    let bad = || {
        ApiError::bad_request("invalid_dataset_path", format!("dataset {name:?} must be a folder name under the datasets root (no absolute paths, no '..')"))
    };
    if name.trim().is_empty() || name.contains('\0') {
        return Err(bad());
    }
    let p = Path::new(name);
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(bad());
    }
    let full = root.join(p);
    let canon = match full.canonicalize() {
        Ok(c) => c,
        Err(_) => {
            // A dangling symlink still must not say anything about the outside.
            return Err(ApiError::not_found(
                "dataset_not_found",
                format!("no dataset {name:?} under the datasets root"),
            ));
        }
    };
    if !canon.starts_with(root) {
        return Err(ApiError::bad_request(
            "invalid_dataset_path",
            format!("dataset {name:?} resolves outside the datasets root"),
        ));
    }
    if !canon.is_dir() {
        return Err(ApiError::not_found(
            "dataset_not_found",
            format!("dataset {name:?} is not a folder"),
        ));
    }
    Ok(canon)
}

/// The folder holding `train/` (or `test/`) at the top of an extracted zip or one level down.
pub fn kaggle_root(dir: &Path) -> Option<PathBuf> {
    let ok = |d: &Path| d.join("train").is_dir() || d.join("test").is_dir();
    if ok(dir) {
        return Some(dir.to_path_buf());
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    subs.into_iter().find(|d| ok(d))
}

/// Extracts a zip into `dest` (which must not exist yet). Rejects entries that would
/// land outside `dest`, skips symlinks, caps the total uncompressed size and the entry count.
pub fn extract_zip(data: &[u8], dest: &Path, max_total: u64) -> Result<PathBuf, ApiError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(|e| {
        ApiError::unprocessable(
            "invalid_zip",
            format!("dataset_zip is not a readable zip: {e}"),
        )
    })?;
    if zip.len() > 200_000 {
        return Err(ApiError::too_large("the zip has more than 200000 entries"));
    }
    std::fs::create_dir_all(dest)
        .map_err(|e| ApiError::internal(format!("{}: {e}", dest.display())))?;
    let fail = |e: ApiError| {
        let _ = std::fs::remove_dir_all(dest);
        e
    };
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| {
            fail(ApiError::unprocessable(
                "invalid_zip",
                format!("zip entry {i}: {e}"),
            ))
        })?;
        let Some(rel) = f.enclosed_name() else {
            return Err(fail(ApiError::bad_request(
                "invalid_zip_path",
                format!(
                    "zip entry {:?} would extract outside the dataset folder",
                    f.name()
                ),
            )));
        };
        if f.is_dir() || f.is_symlink() {
            continue;
        }
        let out = dest.join(&rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| fail(ApiError::internal(format!("{}: {e}", parent.display()))))?;
        }
        let mut w = std::fs::File::create(&out)
            .map_err(|e| fail(ApiError::internal(format!("{}: {e}", out.display()))))?;
        let left = max_total.saturating_sub(total);
        let n = std::io::copy(&mut (&mut f).take(left + 1), &mut w).map_err(|e| {
            fail(ApiError::unprocessable(
                "invalid_zip",
                format!("zip entry {:?}: {e}", rel.display()),
            ))
        })?;
        total += n;
        if total > max_total {
            return Err(fail(ApiError::too_large(format!(
                "the zip expands to more than {} MB (--max-zip-mb)",
                max_total >> 20
            ))));
        }
    }
    kaggle_root(dest).ok_or_else(|| {
        fail(ApiError::unprocessable(
            "invalid_dataset",
            "the zip is not in the Kaggle layout (train|val|test/NORMAL|PNEUMONIA)",
        ))
    })
}
