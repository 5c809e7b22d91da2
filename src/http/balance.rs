//! Spreading connections over the workers. They all accept from one listening socket,
//! and Linux wakes every worker waiting on it; the one already running wins, which is
//! the busiest. When a client opens many connections at once (a load balancer's pool,
//! a benchmark), one worker could take them all while the others idle.
//!
//! So each worker posts its open connections on a board in shared memory (one word per
//! worker, `Board`), and one that holds more than its least-loaded peer by a margin
//! (`over`) lets a waiting connection go for a moment (`HOLD`) before taking it: a peer
//! woken by the same connection takes it meanwhile. If none has after `HOLD`, the worker
//! takes it, and after each such hold in a row it takes twice as many before holding
//! again (`Manners`): a peer that is slow to be scheduled (on a busy machine, more than
//! 2 ms) still gets its share, and one that is stuck costs the others a few holds, not
//! their rate. That is nginx's least-connected balancing, decided at accept with nobody
//! in the middle.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::shared_memory::Region;

/// How long a worker over its share leaves a connection to its peers.
pub const HOLD: Duration = Duration::from_millis(2);

const MAGIC: u64 = u64::from_le_bytes(*b"fgboard1");
const WHAT: &str = "worker board";
/// Workers alive at once, old and new during a reload; one beyond has no seat and
/// accepts without looking at the others.
pub const SEATS: usize = 128;
/// magic, then the number of seats ever taken (a scan stops there).
const HEADER: usize = 2;

/// A seat's word: the worker's pid, whether it accepts, and its open connections.
const PID_SHIFT: u32 = 32;
const ACCEPTING: u64 = 1 << 31;
const COUNT: u64 = ACCEPTING - 1;

/// The master's board, mapped by each worker.
pub struct Board(Region);

impl Board {
    pub fn create() -> std::io::Result<Board> {
        Region::create(c"ferrogate-workers", MAGIC, HEADER + SEATS, |_| {}).map(Board)
    }

    /// # Safety
    /// `raw` is not owned by anything else in this process (it is closed here).
    pub unsafe fn adopt(raw: RawFd) -> Result<Board, String> {
        // SAFETY: the caller's promise.
        unsafe { Region::adopt(raw, MAGIC, HEADER + SEATS, WHAT) }.map(Board)
    }

    pub fn fd(&self) -> Option<RawFd> {
        self.0.fd()
    }

    fn taken(&self) -> &AtomicU64 {
        &self.0.words()[1]
    }

    fn seats(&self) -> &[AtomicU64] {
        &self.0.words()[HEADER..]
    }

    /// The master, once worker `pid` has exited: its seat is free again.
    pub fn release(&self, pid: u32) {
        for seat in self.seats() {
            let word = seat.load(Ordering::Acquire);
            if word >> PID_SHIFT == u64::from(pid) {
                let _ = seat.compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }

    /// A worker about to accept takes the first free seat; None when all are taken.
    pub fn sit(self: Arc<Self>, pid: u32) -> Option<Seat> {
        let word = (u64::from(pid) << PID_SHIFT) | ACCEPTING;
        let index = self.seats().iter().position(|s| s.compare_exchange(0, word, Ordering::AcqRel, Ordering::Relaxed).is_ok())?;
        self.taken().fetch_max(index as u64 + 1, Ordering::AcqRel);
        Some(Seat { board: self, index, pid: u64::from(pid) << PID_SHIFT, accepting: AtomicU64::new(ACCEPTING) })
    }
}

/// This worker's seat: it alone writes it (the master only frees it after the exit).
/// The open connections it shows are `ctx::OpenCount`'s, posted on every change.
pub struct Seat {
    board: Arc<Board>,
    index: usize,
    pid: u64,
    /// ACCEPTING, until the drain begins.
    accepting: AtomicU64,
}

impl Seat {
    /// The drain began: peers stop counting on this worker.
    pub fn stop_accepting(&self, open: usize) {
        self.accepting.store(0, Ordering::Relaxed);
        self.post(open);
    }

    /// Whether this worker, with `open` connections, holds more than its least-loaded
    /// accepting peer by more than the margin.
    pub fn over(&self, open: usize) -> bool {
        let mine = u32::try_from(open).unwrap_or(u32::MAX);
        let taken = (self.board.taken().load(Ordering::Acquire) as usize).min(SEATS);
        let least = self.board.seats()[..taken]
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != self.index)
            .map(|(_, s)| s.load(Ordering::Relaxed))
            .filter(|w| w & ACCEPTING != 0)
            .map(|w| (w & COUNT) as u32)
            .min();
        least.is_some_and(|least| over(mine, least))
    }

    /// Written whole, so that a seat the master freed too early (a reused pid) comes
    /// back right.
    pub fn post(&self, open: usize) {
        let count = (open as u64).min(COUNT);
        self.board.seats()[self.index].store(self.pid | self.accepting.load(Ordering::Relaxed) | count, Ordering::Release);
    }
}

/// When a worker over its share holds a connection back for its peers.
#[derive(Default)]
pub struct Manners {
    /// Holds in a row that no peer answered by taking the connection.
    unanswered: u32,
    /// Connections still to take without holding, after the last unanswered hold.
    budget: u32,
}

impl Manners {
    pub fn hold(&self, over: impl FnOnce() -> bool) -> bool {
        self.budget == 0 && over()
    }

