//! `provision`: a complete demo world through the Admin API, in the order a newcomer would
//! build it, ending only when the STS serves the new policy.
//!
//! The world: one zone; one managed application (`agent`) with its client secret; an
//! `api_key` provider whose key the Gateway injects as `X-Api-Key`; a transport-uniform
//! resource at the given upstream with the given scopes; and an active policy (a data
//! document) in which the application owns the resource and the session labels
//! `orchestrator` and `worker` hold roles granting every scope of the resource. Narrowing is
//! then the delegation's business: a delegated mint can never exceed the edge's scopes.

use std::time::Duration;

use super::ApiError;
use super::admin::{Admin, ResourceSpec};
use super::sts::{Client, Sts};

/// The session label of the parent (delegating) session.
pub const PARENT_LABEL: &str = "orchestrator";
/// The session label of the child (receiving) session.
pub const CHILD_LABEL: &str = "worker";

/// What to provision.
#[derive(Debug, Clone)]
pub struct WorldSpec<'a> {
    /// Makes names unique (zones, resources and providers are unique per name or identifier).
    pub tag: &'a str,
    /// Where the resource's Gateway traffic goes.
    pub upstream_url: &'a str,
    /// The resource's scopes (non-empty; the policy grants them all to both labels).
    pub scopes: &'a [&'a str],
    /// The provider's secret API key.
    pub provider_key: &'a str,
    /// How long to wait for the STS to serve the activated policy.
    pub policy_wait: Duration,
}

/// Everything a caller needs to act in the provisioned world. `Debug` hides the secrets.
#[derive(Clone)]
pub struct World {
    /// The zone id.
    pub zone_id: String,
    /// The application's STS credentials (zone, id, client secret).
    pub client: Client,
    /// The provider id.
    pub provider_id: String,
    /// The provider's secret API key (what the upstream must receive).
    pub provider_key: String,
    /// The resource row id.
    pub resource_id: String,
    /// The resource identifier (`resource://…`).
    pub resource: String,
    /// The resource's scopes.
    pub scopes: Vec<String>,
    /// The policy id.
    pub policy_id: String,
    /// The policy version id.
    pub policy_version_id: String,
    /// The policy set id.
    pub policy_set_id: String,
    /// The active policy set version id.
    pub policy_set_version_id: String,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("zone_id", &self.zone_id)
            .field("client", &self.client)
            .field("provider_id", &self.provider_id)
            .field("resource_id", &self.resource_id)
            .field("resource", &self.resource)
            .field("policy_set_version_id", &self.policy_set_version_id)
            .finish_non_exhaustive()
    }
}

/// A provisioning step, reported as it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The zone exists.
    Zone,
    /// The application and its client secret exist.
    Application,
    /// The provider (with its sealed key) exists.
    Provider,
    /// The resource exists.
    Resource,
    /// The policy (data document) exists.
    Policy,
    /// The policy set exists.
    PolicySet,
    /// The policy set version exists.
    PolicySetVersion,
    /// The activation was accepted.
    Activated,
    /// The STS serves the policy (a bootstrap succeeds).
    PolicyLoaded,
}

/// The policy data document of the world: `application` owns `resource` and both session
/// labels hold every scope.
pub fn policy_document(application: &str, resource: &str, scopes: &[&str]) -> String {
    let scopes = serde_json::json!(scopes);
    let app_ids = serde_json::json!({"agent": application});
    let grants = serde_json::json!({
        resource: {"application": "agent",
                   "roles": {PARENT_LABEL: scopes, CHILD_LABEL: scopes}}
    });
    format!(
        "# caracal:data-document\npackage caracal.authz\n\napp_ids := {app_ids}\n\ngrants := {grants}\n"
    )
}

