//! `DELETE /v1/cluster/members/{id}`: an operator removes a member that is down for good (its
//! disk was lost, or it was retired), so that its id leaves the ring and the leaders move its
//! partitions' replicas to the other members (see [`serv_cluster::removed`]).
//!
//! Only a member every node of the request sees as down can be removed, never the node asked.
//! The removal is durable here before the answer, pushed to the other nodes that are up, and
//! pulled by each node from the others every [`SYNC_INTERVAL`], so a node that was down learns
//! it when it is back. It is audited.

use axum::Json;
use axum::extract::{Path, State};
use serv_actors::Directory;
use serv_cluster::membership::MemberState;
use serv_cluster::removed::RemovedMembers;

use super::{AdminState, ApiError, ErrorCode, audit};

/// How often a node pulls the removals the others know.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

type Removals = Vec<(String, u64)>;

impl crate::owned::Merged for RemovedMembers {
    type Sync = Removals;
    const NAME: &'static str = "members/removed";

    fn export(&self) -> Result<Removals, String> {
        Ok(self.list())
    }

    async fn merge(&self, removals: Removals) -> Result<usize, String> {
        RemovedMembers::merge(self, removals).await.map_err(|e| e.to_string())
    }
}

/// Shares this node's removals with the others and keeps pulling theirs.
pub fn replicate(directory: &Directory, removed: RemovedMembers) {
    crate::owned::keep_merged(directory, removed, SYNC_INTERVAL);
}

/// `DELETE /v1/cluster/members/{id}`: `{"removed": ID}`.
pub(super) async fn remove(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let outcome = removal(&state, &id).await;
    audit::recorded(&state, "remove-member", &id, outcome).await?;
    Ok(Json(serde_json::json!({ "removed": id })))
}

async fn removal(state: &AdminState, id: &str) -> Result<(), ApiError> {
    let (Some(removed), Some(members)) = (&state.inner.removed, &state.inner.members) else {
        return Err(ApiError::new(ErrorCode::NotFound, "this node runs no cluster"));
    };
    if id == state.inner.node.id {
        return Err(ApiError::new(ErrorCode::Conflict, "a node cannot remove itself; ask another member"));
    }
    if removed.contains(id) {
        return Ok(()); // removed before: DELETE is idempotent
    }
    let state_of = members.borrow().iter().find(|member| member.id == id).map(|member| member.state);
    match state_of {
        None => return Err(ApiError::new(ErrorCode::NotFound, format!("no member {id}"))),
        Some(MemberState::Down) => {}
        Some(other) => {
            let other = serde_json::to_value(other).ok().and_then(|v| v.as_str().map(str::to_string));
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "member {id} is {}; only a member that is down can be removed",
                    other.unwrap_or_default()
                ),
            ));
        }
    }
    let removal = vec![(id.to_string(), serv_actors::now_ms())];
    removed.merge(removal.clone()).await.map_err(|e| {
        tracing::error!(error = %e, "member removal not stored");
        ApiError::new(ErrorCode::Internal, "the removal could not be made durable")
    })?;
    tracing::warn!(member = %id, "member removed by an operator; its partitions move to the other members");
    crate::owned::push::<RemovedMembers>(&state.inner.directory, &removal).await;
    Ok(())
}
