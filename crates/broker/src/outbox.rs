//! The hub → connection channel: what the hub has for one client.
//!
//! Bounded like tokio's `mpsc` (a full outbox makes the hub park QoS 1/2
//! messages, see `hub/backlog.rs`), but sized by use: tokio's channel
//! allocates a block of 32 slots and a cache-padded header up front,
//! about 3.8 KiB for every connected client, idle or not. This one starts
//! empty, grows in chunks of 32 (a backlog of 100,000 messages is never
//! copied into a buffer twice its size) and gives its chunks back once a
//! burst has been taken, so a thousand quiet devices cost no buffers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::message::{Message, Notification};

/// Messages per chunk: a flow that never has more waiting uses one ring.
const CHUNK: usize = 32;
/// A drained queue keeps a chunk this small for the next message; a
/// larger one (after a burst) is freed.
const KEEP_SLOTS: usize = 4;

/// The hub's end.
#[derive(Debug)]
pub struct Outbox(Arc<Chan>);

/// The connection's end.
#[derive(Debug)]
pub struct Inbox(Arc<Chan>);

/// Why [`Outbox::try_send`] gave the message back.
#[derive(Debug)]
pub enum TrySendError {
    /// The connection has `capacity` messages it has not taken yet.
    Full(Notification),
    /// The connection has ended.
    Closed(Notification),
}

#[derive(Debug)]
struct Chan {
    state: Mutex<State>,
    /// The connection's task, woken when its queue stops being empty.
    waker: AtomicWaker,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first; every chunk but the last is full at the time it was
    /// left behind.
    chunks: VecDeque<VecDeque<Notification>>,
    len: usize,
    /// A `Close` goes ahead of the messages and does not count against
    /// the capacity: a client that is behind is the one an operator or a
    /// group change most needs to disconnect.
    close: Option<Notification>,
    /// Publishers' wakes ([`Outbox::wake_publisher`]), apart from the messages:
    /// a connection that is behind takes them all the same, so a slow
    /// client never holds another's acknowledgements this way.
    wakes: Vec<Wake>,
    /// The hub dropped its end: nothing more will come.
    sender_gone: bool,
    /// The connection dropped its end.
    receiver_gone: bool,
}

impl State {
    fn push(&mut self, out: Notification) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push_back(out),
            back => {
                // The first chunk grows as needed; later ones are whole.
                let mut chunk = if back.is_some() {
                    VecDeque::with_capacity(CHUNK)
                } else {
                    VecDeque::new()
                };
                chunk.push_back(out);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Notification> {
        if let Some(close) = self.close.take() {
            return Some(close);
        }
        let several = self.chunks.len() > 1;
        let front = self.chunks.front_mut()?;
        let out = front.pop_front()?;
        self.len -= 1;
        if front.is_empty() && (several || front.capacity() > KEEP_SLOTS) {
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() && self.chunks.capacity() > KEEP_SLOTS {
            self.chunks = VecDeque::new();
        }
        Some(out)
    }
}

impl Chan {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves a queue of plain values intact.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A channel for at most `capacity` (≥ 1) messages not yet taken.
pub fn channel(capacity: usize) -> (Outbox, Inbox) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State::default()),
        waker: AtomicWaker::new(),
        capacity: capacity.max(1),
    });
    (Outbox(chan.clone()), Inbox(chan))
}

impl Outbox {
    /// Queues `out` unless the connection is gone or its queue is full; a
    /// `Close` is never refused for room, and is taken before anything
    /// queued (the first one stands). `Ok(true)`: this message filled the
    /// queue halfway, time for whoever fills it to let the connection
    /// run. Only the crossing says so: a queue that stays over half full
    /// (a client that does not keep up) does not slow every batch.
    pub fn try_send(&self, out: Notification) -> Result<bool, TrySendError> {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Err(TrySendError::Closed(out));
        }
        if let Notification::Close(..) = out {
            state.close.get_or_insert(out);
            drop(state);
            // A connection that is behind may not be waiting on its
            // queue: wake it whatever the queue holds.
            self.0.waker.wake();
            return Ok(false);
        }
        if state.len >= self.0.capacity {
            return Err(TrySendError::Full(out));
        }
        // The connection waits only after it found the queue empty.
        let wake = state.len == 0;
        let half = self.0.capacity.div_ceil(2);
        let crowded = state.len + 1 == half;
        state.push(out);
        drop(state);
        if wake {
            self.0.waker.wake();
        }
        Ok(crowded)
    }
}

