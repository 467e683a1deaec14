//! The option table: every processing option once, in canonical order, with its names (full
//! first, then imgproxy's short forms), how its arguments apply to [`Options`] and how its
//! value is written in the canonical form (the cache key). Adding an option is one entry in
//! its group's file (and its field and default in `types.rs`).

mod adjust;
mod effects;
mod geometry;
mod output;
mod security;

use std::collections::HashMap;
use std::sync::OnceLock;

use super::{Options, OptionsError, ParseContext};

/// Applies one option's arguments: (options, the name as written, arguments, context, the
/// presets being expanded).
pub(super) type Apply = fn(
    &mut Options,
    &str,
    &[String],
    &ParseContext<'_>,
    &mut Vec<String>,
) -> Result<(), OptionsError>;

/// Appends the option's canonical segment when its value differs from the defaults.
pub(super) type Canonical = fn(&Options, &Options, &mut Vec<String>);

/// One processing option.
pub(super) struct Spec {
    pub names: &'static [&'static str],
    pub apply: Apply,
    /// `None`: written by another entry (`rs` as `rt`, `w`, `h`...; `br` inside `a`).
    pub canonical: Option<Canonical>,
}

/// Every option, in canonical order (the order segments have in the canonical form).
pub(super) fn all() -> impl Iterator<Item = &'static Spec> {
    [
        geometry::OPTIONS,
        effects::OPTIONS,
        output::OPTIONS,
        security::OPTIONS,
        adjust::OPTIONS,
    ]
    .into_iter()
    .flatten()
}

/// The option of a name, full or short.
pub(super) fn lookup(name: &str) -> Option<&'static Spec> {
    static BY_NAME: OnceLock<HashMap<&'static str, &'static Spec>> = OnceLock::new();
    BY_NAME
        .get_or_init(|| {
            all()
                .flat_map(|s| s.names.iter().map(move |n| (*n, s)))
                .collect()
        })
        .get(name)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_one_option() {
        let mut seen = std::collections::HashSet::new();
        for s in all() {
            for n in s.names {
                assert!(seen.insert(*n), "`{n}` names two options");
            }
        }
        assert_eq!(seen.len(), all().map(|s| s.names.len()).sum::<usize>());
    }
}
