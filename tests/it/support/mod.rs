//! Shared helpers of the integration tests, one file per kind of thing they start or read:
//! the in-process server, the binary, HTTP, the local origin, fixtures, the engine, images.

pub mod binary;
pub mod engine;
pub mod fixtures;
pub mod http;
pub mod image;
pub mod origin;
pub mod server;

pub use binary::{
    Run, log_channel, run_pixgate, spawn_binary, spawn_binary_at, spawn_binary_server,
    wait_for_line,
};
pub use fixtures::{Row, TempDir, fixture, fixtures, manifest, path_str, read};
pub use http::{Reply, get, post, request};
pub use image::{avif_with_ispe, decode, diff, png};
pub use origin::Origin;
pub use server::{Pixgate, test_config};
