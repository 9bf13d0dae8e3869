//! Governance: who may do what, how a working copy becomes the published configuration
//! (change requests, approval policies, reviews), the run-time approval gate, and the audit
//! log entries for each of those steps.
//!
//! The workspace files are the working copy. Once the workspace declares `[users]`, runs use
//! the *published* configuration, kept in redb: a change request records the exact files
//! (and their hash), the approval policies decide what it needs, reviewers approve, and
//! publishing copies those files, only if the working copy still hashes the same.
//!
//! Users, roles and policies themselves come from the published configuration once there is
//! one: a contributor cannot make themselves an admin by editing their working copy.
//!
//! Which role may perform which action is [`crate::authz`]'s table, checked by the
//! application layer before it calls in here; this module applies governance's own rules
//! (self-approval, stale reviews, draft limits).
//!
//! - [`published`]: the published configuration, and which workspace a run (or a draft) uses;
//! - [`identity`]: where users come from, and resolving who is acting;
//! - [`diff`]: the working copy against the published configuration;
//! - [`policies`]: asking the approval policies, combining verdicts;
//! - [`builtin_rules`]: the requirements that hold whatever the policies say;
//! - [`plugin_changes`]: plugin builds as part of a change;
//! - [`change`]: change requests (submit, review, publish);
//! - [`report_markdown`]: a change (or the diff) as one Markdown comment for a pull request;
//! - [`verify`]: whether the working copy is exactly an approved (or the published) change;
//! - [`run_gate`]: runs held for approval, and approving them;
//! - [`notify`]: approval notifications.

pub mod builtin_rules;
pub mod change;
pub mod diff;
pub mod gate_record;
pub mod held_runs;
pub mod identity;
pub mod notify;
pub mod plugin_changes;
pub mod policies;
pub mod published;
pub mod report_markdown;
pub mod run_gate;
pub mod verify;

pub use crate::domain::{Role, MAX_TTL_MINUTES};
pub use change::{
    list_changes, short, show_change, ChangeError, ChangeRequest, ChangeStatus, PluginUnavailable,
};
// What changes state is reached only through the application layer, which authorizes it.
pub use builtin_rules::{BuiltInRule, PolicyWaiver, BUILT_IN_RULES};
pub(crate) use change::{publish, review, submit};
pub use diff::{diff, ConfigDiff, EntityChange, EntityChangeKind, SyncPlanCounts};
pub use gate_record::{GateStatus, RunGate};
pub(crate) use held_runs::close_held_run;
pub use held_runs::{CloseRunError, Closing};
pub use identity::{authority, identify, IdentifyError, Identity};
pub use notify::notify;
pub use plugin_changes::{PluginBuild, PluginBuildChange};
pub use policies::{describe_requirement, PolicyVerdict, Requirement, Review, ReviewVerdict};
pub use published::{
    published_workspace, workspace_for_run, Published, PublishedError, RunWorkspaceError,
};
pub(crate) use run_gate::approve_run;
pub use run_gate::{ApproveRunError, PolicyGate};
pub(crate) use verify::verify;
pub use verify::{Verification, VerifyError};
