//! Outbound HTTP: the one way Loopline fetches a URL it did not choose itself (SNS
//! signing certificates and subscription links now, feeds for RSS-to-email later).
//!
//! [`fetch::Fetcher`] resolves a host once, refuses every address that is not public
//! unicast ([`ip::classify`]), connects to the address it checked (no second lookup, so
//! no DNS rebinding), speaks https with the hostname verified against Mozilla's roots,
//! and bounds time and size. See docs/ARCHITECTURE.md, "Outbound fetches".

pub mod fetch;
pub mod ip;

pub use fetch::{FetchError, Fetcher, FetcherBuilder, Options};
