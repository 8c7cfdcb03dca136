//! What the protocol did that a user may want to hear about. `lock/` never
//! prints: it reports these, and the commands turn them into words
//! (`cmd::context::tell`).

use std::path::Path;

use super::dir::Released;
use super::inspect::Inspection;
use super::record::Record;

#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// A wait begins: who holds the lock.
    Waiting {
        path: &'a Path,
        holder: &'a Inspection,
    },
    /// The path was removed while its holder still holds the old file: we
    /// wait for that holder to let go before creating a new lock (SPEC 2a).
    WaitingForDisplaced { path: &'a Path, record: &'a Record },
    /// A stale resin-lock lock was removed to take its place.
    TookOverStale {
        path: &'a Path,
        reason: &'a str,
        record: &'a Record,
    },
    /// A lock was let go of.
    Released { path: &'a Path, how: Released },
}

/// Where events go.
pub(crate) type Notify<'a> = &'a dyn Fn(Event<'_>);

/// Events nobody listens to (the keeper).
pub(crate) fn ignore(_: Event<'_>) {}
