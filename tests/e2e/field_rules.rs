//! Field-level write rules (issue 36): `null = "skip"`, `write = "on_insert"` and
//! `update = "changed_fields"`, delivered through the webhook plugin to a real receiver, whose
//! records are kept field by field as a CRM keeps them: every accepted request is replayed
//! in order, an insert or update setting only the fields it carries, so a field left out of
//! a payload keeps what the record had, and an edit made "at the CRM" between runs stays
//! until a payload carries that field.

use crate::support::*;
use backflow::toolkit::receiver::{Receiver, ReceiverOptions};
use serde_json::{json, Map, Value as J};
use std::collections::BTreeMap;

/// Records as the CRM holds them, rebuilt from the receiver's requests as they arrive.
#[derive(Default)]
struct Crm {
    records: BTreeMap<i64, Map<String, J>>,
    replayed: usize,
    /// The fields each accepted row carried, in order (for asserting payloads).
    payloads: Vec<Map<String, J>>,
}

impl Crm {
    /// Applies the requests the receiver accepted since the last call.
    fn catch_up(&mut self, receiver: &Receiver) {
        let received = receiver.received();
        for request in &received[self.replayed..] {
            if !(200..300).contains(&request.status) {
                continue;
            }
            let rows = match &request.body {
                J::Array(rows) => rows.clone(),
                other => vec![other.clone()],
            };
            for row in rows {
                let mut row = row.as_object().unwrap().clone();
                let op = row.remove("_op").unwrap();
                let id = row["id"].as_i64().unwrap();
                self.payloads.push(row.clone());
                match op.as_str().unwrap() {
                    "insert" | "update" => {
                        self.records.entry(id).or_default().extend(row);
                    }
                    "delete" => {
                        self.records.remove(&id);
                    }
                    other => panic!("unexpected operation {other}"),
                }
            }
        }
        self.replayed = received.len();
    }

    /// Someone edits a record at the CRM.
    fn edit(&mut self, id: i64, field: &str, value: J) {
        self.records
            .get_mut(&id)
            .unwrap()
            .insert(field.into(), value);
    }

    fn field(&self, id: i64, field: &str) -> Option<&J> {
        self.records.get(&id).and_then(|r| r.get(field))
    }

    /// The payloads of the last `n` rows received.
    fn last(&self, n: usize) -> &[Map<String, J>] {
        &self.payloads[self.payloads.len() - n..]
    }
}

const HEADER: &str = "id,email,plan,source\n";

fn workspace(receiver: &Receiver, mode: &str, sync_extra: &str, mapping: &str) -> TestWorkspace {
    let ws = file_workspace(
        "customers",
        "customers.csv",
        &format!(
            "[destinations.crm]\nplugin = \"webhook\"\nconfig.url = \"{url}\"\nconfig.operation_field = \"_op\"\ngrants.network = [\"{addr}\"]\n\n[syncs.to_crm]\nmodel = \"customers\"\ndestination = \"crm\"\nmode = \"{mode}\"\n{sync_extra}\n[syncs.to_crm.mapping]\n{mapping}\n",
            url = receiver.url("/contacts"),
            addr = receiver.addr,
        ),
    );
    ws
}

async fn start_receiver() -> Receiver {
    backflow::toolkit::receiver::start("127.0.0.1:0".parse().unwrap(), ReceiverOptions::default())
        .await
        .unwrap()
}

fn run(ws: &TestWorkspace) -> J {
    ok(
        backflow_as(ws, "olga", &["sync", "run", "to_crm", "--json"]),
        "sync run",
    )
    .json()
}

