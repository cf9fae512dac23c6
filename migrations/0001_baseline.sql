-- 0001_baseline: every table the Caracal services need.
--
-- Conventions
-- * Ids are text (UUIDv7 strings minted by the services); timestamps are timestamptz; JSON
--   documents are jsonb; lists of names are text[].
-- * Every zone-scoped table carries zone_id. Parents that children reference inside a zone
--   have UNIQUE (zone_id, id), so foreign keys are zone-aware: a row can never point at a
--   row of another zone.
-- * Unique indexes and constraints are named after the conflict names the storage traits
--   report (StoreError::Conflict { constraint }), e.g. zone_slug, policy_name.
-- * Enumerations are text with CHECK constraints (the wire strings of caracal-core::model).
-- * Zone isolation: the services filter by zone_id in every query (the store contract). Row
--   level security is not enabled here; a later migration can add it (ENABLE ROW LEVEL
--   SECURITY plus a zone_isolation policy on caracal.zone_id) without changing any table.
-- * Forward-only: once released (pinned in released.sha256) this file never changes; fixes
--   go into a new numbered file.

-- ---------------------------------------------------------------------------------------
-- Zones and directory
-- ---------------------------------------------------------------------------------------

CREATE TABLE zones (
    id                      text        PRIMARY KEY,
    name                    text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 120),
    slug                    text        NOT NULL CHECK (slug ~ '^[a-z0-9-]+$'),
    dcr_enabled             boolean     NOT NULL DEFAULT false,
    operator_coauthor_badge boolean     NOT NULL DEFAULT false,
    operator_governed       boolean     NOT NULL DEFAULT false,
    owner_account_id        text,
    created_by              text,
    created_via_operator    boolean     NOT NULL DEFAULT false,
    updated_by              text,
    updated_via_operator    boolean     NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    archived_at             timestamptz,
    -- Over every zone, archived included: a slug is never reused.
    CONSTRAINT zone_slug UNIQUE (slug)
);
CREATE INDEX zones_keyset ON zones (created_at DESC, id DESC) WHERE archived_at IS NULL;

CREATE TABLE applications (
    id                   text        PRIMARY KEY,
    zone_id              text        NOT NULL REFERENCES zones (id),
    name                 text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    registration_method  text        NOT NULL CHECK (registration_method IN ('managed', 'dcr')),
    credential_type      text        NOT NULL DEFAULT 'token' CHECK (credential_type = 'token'),
    -- argon2id$<salt>$<hash>; never returned by any API.
    client_secret_hash   text,
    traits               text[]      NOT NULL DEFAULT '{}',
    expires_at           timestamptz,
    created_by           text,
    created_via_operator boolean     NOT NULL DEFAULT false,
    updated_by           text,
    updated_via_operator boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    archived_at          timestamptz,
    CONSTRAINT applications_dcr_expiry CHECK (registration_method <> 'dcr' OR expires_at IS NOT NULL),
    CONSTRAINT applications_zone_id_key UNIQUE (zone_id, id)
);
CREATE UNIQUE INDEX application_name ON applications (zone_id, lower(name))
    WHERE archived_at IS NULL AND registration_method = 'managed';
CREATE INDEX applications_keyset ON applications (zone_id, created_at DESC, id DESC);

CREATE TABLE providers (
    id                     text        PRIMARY KEY,
    zone_id                text        NOT NULL REFERENCES zones (id),
    name                   text        NOT NULL CHECK (char_length(name) >= 1),
    identifier             text        NOT NULL CHECK (char_length(identifier) >= 1),
    kind                   text        NOT NULL CHECK (kind IN (
                               'none', 'caracal_mandate', 'oauth2_authorization_code',
                               'oauth2_client_credentials', 'api_key', 'bearer_token',
                               'http_basic')),
    -- Public configuration only; secret values are sealed in secret_store.
    config_json            jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config_json) = 'object'),
    secret_config_keys     text[]      NOT NULL DEFAULT '{}',
    connectivity_failed_at timestamptz,
    created_by             text,
    created_via_operator   boolean     NOT NULL DEFAULT false,
    updated_by             text,
    updated_via_operator   boolean     NOT NULL DEFAULT false,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    archived_at            timestamptz,
    CONSTRAINT providers_zone_id_key UNIQUE (zone_id, id)
);
CREATE UNIQUE INDEX provider_identifier ON providers (zone_id, identifier) WHERE archived_at IS NULL;
CREATE INDEX providers_keyset ON providers (zone_id, created_at DESC, id DESC);

