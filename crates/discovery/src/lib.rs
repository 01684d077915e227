//! verdant-discovery: serves health, reflection and daemon info only.
//! There is no discovery API: devices connect to the core's address and
//! port as configured; it says so in its log and in `verdantctl status`.

verdant_common::placeholder_daemon!(
    "discovery",
    One,
    "no discovery API: devices connect to the core's address directly"
);
