//! Releases of Verdant published in a repository in The Update
//! Framework's format: the client workflow that decides what to trust
//! (`tuf`, over the canonical JSON TUF signs, `cjson`) and what a release
//! is and when a core refuses one (`release`). The ota-agent fetches
//! with it; verdant-init checks with it what it is about to execute.

pub mod cjson;
pub mod release;
pub mod tuf;

pub use release::{Manifest, ReleaseError};
pub use tuf::{Client, Remote, TargetFile, Targets, TufError, verify_targets};
