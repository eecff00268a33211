use crate::harness::*;
use burrow_server::ServerStore;

async fn shared_row(env: &Env) -> (burrow_client::Client, burrow_client::Client) {
    let a = env.client("a");
    let b = env.client("b");
    a.execute("INSERT INTO shipments(id, status, address, pieces) VALUES ('s1', 'new', 'A', 1)")
        .unwrap();
    env.sync(&a).await;
    env.sync(&b).await;
    (a, b)
}

#[tokio::test]
async fn different_fields_changed_offline_on_two_devices_both_win() {
    let env = Env::start().await;
    let (a, b) = shared_row(&env).await;
    a.execute("UPDATE shipments SET status = 'delivered'")
        .unwrap();
    b.execute("UPDATE shipments SET address = 'Back door'")
        .unwrap();
    env.sync(&a).await;
    env.sync(&b).await;
    env.sync(&a).await;
    let expected =
        vec![serde_json::json!({"status": "delivered", "address": "Back door", "pieces": 1})];
    assert_eq!(
        rows(&a, "SELECT status, address, pieces FROM shipments"),
        expected
    );
    assert_eq!(
        rows(&b, "SELECT status, address, pieces FROM shipments"),
        expected
    );
    assert!(
        env.server.store().conflicts(10).await.unwrap().is_empty(),
        "no conflict: different fields"
    );
}

#[tokio::test]
async fn same_field_conflict_resolves_by_lww_identically_on_both_devices() {
    let env = Env::start().await;
    let (a, b) = shared_row(&env).await;
    a.execute("UPDATE shipments SET status = 'from-a'").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.execute("UPDATE shipments SET status = 'from-b'").unwrap(); // later HLC
    // The later write syncs first; the earlier one must still lose.
    env.sync(&b).await;
    let ra = env.sync(&a).await;
    assert_eq!(ra.conflicts, 1);
    env.sync(&b).await;
    let expected = vec![serde_json::json!({"status": "from-b"})];
    assert_eq!(
        rows(&a, "SELECT status FROM shipments"),
        expected,
        "a shows the winner"
    );
    assert_eq!(rows(&b, "SELECT status FROM shipments"), expected);
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
    let log = env.server.store().conflicts(10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].column, "status");
    let loser = log[0].losers().next().unwrap();
    assert_eq!(loser.value, serde_json::json!("from-a"));
    assert_eq!(loser.client.as_deref(), Some(a.client_id()));
    assert_eq!(
        log[0].winner().unwrap().client.as_deref(),
        Some(b.client_id())
    );
    let lost = a.lost_writes().unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].lost_columns, ["status"]);
}

#[tokio::test]
async fn an_edit_made_after_seeing_another_wins_even_with_an_older_clock() {
    let env = Env::start().await;
    let (a, b) = shared_row(&env).await;
    b.execute("UPDATE shipments SET status = 'b-first'")
        .unwrap();
    env.sync(&b).await;
    env.sync(&a).await;
    // a saw b's value; a's write must win whatever the clocks say.
    a.with_connection(|c| Ok(c.execute("UPDATE _burrow_local SET hlc = 0", [])?))
        .unwrap();
    let clock = std::sync::Arc::new(burrow_core::env::ManualClock::new(1_000));
    let mut a = a;
    a.set_options(burrow_client::ClientOptions {
        clock: Some(clock),
        ..Default::default()
    });
    a.execute("UPDATE shipments SET status = 'a-after'")
        .unwrap();
    env.sync(&a).await;
    env.sync(&b).await;
    assert_eq!(
        rows(&b, "SELECT status FROM shipments"),
        vec![serde_json::json!({"status": "a-after"})]
    );
}

#[tokio::test]
async fn delete_beats_concurrent_update_and_the_update_is_logged() {
    for delete_first in [true, false] {
        let env = Env::start().await;
        let (a, b) = shared_row(&env).await;
        a.execute("DELETE FROM shipments WHERE id = 's1'").unwrap();
        b.execute("UPDATE shipments SET status = 'edited', pieces = 5")
            .unwrap();
        if delete_first {
            env.sync(&a).await;
            env.sync(&b).await;
        } else {
            env.sync(&b).await;
            env.sync(&a).await;
        }
        env.sync(&a).await;
        env.sync(&b).await;
        assert!(
            rows(&a, "SELECT * FROM shipments").is_empty(),
            "delete wins ({delete_first})"
        );
        assert!(
            rows(&b, "SELECT * FROM shipments").is_empty(),
            "delete wins ({delete_first})"
        );
        let log = env.server.store().conflicts(10).await.unwrap();
        let mut logged: Vec<(String, serde_json::Value)> = log
            .iter()
            .map(|c| (c.column.clone(), c.losers().next().unwrap().value.clone()))
            .collect();
        logged.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            logged,
            vec![
                ("pieces".to_string(), serde_json::json!(5)),
                ("status".to_string(), serde_json::json!("edited")),
            ],
            "update values are in the conflict log ({delete_first})"
        );
        assert!(log.iter().all(|c| c.reason == "deleted"));
        assert_eq!(
            a.status().unwrap().pending_ops + b.status().unwrap().pending_ops,
            0
        );
    }
}

#[tokio::test]
async fn a_lost_ack_followed_by_a_later_remote_write_converges_to_the_later_write() {
    let env = Env::start().await;
    let (a, b) = shared_row(&env).await;
    a.execute("UPDATE shipments SET status = 'from-a'").unwrap();
    let lossy = Faulty::new(&env, Fault::LoseResponse(1));
    assert!(
        a.sync(&lossy).await.is_err(),
        "applied on the server, ack lost"
    );
    env.sync(&b).await;
    std::thread::sleep(std::time::Duration::from_millis(3));
    b.execute("UPDATE shipments SET status = 'from-b-later'")
        .unwrap();
    env.sync(&b).await;
    let r = env.sync(&a).await;
    assert_eq!(r.ops_acked, 1, "the re-sent op gets its recorded outcome");
    let expected = vec![serde_json::json!({"status": "from-b-later"})];
    assert_eq!(rows(&a, "SELECT status FROM shipments"), expected);
    assert_eq!(rows(&b, "SELECT status FROM shipments"), expected);
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
    assert_eq!(
        env.server
            .store()
            .op_effect_count(a.client_id(), 2)
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_row_deleted_while_its_creator_never_heard_back_is_deleted_on_the_creator() {
    // Found by the simulator (seed 1795673503191494201): the creator's first pull starts at
    // cursor 0 and must still receive the tombstone of its own, pending, row.
    let env = Env::start().await;
    let a = env.client("a");
    let b = env.client("b");
    b.execute("INSERT INTO routes(id, day) VALUES ('r1', 'mon')")
        .unwrap();
    assert!(
        b.sync(&Faulty::new(&env, Fault::LoseResponse(1)))
            .await
            .is_err()
    );
    env.sync(&a).await;
    a.execute("DELETE FROM routes WHERE id = 'r1'").unwrap();
    env.sync(&a).await;
    assert_eq!(b.cursor().unwrap().since, 0);
    env.sync(&b).await;
    assert!(rows(&b, "SELECT * FROM routes").is_empty());
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
    assert_eq!(b.status().unwrap().pending_ops, 0);
}
