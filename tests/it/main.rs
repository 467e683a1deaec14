//! The one integration test binary: the engine, the real `pixgate` binary and the server
//! against the fixtures in tests/fixtures and a real local origin.

mod animation;
mod autoquality;
mod avif;
mod cache;
mod cli;
mod color;
mod composition;
mod effects;
mod formats;
mod fuzz;
mod golden;
mod hardening;
mod hostile;
mod info;
mod install;
mod manifest;
mod max_bytes;
mod metadata;
mod metrics;
mod netns;
mod policy;
mod serve;
mod stack;
mod support;
mod svg;
mod upload;
