//! Authorization: the one table of what each action needs. The CLI, the HTTP API and the web
//! UI all go through [`authorize`]; nothing else decides whether a user may act.
//!
//! Roles are ordered (viewer < contributor < approver < admin): an action needs its minimum
//! role or above. Rules that depend on the object acted on (no self-approval, publishing
//! someone else's change, built-in admin requirements) are governance's, on top of this.

use crate::domain::Role;
use serde::Serialize;

/// Who is acting, resolved against the workspace's users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// The user's name as declared in the workspace's users (or the OS user, or `local`,
    /// when the workspace declares none); recorded in audit entries and run history.
    pub user: String,
    /// The user's role, which every [`Action`] is checked against (admin when the workspace
    /// declares no users).
    pub role: Role,
}

/// Everything a user can ask backflow to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// List the syncs with their definitions and last runs.
    ListSyncs,
    /// Dry-run a sync (what a run would send now), or show a run's undo plan; sends nothing.
    PlanSync,
    /// Read a model's schema and first rows through its source.
    PreviewModel,
    /// List the plugins in the workspace's plugins directory.
    ListPlugins,
    /// Read run history: the list of runs and any one run record.
    ReadRuns,
    /// Read the audit log and the result of checking its hash chain.
    ReadAudit,
    /// Read change requests (proposed configuration changes) and their reviews.
    ReadChanges,
    /// See what the working copy changes against the published configuration.
    Diff,
    /// Run syncs, delivering their plans to the destinations.
    RunSync,
    /// Send one model row to a sync's destination and see its answer; records nothing.
    TestRow,
    /// Submit the working copy as a change request for review.
    SubmitChange,
    /// Approve someone's change request (governance forbids approving one's own).
    ApproveChange,
    /// Reject a change request.
    RejectChange,
    /// Publish an approved change request; runs starting afterwards use it.
    PublishChange,
    /// Approve a run held by an approval policy, releasing its reviewed plan for delivery.
    ApproveRun,
    /// Reject a run held for approval (`backflow runs reject`).
    RejectRun,
    /// Cancel a held run someone else started (`backflow runs cancel`); one's own needs only
    /// [`Action::RunSync`].
    CancelRun,
    /// Undo a delivered run by delivering its inverse plan.
    UndoRun,
    /// Read every retained run that touched one destination row of a sync.
    ReadRowHistory,
    /// Create, list and revoke one's own API tokens.
    ManageOwnTokens,
    /// Create, list and revoke anyone's API tokens.
    ManageTokens,
    /// Copy the whole state (every delivered row, tokens, the audit log) to a backup file.
    BackupState,
}

/// Action → the least role that may perform it, and how the action reads in a refusal.
pub const TABLE: &[(Action, Role, &str)] = &[
    (Action::ListSyncs, Role::Viewer, "list syncs"),
    (Action::PlanSync, Role::Viewer, "plan syncs"),
    (Action::PreviewModel, Role::Viewer, "preview models"),
    (Action::ListPlugins, Role::Viewer, "list plugins"),
    (Action::ReadRuns, Role::Viewer, "read run history"),
    (Action::ReadAudit, Role::Viewer, "read the audit log"),
    (Action::ReadChanges, Role::Viewer, "read changes"),
    (Action::Diff, Role::Viewer, "see the diff"),
    (Action::RunSync, Role::Contributor, "run syncs"),
    (Action::TestRow, Role::Contributor, "send test rows"),
    (Action::SubmitChange, Role::Contributor, "submit changes"),
    (Action::ApproveChange, Role::Approver, "approve changes"),
    (Action::RejectChange, Role::Approver, "reject changes"),
    (Action::PublishChange, Role::Contributor, "publish changes"),
    (Action::ApproveRun, Role::Approver, "approve runs"),
    (Action::RejectRun, Role::Approver, "reject held runs"),
    (
        Action::CancelRun,
        Role::Admin,
        "cancel held runs someone else started",
    ),
    (Action::UndoRun, Role::Approver, "undo runs"),
    (Action::ReadRowHistory, Role::Viewer, "read row history"),
    (
        Action::ManageOwnTokens,
        Role::Viewer,
        "manage their own API tokens",
    ),
    (
        Action::ManageTokens,
        Role::Admin,
        "manage other users' API tokens",
    ),
    (Action::BackupState, Role::Admin, "back up the state"),
];

