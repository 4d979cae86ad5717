//! The web page (static files of `service/web`) and the answer for paths
//! nothing serves.

use super::error::ApiError;
use super::openapi;
use actix_web::{web, HttpRequest, HttpResponse};
use std::path::{Path, PathBuf};

const NO_WEB: &str = "<!doctype html><meta charset=utf-8><title>cxr</title><h1>cxr serve</h1>\
<p>The web page is not built. Run <code>scripts/build-wasm.sh</code> in the repository (it writes \
<code>service/web/pkg/</code>) and start <code>cxr serve</code> from the repository root, or pass \
<code>--web-dir DIR</code>.</p><p>The API is at <a href=/openapi.json>/openapi.json</a>.</p>";

/// `--web-dir`, else `service/web` under the cwd or next to the binary's repository.
pub fn find_web_dir(given: Option<&Path>) -> Option<PathBuf> {
    let found = given.map(Path::to_path_buf).or_else(|| {
        let mut cands = vec![PathBuf::from("service/web")];
        if let Ok(exe) = std::env::current_exe() {
            for a in exe.ancestors().skip(1).take(4) {
                cands.push(a.join("service/web"));
            }
        }
        cands.into_iter().find(|d| d.join("index.html").is_file())
    });
    match &found {
        Some(d) => tracing::info!("web page: {}", d.display()),
        None => tracing::warn!(
            "web page not found (build it with scripts/build-wasm.sh, or pass --web-dir)"
        ),
    }
    found
}

/// The web page's files at `/`, or a page that says how to build them.
pub fn routes(cfg: &mut web::ServiceConfig, web_dir: Option<&Path>) {
    match web_dir {
        Some(d) => {
            cfg.service(
                actix_files::Files::new("/", d)
                    .index_file("index.html")
                    .default_handler(web::to(not_found)),
            );
        }
        None => {
            cfg.route(
                "/",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/html; charset=utf-8")
                        .body(NO_WEB)
                }),
            );
        }
    }
}

/// 405 on a documented path with another method, else 404, in the API's error shape.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if openapi::documents_path(req.path()) {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not allowed on {}",
            req.method(),
            req.path()
        )));
    }
    Err(ApiError::not_found(
        "not_found",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}
