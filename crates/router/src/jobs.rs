//! AWS IoT Jobs for the core itself: the ota-agent's traffic with the
//! cloud on `$aws/things/<core thing>/jobs/...` travels outside the
//! group's routes, like the shadow sync. The cloud bridge always
//! subscribes to the answers and notifications, so that those arriving
//! while the ota-agent restarts wait for it in its queue. So does the
//! core's connectivity, which verdant-discovery publishes to the cloud on
//! `verdant/things/<core thing>/connectivity`, and the secrets daemon's
//! requests for secret values (`verdant/things/<core thing>/secrets/get`)
//! and their answers (`…/secrets/get/accepted` and `…/rejected`), which
//! carry values and so are never shown by a trace.

/// The topics of the core's own jobs, for its thing name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreJobs {
    /// `$aws/things/<core>/jobs/`.
    prefix: String,
    /// `verdant/things/<core>/connectivity`.
    connectivity: String,
    /// `verdant/things/<core>/secrets/get`.
    secrets: String,
}

impl CoreJobs {
    pub fn new(thing: &str) -> CoreJobs {
        CoreJobs {
            prefix: format!("$aws/things/{thing}/jobs/"),
            connectivity: format!("verdant/things/{thing}/connectivity"),
            secrets: format!("verdant/things/{thing}/secrets/get"),
        }
    }

    /// Whether `topic` is where the secrets daemon asks the cloud for a value.
    pub fn is_secrets_request(&self, topic: &str) -> bool {
        topic == self.secrets
    }

    /// Whether `topic` is where the cloud answers it (`accepted`, `rejected`).
    pub fn is_secrets_answer(&self, topic: &str) -> bool {
        topic
            .strip_prefix(self.secrets.as_str())
            .is_some_and(|rest| rest == "/accepted" || rest == "/rejected")
    }

    /// Whether `topic` is where the core's connectivity goes to the cloud.
    pub fn is_connectivity_topic(&self, topic: &str) -> bool {
        topic == self.connectivity
    }

    /// Whether `topic` is one of the core's jobs topics.
    pub fn is_jobs_topic(&self, topic: &str) -> bool {
        topic.starts_with(&self.prefix)
    }

    /// What the cloud bridge subscribes to: the next job's notifications,
    /// and the answers to the ota-agent's requests (not the requests
    /// themselves, which a broker would send back).
    pub fn cloud_filters(&self) -> [String; 4] {
        let p = &self.prefix;
        [
            format!("{p}notify-next"),
            format!("{p}start-next/+"),
            format!("{p}+/update/+"),
            format!("{}/+", self.secrets),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_s_jobs_topics_and_the_filters_of_their_answers() {
        let jobs = CoreJobs::new("core");
        assert!(jobs.is_jobs_topic("$aws/things/core/jobs/start-next"));
        assert!(jobs.is_jobs_topic("$aws/things/core/jobs/job-1/update"));
        assert!(!jobs.is_jobs_topic("$aws/things/core2/jobs/start-next"));
        assert!(!jobs.is_jobs_topic("$aws/things/core/shadow/update"));
        assert!(jobs.is_connectivity_topic("verdant/things/core/connectivity"));
        assert!(!jobs.is_connectivity_topic("verdant/things/other/connectivity"));
        assert!(jobs.is_secrets_request("verdant/things/core/secrets/get"));
        assert!(!jobs.is_secrets_request("verdant/things/core/secrets/get/accepted"));
        assert!(jobs.is_secrets_answer("verdant/things/core/secrets/get/accepted"));
        assert!(jobs.is_secrets_answer("verdant/things/core/secrets/get/rejected"));
        assert!(!jobs.is_secrets_answer("verdant/things/core/secrets/get/other"));
        assert!(!jobs.is_secrets_answer("verdant/things/core2/secrets/get/accepted"));
        let filters = jobs.cloud_filters();
        for (topic, answered) in [
            ("$aws/things/core/jobs/notify-next", true),
            ("$aws/things/core/jobs/start-next/accepted", true),
            ("$aws/things/core/jobs/job-1/update/rejected", true),
            ("$aws/things/core/jobs/start-next", false),
            ("$aws/things/core/jobs/job-1/update", false),
        ] {
            assert_eq!(
                filters
                    .iter()
                    .any(|f| verdant_group::routes::subject_matches(f, topic)),
                answered,
                "{topic}"
            );
        }
    }
}
