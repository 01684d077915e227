//! verdant-ota-agent: serves health, reflection and daemon info only.
//! Deployments do not arrive over the air: each daemon reads the group at
//! its start, and `verdantctl reload` has the router and the broker read it
//! again; it says so in its log and in `verdantctl status`.

verdant_common::placeholder_daemon!(
    "ota-agent",
    One,
    "no over-the-air deployments: the group is read at start and by `verdantctl reload`"
);
