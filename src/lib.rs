//! Loopline: one always-on server that runs the marketing loop
//! (content calendar → sends → reactions → tags and segments → next branch).
//!
//! The crate is organised after that loop; see `docs/ARCHITECTURE.md` for the map.

pub mod accounts;
pub mod address;
pub mod audience;
pub mod clock;
pub mod config;
pub mod db;
pub mod delivery;
pub mod error;
pub mod jobs;
pub mod net;
pub mod ratelimit;
pub mod secrets;
pub mod signing;
pub mod startup;
pub mod telemetry;
pub mod tracking;

/// mimalloc instead of the system allocator, for every binary that links Loopline (the
/// server, the benchmarks, the tests): request handling, rendering and encoding
/// allocate many small short-lived buffers across Tokio's worker threads, where glibc's
/// malloc spent about a fifth of the click path's CPU (docs/BENCHMARKS.md, click).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub mod web;

pub use error::{AppError, AppResult, Problem};
