//! The app's response messages for one exchange, on their way to its connection.
//!
//! Messages are sent and received on the I/O thread (the bridge's outbox hands
//! the loop side's messages over there; only the sender's drop may happen on the
//! loop thread), so this is a queue under an uncontended mutex, not a channel
//! built for threads: tokio's unbounded channel allocated a 32-slot block (about
//! 2 KiB) per exchange, past glibc's per-thread cache, and it was often freed on
//! the loop thread (a free into another thread's arena takes that arena's lock).
//!
//! The semantics are those of an unbounded channel: `recv` gives `None` once
//! the sender is gone and the queue is empty; a send after the receiver is gone
//! is refused, and what was queued is dropped with the receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::exchange::ResponseEvent;

#[derive(Default)]
struct Queue {
    events: Events,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

/// First in, first out, with the first message held inline: most responses are
/// one message (a head with its whole body), and a queue buffer allocated for
/// each would be one more malloc/free per request.
#[derive(Default)]
struct Events {
    first: Option<ResponseEvent>,
    rest: VecDeque<ResponseEvent>,
}

impl Events {
    fn push(&mut self, event: ResponseEvent) {
        // `first` is only ever filled when nothing waits behind it: order holds.
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(event);
        } else {
            self.rest.push_back(event);
        }
    }

    fn pop(&mut self) -> Option<ResponseEvent> {
        self.first.take().or_else(|| self.rest.pop_front())
    }
}

struct Shared(Mutex<Queue>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; if something did, the queue is still a queue.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The app's end, held by the exchange.
pub struct ResponseSender(Arc<Shared>);

/// The connection's end.
pub struct ResponseReceiver(Arc<Shared>);

pub fn response_queue() -> (ResponseSender, ResponseReceiver) {
    let shared = Arc::new(Shared(Mutex::new(Queue::default())));
    (ResponseSender(shared.clone()), ResponseReceiver(shared))
}

impl ResponseSender {
    /// Queues `event` for the connection; gives it back if the connection is gone.
    pub fn send(&self, event: ResponseEvent) -> Result<(), ResponseEvent> {
        let mut q = self.0.lock();
        if q.receiver_gone {
            return Err(event);
        }
        q.events.push(event);
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl Drop for ResponseSender {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.sender_gone = true;
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl ResponseReceiver {
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ResponseEvent>> {
        let mut q = self.0.lock();
        if let Some(event) = q.events.pop() {
            return Poll::Ready(Some(event));
        }
        if q.sender_gone {
            return Poll::Ready(None);
        }
        match &mut q.waker {
            Some(w) => w.clone_from(cx.waker()),
            None => q.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next message; `None` once the app's end is gone and nothing is left.
    pub async fn recv(&mut self) -> Option<ResponseEvent> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for ResponseReceiver {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.receiver_gone = true;
        q.waker = None;
        // Dropped outside the lock: a queued body may be large.
        let events = std::mem::take(&mut q.events);
        drop(q);
        drop(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn chunk(s: &'static str) -> ResponseEvent {
        ResponseEvent::Chunk(Bytes::from_static(s.as_bytes()))
    }

    fn data(p: Poll<Option<ResponseEvent>>) -> Option<Bytes> {
        match p {
            Poll::Ready(Some(ResponseEvent::Chunk(b))) => Some(b),
            _ => None,
        }
    }

    #[test]
    fn in_order_then_none_once_the_sender_is_gone() {
        let (tx, mut rx) = response_queue();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.send(chunk("a")).ok().unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "a send wakes a waiting receiver");
        tx.send(chunk("b")).ok().unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "nobody waits: no second wake");
        drop(tx);
        // What was queued before the sender left still comes out, in order.
        assert_eq!(data(rx.poll_recv(&mut cx)).as_deref(), Some(&b"a"[..]));
        assert_eq!(data(rx.poll_recv(&mut cx)).as_deref(), Some(&b"b"[..]));
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn order_holds_when_sends_and_receives_interleave() {
        let (tx, mut rx) = response_queue();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        for step in ["a", "-", "b", "c", "-", "d", "-", "-", "e", "-"] {
            match step {
                "-" => got.push(data(rx.poll_recv(&mut cx)).expect("a queued chunk")),
                s => tx.send(chunk(s)).ok().unwrap(),
            }
        }
        assert_eq!(got, ["a", "b", "c", "d", "e"].map(|s| Bytes::from_static(s.as_bytes())));
        assert!(rx.poll_recv(&mut cx).is_pending());
    }

    #[test]
    fn a_waiting_receiver_is_woken_when_the_sender_goes() {
        let (tx, mut rx) = response_queue();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(rx.poll_recv(&mut Context::from_waker(&waker)).is_pending());
        drop(tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(rx.poll_recv(&mut Context::from_waker(&waker)), Poll::Ready(None)));
    }

    #[test]
    fn sends_after_the_receiver_is_gone_are_refused_and_queued_ones_dropped() {
        let (tx, rx) = response_queue();
        let body = Bytes::from(vec![7u8; 1000]);
        tx.send(ResponseEvent::Chunk(body.clone())).ok().unwrap();
        drop(rx);
        // The queued chunk went with the receiver: only `body` holds the bytes now.
        assert!(body.is_unique());
        assert!(tx.send(chunk("late")).is_err());
    }
}
