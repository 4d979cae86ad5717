//! Fine-tune jobs over HTTP: create (JSON or multipart with a dataset zip),
//! list, get, live events (SSE), cancel, resume, reports.

use super::error::{json_error, ApiError};
use super::input::{extract_zip, media_type, read_body, read_multipart, resolve_dataset};
use super::state::AppState;
use crate::recipe::{Recipe, RecipeRequest};
use crate::serve::jobs::{new_id, state_event, EventKind};
use crate::serve::registry::{JobRow, JobState};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Duration;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/jobs", web::post().to(create))
        .route("/v1/jobs", web::get().to(list))
        .route("/v1/jobs/{id}", web::get().to(get))
        .route("/v1/jobs/{id}/events", web::get().to(events))
        .route("/v1/jobs/{id}/cancel", web::post().to(cancel))
        .route("/v1/jobs/{id}/resume", web::post().to(resume))
        .route("/v1/jobs/{id}/report", web::get().to(report))
        .route("/v1/jobs/{id}/report/{name}", web::get().to(report_file));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub recipe: Option<String>,
    #[serde(default)]
    pub stages: Option<Vec<Value>>,
    /// Stage options applied to every stage of the recipe (e.g. `{"epochs": 1}`).
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    #[serde(default)]
    pub name: Option<String>,
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_options", m)
}

/// The request's recipe: a built-in by name or inline stages, with `options`
/// applied; parsed (and so validated) once, by the recipe module.
pub fn build_recipe(r: &JobRequest) -> Result<Recipe, ApiError> {
    let req = RecipeRequest {
        source: RecipeRequest::source(r.recipe.clone(), r.stages.clone())
            .map_err(|e| invalid(e.to_string()))?,
        options: r.options.clone().unwrap_or_default(),
        name: r.name.clone(),
    };
    let recipe = req.parse().map_err(|e| invalid(e.to_string()))?;
    if let Some(p) = recipe.missing_weights() {
        return Err(ApiError::unprocessable(
            "missing_weights",
            format!(
                "pretrained weights {} are not on the server (scripts/fetch-weights.sh)",
                p.display()
            ),
        ));
    }
    Ok(recipe)
}

pub fn job_json(j: &JobRow, st: &AppState) -> Value {
    let mut v = serde_json::to_value(j).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.insert("resumable".into(), json!(j.state.is_resumable()));
        o.insert(
            "has_checkpoint".into(),
            json!(st.jobs.run_dir(&j.id).has_checkpoint()),
        );
        let name = j.recipe.get("name").and_then(Value::as_str).unwrap_or("");
        o.insert("recipe_name".into(), json!(name));
    }
    v
}

fn load_job(st: &AppState, id: &str) -> Result<JobRow, ApiError> {
    st.reg
        .job(id)?
        .ok_or_else(|| ApiError::not_found("unknown_job", format!("no job {id:?}")))
}

/// A job request with its dataset: a label for the API and the folder it trains on.
struct Submitted {
    request: JobRequest,
    dataset_label: String,
    dataset_path: PathBuf,
}

/// `POST /v1/jobs` with a JSON body: the dataset is a folder under the datasets root.
async fn from_json(
    st: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Submitted, ApiError> {
    let body = read_body(req, payload, st.max_upload()).await?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body is empty: expected a JSON job request",
        ));
    }
    let r: JobRequest = serde_json::from_slice(&body).map_err(|e| json_error(&e))?;
    let name = r
        .dataset
        .clone()
        .ok_or_else(|| invalid("dataset is required (a folder under --datasets-root)"))?;
    let path = resolve_dataset(st.datasets_root.as_deref(), &name)?;
    if super::input::kaggle_root(&path).as_deref() != Some(path.as_path()) {
        return Err(ApiError::unprocessable(
            "invalid_dataset",
            format!(
                "dataset {name:?} is not in the Kaggle layout (train|val|test/NORMAL|PNEUMONIA)"
            ),
        ));
    }
    Ok(Submitted {
        request: r,
        dataset_label: name,
        dataset_path: path,
    })
}

