//! How many programs compile at once: a counting gate that [`circuit::parse`](super::circuit::parse)
//! passes before it starts its parser thread.

use std::num::NonZeroUsize;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

/// Programs compiled at once, across every caller and the executor. Each holds a parser thread
/// with a 64 MiB stack and may build a circuit of up to [`MAX_OPERATIONS`](super::circuit::MAX_OPERATIONS)
/// instructions, and compiling is CPU-bound: without a bound, hundreds of concurrent uploads of
/// large (legal) programs would take gigabytes and every core from the other callers. Parsing
/// runs outside any store transaction, so it no longer queues behind the store's one writer.
pub(super) static COMPILING: CompileGate = CompileGate { running: Mutex::new(0), freed: Condvar::new() };

/// A counting gate of as many compiles as the machine has cores.
pub(super) struct CompileGate {
    running: Mutex<usize>,
    freed: Condvar,
}

/// A place in [`COMPILING`], given back when dropped.
pub(super) struct CompileSlot<'a> {
    gate: &'a CompileGate,
}

impl CompileGate {
    /// Waits for a place; callers run on blocking threads.
    pub(super) fn enter(&self) -> CompileSlot<'_> {
        static LIMIT: OnceLock<usize> = OnceLock::new();
        let limit = *LIMIT.get_or_init(|| std::thread::available_parallelism().map_or(2, NonZeroUsize::get));
        // A count stays whole under the lock: a poisoned one is still right.
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        while *running >= limit {
            running = self.freed.wait(running).unwrap_or_else(PoisonError::into_inner);
        }
        *running += 1;
        CompileSlot { gate: self }
    }
}

impl Drop for CompileSlot<'_> {
    fn drop(&mut self) {
        *self.gate.running.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        self.gate.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_programs_compile_at_once_than_the_machine_has_cores() {
        let limit = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
        let held: Vec<CompileSlot<'_>> = (0..limit).map(|_| COMPILING.enter()).collect();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(crate::executor::circuit::parse("OPENQASM 2.0;\nqreg q[1];\nU(0,0,0) q[0];\n").is_ok());
        });
        // Every place is taken: the compile waits (other tests' compiles wait with it).
        assert_eq!(
            finished.recv_timeout(std::time::Duration::from_millis(300)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        );
        drop(held);
        assert_eq!(finished.recv_timeout(std::time::Duration::from_secs(30)), Ok(true));
    }
}
