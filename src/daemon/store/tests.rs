//! Unit tests of the store, on a real SQLite database in memory or on disk.

/// The history and SQLite's WAL and shared-memory files beside it are
/// the owner's alone, however loose the umask.
#[test]
fn the_store_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pier.db");
    // A file left group- and world-readable by an earlier version.
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(&path, Retention::default()).unwrap();
    store.start_run("abc", "main").unwrap();
    for name in ["pier.db", "pier.db-wal", "pier.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
}

use super::*;

/// Writes queued without waiting are seen by every read queued after
/// them, and a run's log chunks keep their order, whichever runtime
/// thread queued them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_keeps_order_and_reads_see_earlier_writes() {
    let queue = StoreQueue::start(Store::in_memory().unwrap());
    queue.write(|store| store.mark_failed("c1", "bad", &BTreeMap::new()).unwrap());
    let failure = queue.call(|store| store.failure("c1").unwrap()).await;
    assert_eq!(failure.map(|f| f.reason).as_deref(), Some("bad"));

    let run = queue
        .call(|store| store.start_run("c1", "main").unwrap())
        .await;
    for n in 0..200 {
        let chunk = format!("line {n}\n");
        queue.write(move |store| store.append_stage_log(run, 0, "test", &chunk).unwrap());
    }
    let log = queue
        .call(move |store| store.stage_log_after(run, "test", 0).unwrap())
        .await;
    let expected: String = (0..200).map(|n| format!("line {n}\n")).collect();
    let text: String = log.into_iter().map(|(_, chunk)| chunk).collect();
    assert_eq!(text, expected);
}

#[test]
fn a_refused_revision_stays_refused_until_applied() {
    let store = Store::in_memory().unwrap();
    assert_eq!(store.failure("c1").unwrap(), None);
    let rolled_back = BTreeMap::from([("web".to_string(), "unhealthy".to_string())]);
    store
        .mark_failed("c1", "pier/a.yml:3:5: bad", &rolled_back)
        .unwrap();
    assert_eq!(
        store.failure("c1").unwrap(),
        Some(Failure {
            reason: "pier/a.yml:3:5: bad".into(),
            services: rolled_back
        })
    );
    store.mark_applied("c1").unwrap();
    assert_eq!(store.failure("c1").unwrap(), None);
    assert_eq!(store.last_good().unwrap().as_deref(), Some("c1"));
}

#[test]
fn digests_are_kept_per_commit_service_and_reference() {
    let store = Store::in_memory().unwrap();
    let resolved = Resolved {
        pinned: "r/web@sha256:1".into(),
        digest: "sha256:1".into(),
    };
    store
        .save_digest("c1", "web", "r/web:1", &resolved)
        .unwrap();
    assert_eq!(
        store.digest("c1", "web", "r/web:1").unwrap(),
        Some(resolved)
    );
    assert_eq!(store.digest("c1", "web", "r/web:2").unwrap(), None);
    assert_eq!(store.digest("c2", "web", "r/web:1").unwrap(), None);
}

#[test]
fn pipeline_runs_keep_their_stages_and_logs() {
    let store = Store::in_memory().unwrap();
    let run = store.start_run("abcdef123456", "main").unwrap();
    store
        .append_stage_log(run, 0, "test", "$ sh app/test.sh\n")
        .unwrap();
    store.append_stage_log(run, 0, "test", "ok\n").unwrap();
    assert!(!store.pipeline_passed("abcdef123456").unwrap());
    store
        .finish_stage(
            run,
            0,
            &StageRow {
                name: "test".into(),
                node: "n3".into(),
                state: "passed".into(),
                exit_code: Some(0),
                duration_ms: 5,
                message: String::new(),
                log: "$ sh app/test.sh\nok\n".into(),
            },
        )
        .unwrap();
    store
        .finish_run(run, crate::pipeline::RunState::Passed, "")
        .unwrap();
    assert!(store.pipeline_passed("abcdef123456").unwrap());
    let found = store.find_run("abcdef").unwrap().unwrap();
    assert_eq!((found.id, found.state.as_str()), (run, "passed"));
    assert_eq!(store.find_run(&run.to_string()).unwrap().unwrap().id, run);
    let stages = store.stages(run).unwrap();
    assert_eq!(stages[0].log, "$ sh app/test.sh\nok\n");
}

#[test]
fn a_long_stage_log_keeps_its_end_in_appended_chunks() {
    let store = Store::in_memory_keeping(Retention {
        stage_log_bytes: 4096,
        ..Retention::default()
    })
    .unwrap();
    let run = store.start_run("c1", "main").unwrap();
    for line in 0..1000 {
        store
            .append_stage_log(run, 0, "test", &format!("line {line:04} é\n"))
            .unwrap();
    }
    let log = &store.stages(run).unwrap()[0].log;
    assert!(log.len() <= 4096, "{} bytes kept", log.len());
    assert!(log.starts_with("[… earlier output dropped"), "{log}");
    assert!(log.ends_with("line 0999 é\n"), "{log}");
    assert!(!log.contains("line 0000"));
    // A follower that read chunk 10 long ago resumes at the marker.
    let after = store.stage_log_after(run, "test", 10).unwrap();
    assert!(after[0].1.starts_with("[… earlier output dropped"));
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
    let last = after.last().unwrap().0;
    assert!(store.stage_log_after(run, "test", last).unwrap().is_empty());
}

