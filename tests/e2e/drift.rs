//! Reading back what landed (issue 40): the test receiver's record store, the webhook's
//! lookup read, drift reports and reconcile.

use crate::serve_support::Api;
use crate::support::*;
use backflow::toolkit::receiver::{Receiver, ReceiverOptions};
use serde_json::{json, Value as J};

/// A receiver keeping records keyed by `id`.
pub async fn record_receiver() -> Receiver {
    backflow::toolkit::receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        ReceiverOptions {
            records: Some("id".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_receiver_keeps_records_merged_by_key_and_lets_tests_edit_them() {
    let receiver = record_receiver().await;
    let ws = csv_to_webhook(
        &receiver,
        "config.methods.delete = \"DELETE\"",
        "mode = \"mirror\"",
    );
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    assert_eq!(receiver.records().len(), 8);
    assert_eq!(receiver.record("2").unwrap()["email"], "grace@example.com");
    // Row 3 leaves the model: mirror deletes it with DELETE.
    let csv = CUSTOMERS_CSV.replace("3,alan@example.com,Alan Turing,pro,99.00,2022-11-02\n", "");
    ws.write("data/customers.csv", &csv);
    let record = ws.run("to_hook").await;
    assert_eq!(record.status.as_str(), "succeeded", "{record:?}");
    assert!(receiver.record("3").is_none());
    assert_eq!(receiver.records().len(), 7);

    let api = Api::new(None);
    let (status, all) = api.get(receiver.url("/_records")).await;
    assert_eq!((status, all.as_object().unwrap().len()), (200, 7), "{all}");
    let (status, one) = api.get(receiver.url("/_records/1")).await;
    assert_eq!((status, &one["name"]), (200, &json!("Ada Lovelace")));
    let (status, _) = api.get(receiver.url("/_records/3")).await;
    assert_eq!(status, 404);
    let (status, found) = api
        .post(
            receiver.url("/_records/lookup"),
            Some(json!({"keys": [2, "3", "4"]})),
        )
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&J> = found["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids.len(), 2, "{found}");
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            receiver.url("/_records/2"),
            Some(json!({"id": 2, "email": "edited@example.com"}).to_string()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        receiver.record("2").unwrap(),
        json!({"id": 2, "email": "edited@example.com"})
    );
    let (status, _) = api
        .send(reqwest::Method::DELETE, receiver.url("/_records/2"), None)
        .await;
    assert_eq!(status, 204);
    assert!(receiver.record("2").is_none());
    // Lookups and edits are not deliveries.
    assert!(receiver
        .received()
        .iter()
        .all(|r| !r.path.starts_with("/_records")));
}
