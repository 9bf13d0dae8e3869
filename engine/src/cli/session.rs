//! Opening the workspace for a command: the application layer and who is acting.

use backflow::app::App;
use backflow::authz::Actor;
use std::path::Path;

/// Opens the workspace and resolves who is acting: every command that reads or changes the
/// workspace goes through the application layer with this actor.
pub(crate) fn open_app(cli_workspace: &Path, user: Option<&str>) -> anyhow::Result<(App, Actor)> {
    let app = App::open(cli_workspace)?;
    let actor = app.actor(user)?;
    Ok((app, actor))
}
