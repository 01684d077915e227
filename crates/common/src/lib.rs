//! What every Verdant daemon does the same way, and nothing daemon-specific:
//! where files live ([`paths`]), how configuration is read ([`config`]), how
//! logs are set up ([`telemetry`]), how a daemon stops ([`shutdown`]), what
//! its exit code tells `verdant-init` ([`exit`]), gRPC on Unix sockets
//! with health, reflection and peer credentials ([`uds`], [`grpc`]),
//! certificates from PEM files ([`pem`]) and the TLS built from them
//! rebuilt when they change ([`reload`]), server certificates issued on
//! the core (`pki`, with the `pki` feature), a child process's output
//! captured into a rotating log ([`logs`]), listening sockets handed from
//! init to the broker ([`listen`]), files replaced whole
//! ([`fsutil`]), and the daemons' SQLite
//! databases opened the same way (`sqlite`, with the `sqlite` feature),
//! and the version the executable reports ([`version`]).
//! [`daemon`] strings these together into a daemon's `main`. (A client of
//! one daemon's protocol lives with that protocol: the router's Link client
//! is `verdant-link`.)

pub mod config;
pub mod daemon;
pub mod exit;
pub mod fsutil;
pub mod grpc;
pub mod listen;
pub mod logs;
pub mod memory;
pub mod paths;
pub mod pem;
#[cfg(feature = "pki")]
pub mod pki;
pub mod privileges;
pub mod reload;
pub mod shutdown;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod telemetry;
pub mod uds;
pub mod version;
