//! The configuration runs use, kept in memory: the published workspace is parsed once and
//! reused until the state says another configuration was published (a cheap read of the
//! stored stamp, not a parse), or until this [`App`] publishes one itself.

use super::{App, AppError};
use crate::governance;
use crate::workspace::{Governance, Workspace};
use serde::Deserialize;
use std::sync::{Arc, RwLock};

/// What identifies one publication: read from the state without the files it carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct PublishedStamp {
    config_hash: String,
    change_id: u64,
    published_at: String,
}

/// The published workspace last loaded, with the publication it was loaded from.
#[derive(Default)]
pub(super) struct PublishedCache(RwLock<Option<(PublishedStamp, Arc<Workspace>)>>);

impl App {
    /// The published workspace, if anything is published: from the cache while the state's
    /// publication is the one cached, else loaded (and cached) again.
    fn published_workspace(&self) -> Result<Option<Arc<Workspace>>, AppError> {
        let invalid = |e: String| AppError::Invalid(e);
        let stamp = self
            .state
            .published::<PublishedStamp>()
            .map_err(|e| invalid(e.to_string()))?;
        let Some(stamp) = stamp else {
            return Ok(None);
        };
        if let Some((cached, ws)) = &*self.published.0.read().unwrap_or_else(|e| e.into_inner()) {
            if *cached == stamp {
                return Ok(Some(ws.clone()));
            }
        }
        self.reload_published()
    }

    /// Loads the published configuration from the state and keeps it.
    pub(super) fn reload_published(&self) -> Result<Option<Arc<Workspace>>, AppError> {
        let loaded = governance::published_workspace(&self.root, &self.state)
            .map_err(|e| AppError::Invalid(e.to_string()))?;
        let mut cache = self.published.0.write().unwrap_or_else(|e| e.into_inner());
        let Some((published, ws)) = loaded else {
            *cache = None;
            return Ok(None);
        };
        let stamp = PublishedStamp {
            config_hash: published.config_hash,
            change_id: published.change_id,
            published_at: published.published_at,
        };
        let ws = Arc::new(ws);
        *cache = Some((stamp, ws.clone()));
        Ok(Some(ws))
    }

    /// The configuration runs use now: the published one when reviews are on (or once
    /// something was published with them), the working copy otherwise.
    pub fn runnable_workspace(&self) -> Result<Arc<Workspace>, AppError> {
        let published = self.published_workspace()?;
        let governed = self.working.governance.enabled()
            || published.as_ref().is_some_and(|ws| ws.governance.enabled());
        if !governed {
            return Ok(self.working.clone());
        }
        match published {
            Some(ws) => Ok(ws),
            // Governed with nothing published: governance says why nothing may run.
            None => governance::workspace_for_run(
                &self.root,
                &self.state,
                (*self.working).clone(),
                false,
                &[],
            )
            .map(Arc::new)
            .map_err(|e| AppError::Invalid(e.to_string())),
        }
    }

    /// Whether reviews are on and nothing is published yet: nothing may run until a first
    /// change is submitted, approved and published.
    pub fn awaiting_first_publish(&self) -> bool {
        self.working.governance.enabled() && matches!(self.published_workspace(), Ok(None))
    }

    /// The workspace a run (or a plan of one) uses: published unless `draft`. A draft is the
    /// working copy, checked against what is published (staging destinations, grants).
    pub(super) fn workspace_for(
        &self,
        draft: bool,
        syncs: &[String],
    ) -> Result<Arc<Workspace>, AppError> {
        if !draft {
            return self.runnable_workspace();
        }
        governance::workspace_for_run(
            &self.root,
            &self.state,
            (*self.working).clone(),
            true,
            syncs,
        )
        .map(Arc::new)
        .map_err(|e| AppError::Invalid(e.to_string()))
    }

    /// Where users, roles and policies come from: the published configuration, or the working
    /// copy until something is published.
    pub(super) fn authority(&self) -> Result<Governance, AppError> {
        Ok(match self.published_workspace() {
            Ok(Some(ws)) => ws.governance.clone(),
            Ok(None) => self.working.governance.clone(),
            Err(e) => return Err(AppError::Failed(e.to_string())),
        })
    }
}
