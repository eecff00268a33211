//! Damage to a closed client database (issue #3, item 4): random 4 KiB pages overwritten with
//! random bytes. The client either opens normally (the damage hit free space) or rebuilds
//! itself from its op journal and the server. Either way no pending op is lost and the client
//! converges with the server. Policy: `docs/design/corruption.md`.

use crate::harness::*;
use burrow_client::{Client, Error};
use burrow_core::env::{Rng, SeededRng};
use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const CASES: u64 = 60;
const PAGE: u64 = 4096;

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn outbox_seqs(c: &Client) -> Vec<u64> {
    c.with_connection(|conn| {
        let mut stmt = conn.prepare("SELECT seq FROM _burrow_outbox ORDER BY seq")?;
        let seqs = stmt
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(seqs.into_iter().map(|s| s as u64).collect())
    })
    .unwrap()
}

/// SQLite's own verdict on the file, read without locks or a WAL (the file is closed).
fn sqlite_finds_damage(path: &Path) -> bool {
    let uri = format!("file:{}?immutable=1", path.display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let Ok(conn) = rusqlite::Connection::open_with_flags(uri, flags) else {
        return true;
    };
    !matches!(
        conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0)),
        Ok(s) if s == "ok"
    )
}

fn be32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// The free-list leaf pages of a closed database file (0-based page indexes): pages SQLite
/// holds no data in and does not check.
fn free_leaf_pages(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut leaves = Vec::new();
    let mut trunk = be32(&bytes, 32);
    while trunk != 0 {
        let at = ((trunk - 1) * PAGE) as usize;
        let page = &bytes[at..at + PAGE as usize];
        let n = be32(page, 4) as usize;
        leaves.extend((0..n).map(|i| be32(page, 8 + 4 * i) - 1));
        trunk = be32(page, 0);
    }
    leaves
}

/// Where to strike.
enum Target {
    /// Random pages, page 0 (SQLite's page 1: the header and the schema) among them if set.
    Anywhere { header: bool },
    /// Only free-list leaf pages (when the file has any).
    FreeSpace,
}

