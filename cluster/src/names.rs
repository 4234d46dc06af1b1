//! Where a cluster lives in NATS: its KV buckets, its JetStream stream and its subjects.
//!
//! A cluster `site` owns
//! - KV `sensorium-site-streams`: the desired state, one key per stream (its config);
//! - KV `sensorium-site-leases`: who runs each stream, compared-and-set by revision;
//! - KV `sensorium-site-workers`: each live worker's heartbeat, capacity and load;
//! - JetStream stream `sensorium-site-results` over `sensorium.site.windows.STREAM` and
//!   `sensorium.site.answers.STREAM` (window records and answers, the same JSON as the
//!   output lines);
//! - request/reply subjects `sensorium.site.ask.STREAM` (live questions).

use crate::ClusterError;

/// The names of one cluster's buckets, stream and subjects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    cluster: String,
}

/// Cluster and stream names: what NATS accepts in a bucket name and a subject token.
pub fn check_name(what: &str, name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::Usage(format!(
            "{what} name '{name}': use 1 to 64 of A-Z a-z 0-9 - _ (it becomes part of NATS \
             bucket names and subjects)"
        )))
    }
}

/// The two kinds of results a stream publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Windows,
    Answers,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Windows => "windows",
            Kind::Answers => "answers",
        }
    }
}

impl Names {
    pub fn new(cluster: &str) -> Result<Self, ClusterError> {
        check_name("cluster", cluster)?;
        Ok(Self {
            cluster: cluster.to_owned(),
        })
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn streams_bucket(&self) -> String {
        format!("sensorium-{}-streams", self.cluster)
    }

    pub fn leases_bucket(&self) -> String {
        format!("sensorium-{}-leases", self.cluster)
    }

    pub fn workers_bucket(&self) -> String {
        format!("sensorium-{}-workers", self.cluster)
    }

    /// The JetStream stream holding every window record and answer of the cluster.
    pub fn results_stream(&self) -> String {
        format!("sensorium-{}-results", self.cluster)
    }

    /// `sensorium.CLUSTER.windows.STREAM` or `sensorium.CLUSTER.answers.STREAM`.
    pub fn subject(&self, kind: Kind, stream: &str) -> String {
        format!("sensorium.{}.{}.{stream}", self.cluster, kind.as_str())
    }

    /// Every subject the results stream stores.
    pub fn result_subjects(&self) -> Vec<String> {
        vec![
            format!("sensorium.{}.windows.>", self.cluster),
            format!("sensorium.{}.answers.>", self.cluster),
        ]
    }

    /// Live questions about `stream`, by request/reply.
    pub fn ask_subject(&self, stream: &str) -> String {
        format!("sensorium.{}.ask.{stream}", self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects() {
        let n = Names::new("site-1").unwrap();
        assert_eq!(n.streams_bucket(), "sensorium-site-1-streams");
        assert_eq!(n.leases_bucket(), "sensorium-site-1-leases");
        assert_eq!(n.results_stream(), "sensorium-site-1-results");
        assert_eq!(
            n.subject(Kind::Windows, "cam_3"),
            "sensorium.site-1.windows.cam_3"
        );
        assert_eq!(n.ask_subject("cam"), "sensorium.site-1.ask.cam");
    }

    #[test]
    fn names_that_would_break_subjects_are_refused() {
        for bad in ["", "a.b", "a b", "a>", "*", &"x".repeat(65)] {
            let e = Names::new(bad).unwrap_err().to_string();
            assert!(e.contains("use 1 to 64 of"), "{bad:?}: {e}");
        }
        assert!(check_name("stream", "front-door_2").is_ok());
    }
}
