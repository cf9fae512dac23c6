//! Shared fixture of the Coordinator tests: one zone with two applications, their subject
//! records and two resources, on any store that implements every trait the Coordinator
//! reads (memory or Postgres).

#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use caracal_core::coordinator::{
    Caller, Coordinator, CoordinatorError, CreateDelegation, Limits, StartSession,
};
use caracal_core::ids::UuidV7;
use caracal_core::model::Attribution;
use caracal_core::model::application::{Application, RegistrationMethod};
use caracal_core::model::authority::{AuthorityRecord, AuthorityStatus, SubjectType};
use caracal_core::model::delegation::DelegationEdge;
use caracal_core::model::resource::{OperationEnforcement, Resource};
use caracal_core::model::session::{Lifecycle, Session};
use caracal_core::model::zone::Zone;
use caracal_core::store::authority::AuthorityStore;
use caracal_core::store::coordinator::CoordinatorStore;
use caracal_core::store::directory::{ApplicationStore, ResourceStore, ZoneStore};
use caracal_core::store::outbox::{OutboxRow, OutboxStore};

/// Every store trait the fixture and the Coordinator need.
pub trait AllStores:
    CoordinatorStore + ApplicationStore + AuthorityStore + ResourceStore + OutboxStore + ZoneStore
{
}
impl<T> AllStores for T where
    T: CoordinatorStore
        + ApplicationStore
        + AuthorityStore
        + ResourceStore
        + OutboxStore
        + ZoneStore
{
}

/// A fresh id.
pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// The fixture.
pub struct Fx<S: AllStores + 'static> {
    pub store: Arc<S>,
    pub co: Coordinator,
    pub zone: String,
    pub t0: DateTime<Utc>,
    /// Application A and its user record + bootstrap (application) record.
    pub app_a: String,
    pub rec_a: String,
    pub boot_a: String,
    /// Application B and its user record + bootstrap record.
    pub app_b: String,
    pub rec_b: String,
    pub boot_b: String,
    /// DCR application and its record.
    pub app_dcr: String,
    pub rec_dcr: String,
    /// `resource://r1` (read, write, admin) and `resource://r2` (read, write).
    pub r1: Resource,
    pub r2: Resource,
}

fn app(zone: &str, name: &str, method: RegistrationMethod, t: DateTime<Utc>) -> Application {
    Application {
        id: new_id(),
        zone_id: zone.to_owned(),
        name: name.to_owned(),
        registration_method: method,
        traits: vec![],
        expires_at: (method == RegistrationMethod::Dcr).then(|| t + Duration::hours(100)),
        archived_at: None,
        attribution: Attribution::created_by("admin:test"),
        created_at: t,
        updated_at: t,
        client_secret_hash: None,
    }
}

/// An active record of `kind` for `subject`, valid for 100 h.
pub fn record(zone: &str, kind: SubjectType, subject: &str, t: DateTime<Utc>) -> AuthorityRecord {
    AuthorityRecord {
        id: new_id(),
        zone_id: zone.to_owned(),
        session_type: kind,
        subject_id: subject.to_owned(),
        parent_id: None,
        status: AuthorityStatus::Active,
        expires_at: t + Duration::hours(100),
        authenticated_at: Some(t),
        claims_json: json!({}),
        revoked_at: None,
        revoked_reason: None,
        created_at: t,
    }
}

fn resource(zone: &str, ident: &str, scopes: &[&str], t: DateTime<Utc>) -> Resource {
    Resource {
        id: new_id(),
        zone_id: zone.to_owned(),
        name: ident.to_owned(),
        identifier: ident.to_owned(),
        upstream_url: Some("https://upstream.example".into()),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        credential_provider_id: None,
        operations: vec![],
        operation_enforcement: OperationEnforcement::Enforced,
        attribution: Attribution::created_by("admin:test"),
        created_at: t,
        updated_at: t,
        archived_at: None,
    }
}

