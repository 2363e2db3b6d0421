//! The server a probe talks to: a broken variant of the lab's server, the
//! correct one, or ackloop itself through `TestServer`, each on a thread
//! whose kernel id the probes watch.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use ackloop::Mode;
use ackloop::testing::TestServer;

use crate::ackloop_log::{self, Listening};
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

    /// Starts counting ackloop's events (its log is off otherwise); the
    /// lab's servers count theirs always. Hold it only where no CPU time
    /// is measured.
    pub fn count_events(&self) -> Option<Listening> {
        matches!(self.running, Running::Ackloop(_)).then(|| Listening::start(false))
    }

    /// Readiness events the server has handled so far (for ackloop, only
    /// those handled while [`count_events`](Target::count_events) was held).
    pub fn events(&self) -> u64 {
        match &self.running {
            Running::Lab { counters, .. } => counters.events.load(Relaxed),
            Running::Ackloop(_) => ackloop_log::events(),
        }
    }

    /// The most reads one connection made in one turn (the lab's servers
    /// only: ackloop keeps no such count).
    pub fn most_reads_in_a_turn(&self) -> Option<u64> {
        match &self.running {
            Running::Lab { counters, .. } => Some(counters.most_reads_in_a_turn.load(Relaxed)),
            Running::Ackloop(_) => None,
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

    /// Accepts that failed with another error (the lab's servers only).
    pub fn accept_errors(&self) -> Option<u64> {
        match &self.running {
            Running::Lab { counters, .. } => Some(counters.accept_errors.load(Relaxed)),
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
