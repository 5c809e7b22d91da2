//! Spawning a worker's I/O tasks (connections, HTTP/2 streams, the channel to the
//! master), so that with --io-mode loop the event loop can tell whether woken work is
//! left over. There the runtime runs in turns on the loop's thread (worker/guest.rs),
//! and each turn ends with a poll of the kernel that can wake tasks after the last one
//! ran: nothing would run them until the next readiness. Tasks spawned here count their
//! pending wake-ups, so the turn can tell and ask for another. With an I/O thread the
//! count is not kept: `spawn` is tokio's.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Tasks woken and not yet polled; one runtime per worker process.
static QUEUED: AtomicUsize = AtomicUsize::new(0);
static TRACKING: AtomicBool = AtomicBool::new(false);

/// From now on this process's I/O tasks count their wake-ups (before any is spawned).
pub fn track() {
    TRACKING.store(true, Ordering::Release);
}

pub fn queued() -> usize {
    QUEUED.load(Ordering::Acquire)
}

/// Spawns a task of the worker's I/O runtime. Every one of its tasks starts here or in
/// `spawn_into`, never with `tokio::spawn`: with --io-mode loop, an untracked task woken
/// at the end of a turn would wait for the next tick (a test below checks the sources).
pub fn spawn<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if TRACKING.load(Ordering::Acquire) {
        tokio::spawn(Tracked::new(future));
    } else {
        tokio::spawn(future);
    }
}

/// `spawn`, into a set whose tasks are awaited together.
pub fn spawn_into<F>(set: &mut tokio::task::JoinSet<()>, future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if TRACKING.load(Ordering::Acquire) {
        set.spawn(Tracked::new(future));
    } else {
        set.spawn(future);
    }
}

struct Flag {
    /// The runtime's waker for the task, replaced when the task moves (it never does here).
    inner: Mutex<Option<Waker>>,
    woken: AtomicBool,
}

impl Flag {
    fn raise(&self) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            QUEUED.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn lower(&self) {
        if self.woken.swap(false, Ordering::AcqRel) {
            QUEUED.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raise();
        if let Some(waker) = self.inner.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            waker.wake_by_ref();
        }
    }
}

/// A future whose wake-ups are counted in `QUEUED` until it is polled.
pub struct Tracked<F> {
    future: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<F: Future> Tracked<F> {
    pub fn new(future: F) -> Self {
        let flag = Arc::new(Flag { inner: Mutex::new(None), woken: AtomicBool::new(false) });
        // A new task is queued without a wake-up: count it as one.
        flag.raise();
        Tracked { future: Box::pin(future), waker: Waker::from(flag.clone()), flag }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.flag.lower();
        {
            let mut inner = this.flag.inner.lock().unwrap_or_else(|p| p.into_inner());
            if !inner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *inner = Some(cx.waker().clone());
            }
        }
        this.future.as_mut().poll(&mut Context::from_waker(&this.waker))
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        self.flag.lower();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The I/O side's sources (not the master's, whose runtime is a thread's own).
    #[test]
    fn the_workers_io_tasks_are_all_spawned_here() {
        fn visit(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    visit(&path, found);
                    continue;
                }
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                if name.ends_with("tests.rs") || name == "testing.rs" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Unit tests run on runtimes of their own: only the code above them counts.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (n, line) in code.lines().enumerate() {
                    if line.contains("tokio::spawn(") || line.contains("tokio::task::spawn(") || line.contains("accept_tasks.spawn(") {
                        found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for dir in ["http", "worker", "bridge", "asgi", "tls/acceptor.rs"] {
            let path = src.join(dir);
            if path.is_dir() {
                visit(&path, &mut found);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.split("#[cfg(test)]").next().unwrap_or_default().contains("tokio::spawn(") {
                    found.push(path.display().to_string());
                }
            }
        }
        assert!(found.is_empty(), "spawn these with crate::io_tasks::spawn: {found:#?}");
    }

    #[test]
    fn a_wake_is_counted_until_the_poll() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let before = queued();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = Tracked::new(async move {
            let _ = rx.await;
        });
        assert_eq!(queued(), before + 1, "a new task counts as woken");
        rt.block_on(async move {
            let handle = tokio::spawn(task);
            tokio::task::yield_now().await;
            assert_eq!(queued(), before, "polled: no longer counted");
            tx.send(()).unwrap();
            assert_eq!(queued(), before + 1, "woken by the send");
            handle.await.unwrap();
        });
        assert_eq!(queued(), before);
    }
}