CREATE TABLE resources (
    id                     text        PRIMARY KEY,
    zone_id                text        NOT NULL REFERENCES zones (id),
    name                   text        NOT NULL CHECK (char_length(name) >= 1),
    identifier             text        NOT NULL CHECK (char_length(identifier) >= 1),
    upstream_url           text,
    scopes                 text[]      NOT NULL CHECK (cardinality(scopes) BETWEEN 1 AND 64),
    credential_provider_id text,
    -- [{"method": "GET", "path": "/x", "scope": "read"}, ...]
    operations             jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(operations) = 'array'),
    operation_enforcement  text        NOT NULL DEFAULT 'enforced'
                               CHECK (operation_enforcement IN ('enforced', 'transport_uniform')),
    created_by             text,
    created_via_operator   boolean     NOT NULL DEFAULT false,
    updated_by             text,
    updated_via_operator   boolean     NOT NULL DEFAULT false,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    archived_at            timestamptz,
    CONSTRAINT resources_zone_id_key UNIQUE (zone_id, id),
    -- Per zone, archived rows included: an identifier is never reused.
    CONSTRAINT resource_identifier UNIQUE (zone_id, identifier),
    CONSTRAINT resources_provider_fk FOREIGN KEY (zone_id, credential_provider_id)
        REFERENCES providers (zone_id, id)
);
CREATE INDEX resources_keyset ON resources (zone_id, created_at DESC, id DESC);