/// Build the world. `on_step` is called after each step with what was done and the request id
/// of the call (the demo prints them; the load harness passes `|_, _, _| {}`).
pub async fn provision(
    admin: &Admin,
    sts: &Sts,
    spec: &WorldSpec<'_>,
    on_step: &mut dyn FnMut(Step, &str, Option<&str>),
) -> Result<World, ApiError> {
    let tag = spec.tag;
    let zone = admin.create_zone(&format!("demo-{tag}")).await?;
    let zone_id = zone.value;
    on_step(
        Step::Zone,
        &format!("zone {zone_id}"),
        zone.request_id.as_deref(),
    );

    let app = admin.create_application(&zone_id, "agent").await?;
    on_step(
        Step::Application,
        &format!("application {} (client secret issued once)", app.value.id),
        app.request_id.as_deref(),
    );

    let identifier = format!("provider://echo-{}", tag.to_ascii_lowercase());
    let provider = admin
        .create_provider(
            &zone_id,
            "echo vendor",
            &identifier,
            "api_key",
            serde_json::json!({"header_name": "X-Api-Key", "api_key": spec.provider_key}),
        )
        .await?;
    on_step(
        Step::Provider,
        &format!(
            "provider {} (api_key, injected as X-Api-Key; the key is sealed and never returned)",
            provider.value
        ),
        provider.request_id.as_deref(),
    );

    let resource_identifier = format!("resource://echo-{}", tag.to_ascii_lowercase());
    let resource = admin
        .create_resource(
            &zone_id,
            &ResourceSpec {
                name: "echo",
                identifier: &resource_identifier,
                upstream_url: spec.upstream_url,
                scopes: spec.scopes,
                provider_id: &provider.value,
            },
        )
        .await?;
    on_step(
        Step::Resource,
        &format!(
            "resource {} -> {} (scopes: {})",
            resource.value.identifier,
            spec.upstream_url,
            spec.scopes.join(", ")
        ),
        resource.request_id.as_deref(),
    );

    let doc = policy_document(&app.value.id, &resource.value.identifier, spec.scopes);
    let policy = admin.create_policy(&zone_id, "demo", &doc).await?;
    on_step(
        Step::Policy,
        &format!(
            "policy {} (data document: the application owns the resource)",
            policy.value.id
        ),
        policy.request_id.as_deref(),
    );
    let set = admin.create_policy_set(&zone_id, "demo").await?;
    on_step(
        Step::PolicySet,
        &format!("policy set {}", set.value),
        set.request_id.as_deref(),
    );
    let version = admin
        .create_policy_set_version(&zone_id, &set.value, &[&policy.value.version_id])
        .await?;
    on_step(
        Step::PolicySetVersion,
        &format!("policy set version {}", version.value),
        version.request_id.as_deref(),
    );
    let activation = admin.activate(&zone_id, &set.value, &version.value).await?;
    on_step(
        Step::Activated,
        &format!("activated (outbox {})", activation.value.outbox_id),
        activation.request_id.as_deref(),
    );

    let client = Client {
        zone_id: zone_id.clone(),
        application_id: app.value.id.clone(),
        client_secret: app.value.client_secret.clone(),
    };
    let loaded = wait_until_served(
        admin,
        sts,
        &client,
        &resource.value.identifier,
        &activation.value.status_url,
        spec.policy_wait,
    )
    .await?;
    on_step(
        Step::PolicyLoaded,
        "the STS serves the policy",
        loaded.as_deref(),
    );

    Ok(World {
        zone_id,
        client,
        provider_id: provider.value,
        provider_key: spec.provider_key.to_owned(),
        resource_id: resource.value.id,
        resource: resource.value.identifier,
        scopes: spec.scopes.iter().map(|s| (*s).to_owned()).collect(),
        policy_id: policy.value.id,
        policy_version_id: policy.value.version_id,
        policy_set_id: set.value,
        policy_set_version_id: version.value,
    })
}

/// Wait until the activation left the outbox (the Admin API's status) and the STS decides
/// with the new policy: a bootstrap on the resource succeeds. The Admin API of `caracal up`
/// has no STS status client (`sts.state` is `not_configured`), so the STS itself is asked, in
/// the only way open to an application: by exchanging. Returns the request id of the
/// successful probe.
async fn wait_until_served(
    admin: &Admin,
    sts: &Sts,
    client: &Client,
    resource: &str,
    status_url: &str,
    wait: Duration,
) -> Result<Option<String>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut last: Option<ApiError> = None;
    loop {
        let status = admin.activation_status(status_url).await?;
        let propagation = status.body["propagation_status"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if propagation == "failed" {
            return Err(ApiError::Status {
                what: "policy activation".to_owned(),
                status: status.status,
                code: "propagation_failed".to_owned(),
                description: status.body["outbox"]["last_error"]
                    .as_str()
                    .map(str::to_owned),
                request_id: status.request_id,
            });
        }
        if matches!(propagation.as_str(), "loaded" | "waiting_for_sts") {
            match sts.bootstrap(client, resource).await {
                Ok(m) => return Ok(m.request_id),
                Err(e @ ApiError::Status { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last.unwrap_or(ApiError::Timeout {
                url: format!("policy propagation ({propagation})"),
                secs: wait.as_secs(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_document_names_the_owner_and_both_labels() {
        let doc = policy_document("app-1", "resource://echo", &["read", "write"]);
        assert!(doc.starts_with("# caracal:data-document\npackage caracal.authz\n"));
        assert!(doc.contains(r#"app_ids := {"agent":"app-1"}"#));
        assert!(doc.contains(r#""orchestrator":["read","write"]"#));
        assert!(doc.contains(r#""worker":["read","write"]"#));
    }
}