impl Action {
    fn entry(self) -> (Role, &'static str) {
        TABLE
            .iter()
            .find(|(a, _, _)| *a == self)
            .map(|(_, role, what)| (*role, *what))
            .unwrap_or((Role::Admin, "do this"))
    }

    /// The least role that may perform this action.
    pub fn min_role(self) -> Role {
        self.entry().0
    }

    /// The action as it reads in a sentence ("run syncs").
    pub fn describe(self) -> &'static str {
        self.entry().1
    }
}

/// A refusal: who, what they are, what they tried and what it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{user} is a {role} and may not {action} (needs {needs} or above)", role = .role.as_str(), needs = .needs.as_str())]
pub struct Denied {
    /// The refused user's name.
    pub user: String,
    /// The role the user has.
    pub role: Role,
    /// What they tried, as it reads in a sentence ("run syncs").
    pub action: &'static str,
    /// The least role the action needs.
    pub needs: Role,
}

/// Whether `actor` may perform `action`.
pub fn authorize(actor: &Actor, action: Action) -> Result<(), Denied> {
    let needs = action.min_role();
    if actor.role >= needs {
        Ok(())
    } else {
        Err(Denied {
            user: actor.user.clone(),
            role: actor.role,
            action: action.describe(),
            needs,
        })
    }
}

/// Whether `actor` may perform `action`, for showing or hiding what they cannot use.
pub fn allowed(actor: &Actor, action: Action) -> bool {
    authorize(actor, action).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Action; 22] = [
        Action::ListSyncs,
        Action::PlanSync,
        Action::PreviewModel,
        Action::ListPlugins,
        Action::ReadRuns,
        Action::ReadAudit,
        Action::ReadChanges,
        Action::Diff,
        Action::RunSync,
        Action::TestRow,
        Action::SubmitChange,
        Action::ApproveChange,
        Action::RejectChange,
        Action::PublishChange,
        Action::ApproveRun,
        Action::RejectRun,
        Action::CancelRun,
        Action::UndoRun,
        Action::ReadRowHistory,
        Action::ManageOwnTokens,
        Action::ManageTokens,
        Action::BackupState,
    ];

    fn actor(role: Role) -> Actor {
        Actor {
            user: "ann".into(),
            role,
        }
    }

    #[test]
    fn every_action_is_in_the_table_once() {
        for action in ALL {
            assert_eq!(
                TABLE.iter().filter(|(a, _, _)| *a == action).count(),
                1,
                "{action:?}"
            );
        }
        assert_eq!(TABLE.len(), ALL.len());
    }

    #[test]
    fn roles_are_ordered_and_inherit() {
        for action in ALL {
            let needs = action.min_role();
            for role in [Role::Viewer, Role::Contributor, Role::Approver, Role::Admin] {
                assert_eq!(
                    allowed(&actor(role), action),
                    role >= needs,
                    "{role:?} {action:?}"
                );
            }
        }
    }

    #[test]
    fn viewers_read_contributors_run_approvers_review() {
        assert!(allowed(&actor(Role::Viewer), Action::ReadRuns));
        assert!(!allowed(&actor(Role::Viewer), Action::RunSync));
        assert!(allowed(&actor(Role::Contributor), Action::RunSync));
        assert!(!allowed(&actor(Role::Contributor), Action::ApproveRun));
        assert!(!allowed(&actor(Role::Contributor), Action::ApproveChange));
        assert!(allowed(&actor(Role::Approver), Action::ApproveChange));
    }

    #[test]
    fn a_refusal_names_user_role_action_and_need() {
        let e = authorize(&actor(Role::Viewer), Action::RunSync).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ann is a viewer and may not run syncs (needs contributor or above)"
        );
    }
}
