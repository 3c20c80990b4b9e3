//! The election's rules, each a test, on an in-memory compare-and-swap
//! store with tokio's paused clock (the Swarm store is tested on the bed).

use std::sync::Mutex;

use super::*;

/// A compare-and-swap record in memory; `down` makes it unreachable.
#[derive(Default)]
struct MemoryStore {
    record: Mutex<Option<Versioned>>,
    down: Mutex<bool>,
}

impl MemoryStore {
    fn check(&self) -> Result<(), LeaseError> {
        match *self.down.lock().unwrap() {
            true => Err(LeaseError::Unavailable("cut off".into())),
            false => Ok(()),
        }
    }

    fn set_down(&self, down: bool) {
        *self.down.lock().unwrap() = down;
    }

    fn holder(&self) -> (String, u64) {
        let record = self.record.lock().unwrap();
        let record = &record.as_ref().expect("a record").record;
        (record.holder.clone(), record.epoch)
    }
}

impl LeaseStore for MemoryStore {
    async fn read(&self) -> Result<Option<Versioned>, LeaseError> {
        self.check()?;
        Ok(self.record.lock().unwrap().clone())
    }

    async fn create(&self, record: &Record) -> Result<(), LeaseError> {
        self.check()?;
        let mut current = self.record.lock().unwrap();
        if current.is_some() {
            return Err(LeaseError::Conflict);
        }
        *current = Some(Versioned {
            version: 1,
            record: record.clone(),
        });
        Ok(())
    }

    async fn update(&self, version: u64, record: &Record) -> Result<(), LeaseError> {
        self.check()?;
        let mut current = self.record.lock().unwrap();
        match current.as_ref() {
            Some(found) if found.version == version => {
                *current = Some(Versioned {
                    version: version + 1,
                    record: record.clone(),
                });
                Ok(())
            }
            _ => Err(LeaseError::Conflict),
        }
    }
}

fn timing() -> Timing {
    Timing::new(Duration::from_secs(15), Duration::from_secs(5)).unwrap()
}

fn elector(name: &str) -> Elector {
    Elector::new(name.into(), format!("http://{name}:7777"), timing())
}

/// `a` takes the lease, then `b` reads it and stands by.
async fn leader_and_standby(store: &MemoryStore) -> (Elector, Elector) {
    let (mut a, mut b) = (elector("a"), elector("b"));
    a.step(store, "").await.unwrap();
    b.step(store, "").await.unwrap();
    (a, b)
}

async fn advance(by: Duration) {
    tokio::time::advance(by).await;
}

