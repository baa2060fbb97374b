-- qtrail PostgreSQL store, schema version 1. Applied by `store::postgres::schema` in one
-- transaction under an advisory lock; recorded in `schema_version`.

-- One row per location: its head, which every append locks (SELECT … FOR UPDATE) to sequence
-- the location's chain and tree across replicas.
CREATE TABLE collectors (
    location        text PRIMARY KEY,
    create_seconds  bigint  NOT NULL,
    create_nanos    integer NOT NULL,
    event_count     bigint  NOT NULL DEFAULT 0,
    head_chain_hash bytea   NOT NULL DEFAULT ''::bytea,
    tree_size       bigint  NOT NULL DEFAULT 0
);

-- The chain: the protobuf StoredEvent as stored (without location and location_seq, which the
-- key holds), plus the columns queries narrow on.
CREATE TABLE events (
    location       text   NOT NULL REFERENCES collectors (location),
    location_seq   bigint NOT NULL,
    event_id       uuid   NOT NULL,
    chain_hash     bytea  NOT NULL,
    event_millis   bigint,
    action         text,
    outcome        integer,
    severity       integer,
    initiator_id   text,
    target_id      text,
    correlation_id text,
    record         bytea  NOT NULL,
    PRIMARY KEY (location, location_seq),
    -- Deduplication.
    UNIQUE (location, event_id)
);
CREATE INDEX events_by_time ON events (location, event_millis);
CREATE INDEX events_by_action ON events (location, action, location_seq);
CREATE INDEX events_by_initiator ON events (location, initiator_id, location_seq);
CREATE INDEX events_by_target ON events (location, target_id text_pattern_ops);
CREATE INDEX events_by_correlation ON events (location, correlation_id, location_seq);
CREATE INDEX events_by_chain_hash ON events (location, chain_hash);

-- The Merkle tree of each location as Go-tlog stored hashes, appended with the events.
CREATE TABLE tree_hashes (
    location     text   NOT NULL REFERENCES collectors (location),
    stored_index bigint NOT NULL,
    hash         bytea  NOT NULL,
    PRIMARY KEY (location, stored_index)
);

-- Publisher bookkeeping: the protobuf PublisherState.
CREATE TABLE publishers (
    location     text  NOT NULL REFERENCES collectors (location),
    publisher_id text  NOT NULL,
    state        bytea NOT NULL,
    PRIMARY KEY (location, publisher_id)
);

-- Signed checkpoints: the protobuf Checkpoint, numbered densely from 1 per location.
CREATE TABLE checkpoints (
    location   text   NOT NULL REFERENCES collectors (location),
    number     bigint NOT NULL,
    checkpoint bytea  NOT NULL,
    PRIMARY KEY (location, number)
);
