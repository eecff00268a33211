use crate::harness::*;
use burrow_proto::{PROTOCOL_VERSION, encode_frame, v1};

async fn post(env: &Env, token: Option<&str>, body: Vec<u8>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/sync", env.server.url()))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn request(ops: Vec<v1::Op>) -> v1::SyncRequest {
    v1::SyncRequest {
        protocol_version: PROTOCOL_VERSION,
        schema_version: 1,
        client_id: "forged-client".into(),
        upload: vec![v1::LocalTx {
            more_parts: false,
            tx_id: 1,
            ops,
        }],
        download: true,
        include_own_changes: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn malformed_and_truncated_bodies_get_400_with_a_stable_code() {
    let env = Env::start().await;
    let t = env.token("ann");
    let (s, body) = post(&env, Some(&t), b"definitely not zstd".to_vec()).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("malformed_body")));
    let good = encode_frame(&request(vec![])).unwrap();
    let (s, body) = post(&env, Some(&t), good[..good.len() / 2].to_vec()).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("malformed_body")));
    let not_proto = zstd::bulk::compress(&[0xff; 64], 3).unwrap();
    let (s, body) = post(&env, Some(&t), not_proto).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("malformed_body")));
    let mut old = request(vec![]);
    old.protocol_version = 99;
    let (s, body) = post(&env, Some(&t), encode_frame(&old).unwrap()).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (426, Some("protocol_version_unsupported"))
    );
}

#[tokio::test]
async fn missing_expired_and_forged_tokens_get_401() {
    let env = Env::start().await;
    let body = encode_frame(&request(vec![])).unwrap();
    let (s, b) = post(&env, None, body.clone()).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("token_missing")));
    let expired =
        burrow_server::auth::mint(&env.secret, "ann", Default::default(), 1_000, 60).unwrap();
    let (s, b) = post(&env, Some(&expired), body.clone()).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("token_expired")));
    let forged = burrow_server::auth::mint(
        b"wrong-secret",
        "ann",
        Default::default(),
        4_000_000_000,
        60,
    )
    .unwrap();
    let (s, b) = post(&env, Some(&forged), body.clone()).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("token_bad_signature")));
    // The client sees a typed auth error and keeps its queue.
    let a = env.client("a");
    a.execute("INSERT INTO routes(id) VALUES ('r1')").unwrap();
    let t = burrow_client::HttpTransport::new(&env.server.url(), &forged).unwrap();
    let err = a.sync(&t).await.unwrap_err();
    assert!(
        matches!(
            err,
            burrow_client::Error::Transport(burrow_client::TransportError::Unauthorized { .. })
        ),
        "{err}"
    );
    assert_eq!(a.status().unwrap().pending_ops, 1);
}

#[tokio::test]
async fn body_over_the_limit_gets_413() {
    let env = Env::start_with(|c| c.limits.body_bytes_max = 2_000).await;
    let big: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (s, b) = post(&env, Some(&env.token("ann")), big).await;
    assert_eq!((s, b["code"].as_str()), (413, Some("body_too_large")));
    assert!(b["message"].as_str().unwrap().contains("body_bytes_max"));
}

#[tokio::test]
async fn undecodable_local_ops_are_rejected_with_their_transaction_and_others_apply() {
    let env = Env::start().await;
    let a = env.client("a");
    a.execute("INSERT INTO routes(id, driver_id) VALUES ('ok', 'ann')")
        .unwrap();
    // Forge bad ops straight into the outbox, as a buggy app build could.
    a.with_connection(|c| {
        c.execute_batch(
            "INSERT INTO _burrow_outbox(tx, tbl, row_id, kind, data, hlc) VALUES (1000, 'routes', 'r2', 1, '{\"driver_id\":5}', 1);
             INSERT INTO _burrow_outbox(tx, tbl, row_id, kind, data, hlc) VALUES (1000, 'routes', 'r3', 1, '{\"driver_id\":\"x\"}', 1);
             INSERT INTO _burrow_outbox(tx, tbl, row_id, kind, data, hlc) VALUES (1001, 'routes', 'r4', 1, '{\"driver_id\":\"y\"}', 1);",
        )?;
        Ok(())
    })
    .unwrap();
    let r = env.sync(&a).await;
    assert_eq!(r.ops_acked, 2, "the valid transactions applied");
    assert_eq!(r.ops_rejected, 2);
    let st = a.status().unwrap();
    let codes: Vec<&str> = st.rejected.iter().map(|o| o.code.as_str()).collect();
    assert_eq!(codes, ["undecodable", "transaction_rejected"]);
    assert!(
        st.rejected[0].message.contains("driver_id"),
        "{}",
        st.rejected[0].message
    );
    assert_eq!(st.pending_ops, 0);
}

