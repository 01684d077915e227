//! Least privilege: a daemon keeps the Linux capabilities it declares and
//! drops every other one from all five sets (bounding, inheritable,
//! ambient, permitted, effective) at start, before its runtime has threads
//! (capabilities are per thread; threads made later inherit the sets) and
//! before it reads a byte from outside. A core started unprivileged has
//! none to drop: nothing fails then.

pub use caps::Capability;
use caps::{CapSet, CapsHashSet};

use crate::config::ConfigSource;

/// The capabilities a daemon keeps.
#[derive(Debug, Clone, Copy)]
pub enum Capabilities {
    /// Always these (none: `Fixed(&[])`).
    Fixed(&'static [Capability]),
    /// As its configuration needs (e.g. a port below 1024).
    Configured(fn(&ConfigSource) -> Vec<Capability>),
}

impl Capabilities {
    pub fn needed(self, config: &ConfigSource) -> Vec<Capability> {
        match self {
            Capabilities::Fixed(caps) => caps.to_vec(),
            Capabilities::Configured(f) => f(config),
        }
    }
}

/// Why the capabilities could not be narrowed.
#[derive(Debug, thiserror::Error)]
#[error("cannot drop capabilities ({what}): {source}")]
pub struct PrivilegeError {
    what: &'static str,
    source: caps::errors::CapsError,
}

/// Keeps `needed` (where the process has them) and drops every other
/// capability from every set; returns what the process keeps, by name.
pub fn keep_only(needed: &[Capability]) -> Result<Vec<String>, PrivilegeError> {
    let err = |what| move |source| PrivilegeError { what, source };
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read permitted"))?;
    let keep: CapsHashSet = needed
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    // The bounding set first: dropping from it takes CAP_SETPCAP, which
    // goes with the permitted and effective sets last.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(err("read effective"))?
    {
        for cap in caps::read(None, CapSet::Bounding).map_err(err("read bounding"))? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(err("bounding"))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("inheritable"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(err("effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err("permitted"))?;
    Ok(names(&keep))
}

/// Drops every capability from the bounding set, so that none can come
/// back through an exec (a function's sandbox before it runs the
/// function).
pub fn clear_bounding() -> Result<(), PrivilegeError> {
    caps::clear(None, CapSet::Bounding).map_err(|source| PrivilegeError {
        what: "bounding",
        source,
    })
}

/// The capabilities of this thread's effective set, by name, sorted.
pub fn effective() -> Vec<String> {
    caps::read(None, CapSet::Effective).map_or_else(|_| Vec::new(), |c| names(&c))
}

fn names(set: &CapsHashSet) -> Vec<String> {
    let mut names: Vec<String> = set.iter().map(ToString::to_string).collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_only_what_it_declares() {
        // In a thread of its own: capabilities are per thread, and the
        // test harness's other threads keep theirs.
        std::thread::spawn(|| {
            let had = caps::read(None, CapSet::Permitted).unwrap();
            let kept = keep_only(&[Capability::CAP_NET_BIND_SERVICE]).unwrap();
            if had.contains(&Capability::CAP_NET_BIND_SERVICE) {
                assert_eq!(kept, vec!["CAP_NET_BIND_SERVICE".to_string()]);
            } else {
                assert!(kept.is_empty());
            }
            assert_eq!(effective(), kept);
            assert!(caps::read(None, CapSet::Inheritable).unwrap().is_empty());
            assert!(caps::read(None, CapSet::Ambient).unwrap().is_empty());
            if had.contains(&Capability::CAP_SETPCAP) {
                let bounding = caps::read(None, CapSet::Bounding).unwrap();
                assert_eq!(names(&bounding), kept);
            }
        })
        .join()
        .unwrap();
    }
}
