//! A worker process: a fresh Python interpreter started by the master. It
//! imports the app, runs lifespan startup, then serves: the Rust I/O runtime
//! accepts and parses, the main thread runs the asyncio loop and the app. The
//! runtime has a thread of its own or runs on the loop's, as its guest (--io-mode).

mod channel;
mod dispatch;
mod guest;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::asgi::{AsgiContext, format_exception, lifespan};
use crate::config::{Config, IoPlace, LoopChoice};
use crate::http::listeners;
use crate::http::static_files::StaticFiles;
use crate::http::ctx::{OpenCount, ServerCtx};
use crate::http::rate_limit::Limiter as RateLimiter;
use crate::http::server;
use crate::http::balance::{Board, SEATS, Seat};
use crate::ipc::{self, CHANNEL_FD, EXIT_BOOT_ERROR, FIRST_LISTENER_FD, ToWorker};
use crate::bridge::{Bridge, Event};
use crate::tls::acceptor::Acceptor;

/// Entry point of a worker process; returns its exit status.
pub fn run(py: Python<'_>) -> PyResult<i32> {
    // SIGUSR1's default action is to die, and `systemctl kill -s USR1` (logrotate)
    // signals every process of the service: ignore it until the I/O thread handles it
    // (channel.rs reopens the log files on it).
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
    // SAFETY: the master dup2'd this worker's end of the socketpair onto
    // CHANNEL_FD before exec (master/spawn.rs); nothing else here owns it.
    let mut channel = unsafe { std::os::unix::net::UnixStream::from_raw_fd(CHANNEL_FD) };
    let config = match read_config(&mut channel) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            crate::error!("worker cannot start: {e}");
            return Ok(EXIT_BOOT_ERROR);
        }
    };
    crate::log::init(&config.log);
    let number: String = py.import("sys")?.getattr("argv")?.get_item(1).and_then(|a| a.extract()).unwrap_or_default();
    crate::proctitle::set(&format!("ferrogate: worker {number} [{}]", config.service.name));
    if let Err(message) = crate::log::open_access_log(&config.log) {
        return Ok(boot_failed(&mut channel, message));
    }
    // The TLS material follows the configuration when a listener speaks TLS.
    let tls = match &config.tls {
        None => None,
        Some(settings) => match read_message(&mut channel).and_then(|msg| match msg {
            ToWorker::Tls(material) => Acceptor::new(settings, &material, config.http.protocols.alpn()),
            other => Err(format!("expected the TLS material after the configuration, got {other:?}")),
        }) {
            Ok(acceptor) => Some(Arc::new(acceptor)),
            Err(message) => return Ok(boot_failed(&mut channel, message)),
        },
    };
    // Before the app runs: nothing it opens can sit at the shared descriptors yet.
    let shared = Shared { board: board(&config), rate: rate_limits(&config) };
    prepare_interpreter(py)?;
    let static_files = match StaticFiles::open(&config.statics) {
        Ok(files) => files,
        Err(message) => return Ok(boot_failed(&mut channel, message)),
    };

    let app = match import_app(py, &config) {
        Ok(app) => app,
        Err(message) => return Ok(boot_failed(&mut channel, message)),
    };
    let event_loop = match new_event_loop(py, config.app.event_loop) {
        Ok(l) => l,
        Err(message) => return Ok(boot_failed(&mut channel, message)),
    };
    let state = PyDict::new(py);
    let lifespan = match lifespan::startup(py, &event_loop, &app, &state, config.app.lifespan) {
        Ok(running) => running,
        Err(lifespan::StartupFailed(message)) => return Ok(boot_failed(&mut channel, message)),
    };

    // Everything the app allocated while importing and starting up lives as long
    // as the worker: take it out of the collector's sight, so that the
    // collections that per-request garbage triggers do not walk it every time.
    py.import("gc")?.call_method0("freeze")?;

    let bridge = Bridge::new()?;
    bridge.defer_rings_to(py, &event_loop)?;
    let asyncio_tasks = py.import("asyncio.tasks")?;
    let ctx = Arc::new(AsgiContext {
        app: app.unbind(),
        create_task: task_factory(py, &event_loop)?,
        create_future: event_loop.getattr("create_future")?.unbind(),
        state: state.unbind(),
        root_path: config.app.root_path.clone(),
        tasks: crate::asgi::tasks::RequestTasks::new(py)?,
        scopes: crate::asgi::scope::Templates::new(py)?,
        event_loop: event_loop.clone().unbind(),
        enter_task: asyncio_tasks.getattr("_enter_task")?.unbind(),
        leave_task: asyncio_tasks.getattr("_leave_task")?.unbind(),
        register_task: asyncio_tasks.getattr("_register_task")?.unbind(),
        unregister_task: asyncio_tasks.getattr("_unregister_task")?.unbind(),
    });
    let dispatcher = dispatch::Dispatcher { bridge: bridge.clone(), ctx: ctx.clone(), event_loop: event_loop.clone().unbind() };
    event_loop.call_method1("add_reader", (bridge.fd(), dispatcher))?;

    let mut inherited = Vec::new();
    for i in 0..config.bind.len() {
        // SAFETY: the master placed one listener per bind at FIRST_LISTENER_FD + i
        // before exec, in `config.bind`'s order; each is adopted once, here.
        inherited.push(unsafe { listeners::adopt(FIRST_LISTENER_FD + i as i32) }?);
    }
    let guest = match config.workers.io {
        IoPlace::Loop => guest::Guest::build().map_err(|e| crate::warn!("{e}; this worker's I/O runs on a thread of its own instead (--io-mode thread)")).ok(),
        IoPlace::Thread => None,
    };
    let io = {
        let (config, bridge) = (config.clone(), bridge.clone());
        match guest {
            Some(guest) => Io::Loop(guest.start(py, &event_loop, move || Box::pin(serve_io(config, bridge, static_files, tls, inherited, channel, shared)))?),
            None => Io::Thread(
                std::thread::Builder::new()
                    .name("ferrogate-io".into())
                    .spawn(move || io_thread(config, bridge, static_files, tls, inherited, channel, shared))?,
            ),
        }
    };
    let place = match io {
        Io::Loop(_) => "I/O on the loop's thread",
        Io::Thread(_) => "I/O on a thread of its own",
    };
    crate::info!("Worker ready: serving {} with {}, {place}", config.app.target, loop_name(&event_loop));

    event_loop.call_method0("run_forever")?;

    let drain_began = match io {
        Io::Thread(thread) => py.detach(|| thread.join()).ok().flatten(),
        Io::Loop(turn) => turn.get().drain_began(),
    };
    let graceful = Duration::from_secs(config.workers.graceful_timeout);
    let left = drain_began.map_or(graceful, |began| graceful.saturating_sub(began.elapsed()));
    if let Err(e) = ctx.tasks.finish(py, &event_loop, left) {
        crate::error!("cannot wait for the app's request tasks: {e}");
    }
    if let Some(running) = lifespan {
        running.shutdown(py, &event_loop, config.workers.graceful_timeout);
    }
    if let Err(e) = crate::asgi::tasks::cancel_leftovers(py, &event_loop, &ctx.tasks) {
        crate::error!("cannot cancel the tasks the app left running: {e}");
    }
    let _ = event_loop.call_method1("remove_reader", (bridge.fd(),));
    let _ = event_loop.call_method0("close");
    Ok(0)
}