impl<S: AllStores + 'static> Fx<S> {
    /// Provision the zone, applications, records and resources on `store`.
    pub async fn new(store: Arc<S>, t0: DateTime<Utc>, limits: Limits) -> Self {
        let zone = new_id();
        store
            .insert_zone(&Zone {
                id: zone.clone(),
                name: "Coordinator zone".into(),
                slug: format!("co-{}", &zone[zone.len() - 8..]),
                dcr_enabled: true,
                operator_coauthor_badge: false,
                operator_governed: false,
                attribution: Attribution::created_by("admin:test"),
                created_at: t0,
                updated_at: t0,
                archived_at: None,
            })
            .await
            .unwrap();
        let a = app(&zone, "app-a", RegistrationMethod::Managed, t0);
        let b = app(&zone, "app-b", RegistrationMethod::Managed, t0);
        let d = app(&zone, "app-dcr", RegistrationMethod::Dcr, t0);
        for x in [&a, &b, &d] {
            store.insert_application(x).await.unwrap();
        }
        let rec_a = record(&zone, SubjectType::User, "alice", t0);
        let boot_a = record(&zone, SubjectType::Application, &a.id, t0);
        let rec_b = record(&zone, SubjectType::User, "bob", t0);
        let boot_b = record(&zone, SubjectType::Application, &b.id, t0);
        let rec_dcr = record(&zone, SubjectType::User, "dora", t0);
        for r in [&rec_a, &boot_a, &rec_b, &boot_b, &rec_dcr] {
            store.insert_authority(r).await.unwrap();
        }
        let r1 = resource(&zone, "resource://r1", &["read", "write", "admin"], t0);
        let r2 = resource(&zone, "resource://r2", &["read", "write"], t0);
        store.insert_resource(&r1).await.unwrap();
        store.insert_resource(&r2).await.unwrap();
        let co = Coordinator::new(
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            Arc::new(UuidV7),
        )
        .with_limits(limits);
        Self {
            store,
            co,
            zone,
            t0,
            app_a: a.id,
            rec_a: rec_a.id,
            boot_a: boot_a.id,
            app_b: b.id,
            rec_b: rec_b.id,
            boot_b: boot_b.id,
            app_dcr: d.id,
            rec_dcr: rec_dcr.id,
            r1,
            r2,
        }
    }

    /// Application A's caller (bootstrap record as `sid`).
    pub fn caller_a(&self) -> Caller {
        Caller::application(
            self.app_a.clone(),
            Some(self.boot_a.clone()),
            ["agent:lifecycle"],
        )
    }

    /// Application B's caller.
    pub fn caller_b(&self) -> Caller {
        Caller::application(
            self.app_b.clone(),
            Some(self.boot_b.clone()),
            ["agent:lifecycle"],
        )
    }

    /// A start request for `app` under `record`.
    pub fn start_req(&self, app: &str, record: &str) -> StartSession {
        StartSession {
            application_id: app.to_owned(),
            subject_session_id: Some(record.to_owned()),
            ..StartSession::default()
        }
    }

    /// Start a root task session of application A (as operator-grade caller A).
    pub async fn task_a(&self) -> Session {
        self.co
            .start_session(
                &self.zone,
                &self.caller_a(),
                &self.start_req(&self.app_a, &self.rec_a),
                self.t0,
            )
            .await
            .unwrap()
            .session
    }

    /// Start a root task session of application B.
    pub async fn task_b(&self) -> Session {
        self.co
            .start_session(
                &self.zone,
                &self.caller_b(),
                &self.start_req(&self.app_b, &self.rec_b),
                self.t0,
            )
            .await
            .unwrap()
            .session
    }

    /// Start a child of `parent` for application `app` (caller owns `app`).
    pub async fn child(
        &self,
        caller: &Caller,
        app: &str,
        record: &str,
        parent: &str,
        lifecycle: Lifecycle,
    ) -> Result<caracal_core::coordinator::StartedSession, CoordinatorError> {
        let mut req = self.start_req(app, record);
        req.parent_id = Some(parent.to_owned());
        req.lifecycle = lifecycle;
        self.co
            .start_session(&self.zone, caller, &req, self.t0)
            .await
    }

    /// A delegation request `src → dst` on r1 with `scopes`, TTL 600 s and `constraints`.
    pub fn edge_req(
        &self,
        src: &Session,
        dst: &Session,
        scopes: &[&str],
        constraints: Value,
    ) -> CreateDelegation {
        let constraints: Map<String, Value> = match constraints {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        CreateDelegation {
            source_session_id: src.agent_session_id.clone(),
            target_session_id: dst.agent_session_id.clone(),
            issuer_application_id: src.application_id.clone(),
            receiver_application_id: dst.application_id.clone(),
            parent_edge_id: None,
            resource_id: Some(self.r1.id.clone()),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            constraints,
            expires_at: None,
            ttl_seconds: Some(600),
        }
    }

    /// Create an edge as an admin caller; panics on refusal.
    pub async fn edge(&self, req: &CreateDelegation) -> DelegationEdge {
        self.co
            .create_delegation(&self.zone, &Caller::operator(), req, self.t0)
            .await
            .unwrap()
            .edge
    }

    /// Every outbox row enqueued so far (claimed in one batch far in the future).
    pub async fn outbox(&self) -> Vec<OutboxRow> {
        let far = self.t0 + Duration::days(365);
        self.store
            .claim("test", 10_000, Duration::hours(1), far)
            .await
            .unwrap()
    }
}

/// The value of field `k` of an outbox row.
pub fn field<'a>(row: &'a OutboxRow, k: &str) -> Option<&'a str> {
    row.message
        .fields
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}
