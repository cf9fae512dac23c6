//! Approval holds: a decision and a consumption are each one conditional `UPDATE … WHERE
//! <still allowed at now> RETURNING`, so of two racing deciders or consumers exactly one
//! wins and the other sees the state the winner left.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::PgStore;
use super::conn::Tx;
use super::rows::{after, all, col, col_enum, col_object, enum_str, limit, page};
use crate::model::approval::{Approval, ApprovalState};
use crate::model::authority::AuthorityRecord;
use crate::store::approvals::{ApprovalDecision, ApprovalStore, ApprovalUpdate, IssuedApproval};
use crate::store::{Page, PageRequest, StoreError, StoreResult};

macro_rules! approval_cols {
    () => {
        "id, zone_id, session_id, principal_id, application_id, approval_type, tier, \
         approver_class, privacy_mode, subject_anchor, binding, metadata_json, decision_reason, \
         approver_subject_id, created_at, expires_at, satisfied_at, rejected_at, consumed_at, \
         consumed_authority_record_id, approver_session_id"
    };
}

fn approval(row: &Row) -> StoreResult<Approval> {
    const E: &str = "approval";
    Ok(Approval {
        id: col(row, E, "id")?,
        zone_id: col(row, E, "zone_id")?,
        session_id: col(row, E, "session_id")?,
        principal_id: col(row, E, "principal_id")?,
        application_id: col(row, E, "application_id")?,
        approval_type: col(row, E, "approval_type")?,
        tier: col(row, E, "tier")?,
        approver_class: col_enum(row, E, "approver_class")?,
        privacy_mode: col_enum(row, E, "privacy_mode")?,
        subject_anchor: col(row, E, "subject_anchor")?,
        binding: col(row, E, "binding")?,
        metadata_json: col_object(row, E, "metadata_json")?,
        decision_reason: col(row, E, "decision_reason")?,
        approver_subject_id: col(row, E, "approver_subject_id")?,
        created_at: col(row, E, "created_at")?,
        expires_at: col(row, E, "expires_at")?,
        satisfied_at: col(row, E, "satisfied_at")?,
        rejected_at: col(row, E, "rejected_at")?,
        consumed_at: col(row, E, "consumed_at")?,
        consumed_authority_record_id: col(row, E, "consumed_authority_record_id")?,
        approver_session_id: col(row, E, "approver_session_id")?,
    })
}

/// The state of a hold at `$n`, in SQL, with [`Approval::state`]'s precedence
/// (consumed > rejected > expired > approved > pending).
macro_rules! state_at {
    ($now:literal) => {
        concat!(
            "(CASE WHEN consumed_at IS NOT NULL THEN 'consumed' \
                   WHEN rejected_at IS NOT NULL THEN 'rejected' \
                   WHEN expires_at <= ",
            $now,
            " THEN 'expired' \
                   WHEN satisfied_at IS NOT NULL THEN 'approved' \
                   ELSE 'pending' END)"
        )
    };
}

impl PgStore {
    /// After a conditional update did not land: `NotFound`, or the hold's state at `now`.
    async fn not_allowed(
        &self,
        zone_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate> {
        match self.get_approval(zone_id, id).await? {
            Some(current) => Ok(ApprovalUpdate::NotAllowed(current.state(now))),
            None => Err(StoreError::not_found("approval")),
        }
    }
}

#[async_trait]
impl ApprovalStore for PgStore {
    async fn insert_approval(&self, a: &Approval) -> StoreResult<()> {
        self.bounded("insert_approval", async {
            let approver_class = enum_str(&a.approver_class)?;
            let privacy_mode = enum_str(&a.privacy_mode)?;
            let metadata = serde_json::Value::Object(a.metadata_json.clone());
            let conn = self.conn().await?;
            conn.exec(
                concat!(
                    "INSERT INTO approvals (", approval_cols!(), ") VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
                ),
                &[
                    &a.id,
                    &a.zone_id,
                    &a.session_id,
                    &a.principal_id,
                    &a.application_id,
                    &a.approval_type,
                    &a.tier,
                    &approver_class,
                    &privacy_mode,
                    &a.subject_anchor,
                    &a.binding,
                    &metadata,
                    &a.decision_reason,
                    &a.approver_subject_id,
                    &a.created_at,
                    &a.expires_at,
                    &a.satisfied_at,
                    &a.rejected_at,
                    &a.consumed_at,
                    &a.consumed_authority_record_id,
                    &a.approver_session_id,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn get_approval(&self, zone_id: &str, id: &str) -> StoreResult<Option<Approval>> {
        self.bounded("get_approval", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    approval_cols!(),
                    " FROM approvals WHERE zone_id = $1 AND id = $2"
                ),
                &[&zone_id, &id],
            )
            .await?
            .as_ref()
            .map(approval)
            .transpose()
        })
        .await
    }

    async fn find_live_approval(
        &self,
        zone_id: &str,
        principal_id: &str,
        session_id: &str,
        binding: &str,
    ) -> StoreResult<Option<Approval>> {
        self.bounded("find_live_approval", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!(
                    "SELECT ",
                    approval_cols!(),
                    " FROM approvals \
                     WHERE zone_id = $1 AND principal_id = $2 AND session_id = $3 \
                       AND binding = $4 AND consumed_at IS NULL"
                ),
                &[&zone_id, &principal_id, &session_id, &binding],
            )
            .await?
            .as_ref()
            .map(approval)
            .transpose()
        })
        .await
    }