/// Where the worker's I/O runs (--io-mode).
enum Io {
    Thread(std::thread::JoinHandle<Option<Instant>>),
    Loop(Py<guest::Turn>),
}

/// The I/O thread: runs `serve_io` to its end. Returns when the drain began.
fn io_thread(config: Arc<Config>, bridge: Arc<Bridge>, static_files: Option<StaticFiles>, tls: Option<Arc<Acceptor>>, listeners: Vec<listeners::Inherited>, channel: std::os::unix::net::UnixStream, shared: Shared) -> Option<Instant> {
    match bridge.ring_once_per_turn(tokio::runtime::Builder::new_current_thread().enable_all()).build() {
        Ok(runtime) => Some(runtime.block_on(serve_io(config, bridge, static_files, tls, listeners, channel, shared))),
        Err(e) => {
            crate::error!("cannot start the I/O runtime: {e}");
            bridge.push(Event::Stop);
            None
        }
    }
}

/// HTTP on the inherited listeners plus the channel to the master. It ends once the
/// server has drained, and stops the event loop on its way out. Returns when the drain
/// began.
async fn serve_io(config: Arc<Config>, bridge: Arc<Bridge>, static_files: Option<StaticFiles>, tls: Option<Arc<Acceptor>>, listeners: Vec<listeners::Inherited>, channel: std::os::unix::net::UnixStream, shared: Shared) -> Instant {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    let mut ctx = ServerCtx::new(config, bridge.clone(), static_files, tls, stop_rx);
    if let Some(rate) = shared.rate {
        ctx.rate = rate;
    }
    // Seated as it begins to accept: a worker still booting takes no share.
    ctx.seat = shared.board.and_then(seat);
    ctx.open = Arc::new(OpenCount::posted_to(ctx.seat.clone()));
    let ctx = Arc::new(ctx);
    let outbox = bridge.clone();
    crate::io_tasks::spawn(async move { outbox.deliver_outbox().await });
    crate::io_tasks::spawn(channel::run(channel, ctx.clone(), stop_tx));
    let drain_began = server::serve(listeners, ctx).await;
    bridge.push(Event::Stop);
    drain_began
}

