//! verdant-discovery: see DESIGN.md for what it will own. Until its issue
//! (not yet scheduled) lands it serves only health, reflection and daemon info, and
//! says so in its log and in `verdantctl status`.

verdant_common::placeholder_daemon!("discovery", One, "not yet scheduled");
