//! The server a probe talks to: a broken variant of the lab's server, the
//! correct one, or ackloop itself through `TestServer`, each on a thread
//! whose kernel id the probes watch.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use ackloop::Mode;
use ackloop::testing::TestServer;

use crate::measure::{self, CpuClock};
use crate::server::{Counters, IDLE_TIMEOUT, Lab, MAX_LINE, Stopper, Trap};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The lab's server with one trap built in.
    Broken(Trap),
    /// The lab's server as it should be.
    Correct,
    /// ackloop, configured like the lab's server where it matters.
    Ackloop,
}

/// A running server; stopped and joined when dropped.
pub struct Target {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    /// The kernel's id of the server's thread.
    pub tid: i32,
    running: Running,
}

enum Running {
    Lab {
        stopper: Stopper,
        thread: Option<JoinHandle<io::Result<()>>>,
        counters: Arc<Counters>,
    },
    Ackloop(TestServer),
}

impl Target {
    pub fn start(kind: Kind) -> io::Result<Target> {
        match kind {
            Kind::Broken(trap) => Target::lab(Some(trap)),
            Kind::Correct => Target::lab(None),
            Kind::Ackloop => Target::ackloop(),
        }
    }

    fn lab(trap: Option<Trap>) -> io::Result<Target> {
        let lab = Lab::bind(trap)?;
        let (tcp, udp) = (lab.tcp_addr()?, lab.udp_addr()?);
        let (stopper, counters) = (lab.stopper(), lab.counters());
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("lab-server".into())
            .spawn(move || {
                let _ = tid_tx.send(measure::current_tid());
                lab.run()
            })?;
        let tid = tid_rx.recv().map_err(io::Error::other)?;
        let running = Running::Lab {
            stopper,
            thread: Some(thread),
            counters,
        };
        Ok(Target {
            tcp,
            udp,
            tid,
            running,
        })
    }

    fn ackloop() -> io::Result<Target> {
        install_event_counter();
        let server = TestServer::builder()
            .mode(Mode::Line)
            .configure(|config| {
                config.idle_timeout = Some(IDLE_TIMEOUT);
                config.max_line = MAX_LINE;
            })
            .start()
            .map_err(io::Error::other)?;
        // Probes run one at a time, so one such thread runs; the last
        // probe's may take a moment more to leave the list of tasks.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let tid = loop {
            match measure::thread_named("ackloop-test-server") {
                Some(tid) => break tid,
                None if std::time::Instant::now() < deadline => std::thread::yield_now(),
                None => return Err(io::Error::other("cannot find the TestServer's thread")),
            }
        };
        Ok(Target {
            tcp: server.tcp_addr(),
            udp: server.udp_addr(),
            tid,
            running: Running::Ackloop(server),
        })
    }

    /// The server thread's CPU clock.
    pub fn cpu(&self) -> io::Result<CpuClock> {
        CpuClock::of(self.tid)
    }

    /// Readiness events the server has handled so far.
    pub fn events(&self) -> u64 {
        match &self.running {
            Running::Lab { counters, .. } => counters.events.load(Relaxed),
            Running::Ackloop(_) => ACKLOOP_EVENTS.load(Relaxed),
        }
    }

    /// Bytes the server has read from TCP clients so far.
    pub fn bytes_read(&self) -> u64 {
        match &self.running {
            Running::Lab { counters, .. } => counters.bytes_read.load(Relaxed),
            Running::Ackloop(server) => server.stats().bytes_in,
        }
    }

    /// Accepts that failed for want of a descriptor (the lab's servers only).
    pub fn out_of_descriptors(&self) -> Option<u64> {
        match &self.running {
            Running::Lab { counters, .. } => Some(counters.out_of_descriptors.load(Relaxed)),
            Running::Ackloop(_) => None,
        }
    }

    /// Whether the server's thread still runs.
    pub fn alive(&self) -> bool {
        measure::alive(self.tid)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Running::Lab {
            stopper, thread, ..
        } = &mut self.running
        {
            stopper.stop();
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
        // A TestServer stops itself when dropped, right after this.
    }
}

/// ackloop's readiness events, counted from its `trace` lines
/// (`event conn 3 readable`): the library keeps no such counter.
static ACKLOOP_EVENTS: AtomicU64 = AtomicU64::new(0);

struct EventCounter;

impl log::Log for EventCounter {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target().starts_with("ackloop::server") // the loop, wherever it dispatches
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) && record.args().to_string().starts_with("event ") {
            ACKLOOP_EVENTS.fetch_add(1, Relaxed);
        }
    }

    fn flush(&self) {}
}

fn install_event_counter() {
    static COUNTER: EventCounter = EventCounter;
    if log::set_logger(&COUNTER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}