/// What the master shares with every worker in memory, handed over after the listeners.
struct Shared {
    board: Option<Board>,
    rate: Option<RateLimiter>,
}

/// The master's worker board, right after the listeners (master/spawn.rs). Without it
/// the worker takes every connection it can.
fn board(config: &Config) -> Option<Board> {
    // SAFETY: the master placed the board right after the listeners before exec; it is
    // adopted once, here, and `adopt` checks that it is one before using it.
    let board = unsafe { Board::adopt(FIRST_LISTENER_FD + config.bind.len() as i32) };
    board.map_err(|e| crate::warn!("{e}; this worker does not balance connections with the others")).ok()
}

fn seat(board: Board) -> Option<Arc<Seat>> {
    let seat = Arc::new(board).sit(std::process::id());
    if seat.is_none() {
        crate::warn!("all {SEATS} seats of the worker board are taken; this worker does not balance connections with the others");
    }
    seat.map(Arc::new)
}

/// --rate-limit: the master's shared table, handed over after the listeners and the
/// board (master/spawn.rs); this worker's own, with a warning, if it is not there.
fn rate_limits(config: &Config) -> Option<RateLimiter> {
    if !config.front.rate.enabled() {
        return None;
    }
    // SAFETY: the master placed the table right after the board before exec; it is
    // adopted once, here, and `adopt` checks that it is one before using it.
    let shared = unsafe { crate::http::rate_limit::shm::Table::adopt(FIRST_LISTENER_FD + config.bind.len() as i32 + 1) };
    let table = shared.map_err(|e| crate::warn!("{e}; this worker counts its own rate limits (each worker allows the full rate)")).ok();
    RateLimiter::new(&config.front.rate, table).map_err(|e| crate::error!("{e}; requests are not rate-limited")).ok()
}

/// Hands the reason to the master, which prints it once for all workers.
fn boot_failed(channel: &mut std::os::unix::net::UnixStream, message: String) -> i32 {
    use std::io::Write;
    let msg = ipc::encode(&ipc::ToMaster::BootFailed { message: message.clone() });
    if channel.write_all(&msg).is_err() {
        crate::error!("{message}");
    }
    EXIT_BOOT_ERROR
}

/// Reads the first line from the master: the configuration.
fn read_config(channel: &mut std::os::unix::net::UnixStream) -> Result<Config, String> {
    match read_message(channel)? {
        ToWorker::Config(config) => Ok(*config),
        other => Err(format!("expected the configuration first, got {other:?}")),
    }
}

/// Reads one line from the master byte by byte, so that nothing after it is consumed
/// here (the channel task reads the rest).
fn read_message(channel: &mut std::os::unix::net::UnixStream) -> Result<ToWorker, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match channel.read(&mut byte) {
            Ok(0) => return Err("the master closed its channel to this worker before sending the configuration".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the configuration: {e} (was this process started by ferrogate?)")),
        }
    }
    ipc::decode::<ToWorker>(&String::from_utf8_lossy(&line))
}

/// Ctrl-C reaches the whole process group; only the master acts on it. SIGUSR2
/// dumps every thread's Python stack, which the master asks for before killing
/// a worker whose loop is stuck.
fn prepare_interpreter(py: Python<'_>) -> PyResult<()> {
    let signal = py.import("signal")?;
    signal.call_method1("signal", (signal.getattr("SIGINT")?, signal.getattr("SIG_IGN")?))?;
    let faulthandler = py.import("faulthandler")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("all_threads", true)?;
    faulthandler.call_method("register", (signal.getattr("SIGUSR2")?,), Some(&kwargs))?;
    Ok(())
}