/// A publisher's word that it may acknowledge (`Hub::pass_on`): `true`,
/// sent when the connection holding it takes its turn, or when it is
/// dropped unsent. Whatever was passed on is in the hub's hands either
/// way (a connection that ends gives its messages back to a persistent
/// session), and what had to be stored never takes this path, so a
/// subscriber that goes away never fails its publishers.
#[derive(Debug)]
pub struct Wake(Option<tokio::sync::oneshot::Sender<bool>>);

impl Wake {
    /// Tells the publisher now (as dropping it does).
    pub fn fire(self) {
        drop(self);
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(true);
        }
    }
}

impl Outbox {
    /// Has the connection tell a publisher, once it takes its turn (which
    /// writes what it was just sent), that it may acknowledge: see
    /// `Hub::pass_on`. Never refused for room; a connection that is gone
    /// tells the publisher at once (see [`Wake`]).
    pub fn wake_publisher(&self, wake: tokio::sync::oneshot::Sender<bool>) {
        let wake = Wake(Some(wake));
        let mut state = self.0.lock();
        if state.receiver_gone {
            drop(state);
            wake.fire();
            return;
        }
        state.wakes.push(wake);
        drop(state);
        self.0.waker.wake();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.waker.wake();
    }
}

/// What [`Inbox::take`] found.
#[derive(Debug)]
pub enum Taken {
    /// The broker closes the connection: reason code and why (taken
    /// before anything else).
    Close(u8, String),
    /// The hub dropped its end and everything it sent was taken.
    Gone,
    /// The next message (publishers' wakes may have come with it).
    Message(Message),
    /// Publishers' wakes only.
    Wakes,
}

impl Inbox {
    /// Waits for what the hub has, taking in one go a `Close` (before
    /// anything else), every publisher's wake (appended to `wakes`) and,
    /// when `room`, the next message. A connection behind on its
    /// acknowledgements passes `room = false` and still takes Closes and
    /// wakes. One lock and one waker registration a poll; cancel-safe
    /// (what was taken is in the answer or in `wakes`).
    pub async fn take(&self, room: bool, wakes: &mut Vec<Wake>) -> Taken {
        std::future::poll_fn(|cx| self.poll_take(cx, room, wakes)).await
    }

    fn poll_take(&self, cx: &mut Context<'_>, room: bool, wakes: &mut Vec<Wake>) -> Poll<Taken> {
        let mut state = self.0.lock();
        if let Some(Notification::Close(reason, why)) = state.close.take() {
            return Poll::Ready(Taken::Close(reason, why));
        }
        let woke = !state.wakes.is_empty();
        wakes.append(&mut state.wakes);
        if room {
            match state.pop() {
                Some(Notification::Deliver(m)) => return Poll::Ready(Taken::Message(m)),
                Some(Notification::Close(reason, why)) => {
                    return Poll::Ready(Taken::Close(reason, why));
                }
                None => {}
            }
        }
        if woke {
            Poll::Ready(Taken::Wakes)
        } else if state.sender_gone && state.len == 0 {
            Poll::Ready(Taken::Gone)
        } else {
            // Registered under the lock: whatever is queued after it was
            // let go wakes this task (senders wake once they let go).
            self.0.waker.register(cx.waker());
            Poll::Pending
        }
    }

    /// Takes nothing more: the hub's next `try_send` gets `Closed` (and
    /// keeps the message for the session); what is queued can still be
    /// taken.
    pub fn close(&mut self) {
        self.0.lock().receiver_gone = true;
    }

