//! verdant-shadow: see DESIGN.md for what it will own. Until its issue
//! (issue #5) lands it serves only health, reflection and daemon info, and
//! says so in its log and in `verdantctl status`.

verdant_common::placeholder_daemon!("shadow", One, "issue #5");
