//! Messages from the broker to one client: packet ids, the inflight window
//! of unacknowledged QoS 1/2 messages, and what waits behind it. No I/O.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::wire::Publish;
use rumqttc::QoS;

use crate::message::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    Qos1Sent,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    Qos2Sent,
    /// QoS 2 PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
pub struct Outbound {
    window: usize,
    next_pkid: u16,
    inflight: BTreeMap<u16, (Message, Stage)>,
    waiting: VecDeque<Message>,
    /// Store rows of messages whose 5.0 expiry passed before they could be
    /// sent: dropped (MQTT-3.3.2-5), for the store to delete.
    pub expired: Vec<u64>,
}

/// A message the client finished acknowledging.
#[derive(Debug)]
pub struct Done {
    /// What the freed window lets go out now.
    pub next: Vec<Publish>,
    /// The finished message's row in the store, to delete.
    pub stored: Option<u64>,
}

/// What the client acknowledged wrongly.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownPacketId(pub u16);

impl Outbound {
    pub fn new(window: u16) -> Self {
        Outbound {
            window: usize::from(window),
            next_pkid: 1,
            inflight: BTreeMap::new(),
            waiting: VecDeque::new(),
            expired: Vec::new(),
        }
    }

    /// Queues `message`; returns the PUBLISH to send now, if the window allows.
    pub fn push(&mut self, message: Message) -> Option<Publish> {
        if self.expire(&message) {
            return None;
        }
        if message.qos == QoS::AtMostOnce {
            return Some(to_publish(&message, 0));
        }
        if self.inflight.len() >= self.window || !self.waiting.is_empty() {
            self.waiting.push_back(message);
            return None;
        }
        Some(self.send(message))
    }

    fn send(&mut self, message: Message) -> Publish {
        let pkid = self.allocate();
        let stage = if message.qos == QoS::AtLeastOnce {
            Stage::Qos1Sent
        } else {
            Stage::Qos2Sent
        };
        let publish = to_publish(&message, pkid);
        self.inflight.insert(pkid, (message, stage));
        publish
    }

    fn allocate(&mut self) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&pkid) {
                return pkid;
            }
        }
    }

    /// Fills the window from the waiting messages.
    fn refill(&mut self) -> Vec<Publish> {
        let mut out = Vec::new();
        while self.inflight.len() < self.window {
            let Some(m) = self.waiting.pop_front() else {
                break;
            };
            if !self.expire(&m) {
                out.push(self.send(m));
            }
        }
        out
    }

    /// Whether `m` expired; its store row, if any, is noted for deletion.
    fn expire(&mut self, m: &Message) -> bool {
        let expired = m.props.as_ref().is_some_and(|p| p.expired(Instant::now()));
        if expired {
            self.expired.extend(m.stored);
        }
        expired
    }

    /// A message that could not be sent (larger than the client takes):
    /// finished as if acknowledged.
    pub fn discard(&mut self, pkid: u16) -> Result<Done, UnknownPacketId> {
        match self.inflight.get(&pkid) {
            Some((_, stage)) => self.finish(pkid, *stage),
            None => Err(UnknownPacketId(pkid)),
        }
    }

    pub fn puback(&mut self, pkid: u16) -> Result<Done, UnknownPacketId> {
        self.finish(pkid, Stage::Qos1Sent)
    }

    fn finish(&mut self, pkid: u16, expected: Stage) -> Result<Done, UnknownPacketId> {
        match self.inflight.get(&pkid) {
            Some((_, stage)) if *stage == expected => {
                let (m, _) = self.inflight.remove(&pkid).expect("looked up above");
                Ok(Done {
                    next: self.refill(),
                    stored: m.stored,
                })
            }
            _ => Err(UnknownPacketId(pkid)),
        }
    }

    /// PUBREC: the PUBREL's packet id to send.
    pub fn pubrec(&mut self, pkid: u16) -> Result<u16, UnknownPacketId> {
        match self.inflight.get_mut(&pkid) {
            Some((_, stage @ (Stage::Qos2Sent | Stage::Released))) => {
                *stage = Stage::Released;
                Ok(pkid)
            }
            _ => Err(UnknownPacketId(pkid)),
        }
    }

    pub fn pubcomp(&mut self, pkid: u16) -> Result<Done, UnknownPacketId> {
        self.finish(pkid, Stage::Released)
    }

    /// As many messages wait behind the window as it holds: the
    /// connection takes no more from the hub until they move.
    pub fn backlogged(&self) -> bool {
        self.waiting.len() >= self.window
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Everything not yet acknowledged, oldest first, for the session to
    /// keep; what was sent is marked to go again as a duplicate.
    pub fn into_unacked(self) -> Vec<Message> {
        self.inflight
            .into_values()
            .map(|(m, _)| Message { dup: true, ..m })
            .chain(self.waiting)
            .collect()
    }
}

