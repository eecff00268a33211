//! Downloads never wait for uploads: a pull proceeds while the server refuses uploads, and
//! pending local values stay visible over what it brings. Status shows what waits and what
//! is on its way.

use crate::harness::*;
use burrow_client::{Error, SyncReport, TrafficStats, Transport, TransportError};
use burrow_proto::v1;
use std::sync::Arc;

#[tokio::test]
async fn download_proceeds_while_the_server_rejects_uploads_with_503() {
    let env = Env::start().await;
    let a = env.client("a");
    let b = env.client("b");
    a.execute("INSERT INTO routes(id, driver_id, day) VALUES ('r1', 'ann', 'mon')")
        .unwrap();
    env.sync(&a).await;
    env.sync(&b).await;
    // B edits r1 and creates r2 offline; A changes another field of r1 and adds r3.
    b.execute("UPDATE routes SET day = 'tue' WHERE id = 'r1'")
        .unwrap();
    b.execute("INSERT INTO routes(id, day) VALUES ('r2', 'wed')")
        .unwrap();
    a.execute("UPDATE routes SET driver_id = 'bob' WHERE id = 'r1'")
        .unwrap();
    a.execute("INSERT INTO routes(id, day) VALUES ('r3', 'thu')")
        .unwrap();
    env.sync(&a).await;

    let refusing = Faulty::new(&env, Fault::RefuseUploads);
    let err = b.sync(&refusing).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Transport(TransportError::Status {
                status: 503,
                retry_after_ms: Some(30_000),
                ..
            })
        ),
        "the upload's refusal is what the sync reports: {err}"
    );
    // The pull went through anyway: A's row and A's field arrived ...
    assert_eq!(
        rows(&b, "SELECT id, driver_id, day FROM routes ORDER BY id"),
        vec![
            serde_json::json!({"id": "r1", "driver_id": "bob", "day": "tue"}),
            serde_json::json!({"id": "r2", "driver_id": null, "day": "wed"}),
            serde_json::json!({"id": "r3", "driver_id": null, "day": "thu"}),
        ],
        "A's changes arrived while B's pending values stayed visible"
    );
    // ... and nothing of B's was dropped: both ops still wait, unrejected.
    let st = b.status().unwrap();
    assert_eq!(st.pending_ops, 2);
    assert_eq!(st.rejected_ops, 0);
    assert_eq!(b.cursor().unwrap(), a.cursor().unwrap());
    assert!(st.last_error.unwrap().contains("503"));

    // Once the server takes uploads again, everything converges.
    env.sync(&b).await;
    env.sync(&a).await;
    assert_eq!(b.state_hash().unwrap(), a.state_hash().unwrap());
    assert_eq!(
        rows(&a, "SELECT day FROM routes WHERE id = 'r1'"),
        vec![serde_json::json!({"day": "tue"})]
    );
}

/// A network failure is not retried as a download (it would fail the same way): one
/// request, one error.
#[tokio::test]
async fn a_network_failure_does_not_trigger_an_extra_download() {
    let env = Env::start().await;
    let b = env.client("b");
    b.execute("INSERT INTO routes(id, day) VALUES ('r1', 'mon')")
        .unwrap();
    let offline = Faulty::new(&env, Fault::OfflineAfter(0));
    assert!(b.sync(&offline).await.is_err());
    assert_eq!(
        offline.requests.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// Holds every request until released, so a test can look at the status meanwhile.
struct Gate {
    inner: burrow_client::HttpTransport,
    open: Arc<tokio::sync::Notify>,
    arrived: Arc<tokio::sync::Notify>,
}

impl Transport for Gate {
    async fn sync(
        &self,
        req: v1::SyncRequest,
    ) -> Result<(v1::SyncResponse, TrafficStats), TransportError> {
        if !req.upload.is_empty() {
            self.arrived.notify_one();
            self.open.notified().await;
        }
        self.inner.sync(req).await
    }
}

#[tokio::test]
async fn status_shows_pending_bytes_per_lane_and_what_is_in_flight() {
    let env = Env::start().await;
    let b = Arc::new(env.client("b"));
    insert_routes(&b, 3); // normal lane
    b.execute(
        "INSERT INTO shipments(id, route_id, status, address) VALUES ('s1', 'r0000', 'new', 'Main St 1')",
    )
    .unwrap(); // critical lane
    let st = b.status().unwrap();
    assert_eq!(st.pending_by_lane["normal"], 3);
    assert_eq!(st.pending_by_lane["critical"], 1);
    let normal = st.pending_bytes_by_lane["normal"];
    let critical = st.pending_bytes_by_lane["critical"];
    assert!(normal > 0 && critical > 0, "{st:?}");
    assert_eq!(st.pending_bytes, normal + critical);
    assert!(st.in_flight.is_none());

    let gate = Arc::new(Gate {
        inner: env.transport("ann"),
        open: Arc::new(tokio::sync::Notify::new()),
        arrived: Arc::new(tokio::sync::Notify::new()),
    });
    let (open, arrived) = (gate.open.clone(), gate.arrived.clone());
    let syncing = {
        let (b, gate) = (b.clone(), gate.clone());
        tokio::spawn(async move { b.sync(&*gate).await })
    };
    arrived.notified().await;
    let flying = b
        .status()
        .unwrap()
        .in_flight
        .expect("an upload is in flight");
    assert_eq!(flying.ops, 4);
    assert_eq!(flying.by_lane["critical"], 1);
    assert_eq!(flying.by_lane["normal"], 3);
    assert!(flying.bytes > 0);
    open.notify_one();
    let report: SyncReport = syncing.await.unwrap().unwrap();
    assert_eq!(report.ops_acked, 4);
    let st = b.status().unwrap();
    assert!(st.in_flight.is_none());
    assert_eq!(st.pending_bytes, 0);
}
