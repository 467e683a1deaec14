//! The one integration test binary: the engine and the real `pixgate` binary against the
//! shared fixtures.

mod cli;
mod formats;
mod golden;
mod hostile;
mod manifest;
mod support;
