//! The web UI under `/ui`: server-rendered HTML (no JavaScript, no build step, no external
//! requests) over the same application layer as the API.
//!
//! Sign-in exchanges an API token for a session cookie (`HttpOnly`, `SameSite=Strict`,
//! eight hours). Every form that changes state carries the session's CSRF token, checked
//! before anything else; then the action goes through the one authorization table and the
//! audit log, exactly as from the CLI or the API. Buttons a user's role cannot use are not
//! shown, and a forged request for them is refused by the server all the same.

mod pages;

use super::api::{detached, trigger_as, ApiError, ApiState, MAX_COMMENT_BYTES};
use crate::app::{AppError, RunApproval, RunFilter};
use crate::authz::Actor;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a browser session lasts.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const COOKIE: &str = "backflow_session";
/// Runs per page of a sync's history.
const PAGE: usize = 50;

struct Session {
    user: String,
    token_id: String,
    csrf: String,
    expires: Instant,
}

/// Signed-in sessions, in memory: a restart of the service signs everyone out.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness there is no safe session: fail the sign-in rather than guess.
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    hex::encode(bytes)
}

/// The signed-in user of a request, with the session's CSRF token.
pub(crate) struct Viewer {
    pub actor: Actor,
    pub csrf: String,
    session: String,
}

type Shared = State<Arc<ApiState>>;

/// What a UI handler answers when it cannot go on: the sign-in page, or an error page.
enum UiError {
    SignIn,
    Page(StatusCode, String),
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn => Redirect::to("/ui/login").into_response(),
            UiError::Page(status, message) => {
                (status, Html(pages::error(status, &message))).into_response()
            }
        }
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Page(e.0, e.1)
    }
}

impl From<AppError> for UiError {
    fn from(e: AppError) -> Self {
        ApiError::from(e).into()
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

/// The session's user, resolved again against the configuration in force and its token
/// (a revoked token or a removed user ends the session).
fn viewer(s: &ApiState, headers: &HeaderMap) -> Result<Viewer, UiError> {
    let id = cookie_value(headers).ok_or(UiError::SignIn)?;
    let (user, token_id, csrf) = {
        let mut map = s.sessions.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, session| session.expires > Instant::now());
        let session = map.get(&id).ok_or(UiError::SignIn)?;
        (
            session.user.clone(),
            session.token_id.clone(),
            session.csrf.clone(),
        )
    };
    let token_ok = s
        .app
        .state()
        .token(&token_id)
        .ok()
        .flatten()
        .is_some_and(|t| t.revoked_at.is_none());
    let actor = if token_ok {
        s.app.actor(Some(&user)).ok()
    } else {
        None
    };
    match actor {
        Some(actor) => Ok(Viewer {
            actor,
            csrf,
            session: id,
        }),
        None => {
            s.sessions
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            Err(UiError::SignIn)
        }
    }
}

/// Refuses a state-changing form whose CSRF token is not the session's.
fn check_csrf(viewer: &Viewer, presented: &str) -> Result<(), UiError> {
    if viewer.csrf.is_empty() || presented != viewer.csrf {
        return Err(UiError::Page(StatusCode::FORBIDDEN, "this form is not from your session (missing or wrong CSRF token): reload the page and try again".into()));
    }
    Ok(())
}

/// A form that changes state: it carries the session's CSRF token.
trait Csrf {
    fn csrf(&self) -> &str;
}

/// The signed-in user and their form, once the form's CSRF token is the session's: every
/// state-changing UI request starts here, so none can forget the check.
fn posted<T: Csrf>(
    s: &ApiState,
    headers: &HeaderMap,
    f: Result<Form<T>, FormRejection>,
) -> Result<(Viewer, T), UiError> {
    let v = viewer(s, headers)?;
    let f = form(f)?;
    check_csrf(&v, f.csrf())?;
    Ok((v, f))
}

fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, UiError> {
    f.map(|Form(v)| v)
        .map_err(|e| UiError::Page(StatusCode::BAD_REQUEST, format!("form: {}", e.body_text())))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, UiError> {
    q.map(|Query(v)| v).map_err(|e| {
        UiError::Page(
            StatusCode::BAD_REQUEST,
            format!("query string: {}", e.body_text()),
        )
    })
}

pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui", get(syncs))
        .route("/ui/", get(syncs))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/syncs/{name}", get(sync_history))
        .route("/ui/syncs/{name}/confirm", get(confirm_run))
        .route("/ui/syncs/{name}/runs", post(run_sync))
        .route("/ui/runs/{id}", get(run_detail))
        .route("/ui/runs/{id}/approve", post(approve_run))
        .route("/ui/runs/{id}/undo", get(confirm_undo).post(undo_run))
        .route("/ui/syncs/{name}/rows", get(row_history))
        .route("/ui/approvals", get(approvals))
        .route("/ui/changes", get(changes))
        .route("/ui/changes/{id}", get(change_detail))
        .route("/ui/changes/{id}/review", post(review_change))
        .route("/ui/changes/{id}/publish", post(publish_change))
        .route("/ui/audit", get(audit))
}

async fn login_page() -> Html<String> {
    Html(pages::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(s): Shared,
    headers: HeaderMap,
    f: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    // Login CSRF: another site must not sign a browser in as someone else. Browsers say
    // where a form comes from; a cross-site one is refused.
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return (
            StatusCode::FORBIDDEN,
            Html(pages::login(Some(
                "sign-in refused: the form was sent from another site",
            ))),
        )
            .into_response();
    }
    let Ok(LoginForm { token }) = form(f) else {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::login(Some("send the form with a token"))),
        )
            .into_response();
    };
    let record = match s.app.state().authenticate_token(&token) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::UNAUTHORIZED,
                Html(pages::login(Some(&format!("sign-in refused: {e}")))),
            )
                .into_response()
        }
    };
    if let Err(e) = s.app.actor(Some(&record.user)) {
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(Some(&format!("sign-in refused: {e}")))),
        )
            .into_response();
    }
    let (id, csrf) = (random_hex(), random_hex());
    if id.is_empty() || csrf.is_empty() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::login(Some("no randomness for a session; try again"))),
        )
            .into_response();
    }
    s.sessions
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id.clone(),
            Session {
                user: record.user,
                token_id: record.id,
                csrf,
                expires: Instant::now() + SESSION_TTL,
            },
        );
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui")).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