/// `POST /v1/jobs` as multipart: request fields, and a dataset zip or a dataset name.
async fn from_multipart(
    st: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    id: &str,
) -> Result<Submitted, ApiError> {
    let parts = read_multipart(req, payload, st.max_zip()).await?;
    let mut obj = Map::new();
    let mut zip = None;
    for p in parts {
        match p.name.as_str() {
            "dataset_zip" => zip = Some(p),
            "request" => {
                let v: Value = serde_json::from_slice(&p.data).map_err(|e| json_error(&e))?;
                let Value::Object(o) = v else { return Err(invalid("the request part must be a JSON object")) };
                obj.extend(o);
            }
            "stages" | "options" => {
                let v: Value = serde_json::from_slice(&p.data).map_err(|e| json_error(&e))?;
                obj.insert(p.name.clone(), v);
            }
            "recipe" | "name" | "dataset" => {
                obj.insert(p.name.clone(), json!(String::from_utf8_lossy(&p.data).trim()));
            }
            other => return Err(invalid(format!("unknown multipart field {other:?} (expected dataset_zip, request, recipe, stages, options, name)"))),
        }
    }
    let r: JobRequest = serde_json::from_value(Value::Object(obj)).map_err(|e| json_error(&e))?;
    build_recipe(&r)?; // reject bad options before extracting anything
    let (label, path) = match (zip, &r.dataset) {
        (Some(z), None) => {
            let dest = st.home.dataset(id);
            let max = st.max_zip() as u64 * 4;
            let root = web::block(move || extract_zip(&z.data, &dest, max)).await??;
            (format!("upload:{}", id), root)
        }
        (None, Some(name)) => (
            name.clone(),
            resolve_dataset(st.datasets_root.as_deref(), name)?,
        ),
        (Some(_), Some(_)) => return Err(invalid("give either dataset or dataset_zip, not both")),
        (None, None) => return Err(invalid("dataset or dataset_zip is required")),
    };
    Ok(Submitted {
        request: r,
        dataset_label: label,
        dataset_path: path,
    })
}

async fn create(
    st: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    st.require_token(&req)?;
    let t = media_type(&req);
    let id = new_id();
    let sub = if t == "application/json" {
        from_json(&st, &req, payload).await?
    } else if t == "multipart/form-data" {
        from_multipart(&st, &req, payload, &id).await?
    } else {
        return Err(ApiError::unsupported_media(format!(
            "content type {t:?} is not accepted here: send application/json (or multipart/form-data with dataset_zip)"
        )));
    };
    let request = &sub.request;
    let recipe = build_recipe(request)?;
    let job = JobRow {
        recipe: serde_json::to_value(&recipe).map_err(|e| ApiError::internal(e.to_string()))?,
        request: json!({ "dataset": request.dataset, "recipe": request.recipe, "stages": request.stages, "options": request.options }),
        stages: Some(recipe.stages().len() as u64),
        ..JobRow::queued(id.clone(), sub.dataset_label, sub.dataset_path)
    };
    st.reg.insert_job(&job)?;
    // The answer is the queued record (the training thread may start it at once).
    let row = load_job(&st, &id)?;
    st.jobs.enqueue(&id)?;
    tracing::info!(job = %id, dataset = %job.dataset, "job queued");
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/jobs/{id}")))
        .json(job_json(&row, &st)))
}

async fn list(st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let jobs: Vec<Value> = st.reg.jobs()?.iter().map(|j| job_json(j, &st)).collect();
    Ok(HttpResponse::Ok().json(json!({ "jobs": jobs })))
}

async fn get(st: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let j = load_job(&st, &id)?;
    Ok(HttpResponse::Ok().json(job_json(&j, &st)))
}

async fn cancel(
    st: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    st.require_token(&req)?;
    let j = load_job(&st, &id)?;
    match st.jobs.cancel(&j.id)? {
        Some(state) => {
            let row = load_job(&st, &id)?;
            let mut v = job_json(&row, &st);
            v["cancel_requested"] = json!(true);
            v["state"] = json!(if state == JobState::Running {
                row.state
            } else {
                state
            });
            Ok(HttpResponse::Accepted().json(v))
        }
        None => Err(ApiError::conflict(
            "job_finished",
            format!("job {} already finished ({})", j.id, j.state),
        )),
    }
}