#[tokio::test(start_paused = true)]
async fn the_first_daemon_creates_the_lease_and_the_second_stands_by() {
    let store = MemoryStore::default();
    let (mut a, mut b) = leader_and_standby(&store).await;
    let now = Instant::now();
    assert_eq!(a.term(now).map(|t| t.epoch), Some(1));
    assert_eq!(b.term(now), None, "the lease is a's");
    assert_eq!(
        b.record().unwrap().url,
        "http://a:7777",
        "b knows where a answers"
    );
    for _ in 0..10 {
        advance(Duration::from_secs(5)).await;
        a.step(&store, "").await.unwrap();
        b.step(&store, "").await.unwrap();
        assert!(a.term(Instant::now()).is_some() && b.term(Instant::now()).is_none());
    }
    assert_eq!(store.holder(), ("a".into(), 1), "renewing keeps the term");
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_over_a_whole_lease_after_it_last_saw_a_change() {
    let store = MemoryStore::default();
    let (a, mut b) = leader_and_standby(&store).await;
    // a dies here: it renews no more.
    advance(Duration::from_secs(14)).await;
    b.step(&store, "").await.unwrap();
    assert_eq!(b.term(Instant::now()), None, "14 s unchanged: not yet");
    assert_eq!(
        b.next_step_in(Instant::now()),
        Duration::from_secs(1),
        "the next step falls when the lease lapses"
    );
    advance(Duration::from_secs(1)).await;
    b.step(&store, "").await.unwrap();
    assert_eq!(
        b.term(Instant::now()).map(|t| t.epoch),
        Some(2),
        "a new term"
    );
    assert_eq!(store.holder(), ("b".into(), 2));
    assert_eq!(a.term(Instant::now()), None, "a's own term ran out first");
}

#[tokio::test(start_paused = true)]
async fn a_holder_cut_off_from_the_store_stops_before_a_standby_may_start() {
    let store = MemoryStore::default();
    let (mut a, mut b) = leader_and_standby(&store).await;
    let renewed_at = Instant::now();
    store.set_down(true);
    let mut a_ended = None;
    let mut b_started = None;
    for _ in 0..40 {
        advance(Duration::from_millis(500)).await;
        let now = Instant::now();
        // The store is back for b (a partition cuts a off only) after 2 s.
        if now - renewed_at >= Duration::from_secs(2) {
            store.set_down(false);
            b.step(&store, "").await.unwrap();
            store.set_down(true);
        }
        assert!(a.step(&store, "").await.is_err());
        if a_ended.is_none() && a.term(now).is_none() {
            a_ended = Some(now - renewed_at);
        }
        if b_started.is_none() && b.term(now).is_some() {
            b_started = Some(now - renewed_at);
        }
        assert!(
            a.term(now).is_none() || b.term(now).is_none(),
            "two terms at {:?}",
            now - renewed_at
        );
    }
    assert_eq!(a_ended, Some(Duration::from_secs(10)), "lease - renew");
    let b_started = b_started.expect("b takes over");
    assert!(b_started >= Duration::from_secs(15), "{b_started:?}");
}

#[tokio::test(start_paused = true)]
async fn a_standby_that_cannot_read_the_store_never_takes_over() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (elector("a"), elector("b"));
    a.step(&store, "").await.unwrap();
    store.set_down(true);
    for _ in 0..10 {
        advance(Duration::from_secs(5)).await;
        assert!(b.step(&store, "").await.is_err());
        assert_eq!(b.term(Instant::now()), None, "unknown is not free");
    }
    assert_eq!(b.record(), None);
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_finds_another_writer_gives_its_term_up_at_once() {
    let store = MemoryStore::default();
    let mut a = elector("a");
    a.step(&store, "").await.unwrap();
    // Another daemon took the record over (as after a long pause of a's).
    let version = store.read().await.unwrap().unwrap().version;
    store
        .update(
            version,
            &Record {
                holder: "b".into(),
                epoch: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    advance(Duration::from_secs(5)).await;
    a.step(&store, "").await.unwrap();
    assert_eq!(a.term(Instant::now()), None);
    assert_eq!(store.holder(), ("b".into(), 2), "a wrote nothing over it");
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_at_the_next_step() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (elector("a"), elector("b"));
    a.step(&store, "{\"freezes\":[]}").await.unwrap();
    b.step(&store, "").await.unwrap();
    a.release(&store).await.unwrap();
    assert_eq!(
        a.term(Instant::now()),
        None,
        "a stops acting before it writes"
    );
    advance(Duration::from_millis(100)).await;
    b.step(&store, "").await.unwrap();
    assert_eq!(b.term(Instant::now()).map(|t| t.epoch), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_holder_resumes_at_once_in_a_new_term() {
    let store = MemoryStore::default();
    let mut first = elector("a");
    first.step(&store, "").await.unwrap();
    // The same daemon (same --ha-id, its state folder locked) starts again.
    let mut again = elector("a");
    advance(Duration::from_secs(1)).await;
    again.step(&store, "").await.unwrap();
    assert_eq!(again.term(Instant::now()).map(|t| t.epoch), Some(2));
}

#[test]
fn the_record_round_trips_through_labels_and_bad_timings_are_refused() {
    let record = Record {
        holder: "a".into(),
        epoch: 7,
        url: "http://a:7777".into(),
        control: "{}".into(),
    };
    assert_eq!(Record::from_labels(&record.to_labels()), record);
    let error = Timing::new(Duration::from_secs(10), Duration::from_secs(5)).unwrap_err();
    assert!(
        error.contains("--ha-renew") && error.contains("--ha-lease"),
        "{error}"
    );
    assert!(Timing::new(Duration::from_secs(3), Duration::from_secs(1)).is_ok());
}