impl Csrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn logout(
    State(s): Shared,
    headers: HeaderMap,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, _) = posted(&s, &headers, f)?;
    s.sessions
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&v.session);
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response())
}

async fn syncs(State(s): Shared, headers: HeaderMap) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let syncs = s.app.list_syncs(&v.actor)?;
    let mut rows = Vec::new();
    for sync in syncs {
        // Oldest first, for the sparkline.
        let mut delivered: Vec<u64> = s
            .app
            .runs(&v.actor, Some(&sync.name), 20)?
            .iter()
            .map(|r| r.delivered.total())
            .collect();
        delivered.reverse();
        rows.push((sync, delivered));
    }
    Ok(Html(pages::syncs(&v, &rows)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    before: Option<String>,
}

async fn sync_history(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    let summary = s
        .app
        .list_syncs(&v.actor)?
        .into_iter()
        .find(|x| x.name == name)
        .ok_or_else(|| UiError::Page(StatusCode::NOT_FOUND, format!("no sync named {name:?}")))?;
    let runs = s.app.runs_page(
        &v.actor,
        &RunFilter {
            sync: Some(name.clone()),
            status: None,
            before: q.before,
            limit: PAGE,
        },
    )?;
    let next = (runs.len() == PAGE)
        .then(|| runs.last().map(|r| r.run_id.clone()))
        .flatten();
    let (running, queued) = s.scheduler.status(&name);
    Ok(Html(pages::sync_history(
        &v,
        &summary,
        &runs,
        next.as_deref(),
        running,
        queued,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmQuery {
    #[serde(default)]
    full_resync: bool,
}

async fn confirm_run(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<ConfirmQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    crate::authz::authorize(&v.actor, crate::authz::Action::RunSync).map_err(ApiError::from)?;
    let plan = s.app.plan(&v.actor, &name, q.full_resync, false, 3).await?;
    Ok(Html(pages::confirm_run(&v, &name, q.full_resync, &plan)))
}

#[derive(Deserialize)]
struct RunForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    full_resync: Option<String>,
}

impl Csrf for RunForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn run_sync(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    f: Result<Form<RunForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let full_resync = f.full_resync.as_deref() == Some("true");
    trigger_as(
        &s,
        &v.actor,
        &name,
        full_resync,
        if full_resync {
            "ui: full resync"
        } else {
            "ui: run now"
        },
    )?;
    Ok(Redirect::to(&format!("/ui/syncs/{}", pages::path_segment(&name))).into_response())
}

async fn run_detail(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let run = s.app.run_record(&v.actor, &id)?;
    let gate = s
        .app
        .state()
        .run_gate::<crate::governance::RunGate>(&id)
        .ok()
        .flatten();
    Ok(Html(pages::run_detail(&v, &run, gate.as_ref())))
}

#[derive(Deserialize)]
struct CommentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    verdict: String,
}

impl Csrf for CommentForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn comment_of(f: &CommentForm) -> Result<Option<&str>, UiError> {
    if f.comment.len() > MAX_COMMENT_BYTES {
        return Err(UiError::Page(
            StatusCode::BAD_REQUEST,
            format!("comment: at most {MAX_COMMENT_BYTES} bytes"),
        ));
    }
    Ok(Some(f.comment.trim()).filter(|c| !c.is_empty()))
}

async fn approve_run(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<CommentForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let comment = comment_of(&f)?.map(str::to_string);
    let (app, actor, run_id) = (s.app.clone(), v.actor.clone(), id.clone());
    let approval =
        detached(async move { app.approve_run(&actor, &run_id, comment.as_deref()).await }).await?;
    let target = match approval {
        RunApproval::NeedsMore(_) => format!("/ui/runs/{}", pages::path_segment(&id)),
        RunApproval::Released(run) => format!("/ui/runs/{}", pages::path_segment(&run.run_id)),
    };
    Ok(Redirect::to(&target).into_response())
}

/// The confirmation of an undo: the inverse plan's counts, samples and conflicts.
async fn confirm_undo(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<super::api::UndoQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    crate::authz::authorize(&v.actor, crate::authz::Action::UndoRun).map_err(ApiError::from)?;
    let report = s.app.plan_undo(&v.actor, &id, q.force).await?;
    Ok(Html(pages::confirm_undo(&v, &report)))
}

#[derive(Deserialize)]
struct UndoForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    force: Option<String>,
}

impl Csrf for UndoForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn undo_run(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<UndoForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let (app, actor, force) = (
        s.app.clone(),
        v.actor.clone(),
        f.force.as_deref() == Some("true"),
    );
    let run = detached(async move { app.undo_run(&actor, &id, force).await }).await?;
    Ok(Redirect::to(&format!("/ui/runs/{}", pages::path_segment(&run.run_id))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowQuery {
    #[serde(default)]
    key: String,
}

async fn row_history(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<RowQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    let history = if q.key.trim().is_empty() {
        None
    } else {
        Some(s.app.row_history(&v.actor, &name, q.key.trim(), false)?)
    };
    Ok(Html(pages::row_history(
        &v,
        &name,
        &q.key,
        history.as_ref(),
    )))
}

async fn approvals(State(s): Shared, headers: HeaderMap) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let held = s.app.runs_page(
        &v.actor,
        &RunFilter {
            sync: None,
            status: Some(crate::domain::RunStatus::AwaitingApproval),
            before: None,
            limit: 200,
        },
    )?;
    let mut waiting = Vec::new();
    for run in held {
        if let Some(gate) = s
            .app
            .state()
            .run_gate::<crate::governance::RunGate>(&run.run_id)
            .ok()
            .flatten()
        {
            if gate.status == crate::governance::GateStatus::Waiting {
                waiting.push((run, gate));
            }
        }
    }
    Ok(Html(pages::approvals(&v, &waiting)))
}

async fn changes(State(s): Shared, headers: HeaderMap) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let list = s.app.list_changes(&v.actor, 200)?;
    Ok(Html(pages::changes(&v, &list)))
}

fn change_id(text: &str) -> Result<u64, UiError> {
    text.parse().map_err(|_| {
        UiError::Page(
            StatusCode::BAD_REQUEST,
            format!("change id: {text:?} is not a number"),
        )
    })
}

async fn change_detail(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let change = s.app.change(&v.actor, change_id(&id)?)?;
    Ok(Html(pages::change_detail(&v, &change)))
}

async fn review_change(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<CommentForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let approve = match f.verdict.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(UiError::Page(
                StatusCode::BAD_REQUEST,
                format!("verdict: {other:?} is neither approve nor reject"),
            ))
        }
    };
    let id = change_id(&id)?;
    s.app
        .review_change(&v.actor, id, approve, comment_of(&f)?)?;
    Ok(Redirect::to(&format!("/ui/changes/{id}")).into_response())
}

async fn publish_change(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, _) = posted(&s, &headers, f)?;
    let id = change_id(&id)?;
    s.app.publish_change(&v.actor, id).await?;
    Ok(Redirect::to(&format!("/ui/changes/{id}")).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    action: String,
}

async fn audit(
    State(s): Shared,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    let log = s.app.audit(&v.actor)?;
    let entries: Vec<_> = log
        .entries
        .iter()
        .rev()
        .filter(|e| q.user.is_empty() || e.event.user == q.user)
        .filter(|e| q.action.is_empty() || e.event.action.starts_with(&q.action))
        .take(500)
        .cloned()
        .collect();
    Ok(Html(pages::audit(
        &v,
        &entries,
        log.broken_at,
        &q.user,
        &q.action,
    )))
}