#[test]
fn passes_and_runs_keep_a_set_history() {
    let store = Store::in_memory_keeping(Retention {
        passes: 3,
        runs: 2,
        ..Retention::default()
    })
    .unwrap();
    for _ in 0..5 {
        store
            .record_pass(&PassRecord {
                started: SystemTime::now(),
                duration_ms: 1,
                trigger: "git".into(),
                commit: "c".into(),
                result: "ok".into(),
                steps: 0,
                message: String::new(),
                ..Default::default()
            })
            .unwrap();
    }
    assert_eq!(store.recent_passes(10).unwrap().len(), 3);
    let runs: Vec<i64> = (0..3)
        .map(|n| {
            let run = store.start_run(&format!("commit{n}"), "main").unwrap();
            store.append_stage_log(run, 0, "test", "out\n").unwrap();
            run
        })
        .collect();
    assert!(store.find_run(&runs[0].to_string()).unwrap().is_none());
    assert!(
        store
            .stage_log_after(runs[0], "test", 0)
            .unwrap()
            .is_empty()
    );
    assert!(store.find_run(&runs[2].to_string()).unwrap().is_some());
}

#[test]
fn passes_come_back_newest_first() {
    let store = Store::in_memory().unwrap();
    for (i, result) in ["ok", "failed"].iter().enumerate() {
        store
            .record_pass(&PassRecord {
                started: SystemTime::now(),
                duration_ms: i as u64,
                trigger: "git".into(),
                commit: "c".into(),
                result: result.to_string(),
                steps: 2,
                message: String::new(),
                records: vec![
                    StepRow {
                        service: "web".into(),
                        action: "create".into(),
                        ok: true,
                        ..Default::default()
                    },
                    StepRow {
                        service: "web".into(),
                        action: "start".into(),
                        ok: i == 0,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            })
            .unwrap();
    }
    let passes = store.recent_passes(10).unwrap();
    let steps = store.pass_steps(passes[0].id).unwrap();
    let actions: Vec<(&str, bool)> = steps.iter().map(|s| (s.action.as_str(), s.ok)).collect();
    assert_eq!(
        actions,
        [("create", true), ("start", false)],
        "the newest pass's steps"
    );
    assert_eq!(
        passes.iter().map(|p| p.result.as_str()).collect::<Vec<_>>(),
        ["failed", "ok"]
    );
}

fn revision(commit: &str, verdict: Verdict, digest: &str) -> Revision {
    Revision {
        id: 0,
        commit: commit.into(),
        at: 1_000,
        cause: Cause::Commit,
        verdict,
        reason: String::new(),
        services: BTreeMap::from([(
            "web".to_string(),
            ServiceImage {
                image: "reg/web:1".into(),
                pinned: format!("reg/web@{digest}"),
                digest: digest.into(),
            },
        )]),
    }
}

/// The history lists revisions newest first; the applied revision of a
/// commit is its newest applied entry (an autoredeploy's digest, not the
/// first one); a refusal is never taken for what ran.
#[test]
fn the_history_keeps_what_each_revision_ran() {
    let store = Store::in_memory().unwrap();
    store
        .record_revision(&revision("c1", Verdict::Applied, "sha256:1"))
        .unwrap();
    store
        .record_revision(&revision("c1", Verdict::Applied, "sha256:2"))
        .unwrap();
    let refused = store
        .record_revision(&revision("c2", Verdict::Refused, ""))
        .unwrap();
    let history = store.history(10).unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].id, refused, "newest first");
    assert_eq!(
        store.applied_revision("c1").unwrap().unwrap().services["web"].digest,
        "sha256:2"
    );
    assert!(store.applied_revision("c2").unwrap().is_none());
    assert_eq!(store.latest_applied().unwrap().unwrap().commit, "c1");
    assert!(store.refused_in_history("c2").unwrap());
    assert_eq!(store.revision(refused).unwrap().unwrap().commit, "c2");
}

