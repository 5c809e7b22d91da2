//! The one crossing between the I/O threads and the Python event loop.
//!
//! I/O threads push events onto a lock-free queue and ring an eventfd that the
//! loop watches with `add_reader`. They ring it only when the loop is not
//! already due to drain (a worker's own I/O thread also waits for the end of its
//! runtime's turn after the turn's first request), and the loop drains what is
//! queued each time, so under load many requests share one wake-up and one
//! GIL-holding callback.

use crossbeam_queue::SegQueue;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use pyo3::prelude::*;
use std::sync::{Arc, OnceLock};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

pub mod exchange;
pub mod responses;
pub mod stop;

use exchange::{Exchange, ResponseEvent};
use tokio::sync::Notify;

/// How many requests a deferring I/O thread reads before it rings anyway.
const DEFER_AT_MOST: usize = 16;

pub enum Event {
    /// A request's head has arrived; the app should be called.
    Request(Arc<Exchange>),
    /// Something the app may be waiting for changed: body data, send capacity, disconnect.
    Wake(Arc<Exchange>),
    /// Liveness probe: the loop answers by advancing `ticks`.
    Ping,
    /// The graceful timeout ran out with requests still in the app: cancel them.
    CancelRequests,
    /// The I/O side has drained; stop the event loop.
    Stop,
}

pub struct Bridge {
    queue: SegQueue<Event>,
    /// True from the first push after a drain until the next drain starts.
    rung: AtomicBool,
    /// Set for a worker's own I/O thread (--io-mode thread, `ring_once_per_turn`). It rings
    /// for the first request of each of its turns at once, so that the loop works while it
    /// reads the next ones, and for the rest when it is about to park (`ring_deferred`) or
    /// every `DEFER_AT_MOST` requests: otherwise the loop, faster than the reads on the raw
    /// path, drains a few requests, sleeps, and is woken again within the same turn, and a
    /// wake of a sleeping thread costs both threads far more than a push.
    ring_at_park: AtomicBool,
    /// Requests and wakes pushed in this turn of the I/O thread's (that thread only).
    turn_pushes: AtomicUsize,
    eventfd: std::fs::File,
    /// Advanced by every drain: proof for the heartbeat that the loop is alive.
    pub ticks: AtomicU64,
    /// The other direction: what the app sent, for the I/O thread. Waking a
    /// tokio task from another thread costs a syscall, so the loop rings once
    /// per batch here too, and the I/O thread hands each event on locally.
    outbox: SegQueue<(Arc<Exchange>, ResponseEvent)>,
    outbox_rung: AtomicBool,
    outbox_bell: Notify,
    /// `loop.call_soon` and a callable that rings `outbox_bell`: the ring is
    /// deferred to the end of the loop iteration, so every response the
    /// iteration produces shares it.
    deferred_ring: OnceLock<(Py<PyAny>, Py<PyAny>)>,
}

/// Rings the outbox bell; scheduled with call_soon by the first response of a batch.
#[pyclass(frozen, module = "ferrogate._ferrogate")]
pub struct RingOutbox(Arc<Bridge>);

#[pymethods]
impl RingOutbox {
    fn __call__(&self) {
        self.0.outbox_bell.notify_one();
    }
}

