-- 0002_idempotency_receipt_replay: what an idempotency receipt needs to replay faithfully.
--
-- * result_id: the id of what the first request created (session or edge), so a replay can
--   check it is still live (409 idempotency_result_inactive). The storage trait's receipt
--   carries it; the baseline had no column for it.
-- * response_text: the exact response body as first sent. response_json (jsonb) normalises
--   key order, whitespace and numbers, so a replay from it would not be byte-identical to the
--   original response. response_json stays (and keeps its size check) for queries.
--
-- Expand-only: both columns are new; rows written before this migration read result_id ''
-- and fall back to response_json::text.

ALTER TABLE coordinator_idempotency_receipts
    ADD COLUMN result_id     text NOT NULL DEFAULT '',
    ADD COLUMN response_text text CHECK (octet_length(response_text) <= 65536);

-- * approvals.approver_session_id: the approver's authority record on a subject-plane decision
--   (reference sts.md §1.4: "the approver's authority record id is always stored"), the
--   forensic and revocation anchor whatever the hold's privacy mode hides of the approver.
--   NULL for operator decisions and undecided holds.

ALTER TABLE approvals
    ADD COLUMN approver_session_id text;

-- * delegation_edges_retired: the retention cleaner deletes revoked / expired edges retired
--   (revoked_at, or expires_at for an expired edge) more than 90 days ago; the baseline's
--   edge indexes cover active edges only.

CREATE INDEX delegation_edges_retired ON delegation_edges (COALESCE(revoked_at, expires_at))
    WHERE status IN ('revoked', 'expired');
