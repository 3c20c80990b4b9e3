//! The store behind one thread that owns every SQLite call: the async
//! side queues work in order and awaits answers (a writer waits only when
//! the queue is full).

#[allow(unused_imports)]
use super::*;

/// Work for the store's thread.
type Job = Box<dyn FnOnce(&Store) + Send>;

/// Jobs waiting for the store's thread, at most: beyond it a writer waits,
/// so a flood of output cannot grow memory without bound.
const QUEUE_LENGTH: usize = 4096;

/// The daemon's way to the store: one thread owns every SQLite call, so
/// none blocks an async runtime thread, and jobs run in the order they
/// were queued (a write is seen by every read queued after it; log chunks
/// stay in order).
#[derive(Clone)]
pub struct StoreQueue {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl StoreQueue {
    /// Start the store's thread; it ends when the last queue handle is dropped.
    pub fn start(store: Store) -> StoreQueue {
        let (jobs, queued) = std::sync::mpsc::sync_channel::<Job>(QUEUE_LENGTH);
        std::thread::Builder::new()
            .name("pier-store".into())
            .spawn(move || {
                for job in queued {
                    job(&store);
                }
            })
            .expect("the store thread starts");
        StoreQueue { jobs }
    }

    /// Queue `work` and wait for its result without blocking the runtime.
    pub async fn call<T, F>(&self, work: F) -> T
    where
        F: FnOnce(&Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.write(move |store| {
            let _ = reply.send(work(store));
        });
        match result.await {
            Ok(value) => value,
            // The store thread only ends with the process; a panic there is a bug.
            Err(_) => panic!("the store thread ended"),
        }
    }

    /// Queue `work` (a write) and go on: it runs after everything queued before.
    pub fn write(&self, work: impl FnOnce(&Store) + Send + 'static) {
        // Fails only once the thread ended, which it does not while a handle lives.
        let _ = self.jobs.send(Box::new(work));
    }
}
