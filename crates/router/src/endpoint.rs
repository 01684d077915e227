//! The daemons a message can go to, as the router's links name them.

/// The daemons (and the in-process cloud bridge) messages go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Broker,
    Shadow,
    Lambda,
    Cloud,
    /// The ota-agent: the core's own AWS IoT Jobs (`jobs.rs`).
    Ota,
    /// verdant-discovery: the core's connectivity for the cloud (`jobs.rs`).
    Discovery,
    /// verdant-secrets: secret values asked of the cloud (`jobs.rs`).
    Secrets,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Broker,
        Endpoint::Shadow,
        Endpoint::Lambda,
        Endpoint::Cloud,
        Endpoint::Ota,
        Endpoint::Discovery,
        Endpoint::Secrets,
    ];

    /// The endpoints told whether the cloud connection is up.
    pub(crate) const CLOUD_WATCHERS: [Endpoint; 4] = [
        Endpoint::Shadow,
        Endpoint::Ota,
        Endpoint::Discovery,
        Endpoint::Secrets,
    ];

    /// The name a daemon gives in its Hello.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Broker => "broker",
            Endpoint::Shadow => "shadow",
            Endpoint::Lambda => "lambda-runner",
            Endpoint::Cloud => "cloud",
            Endpoint::Ota => "ota-agent",
            Endpoint::Discovery => "discovery",
            Endpoint::Secrets => "secrets",
        }
    }

    /// The daemons that may open a link (the cloud bridge is in-process).
    pub fn from_hello(name: &str) -> Option<Endpoint> {
        Endpoint::ALL
            .into_iter()
            .filter(|e| *e != Endpoint::Cloud)
            .find(|e| e.name() == name)
    }
}
