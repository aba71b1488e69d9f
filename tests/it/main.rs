//! Integration tests: one private PostgreSQL per test run, a fresh database per test,
//! the app on port 0, a real SMTP server, and headless Chromium for the journey.

mod harness;

mod accounts;
mod audience;
mod browser;
mod crash;
mod delivery;
mod errors;
mod imports;
mod jobs;
mod large_import;
mod live_index;
mod process;
mod public;
mod routes;
mod segments;
mod ses;
mod smtp;
mod smtp_faults;
mod webhooks;