#[tokio::test(flavor = "multi_thread")]
async fn null_skip_leaves_the_value_in_place_and_on_insert_fields_are_set_once() {
    let receiver = start_receiver().await;
    let ws = workspace(
        &receiver,
        "upsert",
        "",
        "id = \"id\"\nemail = { to = \"email\", null = \"skip\" }\nplan = \"plan\"\nsource = { to = \"lead_source\", write = \"on_insert\" }",
    );
    ws.write(
        "data/customers.csv",
        &format!("{HEADER}1,a@x.com,pro,ads\n2,,free,seo\n"),
    );
    let first = run(&ws);
    assert_eq!(first["status"], "succeeded", "{first}");
    let mut crm = Crm::default();
    crm.catch_up(&receiver);
    assert_eq!(crm.field(1, "lead_source"), Some(&json!("ads")));
    assert_eq!(
        crm.field(2, "email"),
        None,
        "a null email is left out of the insert, not sent as null"
    );

    // The model loses row 1's email and changes its source and plan: the update keeps the
    // CRM's email (not overwritten with null) and its lead source (set on insert only).
    ws.write(
        "data/customers.csv",
        &format!("{HEADER}1,,enterprise,referral\n2,,free,seo\n"),
    );
    let plan = ok(
        backflow_as(&ws, "olga", &["sync", "plan", "to_crm", "--json"]),
        "plan",
    )
    .json();
    let after = &plan["samples"]["changed"][0]["after"];
    assert_eq!(
        after,
        &json!({"id": 1, "plan": "enterprise"}),
        "the plan shows what is sent: {plan}"
    );
    run(&ws);
    crm.catch_up(&receiver);
    assert_eq!(
        crm.last(1)[0],
        json!({"id": 1, "plan": "enterprise"})
            .as_object()
            .unwrap()
            .clone()
    );
    assert_eq!(crm.field(1, "email"), Some(&json!("a@x.com")));
    assert_eq!(crm.field(1, "lead_source"), Some(&json!("ads")));
    assert_eq!(crm.field(1, "plan"), Some(&json!("enterprise")));

    // The email comes back: it is sent again.
    ws.write(
        "data/customers.csv",
        &format!("{HEADER}1,b@x.com,enterprise,referral\n2,,free,seo\n"),
    );
    run(&ws);
    crm.catch_up(&receiver);
    assert_eq!(crm.field(1, "email"), Some(&json!("b@x.com")));
    assert_eq!(crm.field(1, "lead_source"), Some(&json!("ads")));
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_fields_updates_carry_the_key_and_what_changed_and_their_undo_restores_the_crm() {
    let receiver = start_receiver().await;
    let ws = workspace(
        &receiver,
        "mirror",
        "update = \"changed_fields\"",
        "id = \"id\"\nemail = \"email\"\nplan = \"plan\"\nsource = \"source\"",
    );
    ws.write(
        "data/customers.csv",
        &format!("{HEADER}1,a@x.com,pro,ads\n2,b@x.com,free,seo\n3,c@x.com,pro,ads\n"),
    );
    run(&ws);
    let mut crm = Crm::default();
    crm.catch_up(&receiver);
    assert_eq!(crm.records.len(), 3);

    // A sales rep edits row 1's email at the CRM; the model changes row 1's plan only.
    crm.edit(1, "email", json!("rep-fixed@x.com"));
    ws.write(
        "data/customers.csv",
        &format!("{HEADER}1,a@x.com,enterprise,ads\n2,b@x.com,free,seo\n3,c@x.com,pro,partner\n"),
    );
    let changed = run(&ws);
    assert_eq!(changed["delivered"]["changed"], 2, "{changed}");
    crm.catch_up(&receiver);
    assert_eq!(
        crm.last(2),
        [
            json!({"id": 1, "plan": "enterprise"})
                .as_object()
                .unwrap()
                .clone(),
            json!({"id": 3, "source": "partner"})
                .as_object()
                .unwrap()
                .clone(),
        ]
    );
    assert_eq!(
        crm.field(1, "email"),
        Some(&json!("rep-fixed@x.com")),
        "the rep's edit survives an update of another field"
    );
    let before_undo: BTreeMap<i64, Map<String, J>> = {
        let mut r = crm.records.clone();
        r.get_mut(&1).unwrap().insert("plan".into(), json!("pro"));
        r.get_mut(&3).unwrap().insert("source".into(), json!("ads"));
        r
    };

    // The undo sends back exactly the fields that run changed, with their previous values.
    let run_id = changed["run_id"].as_str().unwrap().to_string();
    let undo = ok(
        backflow_as(&ws, "olga", &["runs", "undo", &run_id, "--yes", "--json"]),
        "undo",
    )
    .json();
    assert_eq!(undo["status"], "succeeded", "{undo}");
    crm.catch_up(&receiver);
    assert_eq!(
        crm.last(2),
        [
            json!({"id": 1, "plan": "pro"}).as_object().unwrap().clone(),
            json!({"id": 3, "source": "ads"})
                .as_object()
                .unwrap()
                .clone(),
        ]
    );
    assert_eq!(
        crm.records, before_undo,
        "the CRM is as it was before the run, the rep's edit included"
    );

    // The row's history shows what was sent: the key and the changed field.
    let history = ok(
        backflow_as(&ws, "olga", &["rows", "history", "to_crm", "3", "--json"]),
        "rows history",
    )
    .json();
    let sent: Vec<&J> = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["sent"])
        .collect();
    assert_eq!(sent[1], &json!({"id": 3, "source": "partner"}), "{history}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_that_cannot_apply_are_refused_naming_the_key() {
    let receiver = start_receiver().await;
    let ws = workspace(
        &receiver,
        "update",
        "",
        "id = \"id\"\nsource = { to = \"lead_source\", write = \"on_insert\" }",
    );
    let out = backflow_as(&ws, "olga", &["sync", "plan", "to_crm"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("syncs.to_crm.mapping.source.write: mode update never creates a record"),
        "{}",
        out.stderr
    );
    let ws = workspace(
        &receiver,
        "append",
        "update = \"changed_fields\"",
        "id = { to = \"id\", null = \"skip\" }\nemail = { to = \"email\", nul = \"skip\" }",
    );
    let out = backflow_as(&ws, "olga", &["sync", "plan", "to_crm"]);
    for key in [
        "syncs.to_crm.update: mode append sends no updates",
        "syncs.to_crm.mapping.id.null: a primary key field is never null",
        "syncs.to_crm.mapping.email.nul: unknown key",
    ] {
        assert!(out.stderr.contains(key), "{key} not in:\n{}", out.stderr);
    }
    // A destination of an older contract cannot take absent fields; if_empty needs one that
    // can read back (noop-destination declares neither).
    for (plugin, mapping, want) in [
        (
            "v010-destination",
            "email = { to = \"email\", null = \"skip\" }",
            "syncs.to_old.mapping.email.null: this rule leaves fields out of what is sent, and destination old (plugin v010-destination, contract 0.1.0) does not declare field-presence",
        ),
        (
            "noop-destination",
            "email = { to = \"email\", write = \"if_empty\" }",
            "syncs.to_old.mapping.email.write:",
        ),
    ] {
        let ws = file_workspace(
            "customers",
            "customers.csv",
            &format!("[destinations.old]\nplugin = \"{plugin}\"\n[syncs.to_old]\nmodel = \"customers\"\ndestination = \"old\"\n[syncs.to_old.mapping]\nid = \"id\"\n{mapping}\n"),
        );
        ws.write("data/customers.csv", CUSTOMERS_CSV);
        let out = backflow_as(&ws, "olga", &["sync", "plan", "to_old"]);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains(want), "{want} not in:\n{}", out.stderr);
    }
}
