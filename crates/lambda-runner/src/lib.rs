//! verdant-lambda-runner: see DESIGN.md for what it will own. Until its issue
//! (issue #6) lands it serves only health, reflection and daemon info, and
//! says so in its log and in `verdantctl status`.

verdant_common::placeholder_daemon!("lambda-runner", PerCore, "issue #6");
