//! The UI's plugins page: each plugin file the service knows, with its status as
//! `GET /api/v1/plugins` gives it — `serving`, `refused` (with why; the previous build, if
//! any, keeps serving), `removed` — and `awaiting publish` with the new build's hash while
//! the published configuration pins another.

use super::session::viewer;
use super::viewer::Viewer;
use super::{pages, Shared, UiError};
use crate::app::{PluginFileState, PluginListing};
use crate::serve::http::ApiState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use std::sync::Arc;

/// The plugins page.
pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/ui/plugins", get(plugins))
}

async fn plugins(State(s): Shared, headers: HeaderMap) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let listed = s.app.plugin_statuses(&v.actor)?;
    Ok(Html(page(&v, &listed)))
}

fn state_name(p: &PluginListing) -> &'static str {
    match (p.status.status, &p.status.awaiting_publish) {
        (PluginFileState::Serving, Some(_)) => "awaiting_publish",
        (PluginFileState::Serving, None) => "serving",
        (PluginFileState::Refused, _) => "refused",
        (PluginFileState::Removed, _) => "removed",
    }
}

fn short(hash: &Option<String>) -> &str {
    hash.as_deref().map(crate::governance::short).unwrap_or("–")
}

fn row(p: &PluginListing) -> Markup {
    let st = &p.status;
    let file = st
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| st.file.display().to_string());
    let state = state_name(p);
    html! {
        tr.plugin data-file=(file) data-status=(state) {
            td { code { (file) } }
            td { (st.name.as_deref().unwrap_or("–")) " " (st.version.as_deref().unwrap_or("")) }
            td { (st.kind.as_deref().unwrap_or("–")) }
            td.state { (pages::status_badge(state)) }
            td { code { (short(&st.sha256)) } }
            td.detail {
                @if let Some(e) = &st.error { span.refusal { (e) } }
                @if let Some(new) = &st.awaiting_publish {
                    span.awaiting { "new build " code { (crate::governance::short(new)) } " loaded; runs use the published " code { (short(&st.published_pin)) } " until a change publishing it is approved" }
                }
            }
            td { (st.loaded_at) }
        }
    }
}

fn page(v: &Viewer, listed: &[PluginListing]) -> String {
    pages::page(
        v,
        "Plugins",
        html! {
            @if listed.is_empty() {
                p.note { "The service has loaded no plugin file yet." }
            } @else {
                table #plugins {
                    tr { th { "File" } th { "Plugin" } th { "Kind" } th { "Status" } th { "Serving (sha256)" } th { "Detail" } th { "Looked at" } }
                    @for p in listed { (row(p)) }
                }
            }
        },
    )
}
