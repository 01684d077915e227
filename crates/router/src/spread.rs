//! Which cloud connection subscribes to which subjects, when there are
//! more subjects than one connection may hold (AWS IoT: 50).

/// How the subjects are spread over the cloud connections: the subjects
/// of each connection; there is always at least one connection (the one
/// that also publishes), even with no subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spread {
    per: usize,
    connections: Vec<Vec<String>>,
}

/// What a live connection set must do to follow new subjects.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub subscribe: Vec<(usize, String)>,
    pub unsubscribe: Vec<(usize, String)>,
}

impl Spread {
    pub fn new(subjects: &[String], per: usize) -> Spread {
        let mut connections: Vec<Vec<String>> = subjects
            .chunks(per.max(1))
            .map(<[String]>::to_vec)
            .collect();
        if connections.is_empty() {
            connections.push(Vec::new());
        }
        Spread { per, connections }
    }

    pub fn connections(&self) -> &[Vec<String>] {
        &self.connections
    }

    /// Moves to `subjects` on the live connections: dropped subjects are
    /// unsubscribed where they were, new ones go where there is room.
    /// `None` if they do not fit: the connection set must be made anew.
    pub fn change(&mut self, subjects: &[String]) -> Option<Changes> {
        let mut next = self.connections.clone();
        let mut changes = Changes::default();
        for (i, conn) in next.iter_mut().enumerate() {
            conn.retain(|s| {
                let keep = subjects.contains(s);
                if !keep {
                    changes.unsubscribe.push((i, s.clone()));
                }
                keep
            });
        }
        for s in subjects {
            if next.iter().any(|c| c.contains(s)) {
                continue;
            }
            let i = next.iter().position(|c| c.len() < self.per)?;
            next[i].push(s.clone());
            changes.subscribe.push((i, s.clone()));
        }
        self.connections = next;
        Some(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s/{i}")).collect()
    }

    #[test]
    fn chunks_and_follows_changes_while_they_fit() {
        let mut l = Spread::new(&subjects(5), 2);
        assert_eq!(l.connections().len(), 3);
        assert_eq!(Spread::new(&[], 50).connections(), [Vec::<String>::new()]);
        // Drop s/1, add s/9: it takes s/1's place.
        let mut next = subjects(5);
        next.retain(|s| s != "s/1");
        next.push("s/9".into());
        let c = l.change(&next).unwrap();
        assert_eq!(c.unsubscribe, [(0, "s/1".to_string())]);
        assert_eq!(c.subscribe, [(0, "s/9".to_string())]);
        // One more than the connections hold: a new set is needed.
        assert!(l.change(&subjects(7)).is_none());
    }
}
