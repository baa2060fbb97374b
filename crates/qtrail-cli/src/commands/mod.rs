//! One module per command group; each turns parsed arguments into RPCs and prints the answers.

pub mod alerts;
pub mod archive;
pub mod collectors;
pub mod events;
pub mod jobs;
pub mod programs;
pub mod proof;
pub mod retention;