-- Sealed documents (CSS1 envelopes under the KEK, AAD = reference), e.g. provider secret
-- configuration at zones/<zone>/providers/<provider>/secretConfig. Keyed by reference; the
-- zone is part of the reference. No plaintext secret is ever stored.
CREATE TABLE secret_store (
    reference  text        PRIMARY KEY CHECK (char_length(reference) >= 1),
    envelope   bytea       NOT NULL,
    version    bigint      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per-zone ES256 signing keys, sealed (AAD caracal/secrets/zoneSigningKey). The newest
-- version signs; the previous one stays in the JWKS for the 24 h overlap.
CREATE TABLE zone_signing_keys (
    kid        text        PRIMARY KEY,
    zone_id    text        NOT NULL REFERENCES zones (id),
    version    bigint      NOT NULL CHECK (version >= 1),
    envelope   bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT zone_signing_key_version UNIQUE (zone_id, version)
);

CREATE TABLE admin_tokens (
    id           text        PRIMARY KEY,
    name         text        NOT NULL CHECK (char_length(name) >= 1),
    token_sha256 bytea       NOT NULL CHECK (octet_length(token_sha256) = 32),
    scope        text        NOT NULL CHECK (scope IN ('global', 'zone')),
    zone_id      text        REFERENCES zones (id),
    capability   text        NOT NULL CHECK (capability IN ('read', 'write', 'approve')),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT admin_tokens_scope_zone CHECK ((scope = 'zone') = (zone_id IS NOT NULL))
);
CREATE UNIQUE INDEX admin_token_sha256 ON admin_tokens (token_sha256) WHERE revoked_at IS NULL;
CREATE INDEX admin_tokens_keyset ON admin_tokens (created_at DESC, id DESC);

-- ---------------------------------------------------------------------------------------
-- Authority, sessions, delegation
-- ---------------------------------------------------------------------------------------

-- One row per STS exchange: the revocation anchor named by a mandate's sid / root_sid.
CREATE TABLE authority_records (
    id               text        PRIMARY KEY,
    zone_id          text        NOT NULL REFERENCES zones (id),
    session_type     text        NOT NULL CHECK (session_type IN ('user', 'application')),
    subject_id       text        NOT NULL,
    parent_id        text,
    status           text        NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'revoked', 'expired')),
    expires_at       timestamptz NOT NULL,
    authenticated_at timestamptz,
    claims_json      jsonb       NOT NULL DEFAULT '{}',
    revoked_at       timestamptz,
    revoked_reason   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT authority_records_revoked_at CHECK (status <> 'revoked' OR revoked_at IS NOT NULL),
    CONSTRAINT authority_records_not_own_parent CHECK (parent_id IS DISTINCT FROM id),
    CONSTRAINT authority_records_zone_id_key UNIQUE (zone_id, id),
    CONSTRAINT authority_records_zone_parent_fk FOREIGN KEY (zone_id, parent_id)
        REFERENCES authority_records (zone_id, id) ON DELETE SET NULL (parent_id)
);
-- Cascade revoke walks children; the kill switch finds a subject's live records.
CREATE INDEX authority_records_parent ON authority_records (zone_id, parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX authority_records_subject_active ON authority_records (zone_id, subject_id) WHERE status = 'active';
CREATE INDEX authority_records_expiry ON authority_records (expires_at);

-- Governed agent sessions ("agents" on the wire).
CREATE TABLE sessions (
    id                          text        PRIMARY KEY,
    zone_id                     text        NOT NULL REFERENCES zones (id),
    application_id              text        NOT NULL,
    parent_id                   text,
    subject_authority_record_id text        NOT NULL,
    lifecycle                   text        NOT NULL CHECK (lifecycle IN ('task', 'service')),
    labels                      text[]      NOT NULL DEFAULT '{}' CHECK (cardinality(labels) <= 32),
    status                      text        NOT NULL DEFAULT 'active'
                                    CHECK (status IN ('active', 'suspended', 'terminated', 'expired')),
    depth                       integer     NOT NULL DEFAULT 0 CHECK (depth BETWEEN 0 AND 10),
    ttl_seconds                 bigint      CHECK (ttl_seconds BETWEEN 1 AND 86400),
    metadata                    jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    started_at                  timestamptz NOT NULL DEFAULT now(),
    terminated_at               timestamptz,
    termination_reason          text,
    last_heartbeat_at           timestamptz,
    heartbeat_deadline_at       timestamptz,
    lease_generation            bigint      NOT NULL DEFAULT 0 CHECK (lease_generation >= 0),
    child_count                 integer     NOT NULL DEFAULT 0 CHECK (child_count >= 0),
    max_children                integer     NOT NULL DEFAULT 10 CHECK (max_children >= 0),
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    -- Task sessions live for a TTL and have no lease; service sessions hold a lease and no TTL.
    CONSTRAINT sessions_lifecycle_shape CHECK (
        (lifecycle = 'task' AND ttl_seconds IS NOT NULL
            AND last_heartbeat_at IS NULL AND heartbeat_deadline_at IS NULL)
        OR (lifecycle = 'service' AND ttl_seconds IS NULL AND heartbeat_deadline_at IS NOT NULL)),
    CONSTRAINT sessions_terminated_at CHECK (
        (status IN ('terminated', 'expired')) = (terminated_at IS NOT NULL)),
    CONSTRAINT sessions_not_own_parent CHECK (parent_id IS DISTINCT FROM id),
    CONSTRAINT sessions_zone_id_key UNIQUE (zone_id, id),
    CONSTRAINT sessions_application_fk FOREIGN KEY (zone_id, application_id)
        REFERENCES applications (zone_id, id),
    CONSTRAINT sessions_zone_parent_fk FOREIGN KEY (zone_id, parent_id)
        REFERENCES sessions (zone_id, id) ON DELETE SET NULL (parent_id),
    CONSTRAINT sessions_subject_authority_fk FOREIGN KEY (zone_id, subject_authority_record_id)
        REFERENCES authority_records (zone_id, id)
);
CREATE INDEX sessions_parent ON sessions (zone_id, parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX sessions_live_by_application ON sessions (zone_id, application_id)
    WHERE status IN ('active', 'suspended');
CREATE INDEX sessions_keyset ON sessions (zone_id, created_at DESC, id DESC);
-- Sweepers: task TTL, service lease, terminal retention.
CREATE INDEX sessions_task_ttl ON sessions (started_at) WHERE lifecycle = 'task' AND status IN ('active', 'suspended');
CREATE INDEX sessions_service_lease ON sessions (heartbeat_deadline_at) WHERE lifecycle = 'service' AND status IN ('active', 'suspended');
CREATE INDEX sessions_terminal_retention_idx ON sessions (terminated_at) WHERE terminated_at IS NOT NULL;

CREATE TABLE delegation_edges (
    id                      text        PRIMARY KEY,
    zone_id                 text        NOT NULL REFERENCES zones (id),
    source_session_id       text        NOT NULL,
    target_session_id       text        NOT NULL,
    issuer_application_id   text        NOT NULL,
    receiver_application_id text        NOT NULL,
    parent_edge_id          text,
    -- NULL for a broad edge (no single resource).
    resource_id             text,
    scopes                  text[]      NOT NULL,
    constraints_json        jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(constraints_json) = 'object'),
    status                  text        NOT NULL DEFAULT 'active'
                                CHECK (status IN ('active', 'revoked', 'expired')),
    expires_at              timestamptz NOT NULL,
    edge_version            bigint      NOT NULL DEFAULT 0 CHECK (edge_version >= 0),
    revoked_at              timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT delegation_edges_distinct_ends CHECK (source_session_id <> target_session_id),
    CONSTRAINT delegation_edges_revoked_at CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    CONSTRAINT delegation_edges_zone_id_key UNIQUE (zone_id, id),
    CONSTRAINT delegation_edges_zone_parent_fk FOREIGN KEY (zone_id, parent_edge_id)
        REFERENCES delegation_edges (zone_id, id) ON DELETE SET NULL (parent_edge_id),
    CONSTRAINT delegation_edges_source_fk FOREIGN KEY (zone_id, source_session_id)
        REFERENCES sessions (zone_id, id) ON DELETE CASCADE,
    CONSTRAINT delegation_edges_target_fk FOREIGN KEY (zone_id, target_session_id)
        REFERENCES sessions (zone_id, id) ON DELETE CASCADE,
    CONSTRAINT delegation_edges_resource_fk FOREIGN KEY (zone_id, resource_id)
        REFERENCES resources (zone_id, id)
);
CREATE INDEX delegation_edges_source_active ON delegation_edges (zone_id, source_session_id) WHERE status = 'active';
CREATE INDEX delegation_edges_target_active ON delegation_edges (zone_id, target_session_id) WHERE status = 'active';
CREATE INDEX delegation_edges_parent ON delegation_edges (zone_id, parent_edge_id) WHERE parent_edge_id IS NOT NULL;
CREATE INDEX delegation_edges_expiry ON delegation_edges (expires_at) WHERE status = 'active';

-- A per-zone monotone epoch, bumped on every graph change; consumers compare against it.
CREATE TABLE delegation_graph_epochs (
    zone_id    text        PRIMARY KEY REFERENCES zones (id),
    epoch      bigint      NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Idempotency-Key receipts of the Coordinator: the first response of an operation is
-- replayed for the same key and request, refused for the same key and another request.
CREATE TABLE coordinator_idempotency_receipts (
    zone_id         text        NOT NULL REFERENCES zones (id),
    -- e.g. session.start.v2, delegation.create.v2 (open set, so a format check).
    operation       text        NOT NULL CHECK (operation ~ '^[a-z][a-z0-9_.]*$'),
    -- Who the key belongs to (the calling application or session).
    scope_id        text        NOT NULL,
    key_digest      bytea       NOT NULL CHECK (octet_length(key_digest) = 32),
    request_digest  bytea       NOT NULL CHECK (octet_length(request_digest) = 32),
    response_status integer     NOT NULL CHECK (response_status BETWEEN 200 AND 299),
    response_json   jsonb       NOT NULL CHECK (octet_length(response_json::text) <= 65536),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    CONSTRAINT idempotency_receipt_key PRIMARY KEY (operation, zone_id, scope_id, key_digest),
    CONSTRAINT idempotency_receipt_expiry CHECK (expires_at > created_at)
);
CREATE INDEX idempotency_receipts_expiry ON coordinator_idempotency_receipts (expires_at);

-- ---------------------------------------------------------------------------------------
-- Policies
-- ---------------------------------------------------------------------------------------

-- Raised by the immutability triggers of policy_versions and policy_set_versions.
CREATE FUNCTION caracal_reject_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'append a new version instead';
END;
$$;

CREATE TABLE policies (
    id                   text        PRIMARY KEY,
    zone_id              text        NOT NULL REFERENCES zones (id),
    name                 text        NOT NULL CHECK (char_length(name) >= 1),
    description          text,
    created_by           text,
    created_via_operator boolean     NOT NULL DEFAULT false,
    updated_by           text,
    updated_via_operator boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    archived_at          timestamptz,
    CONSTRAINT policies_zone_id_key UNIQUE (zone_id, id)
);
CREATE UNIQUE INDEX policy_name ON policies (zone_id, name) WHERE archived_at IS NULL;
CREATE INDEX policies_keyset ON policies (zone_id, created_at DESC, id DESC);

CREATE TABLE policy_versions (
    id             text        PRIMARY KEY,
    policy_id      text        NOT NULL,
    zone_id        text        NOT NULL REFERENCES zones (id),
    version        integer     NOT NULL CHECK (version >= 1),
    content        text        NOT NULL,
    content_sha256 text        NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    schema_version text        NOT NULL,
    created_by     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT policy_version_number UNIQUE (policy_id, version),
    CONSTRAINT policy_versions_zone_id_key UNIQUE (zone_id, id),
    CONSTRAINT policy_versions_policy_fk FOREIGN KEY (zone_id, policy_id)
        REFERENCES policies (zone_id, id)
);
CREATE TRIGGER policy_versions_immutable
    BEFORE UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION caracal_reject_mutation();
CREATE TRIGGER policy_versions_no_truncate
    BEFORE TRUNCATE ON policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION caracal_reject_mutation();

CREATE TABLE policy_sets (
    id                   text        PRIMARY KEY,
    zone_id              text        NOT NULL REFERENCES zones (id),
    name                 text        NOT NULL CHECK (char_length(name) >= 1),
    description          text,
    created_by           text,
    created_via_operator boolean     NOT NULL DEFAULT false,
    updated_by           text,
    updated_via_operator boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    archived_at          timestamptz,
    CONSTRAINT policy_sets_zone_id_key UNIQUE (zone_id, id)
);
CREATE UNIQUE INDEX policy_set_name ON policy_sets (zone_id, name) WHERE archived_at IS NULL;
CREATE INDEX policy_sets_keyset ON policy_sets (zone_id, created_at DESC, id DESC);

CREATE TABLE policy_set_versions (
    id              text        PRIMARY KEY,
    policy_set_id   text        NOT NULL,
    zone_id         text        NOT NULL REFERENCES zones (id),
    version         integer     NOT NULL CHECK (version >= 1),
    -- [{"policy_version_id": "..."}, ...] in order.
    manifest_json   jsonb       NOT NULL CHECK (jsonb_typeof(manifest_json) = 'array'),
    manifest_sha256 text        NOT NULL CHECK (manifest_sha256 ~ '^[0-9a-f]{64}$'),
    schema_version  text        NOT NULL,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT policy_set_version_number UNIQUE (policy_set_id, version),
    CONSTRAINT policy_set_versions_zone_id_key UNIQUE (zone_id, id),
    CONSTRAINT policy_set_versions_set_id_key UNIQUE (policy_set_id, id),
    CONSTRAINT policy_set_versions_set_fk FOREIGN KEY (zone_id, policy_set_id)
        REFERENCES policy_sets (zone_id, id)
);
CREATE TRIGGER policy_set_versions_immutable
    BEFORE UPDATE OR DELETE ON policy_set_versions
    FOR EACH ROW EXECUTE FUNCTION caracal_reject_mutation();
CREATE TRIGGER policy_set_versions_no_truncate
    BEFORE TRUNCATE ON policy_set_versions
    FOR EACH STATEMENT EXECUTE FUNCTION caracal_reject_mutation();

-- Which set version is active in a zone. Activation and roll back rewrite
-- active_version_id; at most one binding per zone is active.
CREATE TABLE policy_set_bindings (
    zone_id           text        NOT NULL REFERENCES zones (id),
    policy_set_id     text        NOT NULL,
    active_version_id text,
    activated_by      text,
    activated_at      timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT policy_set_bindings_pkey PRIMARY KEY (zone_id, policy_set_id),
    CONSTRAINT policy_set_bindings_set_fk FOREIGN KEY (zone_id, policy_set_id)
        REFERENCES policy_sets (zone_id, id),
    -- The active version must be a version of this very set.
    CONSTRAINT policy_set_bindings_version_fk FOREIGN KEY (policy_set_id, active_version_id)
        REFERENCES policy_set_versions (policy_set_id, id)
);
CREATE UNIQUE INDEX policy_set_binding_one_active ON policy_set_bindings (zone_id)
    WHERE active_version_id IS NOT NULL;

-- ---------------------------------------------------------------------------------------
-- Approvals (human step-up holds; the reference's step_up_challenges)
-- ---------------------------------------------------------------------------------------

CREATE TABLE approvals (
    id                           text        PRIMARY KEY,
    zone_id                      text        NOT NULL REFERENCES zones (id),
    -- Authority record of the requester; '' for none.
    session_id                   text        NOT NULL DEFAULT '',
    principal_id                 text        NOT NULL,
    application_id               text        NOT NULL,
    approval_type                text        NOT NULL DEFAULT 'human_approval'
                                     CHECK (approval_type = 'human_approval'),
    tier                         text        NOT NULL DEFAULT '',
    approver_class               text        NOT NULL DEFAULT 'operator'
                                     CHECK (approver_class IN ('operator', 'subject', 'any')),
    privacy_mode                 text        NOT NULL DEFAULT 'identified'
                                     CHECK (privacy_mode IN ('identified', 'pseudonymous', 'anonymous')),
    subject_anchor               text,
    -- Hex SHA-256 over the request it approves.
    binding                      text        NOT NULL CHECK (binding ~ '^[0-9a-f]{64}$'),
    metadata_json                jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata_json) = 'object'),
    decision_reason              text        CHECK (char_length(decision_reason) <= 500),
    approver_subject_id          text,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    expires_at                   timestamptz NOT NULL,
    satisfied_at                 timestamptz,
    rejected_at                  timestamptz,
    consumed_at                  timestamptz,
    consumed_authority_record_id text,
    CONSTRAINT approvals_single_decision CHECK (satisfied_at IS NULL OR rejected_at IS NULL),
    CONSTRAINT approvals_consumed_after_approval CHECK (consumed_at IS NULL OR satisfied_at IS NOT NULL),
    CONSTRAINT approvals_expiry CHECK (expires_at > created_at),
    CONSTRAINT approvals_application_fk FOREIGN KEY (zone_id, application_id)
        REFERENCES applications (zone_id, id),
    CONSTRAINT approvals_consumed_authority_fk FOREIGN KEY (zone_id, consumed_authority_record_id)
        REFERENCES authority_records (zone_id, id)
);
-- One unconsumed hold per (zone, principal, session, binding).
CREATE UNIQUE INDEX approval_live_binding ON approvals (zone_id, principal_id, session_id, binding)
    WHERE consumed_at IS NULL;
CREATE INDEX approvals_keyset ON approvals (zone_id, created_at DESC, id DESC);
CREATE INDEX approvals_sweep ON approvals ((GREATEST(consumed_at, rejected_at, expires_at)));

-- ---------------------------------------------------------------------------------------
-- Transactional outbox (one table for every producer)
-- ---------------------------------------------------------------------------------------

-- Whether an outbox field list is an array of [key, value] string pairs.
CREATE FUNCTION outbox_fields_valid(fields jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT jsonb_typeof(fields) = 'array'
       AND NOT EXISTS (
           SELECT 1 FROM jsonb_array_elements(fields) AS pair
            WHERE jsonb_typeof(pair) <> 'array'
               OR jsonb_array_length(pair) <> 2
               OR jsonb_typeof(pair -> 0) <> 'string'
               OR jsonb_typeof(pair -> 1) <> 'string')
$$;

CREATE TABLE outbox (
    -- UUIDv7: ordering by id is ordering by creation; published as the outbox_id field.
    id            text        PRIMARY KEY,
    stream        text        NOT NULL CHECK (stream ~ '^[A-Za-z0-9._:-]+$'),
    -- Ordered [[key, value], ...] string pairs (outbox_id and _sig are added at publish).
    fields        jsonb       NOT NULL DEFAULT '[]' CHECK (outbox_fields_valid(fields)),
    -- Which service enqueued it (api, coordinator, sts, audit-fallback, ...).
    producer      text,
    -- A second enqueue with the same (stream, dedupe_key) is coalesced into the first.
    dedupe_key    text,
    zone_id       text,
    request_id    text,
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    available_at  timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    locked_by     text,
    last_error    text,
    dispatched_at timestamptz,
    -- Given up on: never retried automatically; an operator requeues it.
    dead_at       timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_dispatched_or_dead CHECK (dispatched_at IS NULL OR dead_at IS NULL)
);
CREATE UNIQUE INDEX outbox_dedupe ON outbox (stream, dedupe_key) WHERE dedupe_key IS NOT NULL;
-- The claim: due, undispatched, not dead, oldest first (FOR UPDATE SKIP LOCKED).
CREATE INDEX outbox_dispatch_ready ON outbox (available_at, id)
    WHERE dispatched_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_pending_age ON outbox (created_at)
    WHERE dispatched_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_dead ON outbox (dead_at) WHERE dead_at IS NOT NULL;
CREATE INDEX outbox_dispatched ON outbox (dispatched_at) WHERE dispatched_at IS NOT NULL;

-- ---------------------------------------------------------------------------------------
-- Audit ledger: monthly partitions, per-zone hash chain
-- ---------------------------------------------------------------------------------------

-- Rows are appended by the ingestor under pg_advisory_xact_lock(hashtext(zone_id)), which
-- is what keeps chain_seq dense per zone (no unique index can span partitions without the
-- partition key). content_sha256 is over the stored (jsonb-normalised) form;
-- chain_hmac = HMAC(content_sha256 | prev_content_sha256); ingest_signature = producer sig.
CREATE TABLE audit_events (
    id                        text        NOT NULL,
    zone_id                   text        NOT NULL,
    event_type                text        NOT NULL,
    request_id                text,
    decision                  text,
    policy_set_id             text,
    policy_set_version_id     text,
    manifest_sha              text,
    evaluation_status         text,
    determining_policies_json jsonb,
    diagnostics_json          jsonb,
    metadata_json             jsonb,
    occurred_at               timestamptz NOT NULL,
    ingested_at               timestamptz NOT NULL DEFAULT now(),
    content_sha256            text        NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    prev_content_sha256       text        CHECK (prev_content_sha256 ~ '^[0-9a-f]{64}$'),
    chain_hmac                text        NOT NULL DEFAULT '',
    chain_seq                 bigint      NOT NULL CHECK (chain_seq >= 1),
    ingest_signature          text,
    CONSTRAINT audit_events_pkey PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX audit_events_zone_chain ON audit_events (zone_id, chain_seq);
CREATE INDEX audit_events_zone_time ON audit_events (zone_id, occurred_at DESC);
CREATE INDEX audit_events_ingested ON audit_events (ingested_at);
CREATE INDEX audit_events_request ON audit_events (request_id)
    WHERE request_id IS NOT NULL AND request_id <> '';
CREATE INDEX audit_events_session ON audit_events ((metadata_json ->> 'session_id'))
    WHERE metadata_json ? 'session_id';
CREATE INDEX audit_events_agent_session ON audit_events ((metadata_json ->> 'agent_session_id'))
    WHERE metadata_json ? 'agent_session_id';
CREATE INDEX audit_events_agent_labels ON audit_events USING gin ((metadata_json -> 'agent_labels'));

-- Rows outside every monthly partition land here; never dropped.
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

-- The ledger is append-only: rows are never updated or deleted (retention drops whole
-- partitions). The only exception is audit_partition_ensure moving rows out of the default
-- partition into a new month, which it marks with a transaction-local setting. (Tamper
-- drills run as superuser with SET session_replication_role = replica.)
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('caracal.audit_partition_move', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events rows are append-only'
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

-- Create (if missing) the monthly partition audit_events_yYYYYmMM covering the UTC month
-- of `month`, and return its name. Rows of that month already in the default partition are
-- moved into it in the same transaction, so ensuring a month never fails because of them.
CREATE FUNCTION audit_partition_ensure(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    first_day date := date_trunc('month', month)::date;
    lo        timestamptz := first_day::timestamp AT TIME ZONE 'UTC';
    hi        timestamptz := (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    part      text := format('audit_events_y%sm%s', to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
    stray     bigint;
BEGIN
    IF month IS NULL THEN
        RAISE EXCEPTION 'audit_partition_ensure: month is null' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Serialise concurrent ensures of the ledger's partitions.
    PERFORM pg_advisory_xact_lock(hashtext('caracal.audit_partition'));
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN part;
    END IF;
    SELECT count(*) INTO stray FROM audit_events_default WHERE occurred_at >= lo AND occurred_at < hi;
    IF stray = 0 THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I (LIKE audit_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('INSERT INTO %I SELECT * FROM audit_events_default WHERE occurred_at >= %L AND occurred_at < %L',
                       part, lo, hi);
        PERFORM set_config('caracal.audit_partition_move', 'on', true);
        DELETE FROM audit_events_default WHERE occurred_at >= lo AND occurred_at < hi;
        PERFORM set_config('caracal.audit_partition_move', 'off', true);
        EXECUTE format('ALTER TABLE audit_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
    END IF;
    RETURN part;
END;
$$;

-- Drop one monthly partition (retention). Refuses any name outside audit_events_yYYYYmMM,
-- so the default partition and the parent can never be dropped through it. Returns whether
-- a partition was dropped.
CREATE FUNCTION audit_partition_drop(name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF name IS NULL OR name !~ '^audit_events_y[0-9]{4}m(0[1-9]|1[0-2])$' THEN
        RAISE EXCEPTION 'audit_partition_drop: % is not a monthly audit partition name', name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('caracal.audit_partition'));
    IF to_regclass(quote_ident(name)) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', name);
    RETURN true;
END;
$$;

-- The current UTC month and the next three.
DO $$
BEGIN
    FOR i IN 0..3 LOOP
        PERFORM audit_partition_ensure(
            ((date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date));
    END LOOP;
END;
$$;

-- Ingest alerts, e.g. kind content_mismatch_on_replay with detail stored=<hex> incoming=<hex>.
CREATE TABLE audit_ingest_alerts (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text,
    zone_id     text,
    kind        text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    detail      text,
    observed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_ingest_alerts_zone_time ON audit_ingest_alerts (zone_id, observed_at DESC);

-- Periodically signed chain heads: the verifier detects truncation of a zone's tip by
-- comparing the chain against the newest checkpoint.
CREATE TABLE audit_chain_checkpoints (
    zone_id       text        NOT NULL,
    chain_seq     bigint      NOT NULL CHECK (chain_seq >= 1),
    head_sha256   text        NOT NULL CHECK (head_sha256 ~ '^[0-9a-f]{64}$'),
    -- Lowercase hex HMAC-SHA256 (or signature) over the checkpoint's canonical form.
    signature     text        NOT NULL,
    signature_alg text        NOT NULL DEFAULT 'hmac-sha256',
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_chain_checkpoints_pkey PRIMARY KEY (zone_id, chain_seq)
);

-- Export watermark per exporter (e.g. ndjson-hourly).
CREATE TABLE audit_export_watermark (
    name               text        PRIMARY KEY,
    last_exported_hour timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Console-managed retention override (singleton); the env value is the ceiling.
CREATE TABLE audit_retention (
    id             integer     PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    retention_days integer     NOT NULL CHECK (retention_days >= 1),
    updated_by     text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The admin audit chain of the Admin API and Coordinator (per zone, or global when zone_id
-- is NULL), written synchronously before a mutating response is sent.
CREATE TABLE admin_audit_events (
    id                  text        PRIMARY KEY,
    request_id          text,
    actor_id            text,
    actor_name          text,
    actor_scope         text,
    action              text        NOT NULL,
    method              text        NOT NULL,
    path                text        NOT NULL,
    zone_id             text,
    entity_type         text,
    entity_id           text,
    status_code         integer     NOT NULL,
    -- The exact serialised payload that was hashed ('' for none).
    payload             text        NOT NULL DEFAULT '',
    occurred_at         timestamptz NOT NULL,
    content_sha256      text        NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    prev_content_sha256 text        CHECK (prev_content_sha256 ~ '^[0-9a-f]{64}$'),
    chain_hmac          text        NOT NULL DEFAULT '',
    chain_seq           bigint      NOT NULL CHECK (chain_seq >= 1)
);
CREATE INDEX admin_audit_events_chain ON admin_audit_events (zone_id, chain_seq);
CREATE INDEX admin_audit_events_actor ON admin_audit_events (actor_id, occurred_at DESC);
CREATE INDEX admin_audit_events_request ON admin_audit_events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX admin_audit_events_zone_time ON admin_audit_events (zone_id, occurred_at DESC);
CREATE TRIGGER admin_audit_events_append_only
    BEFORE UPDATE OR DELETE ON admin_audit_events
    FOR EACH ROW EXECUTE FUNCTION caracal_reject_mutation();