#[tokio::test]
async fn unknown_table_and_column_are_rejected_per_op() {
    let env = Env::start().await;
    let req = {
        let mut r = request(vec![v1::Op {
            client_seq: 1,
            table: "nope".into(),
            row_id: "x".into(),
            kind: v1::OpKind::Insert as i32,
            hlc: 1,
            ..Default::default()
        }]);
        r.upload.push(v1::LocalTx {
            more_parts: false,
            tx_id: 2,
            ops: vec![v1::Op {
                client_seq: 2,
                table: "routes".into(),
                row_id: "r5".into(),
                kind: v1::OpKind::Insert as i32,
                fields: vec![v1::Field {
                    column: "colour".into(),
                    value: Some(v1::Value {
                        kind: Some(v1::value::Kind::Text("red".into())),
                    }),
                    seq: 0,
                }],
                hlc: 1,
                ..Default::default()
            }],
        });
        r.upload.push(v1::LocalTx {
            more_parts: false,
            tx_id: 4,
            ops: vec![
                v1::Op {
                    client_seq: 4,
                    table: "routes".into(),
                    row_id: "r7".into(),
                    kind: v1::OpKind::Insert as i32,
                    hlc: 1,
                    ..Default::default()
                },
                v1::Op {
                    client_seq: 5,
                    table: "routes".into(),
                    row_id: "r8".into(),
                    kind: v1::OpKind::Insert as i32,
                    fields: vec![v1::Field {
                        column: "day".into(),
                        value: Some(v1::Value {
                            kind: Some(v1::value::Kind::Integer(42)),
                        }),
                        seq: 0,
                    }],
                    hlc: 1,
                    ..Default::default()
                },
            ],
        });
        r.upload.push(v1::LocalTx {
            more_parts: false,
            tx_id: 3,
            ops: vec![v1::Op {
                client_seq: 3,
                table: "routes".into(),
                row_id: "r6".into(),
                kind: v1::OpKind::Insert as i32,
                hlc: 1,
                ..Default::default()
            }],
        });
        r
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sync", env.server.url()))
        .bearer_auth(env.token("ann"))
        .body(encode_frame(&req).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp: v1::SyncResponse =
        burrow_proto::decode_frame(&resp.bytes().await.unwrap(), 1 << 20).unwrap();
    let codes: Vec<(u64, i32, String)> = resp
        .outcomes
        .iter()
        .map(|o| (o.client_seq, o.kind, o.code.clone()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (
                1,
                v1::OutcomeKind::Rejected as i32,
                "unknown_table".to_string()
            ),
            (
                2,
                v1::OutcomeKind::Rejected as i32,
                "unknown_column".to_string()
            ),
            (
                4,
                v1::OutcomeKind::Rejected as i32,
                "transaction_rejected".to_string()
            ),
            (
                5,
                v1::OutcomeKind::Rejected as i32,
                "wrong_type".to_string()
            ),
            (3, v1::OutcomeKind::Applied as i32, String::new()),
        ]
    );
    assert_eq!(resp.changes.len(), 1, "only the valid op changed anything");
}

#[tokio::test]
async fn a_client_id_cannot_be_replayed_by_another_user() {
    let env = Env::start().await;
    let body = encode_frame(&request(vec![v1::Op {
        client_seq: 1,
        table: "routes".into(),
        row_id: "r".into(),
        kind: v1::OpKind::Insert as i32,
        hlc: 1,
        ..Default::default()
    }]))
    .unwrap();
    let (s, _) = post(&env, Some(&env.token("ann")), body.clone()).await;
    assert_eq!(s, 200);
    let (s, b) = post(&env, Some(&env.token("eve")), body).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("client_id_bound")));
    let download_only = encode_frame(&request(vec![])).unwrap();
    let (s, b) = post(&env, Some(&env.token("eve")), download_only).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("client_id_bound")),
        "reads are bound too"
    );
}