/// A hold survives as the store's; freezes run out at their time, not
/// before, and one without an end stays until lifted.
#[test]
fn holds_stay_and_freezes_run_out_at_their_time() {
    let store = Store::in_memory().unwrap();
    assert!(store.hold().unwrap().is_none());
    let hold = Hold {
        commit: "c1".into(),
        revision: 4,
        by: "alice".into(),
        reason: "bad release".into(),
        at: 10,
        images: BTreeMap::from([(
            "web".to_string(),
            ServiceImage {
                image: "web:1".into(),
                pinned: "web@sha256:1".into(),
                digest: "sha256:1".into(),
            },
        )]),
    };
    store.set_hold(Some(&hold)).unwrap();
    assert_eq!(store.hold().unwrap(), Some(hold));
    store.set_hold(None).unwrap();
    assert!(store.hold().unwrap().is_none());

    let freeze = |service: &str, until: Option<i64>| Freeze {
        service: service.into(),
        by: "bob".into(),
        reason: "migration".into(),
        at: 100,
        until,
    };
    store.freeze(&freeze("web", Some(200))).unwrap();
    store.freeze(&freeze("db", None)).unwrap();
    assert!(
        store.thaw_expired(199).unwrap().is_empty(),
        "not before its time"
    );
    let thawed = store.thaw_expired(200).unwrap();
    assert_eq!(
        thawed
            .iter()
            .map(|f| f.service.as_str())
            .collect::<Vec<_>>(),
        ["web"]
    );
    assert!(store.thaw_expired(1_000_000).unwrap().is_empty());
    assert_eq!(store.freezes().unwrap(), vec![freeze("db", None)]);
    assert!(store.unfreeze("db").unwrap());
    assert!(!store.unfreeze("db").unwrap());
    // A standby copies its leader's freezes: exactly those, no others.
    store
        .replace_freezes(&[freeze("api", None), freeze("*", Some(300))])
        .unwrap();
    let services: Vec<String> = store
        .freezes()
        .unwrap()
        .into_iter()
        .map(|f| f.service)
        .collect();
    assert_eq!(services, ["*", "api"]);
}

/// A rollback commit takes its parent's digests for the services it does
/// not pin, and keeps any it has.
#[test]
fn digests_carry_over_to_a_rollback_commit() {
    let store = Store::in_memory().unwrap();
    let resolved = |digest: &str| Resolved {
        pinned: format!("reg/a@{digest}"),
        digest: digest.into(),
    };
    store
        .save_digest("parent", "a", "reg/a:1", &resolved("sha256:p"))
        .unwrap();
    store
        .save_digest("child", "b", "reg/b:1", &resolved("sha256:c"))
        .unwrap();
    store.copy_digests("parent", "child").unwrap();
    assert_eq!(
        store.digest("child", "a", "reg/a:1").unwrap(),
        Some(resolved("sha256:p"))
    );
    assert_eq!(
        store.digest("child", "b", "reg/b:1").unwrap(),
        Some(resolved("sha256:c"))
    );
}

/// The images kept are those of the newest applied revisions; pulls are
/// remembered until forgotten.
#[test]
fn recent_revisions_name_the_images_kept() {
    let store = Store::in_memory().unwrap();
    for digest in ["sha256:1", "sha256:2", "sha256:3"] {
        store
            .record_revision(&revision("c", Verdict::Applied, digest))
            .unwrap();
    }
    store
        .record_revision(&revision("d", Verdict::Refused, "sha256:4"))
        .unwrap();
    let kept = store.recent_images(2).unwrap();
    assert_eq!(
        kept,
        ["reg/web@sha256:2", "reg/web@sha256:3"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    store.record_pull("n1", "reg/web@sha256:1").unwrap();
    store.record_pull("n1", "reg/web@sha256:1").unwrap();
    assert_eq!(store.pulled_images().unwrap().len(), 1);
    store.forget_pull("n1", "reg/web@sha256:1").unwrap();
    assert!(store.pulled_images().unwrap().is_empty());
}

/// A file from before the layout was numbered opens with its history and
/// is numbered; one from a newer pier is refused and left as it is.
#[test]
fn the_store_moves_forward_and_refuses_a_newer_layout() {
    let dir = tempfile::tempdir().unwrap();
    let older = dir.path().join("older.db");
    {
        let connection = rusqlite::Connection::open(&older).unwrap();
        connection.execute_batch(super::SCHEMA).unwrap();
        connection.execute_batch(super::history::SCHEMA).unwrap();
        connection
            .execute("INSERT INTO meta (key, value) VALUES ('kept', 'yes')", [])
            .unwrap();
    }
    let store = Store::open(&older, Retention::default()).unwrap();
    let (version, kept): (i64, String) = store
        .with(|c| {
            Ok((
                c.pragma_query_value(None, "user_version", |r| r.get(0))?,
                c.query_row("SELECT value FROM meta WHERE key = 'kept'", [], |r| {
                    r.get(0)
                })?,
            ))
        })
        .unwrap();
    assert_eq!((version, kept.as_str()), (super::SCHEMA_VERSION, "yes"));

    let newer = dir.path().join("newer.db");
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let refused = Store::open(&newer, Retention::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(refused.contains("newer pier (layout 99"), "{refused}");
    let after: i64 = rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(after, 99, "left as it was");
}
