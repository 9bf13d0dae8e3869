//! Signing in and out of the web UI, the signed-in user of a request, and the CSRF check
//! every state-changing form goes through.

use super::viewer::Viewer;
use super::{form, pages, Shared, UiError};
use crate::app::SessionGrant;
use crate::serve::http::{ApiState, Session};
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a browser session lasts.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const COOKIE: &str = "backflow_session";

/// Signing in and out.
pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness there is no safe session: fail the sign-in rather than guess.
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    hex::encode(bytes)
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
pub(super) fn viewer(s: &ApiState, headers: &HeaderMap) -> Result<Viewer, UiError> {
    let id = cookie_value(headers).ok_or(UiError::SignIn)?;
    let (grant, csrf) = s.sessions.get(&id).ok_or(UiError::SignIn)?;
    match s.app.session_actor(&grant) {
        Some(actor) => Ok(Viewer {
            actor,
            csrf,
            session: id,
        }),
        None => {
            s.sessions.remove(&id);
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
pub(super) trait Csrf {
    fn csrf(&self) -> &str;
}

/// The signed-in user and their form, once the form's CSRF token is the session's: every
/// state-changing UI request starts here, so none can forget the check.
pub(super) fn posted<T: Csrf>(
    s: &ApiState,
    headers: &HeaderMap,
    f: Result<Form<T>, FormRejection>,
) -> Result<(Viewer, T), UiError> {
    let v = viewer(s, headers)?;
    let f = form(f)?;
    check_csrf(&v, f.csrf())?;
    // The API's per-token limit on state-changing requests, for the token signed in with.
    if let Some((grant, _)) = s.sessions.get(&v.session) {
        let key = format!("ui-session-of-token:{}", grant.token_id);
        s.write_limiter.check(&key).map_err(|e| {
            UiError::TooManyRequests(
                e.retry_after_s(),
                format!(
                    "too many changes in a short time with this sign-in: try again in {} s",
                    e.retry_after_s()
                ),
            )
        })?;
    }
    Ok((v, f))
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
    let grant: SessionGrant = match s.app.authenticate_session(&token) {
        Ok(grant) => grant,
        Err(e) => {
            return (
                StatusCode::UNAUTHORIZED,
                Html(pages::login(Some(&format!("sign-in refused: {e}")))),
            )
                .into_response()
        }
    };
    let (id, csrf) = (random_hex(), random_hex());
    if id.is_empty() || csrf.is_empty() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(pages::login(Some("no randomness for a session; try again"))),
        )
            .into_response();
    }
    s.sessions.insert(
        id.clone(),
        Session {
            grant,
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
pub(super) struct CsrfForm {
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
    s.sessions.remove(&v.session);
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response())
}
