//! In-process tests of the runtime: the real server on port 0, a real redb database in a
//! temporary directory, and an in-memory collector on a real socket that records what the
//! publisher sends. Each call's audit event is found by its correlation id.

mod bounds;
mod delivery;
mod harness;
mod hostile;
mod jobs;
mod programs;
mod tls;
mod undecodable;