/// Imports MODULE:ATTRIBUTE the way uvicorn does, with errors that say what to fix.
fn import_app<'py>(py: Python<'py>, config: &Config) -> Result<Bound<'py, PyAny>, String> {
    let target = &config.app.target;
    let (module_name, attr) = target.split_once(':').ok_or_else(|| format!("APP '{target}' must be MODULE:ATTRIBUTE"))?;
    let app_dir = std::path::absolute(&config.app.app_dir).unwrap_or(config.app.app_dir.clone());
    let sys_path = py.import("sys").and_then(|sys| sys.getattr("path")).map_err(|e| e.to_string())?;
    sys_path.call_method1("insert", (0, app_dir.to_string_lossy().to_string())).map_err(|e| e.to_string())?;

    let module = py.import(module_name).map_err(|e| {
        let missing = e.is_instance_of::<pyo3::exceptions::PyModuleNotFoundError>(py)
            && e.value(py).getattr("name").ok().and_then(|n| n.extract::<String>().ok()).as_deref() == Some(module_name);
        if missing {
            format!("Error loading ASGI app. Could not import module \"{module_name}\" (looked in {} and sys.path; set --app-dir).", app_dir.display())
        } else {
            format!("Error loading ASGI app: importing \"{module_name}\" raised\n{}", format_exception(py, e.value(py)))
        }
    })?;
    let mut app = module.into_any();
    for part in attr.split('.') {
        app = app.getattr(part).map_err(|_| format!("Error loading ASGI app. Attribute \"{attr}\" not found in module \"{module_name}\"."))?;
    }
    if config.app.factory {
        app = app.call0().map_err(|e| format!("Error loading ASGI app factory \"{target}\":\n{}", format_exception(py, e.value(py))))?;
    }
    if !app.is_callable() {
        return Err(format!(
            "Error loading ASGI app: \"{target}\" is a {}, not an ASGI application{}",
            app.get_type().name().map(|n| n.to_string()).unwrap_or_default(),
            if config.app.factory { "" } else { " (if it is a function that builds the app, add --factory)" }
        ));
    }
    Ok(app)
}

/// uvloop when installed (or asked for), else asyncio's default loop.
fn new_event_loop(py: Python<'_>, choice: LoopChoice) -> Result<Bound<'_, PyAny>, String> {
    let make = || -> PyResult<Bound<'_, PyAny>> {
        let asyncio = py.import("asyncio")?;
        let uvloop = match choice {
            LoopChoice::Asyncio => None,
            LoopChoice::Auto => py.import("uvloop").ok(),
            LoopChoice::Uvloop => Some(py.import("uvloop")?),
        };
        let event_loop = match uvloop {
            Some(uvloop) => uvloop.call_method0("new_event_loop")?,
            None => asyncio.call_method0("new_event_loop")?,
        };
        asyncio.call_method1("set_event_loop", (&event_loop,))?;
        Ok(event_loop)
    };
    make().map_err(|e| match choice {
        LoopChoice::Uvloop => format!("--loop uvloop: cannot use uvloop ({e}); install it with `pip install uvloop`"),
        _ => format!("cannot create the event loop: {e}"),
    })
}

fn loop_name(event_loop: &Bound<'_, PyAny>) -> &'static str {
    let module = event_loop.get_type().module().map(|m| m.to_string()).unwrap_or_default();
    if module.starts_with("uvloop") { "uvloop" } else { "asyncio" }
}

/// Python 3.12+ can start a task eagerly: a handler that never waits finishes
/// inside create_task, with no trip through the loop.
fn task_factory(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    if py.version_info() >= (3, 12) {
        let kwargs = PyDict::new(py);
        kwargs.set_item("loop", event_loop)?;
        kwargs.set_item("eager_start", true)?;
        let partial = py.import("functools")?.getattr("partial")?;
        let task = py.import("asyncio")?.getattr("Task")?;
        return Ok(partial.call((task,), Some(&kwargs))?.unbind());
    }
    Ok(event_loop.getattr("create_task")?.unbind())
}
