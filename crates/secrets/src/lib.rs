//! verdant-secrets: serves health, reflection and daemon info only. No
//! secrets are kept on the core, and functions cannot read any; it says so
//! in its log and in `verdantctl status`.

verdant_common::placeholder_daemon!("secrets", One, "no secrets are kept on this core");