async fn resume(
    st: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    st.require_token(&req)?;
    let j = load_job(&st, &id)?;
    if !j.state.is_resumable() {
        return Err(ApiError::conflict(
            "not_resumable",
            format!(
                "job {} is {}: only interrupted, failed or cancelled jobs can be resumed",
                j.id, j.state
            ),
        ));
    }
    let ckpt = st.jobs.run_dir(&j.id).has_checkpoint();
    if !st
        .reg
        .transition(&j.id, &JobState::RESUMABLE, JobState::Queued)?
    {
        return Err(ApiError::conflict(
            "not_resumable",
            format!("job {} changed state meanwhile", j.id),
        ));
    }
    let note = if ckpt {
        "resuming from the last checkpoint"
    } else {
        "no checkpoint: restarting from the beginning"
    };
    st.reg.requeue(&j.id, ckpt, note)?;
    let row = load_job(&st, &id)?;
    st.jobs.emit_state(&j.id);
    st.jobs.enqueue(&j.id)?;
    Ok(HttpResponse::Accepted().json(job_json(&row, &st)))
}

fn sse(kind: &str, data: &Value) -> web::Bytes {
    web::Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

async fn events(st: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    // Subscribe first, then read the state: no event falls between the two.
    let rx = st.jobs.events.subscribe();
    let j = load_job(&st, &id)?;
    let first = sse(EventKind::State.as_str(), &state_event(&j));
    let mut backlog = vec![first];
    for m in &j.metrics {
        backlog.push(sse(EventKind::Epoch.as_str(), m));
    }
    backlog.reverse();
    let done = j.state.ends_stream();
    let id = j.id.clone();
    let stream = futures_util::stream::unfold(
        (rx, backlog, done, id),
        |(mut rx, mut backlog, done, id)| async move {
            if let Some(b) = backlog.pop() {
                return Some((Ok::<_, actix_web::Error>(b), (rx, backlog, done, id)));
            }
            if done {
                return None;
            }
            loop {
                match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
                    Err(_) => {
                        return Some((
                            Ok(web::Bytes::from_static(b": keep-alive\n\n")),
                            (rx, backlog, false, id),
                        ))
                    }
                    Ok(Ok(ev)) if ev.job_id == id => {
                        let end = ev.state().is_some_and(JobState::ends_stream);
                        let b = sse(ev.kind.as_str(), &ev.data);
                        return Some((Ok(b), (rx, backlog, end, id)));
                    }
                    Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                        continue
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                }
            }
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

async fn report(st: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let j = load_job(&st, &id)?;
    let path = st.jobs.run_dir(&j.id).report();
    let text = std::fs::read_to_string(&path).map_err(|_| {
        ApiError::not_found(
            "report_not_ready",
            format!("job {} has no report yet (state {})", j.id, j.state),
        )
    })?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| ApiError::internal(format!("report.json: {e}")))?;
    Ok(HttpResponse::Ok().json(v))
}

const REPORT_FILES: [&str; 3] = ["confusion_matrix.png", "lr_find.png", "losses.png"];

async fn report_file(
    st: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let j = load_job(&st, &id)?;
    if !REPORT_FILES.contains(&name.as_str()) {
        return Err(ApiError::not_found(
            "unknown_report",
            format!(
                "no report {name:?} (expected one of {})",
                REPORT_FILES.join(", ")
            ),
        ));
    }
    let p = st.jobs.run_dir(&j.id).file(&name);
    let bytes = web::block(move || std::fs::read(p)).await?.map_err(|_| {
        ApiError::not_found(
            "report_not_ready",
            format!("job {} has no {name} (yet)", j.id),
        )
    })?;
    Ok(HttpResponse::Ok()
        .content_type("image/png")
        .insert_header(("Cache-Control", "no-cache"))
        .body(bytes))
}
