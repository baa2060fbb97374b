-- qtrail PostgreSQL store, schema version 2: the alerts' state, shared by the replicas (see
-- `alerts::shared`). The same concepts as the embedded `alerts.redb`: rules with their state
-- (cursor, generation, trigger), firings, webhook deliveries and the pending list. Every write
-- takes one transaction-level advisory lock, so firing numbers stay dense and in commit order.

-- Rules (the protobuf AlertRule, secret included) with their state (JSON), by `location/name`.
CREATE TABLE alert_rules (
    key      text COLLATE "C" PRIMARY KEY,
    location text  NOT NULL,
    rule     bytea NOT NULL,
    state    bytea NOT NULL
);

-- Counters by name: `generation`.
CREATE TABLE alert_meta (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);

-- Firings (the protobuf AlertFiring), by number.
CREATE TABLE alert_firings (
    number   bigint PRIMARY KEY,
    location text  NOT NULL,
    firing   bytea NOT NULL
);

-- Deliveries (JSON), by firing number; `webhook_id` unique: a delivery is made once.
CREATE TABLE alert_deliveries (
    number     bigint PRIMARY KEY,
    rule       text  NOT NULL,
    webhook_id text  NOT NULL UNIQUE,
    delivery   bytea NOT NULL
);

-- Deliveries still to make, by rule and firing number, with when each is due next (ms).
CREATE TABLE alert_pending (
    rule   text COLLATE "C" NOT NULL,
    number bigint NOT NULL,
    due    bigint NOT NULL,
    PRIMARY KEY (rule, number)
);
