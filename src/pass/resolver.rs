//! Image resolution off the pass's path: the daemon's passes ask here for
//! the digest of a tag, and a registry that is slow or hangs delays only
//! the services whose image it holds, never the healing of the others.
//!
//! A reference seen for the first time holds its pass for at most
//! `first_wait`, time enough for a registry that answers; past it the
//! resolution goes on in the background, the service waits (frozen with
//! the reason) and the pass acts on everything else. A reference already
//! being resolved, or whose last resolution failed a moment ago, holds no
//! pass at all. When a background resolution ends, `on_done` asks for a
//! pass, which finds the answer here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;

use crate::registry::{Registry, ResolveError, Resolved};

/// How a reference was resolved, or why it could not be.
pub type Resolution = Result<Resolved, ResolveError>;

/// Resolutions in flight and their answers, per image reference.
pub struct Resolver {
    registry: Arc<Registry>,
    state: Mutex<HashMap<String, Entry>>,
    first_wait: Duration,
    retry_after: Duration,
    on_done: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let references = self.state.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("Resolver")
            .field("references", &references)
            .field("first_wait", &self.first_wait)
            .finish()
    }
}

enum Entry {
    /// Being resolved; the answer arrives on the channel.
    InFlight(watch::Receiver<Option<Resolution>>),
    /// Resolved in the background after its pass stopped waiting: the next
    /// pass takes it (and a later one resolves the tag afresh).
    Resolved(Resolved),
    /// Failed at `at`: passes take the failure until `retry_after` passed.
    Failed { error: ResolveError, at: Instant },
}

impl Resolver {
    pub fn new(
        registry: Arc<Registry>,
        first_wait: Duration,
        retry_after: Duration,
        on_done: Arc<dyn Fn() + Send + Sync>,
    ) -> Arc<Resolver> {
        Arc::new(Resolver {
            registry,
            state: Mutex::new(HashMap::new()),
            first_wait,
            retry_after,
            on_done,
        })
    }

    /// Forget the answers for references the manifests no longer name, so a
    /// long-running daemon keeps one entry per image it deploys, not one
    /// per image it ever saw. A resolution under way is left to finish
    /// (its answer is forgotten by a later pass).
    pub fn forget_all_but(&self, named: &std::collections::BTreeSet<&str>) {
        self.state
            .lock()
            .expect("resolver lock")
            .retain(|image, entry| {
                matches!(entry, Entry::InFlight(_)) || named.contains(image.as_str())
            });
    }

    /// How many references it holds an entry for.
    #[cfg(test)]
    fn known(&self) -> usize {
        self.state.lock().expect("resolver lock").len()
    }

    /// The digest of `image` if it is known or comes within this pass's
    /// wait; otherwise a transient error saying it is still being resolved.
    pub async fn lookup(self: &Arc<Self>, image: &str) -> Resolution {
        let (mut answer, waiter) = {
            let mut state = self.state.lock().expect("resolver lock");
            match state.remove(image) {
                Some(Entry::Resolved(resolved)) => return Ok(resolved),
                Some(Entry::Failed { error, at }) if at.elapsed() < self.retry_after => {
                    state.insert(
                        image.to_string(),
                        Entry::Failed {
                            error: error.clone(),
                            at,
                        },
                    );
                    return Err(error);
                }
                Some(Entry::InFlight(answer)) => {
                    state.insert(image.to_string(), Entry::InFlight(answer.clone()));
                    (answer, None)
                }
                // Failed a while ago: tried again, without holding the pass.
                Some(Entry::Failed { .. }) => (self.start(&mut state, image, None), None),
                None => {
                    let waiter = Arc::new(AtomicBool::new(true));
                    (
                        self.start(&mut state, image, Some(waiter.clone())),
                        Some(waiter),
                    )
                }
            }
        };
        if let Some(waiter) = waiter {
            let waited =
                tokio::time::timeout(self.first_wait, answer.wait_for(Option::is_some)).await;
            // From here the background asks for a pass with its answer;
            // one that arrived meanwhile is taken now (see `start`).
            waiter.store(false, Ordering::SeqCst);
            drop(waited);
        }
        let arrived = answer.borrow().clone();
        match arrived {
            Some(resolution) => {
                // Taken by this pass: the background's copy is not needed.
                self.take_resolved(image);
                resolution
            }
            None => Err(ResolveError::Unreachable {
                reference: image.to_string(),
                reason: "its registry has not answered yet; resolving it in the background, the service waits meanwhile".into(),
            }),
        }
    }