fn to_publish(m: &Message, pkid: u16) -> Publish {
    Publish {
        topic: m.topic.clone(),
        payload: m.payload.clone(),
        qos: m.qos,
        retain: m.retain,
        // Never on QoS 0 (MQTT-3.3.1-2).
        dup: m.dup && m.qos != QoS::AtMostOnce,
        pkid,
        props: m.props.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn m(qos: QoS, n: u8) -> Message {
        Message {
            topic: "t".into(),
            payload: Bytes::from(vec![n]),
            qos,
            retain: false,
            stored: Some(u64::from(n)),
            props: None,
            from: None,
            dup: false,
        }
    }

    #[test]
    fn window_holds_and_refills_in_order() {
        let mut o = Outbound::new(2);
        let a = o.push(m(QoS::AtLeastOnce, 1)).unwrap();
        let b = o.push(m(QoS::ExactlyOnce, 2)).unwrap();
        assert!(o.push(m(QoS::AtLeastOnce, 3)).is_none());
        assert!(o.push(m(QoS::AtLeastOnce, 4)).is_none());
        // QoS 0 is never held.
        assert_eq!(o.push(m(QoS::AtMostOnce, 9)).unwrap().pkid, 0);
        assert_eq!(o.puback(b.pkid).unwrap_err(), UnknownPacketId(b.pkid));
        let done = o.puback(a.pkid).unwrap();
        assert_eq!(done.stored, Some(1));
        let next = done.next;
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].payload, Bytes::from(vec![3]));
        assert_eq!(o.pubrec(b.pkid).unwrap(), b.pkid);
        assert!(o.pubcomp(a.pkid).is_err());
        let done = o.pubcomp(b.pkid).unwrap();
        assert_eq!(done.stored, Some(2));
        assert_eq!(done.next[0].payload, Bytes::from(vec![4]));
        let left: Vec<_> = o.into_unacked().iter().map(|m| m.payload[0]).collect();
        assert_eq!(left, vec![3, 4]);
    }

    #[test]
    fn what_was_sent_goes_again_as_a_duplicate() {
        let mut o = Outbound::new(1);
        assert!(!o.push(m(QoS::AtLeastOnce, 1)).unwrap().dup);
        assert!(o.push(m(QoS::ExactlyOnce, 2)).is_none());
        let unacked = o.into_unacked();
        let dup: Vec<_> = unacked.iter().map(|m| (m.payload[0], m.dup)).collect();
        assert_eq!(dup, vec![(1, true), (2, false)], "only the one sent");
        // On the next connection: DUP on the resent one only.
        let mut o = Outbound::new(2);
        let sent: Vec<_> = unacked.into_iter().filter_map(|m| o.push(m)).collect();
        assert_eq!(
            sent.iter().map(|p| p.dup).collect::<Vec<_>>(),
            vec![true, false]
        );
        assert!(
            !o.push(Message {
                dup: true,
                ..m(QoS::AtMostOnce, 3)
            })
            .unwrap()
            .dup
        );
    }

    #[test]
    fn packet_ids_skip_zero_and_inflight() {
        let mut o = Outbound::new(3);
        o.next_pkid = u16::MAX;
        let a = o.push(m(QoS::AtLeastOnce, 1)).unwrap();
        let b = o.push(m(QoS::AtLeastOnce, 2)).unwrap();
        assert_eq!((a.pkid, b.pkid), (u16::MAX, 1));
    }
}