    /// The next message if one is queued (a `Close` first).
    pub fn try_recv(&self) -> Option<Notification> {
        self.0.lock().pop()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        // Whatever is left was given back (`take_back`) or is lost with a
        // clean session; the hub cannot reach it any more.
        state.chunks = VecDeque::new();
        state.len = 0;
        state.close = None;
        // Dropped wakes tell their publishers (see `Wake`), once the lock
        // is let go.
        let wakes = std::mem::take(&mut state.wakes);
        drop(state);
        drop(wakes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Notification;

    fn close(n: u8) -> Notification {
        Notification::Close(n, String::new())
    }

    /// A delivery on topic `n`.
    fn msg(n: u8) -> Notification {
        Notification::Deliver(crate::message::Message {
            topic: n.to_string(),
            payload: bytes::Bytes::new(),
            qos: rumqttc::QoS::AtMostOnce,
            retain: false,
            stored: None,
            props: None,
            from: None,
            dup: false,
        })
    }

    /// A delivery's topic as a number, or a Close's code plus 100.
    fn code(out: Option<Notification>) -> Option<u8> {
        out.map(|o| match o {
            Notification::Close(n, _) => n + 100,
            Notification::Deliver(m) => m.topic.parse().unwrap(),
        })
    }

    #[test]
    fn bounded_in_order_and_gives_back_when_full() {
        let (tx, rx) = channel(2);
        tx.try_send(msg(1)).unwrap();
        tx.try_send(msg(2)).unwrap();
        assert!(matches!(
            tx.try_send(msg(3)),
            Err(TrySendError::Full(Notification::Deliver(_)))
        ));
        assert_eq!(code(rx.try_recv()), Some(1));
        tx.try_send(msg(3)).unwrap();
        assert_eq!(code(rx.try_recv()), Some(2));
        assert_eq!(code(rx.try_recv()), Some(3));
        assert_eq!(code(rx.try_recv()), None);
    }

    #[test]
    fn a_close_is_never_refused_and_goes_first() {
        let (tx, mut rx) = channel(2);
        let closing = |rx: &Inbox| rx.0.lock().close.is_some();
        tx.try_send(msg(1)).unwrap();
        tx.try_send(msg(2)).unwrap();
        assert!(!closing(&rx));
        tx.try_send(close(0x98)).unwrap();
        tx.try_send(close(0x87)).unwrap(); // the first one stands
        assert!(closing(&rx));
        assert_eq!(code(rx.try_recv()), Some(100 + 0x98));
        assert!(!closing(&rx));
        assert_eq!(code(rx.try_recv()), Some(1));
        assert_eq!(code(rx.try_recv()), Some(2));
        assert_eq!(code(rx.try_recv()), None);
        rx.close();
        assert!(matches!(
            tx.try_send(close(1)),
            Err(TrySendError::Closed(_))
        ));
    }

    /// A wake left with a connection that ends, or given to one that has
    /// ended, still lets the publisher acknowledge: `true`, not a dropped
    /// sender (which a publisher waiting for the store reads as "not
    /// stored" and closes on).
    #[test]
    fn a_wake_a_gone_connection_never_fired_says_true() {
        let (tx, rx) = channel(2);
        let (held, mut held_rx) = tokio::sync::oneshot::channel();
        tx.wake_publisher(held);
        drop(rx);
        assert_eq!(held_rx.try_recv(), Ok(true));
        let (late, mut late_rx) = tokio::sync::oneshot::channel();
        tx.wake_publisher(late);
        assert_eq!(late_rx.try_recv(), Ok(true));
    }

    #[test]
    fn closed_both_ways() {
        let (tx, rx) = channel(4);
        drop(rx);
        assert!(matches!(tx.try_send(msg(1)), Err(TrySendError::Closed(_))));
        let (tx, rx) = channel(4);
        tx.try_send(msg(1)).unwrap();
        drop(tx);
        // What was sent before the hub let go still arrives.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut wakes = Vec::new();
        let taken = runtime.block_on(rx.take(true, &mut wakes));
        assert!(matches!(taken, Taken::Message(m) if m.topic == "1"));
        let taken = runtime.block_on(rx.take(true, &mut wakes));
        assert!(matches!(taken, Taken::Gone));

        // A connection that ends takes what was queued, and nothing more.
        let (tx, mut rx) = channel(4);
        tx.try_send(msg(1)).unwrap();
        rx.close();
        assert!(matches!(tx.try_send(msg(2)), Err(TrySendError::Closed(_))));
        assert_eq!(code(rx.try_recv()), Some(1));
        assert_eq!(code(rx.try_recv()), None);
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let (tx, rx) = channel(10_000);
        let held = |rx: &Inbox| {
            let state = rx.0.lock();
            state.chunks.capacity() + state.chunks.iter().map(VecDeque::capacity).sum::<usize>()
        };
        assert_eq!(held(&rx), 0, "an idle outbox holds no buffer");
        for i in 0..1000 {
            tx.try_send(msg(0)).unwrap();
            assert!(held(&rx) <= i + 1 + 2 * CHUNK, "grown in chunks");
        }
        while rx.try_recv().is_some() {}
        assert_eq!(held(&rx), 0);
        // A trickle keeps one small ring.
        for _ in 0..100 {
            tx.try_send(msg(0)).unwrap();
            rx.try_recv().unwrap();
        }
        assert!(held(&rx) <= 2 * KEEP_SLOTS);
    }

    /// `try_send` says when a message fills the queue halfway: once per
    /// crossing, not for every message while it stays over half.
    #[test]
    fn says_when_the_queue_fills_halfway_and_only_then() {
        let (tx, rx) = channel(10);
        let said: Vec<bool> = (0..10).map(|_| tx.try_send(msg(0)).unwrap()).collect();
        assert_eq!(said.iter().filter(|&&c| c).count(), 1);
        assert!(said[4], "the fifth of ten fills it halfway");
        // Drained below half and filled again: said again.
        for _ in 0..8 {
            rx.try_recv().unwrap();
        }
        let again: Vec<bool> = (0..3).map(|_| tx.try_send(msg(0)).unwrap()).collect();
        assert_eq!(again, [false, false, true]);
    }

    /// `take` hands over a Close first, then wakes with or without a
    /// message; with no room it leaves the messages queued.
    #[test]
    fn take_gives_a_close_first_and_wakes_without_room() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, rx) = channel(4);
        let mut wakes = Vec::new();
        tx.try_send(msg(1)).unwrap();
        let (wake, mut woken) = tokio::sync::oneshot::channel();
        tx.wake_publisher(wake);
        // Behind: the wake comes, the message stays.
        assert!(matches!(
            runtime.block_on(rx.take(false, &mut wakes)),
            Taken::Wakes
        ));
        assert_eq!(wakes.len(), 1);
        assert!(
            woken.try_recv().is_err(),
            "fired by the connection, not by take"
        );
        wakes.clear();
        assert_eq!(woken.try_recv(), Ok(true));
        tx.try_send(close(0x8E)).unwrap();
        assert!(matches!(
            runtime.block_on(rx.take(false, &mut wakes)),
            Taken::Close(0x8E, _)
        ));
        let taken = runtime.block_on(rx.take(true, &mut wakes));
        assert!(matches!(taken, Taken::Message(m) if m.topic == "1"));
        assert!(wakes.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakes_a_waiting_connection_across_threads() {
        let (tx, rx) = channel(16);
        let sender = std::thread::spawn(move || {
            let mut sent = 0u32;
            while sent < 100_000 {
                match tx.try_send(msg(0)) {
                    Ok(_) => sent += 1,
                    Err(TrySendError::Full(_)) => std::thread::yield_now(),
                    Err(TrySendError::Closed(_)) => panic!("closed"),
                }
            }
        });
        let mut got = 0u32;
        let mut wakes = Vec::new();
        while let Taken::Message(_) = rx.take(true, &mut wakes).await {
            got += 1;
        }
        sender.join().unwrap();
        assert_eq!(got, 100_000);
    }
}
