//! Spawning a worker's I/O tasks (connections, HTTP/2 streams, the channel to the
//! master), so that with --io-mode loop the event loop can tell whether woken work is
//! left over. There the runtime runs in turns on the loop's thread (worker/guest.rs),
//! and each turn ends with a poll of the kernel that can wake tasks after the last one
//! ran: nothing would run them until the next readiness. Tasks spawned here count their
//! pending wake-ups, so the turn can tell and ask for another. With an I/O thread the
//! count is not kept: the wrapper passes each poll straight through.

use atomic_waker::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
pub fn spawn<F: Future<Output = ()> + Send + 'static>(future: F) {
    tokio::spawn(Tracked::new(future));
}

/// `spawn`, into a set whose tasks are awaited together.
pub fn spawn_into<F: Future<Output = ()> + Send + 'static>(set: &mut tokio::task::JoinSet<()>, future: F) {
    set.spawn(Tracked::new(future));
}

pin_project_lite::pin_project! {
    /// A future whose wake-ups are counted in `QUEUED` until it is polled, once `track`
    /// was called; before that (an I/O thread), the future itself.
    pub struct Tracked<F> {
        #[pin]
        future: F,
        counted: Option<Counted>,
    }
}

/// One allocation per task (the flag, shared with the waker the task's future sees);
/// the future itself stays inline in tokio's task.
struct Counted {
    flag: Arc<Flag>,
    waker: Waker,
}

impl<F: Future> Tracked<F> {
    pub fn new(future: F) -> Self {
        Self::counting(future, TRACKING.load(Ordering::Acquire))
    }

    fn counting(future: F, counted: bool) -> Self {
        let counted = counted.then(|| {
            let flag = Arc::new(Flag { runtime: AtomicWaker::new(), woken: AtomicBool::new(false) });
            // A new task is queued without a wake-up: count it as one.
            flag.raise();
            Counted { waker: Waker::from(flag.clone()), flag }
        });
        Tracked { future, counted }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(counted) = this.counted.as_ref() else { return this.future.poll(cx) };
        // Registered before the lowering, so that a wake in between reaches the runtime.
        counted.flag.runtime.register(cx.waker());
        counted.flag.lower();
        this.future.poll(&mut Context::from_waker(&counted.waker))
    }
}

impl Drop for Counted {
    /// The flag stays raised, uncounted: a waker the task left behind (in a stream's
    /// state, say) may still be woken, and must not count a task that no longer exists,
    /// which would keep the turns running for nothing.
    fn drop(&mut self) {
        if self.flag.woken.swap(true, Ordering::AcqRel) {
            QUEUED.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct Flag {
    /// The runtime's waker for the task: taken by a wake, registered again by the poll.
    runtime: AtomicWaker,
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
        self.runtime.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The count is process-wide: the tests that read it run one at a time.
    static COUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<u8>) -> Option<u8> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("the task was never woken")
    }

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

    /// A task awaiting a oneshot: the count, less what it was before, once the task is
    /// made, once it was polled, once it was woken, and once it has ended.
    fn counts_around_a_wake(counted: bool) -> [usize; 4] {
        let _serial = COUNT.lock().unwrap_or_else(|p| p.into_inner());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let before = queued();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = Tracked::counting(async move {
            let _ = rx.await;
        }, counted);
        let made = queued() - before;
        let (polled, woken) = rt.block_on(async move {
            let handle = tokio::spawn(task);
            tokio::task::yield_now().await;
            let polled = queued() - before;
            tx.send(()).unwrap();
            let woken = queued() - before;
            tokio::time::timeout(Duration::from_secs(5), handle).await.expect("the task was never woken").unwrap();
            (polled, woken)
        });
        [made, polled, woken, queued() - before]
    }

    #[test]
    fn a_wake_is_counted_until_the_poll() {
        assert_eq!(counts_around_a_wake(true), [1, 0, 1, 0], "made, polled, woken, ended");
    }

    #[test]
    fn an_uncounted_task_leaves_the_count_alone() {
        assert_eq!(counts_around_a_wake(false), [0, 0, 0, 0], "made, polled, woken, ended");
    }

    /// Wake-ups between two polls count once, each poll lowers the count, a later wake
    /// (the runtime's waker taken by the first) still reaches the runtime, and a task
    /// dropped while woken leaves nothing counted.
    #[test]
    fn wakes_count_once_per_poll_and_reach_the_runtime() {
        let _serial = COUNT.lock().unwrap_or_else(|p| p.into_inner());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let before = queued();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u8>();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<u8>();
        let task = Tracked::counting(async move {
            while let Some(n) = rx.recv().await {
                let _ = seen_tx.send(n);
            }
        }, true);
        rt.block_on(async move {
            let handle = tokio::spawn(task);
            tokio::task::yield_now().await;
            assert_eq!(queued(), before);
            tx.send(1).unwrap();
            tx.send(2).unwrap();
            assert_eq!(queued(), before + 1, "two wake-ups before a poll count once");
            assert_eq!((next(&mut seen).await, next(&mut seen).await), (Some(1), Some(2)));
            assert_eq!(queued(), before);
            tx.send(3).unwrap();
            assert_eq!(queued(), before + 1);
            assert_eq!(next(&mut seen).await, Some(3), "a wake after the first still reaches the runtime");
            tx.send(4).unwrap();
            handle.abort();
            let _ = handle.await;
            assert_eq!(queued(), before, "dropped while woken: no longer counted");
        });
    }

    #[test]
    fn a_waker_woken_after_its_task_ended_counts_nothing() {
        let _serial = COUNT.lock().unwrap_or_else(|p| p.into_inner());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let before = queued();
        let left = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let slot = left.clone();
        let task = Tracked::counting(std::future::poll_fn(move |cx| {
            *slot.lock().unwrap() = Some(cx.waker().clone());
            Poll::Ready(())
        }), true);
        rt.block_on(async move { tokio::spawn(task).await.unwrap() });
        assert_eq!(queued(), before);
        left.lock().unwrap().take().unwrap().wake();
        assert_eq!(queued(), before, "a stale wake-up counted a task that has ended");
    }
}