impl Bridge {
    pub fn new() -> std::io::Result<Arc<Self>> {
        // SAFETY: eventfd(2) takes no pointers; it returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created, owned by nothing else.
        let eventfd = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Arc::new(Bridge {
            queue: SegQueue::new(),
            rung: AtomicBool::new(false),
            ring_at_park: AtomicBool::new(false),
            turn_pushes: AtomicUsize::new(0),
            eventfd,
            ticks: AtomicU64::new(0),
            outbox: SegQueue::new(),
            outbox_rung: AtomicBool::new(false),
            outbox_bell: Notify::new(),
            deferred_ring: OnceLock::new(),
        }))
    }

    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Called from any thread, never holding the GIL.
    pub fn push(&self, event: Event) {
        let deferrable = matches!(event, Event::Request(_) | Event::Wake(_));
        self.queue.push(event);
        if deferrable && self.ring_at_park.load(Ordering::Relaxed) {
            // The first of a turn rings; so does every DEFER_AT_MOST-th, so that a turn that
            // never runs out of tasks still hands its requests on.
            if self.turn_pushes.fetch_add(1, Ordering::Relaxed) % DEFER_AT_MOST != 0 {
                return;
            }
        }
        self.ring();
    }

    /// Makes the I/O thread that runs `runtime` ring the loop once per turn (`ring_at_park`).
    pub fn ring_once_per_turn<'b>(self: &Arc<Self>, runtime: &'b mut tokio::runtime::Builder) -> &'b mut tokio::runtime::Builder {
        self.defer_rings();
        let bridge = self.clone();
        runtime.on_thread_park(move || bridge.ring_deferred())
    }

    fn defer_rings(&self) {
        self.ring_at_park.store(true, Ordering::Relaxed);
    }

    /// The deferring I/O thread is about to park: its turn ends. Its last push rang unless
    /// it came after a ring (the turn's first, or a DEFER_AT_MOST-th).
    fn ring_deferred(&self) {
        let pushed = self.turn_pushes.swap(0, Ordering::Relaxed);
        if pushed > 0 && (pushed - 1) % DEFER_AT_MOST != 0 {
            self.ring();
        }
    }

    fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            // An eventfd takes 8-byte counts. EAGAIN only happens when the counter is
            // about to overflow: the loop is due to wake anyway.
            let _ = (&self.eventfd).write(&1u64.to_ne_bytes());
        }
    }

    /// Called on the loop thread when the eventfd is readable. Re-arms the bell
    /// *before* draining so that a push racing with the drain rings again, and
    /// returns how many events this drain takes: those queued now. An event
    /// pushed later has rung the bell and waits for the next drain, so that a
    /// drain never runs on while requests keep arriving: requests run their
    /// first step inside it (asgi/runner.rs), and their responses leave only
    /// when the loop gets to the outbox's ring, after the drain returns.
    pub fn begin_drain(&self) -> usize {
        // Reading resets the count; EAGAIN (a spurious wake) leaves nothing to reset.
        let mut counter = [0u8; 8];
        let _ = (&self.eventfd).read(&mut counter);
        self.rung.store(false, Ordering::Release);
        self.ticks.fetch_add(1, Ordering::Relaxed);
        self.queue.len()
    }

    pub fn pop(&self) -> Option<Event> {
        self.queue.pop()
    }

    /// Loop thread, once the event loop exists.
    pub fn defer_rings_to(self: &Arc<Self>, py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
        let ring = Py::new(py, RingOutbox(self.clone()))?.into_any();
        let _ = self.deferred_ring.set((event_loop.getattr("call_soon")?.unbind(), ring));
        Ok(())
    }

    /// Loop thread: queue a message of the app's for its connection.
    pub fn send_out(&self, py: Python<'_>, exchange: Arc<Exchange>, event: ResponseEvent) {
        // A WebSocket message is an answer someone waits for, one at a time per connection:
        // ring now rather than at the end of the loop iteration, which would cost an iteration.
        let now = matches!(event, ResponseEvent::Text(_) | ResponseEvent::Binary(_));
        self.outbox.push((exchange, event));
        if !self.outbox_rung.swap(true, Ordering::AcqRel) {
            if now {
                self.outbox_bell.notify_one();
                return;
            }
            let deferred = self.deferred_ring.get().map(|(call_soon, ring)| call_soon.call1(py, (ring.clone_ref(py),)));
            if !matches!(deferred, Some(Ok(_))) {
                self.outbox_bell.notify_one();
            }
        }
    }

    /// I/O thread, for the life of the worker: delivers the app's messages to
    /// their connections' tasks, which on this thread is a wake-up without a syscall.
    pub async fn deliver_outbox(&self) {
        loop {
            self.outbox_bell.notified().await;
            self.outbox_rung.store(false, Ordering::Release);
            while let Some((exchange, event)) = self.outbox.pop() {
                // A closed receiver means the connection is gone; the app hears of it through the exchange.
                let _ = exchange.response.send(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(bridge: &Bridge) -> bool {
        let mut fds = libc::pollfd { fd: bridge.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, a zero timeout.
        unsafe { libc::poll(&mut fds, 1, 0) == 1 }
    }

    #[test]
    fn a_drain_takes_what_was_queued_when_it_began_and_a_later_push_rings_again() {
        let bridge = Bridge::new().expect("eventfd");
        bridge.push(Event::Ping);
        bridge.push(Event::Ping);
        assert!(rung(&bridge), "the first push rings the loop");
        assert_eq!(bridge.begin_drain(), 2);
        assert!(!rung(&bridge), "beginning a drain silences the bell");
        assert!(bridge.pop().is_some());
        // A request arriving mid-drain is left for the next drain, which its push asks for.
        bridge.push(Event::Ping);
        assert!(rung(&bridge), "a push during a drain rings for the next one");
        assert!(bridge.pop().is_some());
        assert_eq!(bridge.begin_drain(), 1, "the next drain takes the one pushed during the last");
    }

    fn request(bridge: &Arc<Bridge>) -> Event {
        let head = exchange::RequestHead {
            method: http::Method::GET,
            uri: http::Uri::from_static("/"),
            version: http::Version::HTTP_11,
            headers: http::HeaderMap::new(),
            received_order: None,
            client: None,
            server: None,
            scheme: exchange::Scheme::Http,
            tls: None,
            prefix: None,
            websocket: None,
        };
        Event::Request(Exchange::new(head, bridge.clone()).0)
    }

    #[test]
    fn an_io_thread_that_rings_when_parking_rings_for_the_first_request_of_a_turn_then_at_its_end() {
        let bridge = Bridge::new().expect("eventfd");
        bridge.defer_rings();
        bridge.push(request(&bridge));
        assert!(rung(&bridge), "the first request of a turn rings at once");
        assert_eq!(bridge.begin_drain(), 1);
        bridge.pop();
        bridge.push(request(&bridge));
        bridge.push(request(&bridge));
        assert!(!rung(&bridge), "the turn's next requests wait for its end");
        bridge.ring_deferred();
        assert!(rung(&bridge), "parking rings for them");
        assert_eq!(bridge.begin_drain(), 2);
        while bridge.pop().is_some() {}
        bridge.ring_deferred();
        assert!(!rung(&bridge), "a turn that read nothing rings nothing");

        bridge.push(request(&bridge));
        assert!(rung(&bridge), "a new turn's first request rings at once");
        assert_eq!(bridge.begin_drain(), 1);
        for _ in 1..DEFER_AT_MOST {
            bridge.push(request(&bridge));
        }
        assert!(!rung(&bridge));
        bridge.push(request(&bridge));
        assert!(rung(&bridge), "a long turn rings every few requests");
        assert_eq!(bridge.begin_drain(), DEFER_AT_MOST + 1);
        while bridge.pop().is_some() {}
        bridge.ring_deferred();
        assert!(!rung(&bridge), "the last ring of the turn covered every request before it");

        // Control events come rarely and some are the last thing the thread does.
        bridge.push(Event::Stop);
        assert!(rung(&bridge), "a stop rings at once");
    }
}
