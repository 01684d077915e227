//! verdant-broker: see DESIGN.md for what it will own. Until its issue
//! (issue #3) lands it serves only health, reflection and daemon info, and
//! says so in its log and in `verdantctl status`.

verdant_common::placeholder_daemon!("broker", PerCore, "issue #3");