    fn take_resolved(&self, image: &str) {
        let mut state = self.state.lock().expect("resolver lock");
        if matches!(state.get(image), Some(Entry::Resolved(_))) {
            state.remove(image);
        }
    }

    /// Resolve `image` in the background; its answer's receiver. While
    /// `waiter` is set, a pass waits for the answer and takes it; after,
    /// the answer asks for a pass of its own.
    fn start(
        self: &Arc<Self>,
        state: &mut HashMap<String, Entry>,
        image: &str,
        waiter: Option<Arc<AtomicBool>>,
    ) -> watch::Receiver<Option<Resolution>> {
        let (sender, answer) = watch::channel(None);
        state.insert(image.to_string(), Entry::InFlight(answer.clone()));
        let (this, image) = (self.clone(), image.to_string());
        tokio::spawn(async move {
            let resolution = this.registry.resolve(&image).await;
            {
                let mut state = this.state.lock().expect("resolver lock");
                let entry = match &resolution {
                    Ok(resolved) => Entry::Resolved(resolved.clone()),
                    Err(error) => Entry::Failed {
                        error: error.clone(),
                        at: Instant::now(),
                    },
                };
                state.insert(image, entry);
            }
            // Sent before the waiter is read: a pass that stops waiting
            // after this still sees the answer, one that stopped before is
            // followed by a pass of the answer's own.
            let _ = sender.send(Some(resolution));
            let waited_for = waiter.is_some_and(|w| w.load(Ordering::SeqCst));
            if !waited_for {
                (this.on_done)();
            }
        });
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A registry that accepts connections and never answers, and a
    /// resolver in front of it; the passes it asked for are counted.
    async fn hung() -> (
        Arc<Resolver>,
        Arc<AtomicUsize>,
        String,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                connections.push(socket);
            }
        });
        let registry = Registry::with_timeout(
            vec![address.clone()],
            Default::default(),
            Duration::from_secs(10),
        );
        let passes = Arc::new(AtomicUsize::new(0));
        let counted = passes.clone();
        let resolver = Resolver::new(
            Arc::new(registry),
            Duration::from_secs(1),
            Duration::from_secs(2),
            Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (resolver, passes, format!("{address}/team/app:1"), held)
    }

    /// Only the first pass to see a hung registry's tag waits for it, and
    /// only `first_wait`; later passes go on at once, with the reason, and
    /// the answer, once it comes, asks for a pass.
    #[tokio::test(start_paused = true)]
    async fn a_hung_registry_holds_one_pass_for_first_wait_then_none() {
        let (resolver, passes, image, held) = hung().await;
        let started = tokio::time::Instant::now();
        let first = resolver.lookup(&image).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(
            first.to_string().contains("has not answered yet"),
            "{first}"
        );

        let again = tokio::time::Instant::now();
        let second = resolver.lookup(&image).await.unwrap_err();
        assert_eq!(again.elapsed(), Duration::ZERO, "in flight: no wait");
        assert!(second.is_transient(), "{second}");
        assert_eq!(passes.load(Ordering::SeqCst), 0);

        // The resolution gives up by its own bound, and asks for a pass.
        while passes.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let failed_at = tokio::time::Instant::now();
        let failed = resolver.lookup(&image).await.unwrap_err();
        assert_eq!(failed_at.elapsed(), Duration::ZERO);
        assert!(failed.to_string().contains("unreachable"), "{failed}");
        assert!(
            !failed.to_string().contains("has not answered yet"),
            "{failed}"
        );

        // Past the retry interval it is tried again, still holding no pass.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let retry_at = tokio::time::Instant::now();
        assert!(resolver.lookup(&image).await.is_err());
        assert_eq!(retry_at.elapsed(), Duration::ZERO);
        held.abort();
    }

    /// A long-running daemon keeps answers only for the images its
    /// manifests name: the failure of one no longer named is forgotten once
    /// its resolution has ended.
    #[tokio::test(start_paused = true)]
    async fn answers_for_images_no_longer_named_are_forgotten() {
        use std::collections::BTreeSet;
        let (resolver, passes, image, held) = hung().await;
        assert!(resolver.lookup(&image).await.is_err());
        resolver.forget_all_but(&BTreeSet::new());
        assert_eq!(resolver.known(), 1, "a resolution under way finishes");
        while passes.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        resolver.forget_all_but(&BTreeSet::from([image.as_str()]));
        assert_eq!(resolver.known(), 1, "still named");
        resolver.forget_all_but(&BTreeSet::new());
        assert_eq!(resolver.known(), 0, "its failure is forgotten");
        held.abort();
    }
}
