//! The time a pixel job may take, carried into the work itself: long operations (blur,
//! sharpen, scans, encoders fed in row bands, the quality searches) ask it between rows,
//! tiles, frames and encodes, so a job stops soon after its request has given up instead of
//! holding a worker (and its memory) to the end.

use std::time::{Duration, Instant};

/// When the job must stop; `none()` for work without a deadline (the CLI, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadline(Option<Instant>);

/// The deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request deadline passed during processing")]
pub struct Expired;

impl Deadline {
    pub const fn none() -> Deadline {
        Deadline(None)
    }

    pub const fn at(when: Instant) -> Deadline {
        Deadline(Some(when))
    }

    pub fn from_option(when: Option<Instant>) -> Deadline {
        Deadline(when)
    }

    /// `Err` once the deadline has passed.
    pub fn check(&self) -> Result<(), Expired> {
        match self.0 {
            Some(d) if Instant::now() >= d => Err(Expired),
            _ => Ok(()),
        }
    }

    /// Time left; `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    pub fn instant(&self) -> Option<Instant> {
        self.0
    }
}
