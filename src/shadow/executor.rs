//! Where mirrors run: a runtime of their own, on a thread of lower priority.
//!
//! A mirror's work comes in bursts the client never asked for: a thousand
//! slow candidate answers arriving in the same second, as many timeouts
//! firing together, reconnections, comparisons. On the client's worker
//! threads those bursts queue in front of client requests and show in their
//! p99. Here they run on a separate tokio runtime whose thread has a nice
//! value of 10, so under load the kernel gives the client's threads the CPU
//! first and shadow work takes what is left (Envoy and nginx run mirrors on
//! the same workers; Diffy runs as a separate process).
//!
//! The runtime's tasks, sockets and timers are its own: upstreams keep a
//! separate pool for mirrors (see `Upstream::send_mirror`), so a client
//! request never waits on a connection driven by this thread.

use std::sync::{Mutex, PoisonError};

use tokio::runtime::{Builder, Handle, Runtime};

/// The shadow thread's name, as `top -H` shows it (15 bytes at most).
pub const THREAD_NAME: &str = "shadow-mirror";
/// Nice value of the shadow thread: well below the client's (0), not idle.
const SHADOW_NICE: i32 = 10;

/// The shadow runtime. Dropping it stops its thread without waiting.
pub struct ShadowExecutor {
    handle: Handle,
    runtime: Mutex<Option<Runtime>>,
}

impl ShadowExecutor {
    pub fn start() -> std::io::Result<ShadowExecutor> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(THREAD_NAME)
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(ShadowExecutor {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// Runs a mirror task on the shadow runtime.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task);
    }
}

impl Drop for ShadowExecutor {
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            // May run inside the client runtime: never block here.
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's priority. On Linux a nice value belongs to a
/// thread, and `setpriority` on the calling "process" (no id) changes this
/// thread only (strangler is built for Linux).
fn lower_priority() {
    if let Err(error) = rustix::process::setpriority_process(None, SHADOW_NICE) {
        tracing::debug!(%error, "could not lower the shadow thread's priority");
    }
}
