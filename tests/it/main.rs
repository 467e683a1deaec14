//! The one integration test binary: the engine and the real `pixgate` binary against the
//! shared fixtures.

mod formats;
mod hostile;
mod manifest;
mod support;
