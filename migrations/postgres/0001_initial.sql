-- strangler store, schema version 1 (PostgreSQL).
--
-- Applied migrations must never be edited: sqlx refuses to open a database
-- whose applied migration no longer matches its checksum. Change the schema
-- with a new, numbered file. Several instances may start at once: sqlx holds
-- an advisory lock while it migrates, so one applies and the others wait.
--
-- The same tables as migrations/sqlite/0001_initial.sql, with the same
-- conventions: times are BIGINT milliseconds since the Unix epoch (`*_ms`),
-- plus the caller's RFC 3339 text where the API hands it back (`at`); enums
-- are their lowercase names, checked by the code that reads them (no CHECK
-- constraints); counts are BIGINT.
--
-- JSON: the stored exchanges stay TEXT, exactly as the proxy serialised
-- them (JSONB would reorder keys and refuses "\u0000" inside strings, which
-- a response body may hold); the controller's window counters, small and
-- well-formed, are JSONB.
--
-- The fleet tables at the end hold times taken from the database's clock
-- (clock_timestamp()), never from a proxy's: the lease expiry and the
-- freshness of heartbeats and windows must mean the same to every instance.

-- The rollout position of each route (one row per route).
CREATE TABLE route_state (
    route               TEXT             PRIMARY KEY,
    stage               TEXT             NOT NULL,
    weight              DOUBLE PRECISION NOT NULL,
    state               TEXT             NOT NULL,
    reason              TEXT,
    stage_started_at_ms BIGINT           NOT NULL,
    -- opaque window counters owned by the rollout controller
    window_json         JSONB,
    updated_at_ms       BIGINT           NOT NULL
);

-- Rollout transitions, append-only.
CREATE TABLE events (
    id         BIGSERIAL        PRIMARY KEY,
    at         TEXT             NOT NULL,
    at_ms      BIGINT           NOT NULL,
    route      TEXT             NOT NULL,
    from_stage TEXT             NOT NULL,
    to_stage   TEXT             NOT NULL,
    weight     DOUBLE PRECISION NOT NULL,
    state      TEXT             NOT NULL,
    reason     TEXT             NOT NULL,
    actor      TEXT             NOT NULL,
    instance   TEXT
);
CREATE INDEX events_route_id ON events (route, id);
CREATE INDEX events_at_ms ON events (at_ms);

-- Stored exchanges: mismatches and the reservoir of matches.
CREATE TABLE samples (
    id                 BIGSERIAL PRIMARY KEY,
    at                 TEXT      NOT NULL,
    at_ms              BIGINT    NOT NULL,
    route              TEXT      NOT NULL,
    endpoint           TEXT      NOT NULL,
    kind               TEXT      NOT NULL,
    method             TEXT      NOT NULL,
    path               TEXT      NOT NULL,
    request            TEXT      NOT NULL,
    legacy_response    TEXT      NOT NULL,
    candidate_response TEXT      NOT NULL,
    differences        TEXT      NOT NULL
);
CREATE INDEX samples_bound ON samples (route, endpoint, kind, id);
CREATE INDEX samples_route_kind ON samples (route, kind, id);
CREATE INDEX samples_at_ms ON samples (at_ms);

-- Known, intended differences (`strangler accept`).
CREATE TABLE accepted (
    route    TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    path     TEXT NOT NULL,
    note     TEXT NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (route, endpoint, path)
);

-- 10-second buckets per route and side.
CREATE TABLE aggregates (
    route           TEXT             NOT NULL,
    bucket_start_ms BIGINT           NOT NULL,
    side            TEXT             NOT NULL,
    requests        BIGINT           NOT NULL,
    errors          BIGINT           NOT NULL,
    p50_ms          DOUBLE PRECISION,
    p99_ms          DOUBLE PRECISION,
    compared        BIGINT           NOT NULL,
    matched         BIGINT           NOT NULL,
    mismatched      BIGINT           NOT NULL,
    PRIMARY KEY (route, bucket_start_ms, side)
);
CREATE INDEX aggregates_bucket ON aggregates (bucket_start_ms);

-- Accumulated totals per endpoint template and side, for the report.
CREATE TABLE endpoint_stats (
    route          TEXT             NOT NULL,
    endpoint       TEXT             NOT NULL,
    side           TEXT             NOT NULL,
    requests       BIGINT           NOT NULL,
    errors         BIGINT           NOT NULL,
    bytes          BIGINT           NOT NULL,
    latency_sum_ms DOUBLE PRECISION NOT NULL,
    p50_ms         DOUBLE PRECISION,
    p99_ms         DOUBLE PRECISION,
    last_bucket_ms BIGINT           NOT NULL,
    PRIMARY KEY (route, endpoint, side)
);

-- === fleet (SPEC §9) ===

-- The proxies sharing this database; last_seen_ms is the database's clock.
CREATE TABLE instances (
    id            TEXT   PRIMARY KEY,
    config_hash   TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    started_at_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL
);

-- Leases with fencing: `epoch` grows each time a lease changes hands, and
-- every write of the leader carries the epoch it was given, checked in the
-- same statement against this row (holder, epoch, expires_at_ms > now).
CREATE TABLE lease (
    name          TEXT   PRIMARY KEY,
    holder        TEXT   NOT NULL,
    epoch         BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

-- Each instance's current window of each route, for gates judged on the
-- sum over the instances that reported recently.
CREATE TABLE instance_windows (
    instance_id   TEXT   NOT NULL,
    route         TEXT   NOT NULL,
    window_json   JSONB  NOT NULL,
    -- the instance's own time of the snapshot (display only)
    at_ms         BIGINT NOT NULL,
    -- the database's clock when written: freshness is judged on this
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (instance_id, route)
);
CREATE INDEX instance_windows_route ON instance_windows (route, updated_at_ms);