    async fn list_approvals(
        &self,
        zone_id: &str,
        state: Option<ApprovalState>,
        now: DateTime<Utc>,
        req: &PageRequest,
    ) -> StoreResult<Page<Approval>> {
        self.bounded("list_approvals", async {
            let state = state.as_ref().map(enum_str).transpose()?;
            let conn = self.conn().await?;
            let (at, id) = after(req);
            let rows = conn
                .rows(
                    concat!(
                        "SELECT ", approval_cols!(), " FROM approvals \
                         WHERE zone_id = $1 \
                           AND ($2::text IS NULL OR ", state_at!("$3::timestamptz"), " = $2::text) \
                           AND ($4::timestamptz IS NULL OR (created_at, id) < ($4::timestamptz, $5::text)) \
                         ORDER BY created_at DESC, id DESC LIMIT $6"
                    ),
                    &[&zone_id, &state, &now, &at, &id, &limit(req.limit)?],
                )
                .await?;
            Ok(page(all(&rows, approval)?, req.limit, |a| {
                (a.created_at, a.id.clone())
            }))
        })
        .await
    }

    async fn decide_approval(
        &self,
        zone_id: &str,
        id: &str,
        decision: &ApprovalDecision,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate> {
        self.bounded("decide_approval", async {
            let landed = {
                let conn = self.conn().await?;
                conn.row_opt(
                    concat!(
                        "UPDATE approvals SET \
                           satisfied_at = CASE WHEN $3 THEN $6::timestamptz END, \
                           rejected_at = CASE WHEN $3 THEN NULL ELSE $6::timestamptz END, \
                           decision_reason = $4, approver_subject_id = $5, \
                           approver_session_id = $7 \
                         WHERE zone_id = $1 AND id = $2 \
                           AND consumed_at IS NULL AND rejected_at IS NULL \
                           AND satisfied_at IS NULL AND expires_at > $6 \
                         RETURNING ",
                        approval_cols!()
                    ),
                    &[
                        &zone_id,
                        &id,
                        &decision.approve,
                        &decision.reason,
                        &decision.approver_subject_id,
                        &now,
                        &decision.approver_session_id,
                    ],
                )
                .await?
            };
            match landed {
                Some(row) => Ok(ApprovalUpdate::Applied(approval(&row)?)),
                None => self.not_allowed(zone_id, id, now).await,
            }
        })
        .await
    }

    async fn consume_approval(
        &self,
        zone_id: &str,
        id: &str,
        authority_record_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate> {
        self.bounded("consume_approval", async {
            let landed = {
                let conn = self.conn().await?;
                conn.row_opt(
                    concat!(
                        "UPDATE approvals SET consumed_at = $4, consumed_authority_record_id = $3 \
                         WHERE zone_id = $1 AND id = $2 \
                           AND consumed_at IS NULL AND rejected_at IS NULL \
                           AND satisfied_at IS NOT NULL AND expires_at > $4 \
                         RETURNING ",
                        approval_cols!()
                    ),
                    &[&zone_id, &id, &authority_record_id, &now],
                )
                .await?
            };
            match landed {
                Some(row) => Ok(ApprovalUpdate::Applied(approval(&row)?)),
                None => self.not_allowed(zone_id, id, now).await,
            }
        })
        .await
    }

    async fn issue_approval(
        &self,
        a: &Approval,
        now: DateTime<Utc>,
    ) -> StoreResult<IssuedApproval> {
        self.bounded("issue_approval", async {
            let approver_class = enum_str(&a.approver_class)?;
            let privacy_mode = enum_str(&a.privacy_mode)?;
            let metadata = serde_json::Value::Object(a.metadata_json.clone());
            // The live row can be consumed between a refused insert and the read that
            // follows; the insert is then simply tried again (a bounded number of times).
            for _ in 0..3 {
                let mut tx = Tx::begin(self.conn().await?).await?;
                tx.exec(
                    "DELETE FROM approvals \
                     WHERE zone_id = $1 AND principal_id = $2 AND session_id = $3 \
                       AND binding = $4 AND consumed_at IS NULL AND expires_at <= $5",
                    &[&a.zone_id, &a.principal_id, &a.session_id, &a.binding, &now],
                )
                .await?;
                let inserted = tx
                    .row_opt(
                        concat!(
                            "INSERT INTO approvals (",
                            approval_cols!(),
                            ") VALUES \
                             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                              $16, $17, $18, $19, $20, $21) \
                             ON CONFLICT (zone_id, principal_id, session_id, binding) \
                               WHERE consumed_at IS NULL DO NOTHING \
                             RETURNING ",
                            approval_cols!()
                        ),
                        &[
                            &a.id,
                            &a.zone_id,
                            &a.session_id,
                            &a.principal_id,
                            &a.application_id,
                            &a.approval_type,
                            &a.tier,
                            &approver_class,
                            &privacy_mode,
                            &a.subject_anchor,
                            &a.binding,
                            &metadata,
                            &a.decision_reason,
                            &a.approver_subject_id,
                            &a.created_at,
                            &a.expires_at,
                            &a.satisfied_at,
                            &a.rejected_at,
                            &a.consumed_at,
                            &a.consumed_authority_record_id,
                            &a.approver_session_id,
                        ],
                    )
                    .await?;
                let (row, created) = match inserted {
                    Some(row) => (Some(row), true),
                    None => (
                        tx.row_opt(
                            concat!(
                                "SELECT ",
                                approval_cols!(),
                                " FROM approvals \
                                 WHERE zone_id = $1 AND principal_id = $2 AND session_id = $3 \
                                   AND binding = $4 AND consumed_at IS NULL"
                            ),
                            &[&a.zone_id, &a.principal_id, &a.session_id, &a.binding],
                        )
                        .await?,
                        false,
                    ),
                };
                let Some(row) = row else {
                    continue;
                };
                let approval = approval(&row)?;
                tx.commit().await?;
                return Ok(IssuedApproval { approval, created });
            }
            Err(StoreError::Unavailable {
                retryable: true,
                message: "approval hold kept changing while it was issued".to_owned(),
            })
        })
        .await
    }

    async fn get_approval_any_zone(&self, id: &str) -> StoreResult<Option<Approval>> {
        self.bounded("get_approval_any_zone", async {
            let conn = self.conn().await?;
            conn.row_opt(
                concat!("SELECT ", approval_cols!(), " FROM approvals WHERE id = $1"),
                &[&id],
            )
            .await?
            .as_ref()
            .map(approval)
            .transpose()
        })
        .await
    }

    async fn consume_into(
        &self,
        zone_id: &str,
        id: &str,
        r: &AuthorityRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<ApprovalUpdate> {
        if r.zone_id != zone_id {
            return Err(StoreError::Invalid(
                "the consuming authority record belongs to another zone".to_owned(),
            ));
        }
        self.bounded("consume_into", async {
            let status = enum_str(&r.status)?;
            let landed = {
                // The record goes in first (the hold's consumed_authority_record_id
                // references it); when the consume does not land the transaction is
                // dropped, which rolls the insert back.
                let mut tx = Tx::begin(self.conn().await?).await?;
                tx.exec(
                    "INSERT INTO authority_records (id, zone_id, session_type, subject_id, \
                       parent_id, status, expires_at, authenticated_at, claims_json, revoked_at, \
                       revoked_reason, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    &[
                        &r.id,
                        &r.zone_id,
                        &r.session_type.as_str(),
                        &r.subject_id,
                        &r.parent_id,
                        &status,
                        &r.expires_at,
                        &r.authenticated_at,
                        &r.claims_json,
                        &r.revoked_at,
                        &r.revoked_reason,
                        &r.created_at,
                    ],
                )
                .await?;
                let row = tx
                    .row_opt(
                        concat!(
                            "UPDATE approvals SET consumed_at = $4, consumed_authority_record_id = $3 \
                             WHERE zone_id = $1 AND id = $2 \
                               AND consumed_at IS NULL AND rejected_at IS NULL \
                               AND satisfied_at IS NOT NULL AND approver_subject_id IS NOT NULL \
                               AND expires_at > $4 \
                               AND (session_id = '' OR EXISTS ( \
                                     SELECT 1 FROM authority_records ar \
                                      WHERE ar.zone_id = approvals.zone_id \
                                        AND ar.id = approvals.session_id \
                                        AND ar.status = 'active' AND ar.expires_at > $4)) \
                             RETURNING ",
                            approval_cols!()
                        ),
                        &[&zone_id, &id, &r.id, &now],
                    )
                    .await?;
                match row {
                    Some(row) => {
                        let updated = approval(&row)?;
                        tx.commit().await?;
                        Some(updated)
                    }
                    None => None,
                }
            };
            match landed {
                Some(updated) => Ok(ApprovalUpdate::Applied(updated)),
                None => self.not_allowed(zone_id, id, now).await,
            }
        })
        .await
    }
}