/// Overwrites 1–4 pages of `path` with random bytes. Returns the pages hit.
fn clobber(path: &Path, rng: &mut SeededRng, target: Target) -> BTreeSet<u64> {
    let pages = std::fs::metadata(path).unwrap().len() / PAGE;
    assert!(pages >= 4, "the file spans {pages} pages");
    let want = 1 + rng.below(4) as usize;
    let mut hit = BTreeSet::new();
    match target {
        Target::FreeSpace => {
            let free = free_leaf_pages(path);
            while !free.is_empty() && hit.len() < want.min(free.len()) {
                hit.insert(free[rng.below(free.len() as u64) as usize]);
            }
        }
        Target::Anywhere { header } => {
            if header {
                hit.insert(0);
            }
            while hit.len() < want {
                hit.insert(1 + rng.below(pages - 1));
            }
        }
    }
    if hit.is_empty() {
        hit.insert(1 + rng.below(pages - 1));
    }
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for p in &hit {
        let mut buf = vec![0u8; PAGE as usize];
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        f.seek(SeekFrom::Start(p * PAGE)).unwrap();
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    hit
}

fn pick(rng: &mut SeededRng, ids: &[String]) -> Option<String> {
    (!ids.is_empty()).then(|| ids[rng.below(ids.len() as u64) as usize].clone())
}

/// Builds a client with synced rows, changes from another device it has not seen yet, and
/// pending ops (several local transactions, some of several rows); sometimes some of them
/// already applied on the server behind a lost response, sometimes one written through a
/// plain SQLite connection; with `scratch`, the file is left with free pages. Returns the
/// client id and the pending ops' sequences.
async fn victim(
    env: &Env,
    other: &Client,
    name: &str,
    rng: &mut SeededRng,
    scratch: bool,
) -> (String, Vec<u64>) {
    let c = env.client(name);
    let n = 8 + rng.below(20);
    let mut live: Vec<String> = (0..n).map(|i| format!("{name}-s{i}")).collect();
    c.write(|tx| {
        for (i, id) in live.iter().enumerate() {
            let pad = "x".repeat(rng.below(700) as usize);
            tx.execute(
                "INSERT INTO routes(id, driver_id, day) VALUES (?1, 'ann', '2026-11-26')",
                [format!("{name}-r{i}")],
            )?;
            tx.execute(
                "INSERT INTO shipments(id, route_id, status, address, weight_kg, photo, meta, fragile, pieces)
                 VALUES (?1, ?2, 'new', ?3, 1.5, x'00ff', '{\"k\":1}', 0, ?4)",
                rusqlite::params![id, format!("{name}-r{i}"), format!("Main St {i} {pad}"), i as i64],
            )?;
        }
        Ok(())
    })
    .unwrap();
    env.sync(&c).await;
    // Another device changes and deletes some of these rows; the victim does not see it yet.
    env.sync(other).await;
    for _ in 0..1 + rng.below(3) {
        let id = pick(rng, &live).unwrap();
        other
            .execute(&format!(
                "UPDATE shipments SET address = 'moved {}', pieces = pieces + 10 WHERE id = '{id}'",
                rng.below(1000)
            ))
            .unwrap();
    }
    if rng.below(2) == 0 {
        let id = pick(rng, &live).unwrap();
        other
            .execute(&format!("DELETE FROM shipments WHERE id = '{id}'"))
            .unwrap();
    }
    env.sync(other).await;
    let mut fresh = 0;
    let mut pending_round = |c: &Client, rng: &mut SeededRng, live: &mut Vec<String>| {
        for _ in 0..1 + rng.below(4) {
            let rows = 1 + rng.below(4);
            c.write(|tx| {
                for _ in 0..rows {
                    match rng.below(5) {
                        0 | 1 => {
                            fresh += 1;
                            let id = format!("{name}-n{fresh}");
                            tx.execute(
                                "INSERT INTO shipments(id, status, address, pieces) VALUES (?1, 'new', 'New St', 1)",
                                [&id],
                            )?;
                            live.push(id);
                        }
                        2 | 3 => {
                            if let Some(id) = pick(rng, live) {
                                tx.execute(
                                    "UPDATE shipments SET status = ?2, pieces = ?3 WHERE id = ?1",
                                    rusqlite::params![
                                        id,
                                        format!("st{}", rng.below(100)),
                                        rng.below(50) as i64
                                    ],
                                )?;
                            }
                        }
                        _ => {
                            if let Some(id) = pick(rng, live) {
                                tx.execute("DELETE FROM shipments WHERE id = ?1", [&id])?;
                                live.retain(|l| *l != id);
                            }
                        }
                    }
                }
                Ok(())
            })
            .unwrap();
        }
    };
    pending_round(&c, rng, &mut live);
    if rng.below(3) == 0 {
        // Applied on the server, but the client never hears of it: the ops stay pending, and
        // replaying them after a rebuild must not apply them twice.
        let lossy = Faulty::new(env, Fault::LoseResponse(1));
        assert!(c.sync(&lossy).await.is_err());
        pending_round(&c, rng, &mut live);
    }
    if rng.below(3) == 0 {
        // A write through the app's own connection is journaled by the next library write.
        let plain = rusqlite::Connection::open(env.db(name)).unwrap();
        plain
            .execute(
                "INSERT INTO routes(id, driver_id) VALUES (?1, 'plain')",
                [format!("{name}-plain")],
            )
            .unwrap();
        drop(plain);
        c.execute(&format!(
            "UPDATE routes SET day = 'tue' WHERE id = '{name}-r0'"
        ))
        .unwrap();
    }
    if scratch {
        // The app drops a local table of its own: its pages become free space.
        let plain = rusqlite::Connection::open(env.db(name)).unwrap();
        plain
            .execute_batch(
                "CREATE TABLE scratch(b BLOB);
                 INSERT INTO scratch VALUES (zeroblob(40000)), (zeroblob(40000));
                 DROP TABLE scratch;",
            )
            .unwrap();
    }
    let pending = outbox_seqs(&c);
    assert!(!pending.is_empty());
    (c.client_id().to_string(), pending)
}

#[tokio::test]
async fn clobbered_pages_lose_no_pending_op_and_the_client_converges() {
    let env = Env::start().await;
    let other = env.client("other");
    let started = Instant::now();
    let (mut recovered, mut normal, mut header_cases) = (0u64, 0u64, 0u64);
    let mut pages_hit = 0u64;
    for case in 0..CASES {
        let mut rng = SeededRng::new(0xC0_22_u64 << 32 | case);
        let name = format!("v{case}");
        let path = env.db(&name);
        let (client_id, before) = victim(&env, &other, &name, &mut rng, case % 3 == 0).await;
        assert!(!sidecar(&path, "-wal").exists(), "closed cleanly");
        let header = case % 5 == 0;
        header_cases += u64::from(header);
        let target = if case % 6 == 3 {
            Target::FreeSpace
        } else {
            Target::Anywhere { header }
        };
        let hit = clobber(&path, &mut rng, target);
        pages_hit += hit.len() as u64;
        let damaged = sqlite_finds_damage(&path);
        let ctx = format!("case {case}: pages {hit:?}");
        let c = if case % 4 == 1 {
            Client::open_existing(&path)
        } else {
            Client::open(&path, &schema())
        }
        .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
        assert_eq!(c.client_id(), client_id, "{ctx}");
        let st = c.status().unwrap();
        assert_eq!(st.recovery.is_some(), damaged, "{ctx}: {:?}", st.recovery);
        if let Some(r) = &st.recovery {
            recovered += 1;
            assert_eq!(r.ops_restored, before.len() as u64, "{ctx}: {r:?}");
            assert_eq!(r.ops_from_journal, before.len() as u64, "{ctx}: {r:?}");
            assert!(
                r.client_id_kept && r.journal_clean && r.awaiting_full_pull,
                "{ctx}"
            );
            let moved = PathBuf::from(r.damaged_file.as_deref().unwrap());
            assert!(moved.exists(), "{ctx}: the damaged file is kept");
            assert_eq!(
                st.cursor, 0,
                "{ctx}: the rebuilt client pulls everything again"
            );
        } else {
            normal += 1;
        }
        assert_eq!(outbox_seqs(&c), before, "{ctx}: the same ops, same numbers");
        // New ops continue the numbering: none may collide with one the server knows.
        c.execute(&format!(
            "INSERT INTO routes(id, driver_id) VALUES ('{name}-after', 'z')"
        ))
        .unwrap();
        let after = *outbox_seqs(&c).last().unwrap();
        assert!(after > *before.last().unwrap(), "{ctx}");
        env.sync(&c).await;
        let store = env.server.store();
        for seq in before.iter().copied().chain([after]) {
            assert_eq!(
                store.op_effect_count(&client_id, seq).unwrap(),
                1,
                "{ctx}: op {seq} reached the server exactly once"
            );
        }
        let st = c.status().unwrap();
        assert_eq!(st.pending_ops, 0, "{ctx}");
        assert!(st.rejected.is_empty(), "{ctx}: {:?}", st.rejected);
        if let Some(r) = &st.recovery {
            assert!(!r.awaiting_full_pull, "{ctx}: the full pull completed");
        }
        let fresh = env.client(&format!("fresh{case}"));
        env.sync(&fresh).await;
        assert_eq!(
            c.state_hash().unwrap(),
            fresh.state_hash().unwrap(),
            "{ctx}: converged with the server"
        );
    }
    eprintln!(
        "corruption: {CASES} cases ({header_cases} hit the header page, {pages_hit} pages \
         clobbered): {recovered} rebuilt, {normal} opened normally, in {:.1?}",
        started.elapsed()
    );
    assert!(recovered >= CASES / 2, "most damage is detected");
    assert!(normal >= 1, "damage confined to free pages is harmless");
}

#[tokio::test]
async fn a_missing_database_file_is_rebuilt_from_its_journal() {
    let env = Env::start().await;
    let path = env.db("a");
    let (id, before) = {
        let a = env.client("a");
        a.execute("INSERT INTO shipments(id, status) VALUES ('s1', 'new')")
            .unwrap();
        env.sync(&a).await;
        a.write(|tx| {
            tx.execute("UPDATE shipments SET status = 'late' WHERE id = 's1'", [])?;
            tx.execute("INSERT INTO shipments(id, status) VALUES ('s2', 'new')", [])
        })
        .unwrap();
        (a.client_id().to_string(), outbox_seqs(&a))
    };
    std::fs::remove_file(&path).unwrap();
    let a = Client::open_existing(&path).unwrap();
    assert_eq!(a.client_id(), id);
    let r = a.recovery().unwrap().unwrap();
    assert_eq!(r.damaged_file, None);
    assert_eq!(r.ops_restored, 2);
    assert_eq!(outbox_seqs(&a), before);
    // The user still sees their edits before any sync.
    assert_eq!(
        rows(&a, "SELECT id, status FROM shipments ORDER BY id"),
        vec![
            serde_json::json!({"id": "s1", "status": "late"}),
            serde_json::json!({"id": "s2", "status": "new"})
        ]
    );
    let json = serde_json::to_value(a.status().unwrap()).unwrap();
    assert_eq!(json["recovery"]["ops_restored"], 2);
    env.sync(&a).await;
    for seq in &before {
        assert_eq!(env.server.store().op_effect_count(&id, *seq).unwrap(), 1);
    }
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
    assert_eq!(rows(&a, "SELECT count(*) AS n FROM shipments")[0]["n"], 2);
}

#[tokio::test]
async fn the_outbox_of_a_damaged_file_is_salvaged_when_the_journal_is_gone() {
    let env = Env::start().await;
    let path = env.db("a");
    let (id, before, shadow_page) = {
        let a = env.client("a");
        a.execute("INSERT INTO shipments(id, status) VALUES ('s1', 'new')")
            .unwrap();
        env.sync(&a).await;
        a.execute("UPDATE shipments SET status = 'late'; INSERT INTO routes(id) VALUES ('r1')")
            .unwrap();
        let root: i64 = a
            .with_connection(|c| {
                Ok(c.query_row(
                    "SELECT rootpage FROM sqlite_master WHERE name = '_burrow_shadow'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        (a.client_id().to_string(), outbox_seqs(&a), root as u64 - 1)
    };
    std::fs::remove_file(sidecar(&path, ".journal")).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(shadow_page * PAGE)).unwrap();
    f.write_all(&[0xA5; PAGE as usize]).unwrap();
    drop(f);
    let a = Client::open(&path, &schema()).unwrap();
    let r = a.recovery().unwrap().unwrap();
    assert!(r.client_id_kept, "{r:?}");
    assert_eq!(a.client_id(), id);
    assert_eq!(
        (r.ops_from_journal, r.ops_from_damaged_db),
        (0, before.len() as u64)
    );
    assert_eq!(outbox_seqs(&a), before);
    env.sync(&a).await;
    for seq in &before {
        assert_eq!(env.server.store().op_effect_count(&id, *seq).unwrap(), 1);
    }
    let b = env.client("b");
    env.sync(&b).await;
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
}

#[tokio::test]
async fn a_damaged_database_with_no_journal_and_no_schema_fails_clearly_and_is_left_alone() {
    let env = Env::start().await;
    let path = env.db("a");
    drop(env.client("a"));
    std::fs::remove_file(sidecar(&path, ".journal")).unwrap();
    let mut rng = SeededRng::new(9);
    clobber(&path, &mut rng, Target::Anywhere { header: true });
    let bytes = std::fs::read(&path).unwrap();
    let e = Client::open_existing(&path).unwrap_err();
    assert!(matches!(e, Error::Unrecoverable { .. }), "{e}");
    assert!(e.to_string().contains("schema"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was touched");
    // With a schema the database is rebuilt; with nothing to show which op numbers the old
    // id used, the client gets a new id.
    let a = Client::open(&path, &schema()).unwrap();
    let r = a.recovery().unwrap().unwrap();
    assert!(!r.client_id_kept);
    assert!(sidecar(&path, ".corrupt-1").exists());
    env.sync(&a).await;
    assert_eq!(a.status().unwrap().pending_ops, 0);
}

#[tokio::test]
async fn a_healthy_database_reports_no_recovery() {
    let env = Env::start().await;
    let a = env.client("a");
    let json = serde_json::to_value(a.status().unwrap()).unwrap();
    assert!(json.get("recovery").is_some_and(|v| v.is_null()), "{json}");
    assert!(sidecar(&env.db("a"), ".journal").exists());
}