    /// A connection was taken; `held`: after a hold, which no peer answered.
    pub fn took(&mut self, held: bool) {
        if held {
            self.unanswered = (self.unanswered + 1).min(16);
            self.budget = (1 << (self.unanswered - 1)) - 1;
        } else {
            self.budget = self.budget.saturating_sub(1);
        }
    }

    /// The queue was empty: a peer is taking connections.
    pub fn missed(&mut self) {
        *self = Manners::default();
    }
}

/// Connections a worker may hold beyond its least-loaded peer's before it holds back.
/// Short-lived connections (a client per request, TLS handshakes) come and go faster
/// than a hold, so small differences are noise: with a margin of one, two workers
/// taking turns to hold for each other halved TLS handshakes per second.
const SLACK: u32 = 8;

/// The margin: `SLACK`, plus a quarter of the peer's connections, so that equal
/// shares do not trade connections back and forth and large ones are even to within 25 %.
fn over(mine: u32, least: u32) -> bool {
    mine > least + SLACK + least / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> Arc<Board> {
        Arc::new(Board::create().unwrap())
    }

    /// A worker's own mapping of the master's board, through a copy of its descriptor.
    fn mapped(master: &Board) -> Arc<Board> {
        // SAFETY: dup gives a descriptor nobody else owns.
        let copy = unsafe { libc::dup(master.fd().unwrap()) };
        Arc::new(unsafe { Board::adopt(copy) }.unwrap())
    }

    #[test]
    fn the_margin_is_eight_connections_and_a_quarter() {
        assert!(!over(0, 0) && !over(8, 0) && over(9, 0));
        assert!(!over(13, 4) && over(14, 4));
        assert!(!over(48, 32) && over(49, 32));
    }

    #[test]
    fn unanswered_holds_double_what_is_taken_before_the_next() {
        let mut m = Manners::default();
        let mut taken_between_holds = Vec::new();
        for _ in 0..5 {
            assert!(m.hold(|| true));
            m.took(true);
            let mut n = 1;
            while !m.hold(|| true) {
                m.took(false);
                n += 1;
            }
            taken_between_holds.push(n);
        }
        assert_eq!(taken_between_holds, [1, 2, 4, 8, 16]);
        assert!(!m.hold(|| false), "not over: no hold");
        m.missed();
        m.took(true);
        assert!(m.hold(|| true), "a peer answered: back to one at a time");
    }

    #[test]
    fn a_worker_is_over_only_against_an_accepting_peer_with_fewer() {
        let master = board();
        let a = mapped(&master).sit(101).unwrap();
        a.post(10);
        assert!(!a.over(10), "alone: no peer to leave connections to");
        let b = mapped(&master).sit(102).unwrap();
        assert!(a.over(10) && !b.over(0), "10 against 0");
        b.post(2);
        assert!(!a.over(10));
        b.post(0);
        assert!(a.over(10), "b's connections closed");
        b.stop_accepting(0);
        assert!(!a.over(10), "a draining peer takes no connections");
        a.post(0);
        assert_eq!(master.seats()[0].load(Ordering::Relaxed) & COUNT, 0);
    }

    #[test]
    fn an_exited_worker_frees_its_seat_for_the_next() {
        let master = board();
        let a = mapped(&master).sit(201).unwrap();
        let b = mapped(&master).sit(202).unwrap();
        assert_eq!((a.index, b.index), (0, 1));
        master.release(201);
        let c = mapped(&master).sit(203).unwrap();
        assert_eq!(c.index, 0, "the first free seat");
        assert_eq!(master.taken().load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_descriptor_that_is_not_a_board_is_refused() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
        let err = unsafe { Board::adopt(fd) }.err().unwrap();
        assert!(err.contains("is not the master's worker board"), "{err}");
        unsafe { libc::close(fd) };
    }
}
