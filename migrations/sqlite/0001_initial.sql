-- strangler store, schema version 1 (SQLite).
--
-- Applied migrations must never be edited: sqlx refuses to open a database
-- whose applied migration no longer matches its checksum. Change the schema
-- with a new, numbered file, and keep src/store/tests.rs's persisted-schema
-- test reading rows of this shape.
--
-- Conventions: times are INTEGER milliseconds since the Unix epoch (`*_ms`),
-- plus the caller's RFC 3339 text where the API hands it back (`at`);
-- enums are their lowercase names, checked by the code that reads them (no
-- CHECK constraints: a new variant must not need a table rebuild); JSON is
-- TEXT; counts are INTEGER.

-- The rollout position of each route (one row per route).
CREATE TABLE route_state (
    route               TEXT    PRIMARY KEY NOT NULL,
    stage               TEXT    NOT NULL,
    weight              REAL    NOT NULL,
    state               TEXT    NOT NULL,
    reason              TEXT,
    stage_started_at_ms INTEGER NOT NULL,
    -- opaque window counters owned by the rollout controller
    window_json         TEXT,
    updated_at_ms       INTEGER NOT NULL
);

-- Rollout transitions, append-only.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL,
    route      TEXT    NOT NULL,
    from_stage TEXT    NOT NULL,
    to_stage   TEXT    NOT NULL,
    weight     REAL    NOT NULL,
    state      TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    instance   TEXT
);
CREATE INDEX events_route_id ON events (route, id);
CREATE INDEX events_at_ms ON events (at_ms);

-- Stored exchanges: mismatches and the reservoir of matches.
CREATE TABLE samples (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    at                 TEXT    NOT NULL,
    at_ms              INTEGER NOT NULL,
    route              TEXT    NOT NULL,
    endpoint           TEXT    NOT NULL,
    kind               TEXT    NOT NULL,
    method             TEXT    NOT NULL,
    path               TEXT    NOT NULL,
    request            TEXT    NOT NULL,
    legacy_response    TEXT    NOT NULL,
    candidate_response TEXT    NOT NULL,
    differences        TEXT    NOT NULL
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
    route           TEXT    NOT NULL,
    bucket_start_ms INTEGER NOT NULL,
    side            TEXT    NOT NULL,
    requests        INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    p50_ms          REAL,
    p99_ms          REAL,
    compared        INTEGER NOT NULL,
    matched         INTEGER NOT NULL,
    mismatched      INTEGER NOT NULL,
    PRIMARY KEY (route, bucket_start_ms, side)
);
CREATE INDEX aggregates_bucket ON aggregates (bucket_start_ms);

-- Accumulated totals per endpoint template and side, for the report.
CREATE TABLE endpoint_stats (
    route          TEXT    NOT NULL,
    endpoint       TEXT    NOT NULL,
    side           TEXT    NOT NULL,
    requests       INTEGER NOT NULL,
    errors         INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    latency_sum_ms REAL    NOT NULL,
    p50_ms         REAL,
    p99_ms         REAL,
    last_bucket_ms INTEGER NOT NULL,
    PRIMARY KEY (route, endpoint, side)
);
