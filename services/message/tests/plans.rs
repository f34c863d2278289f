//! The message path's statements keep finding their rows through indexes in the plan a
//! long-lived connection caches on a fresh installation.
//!
//! sqlx prepares each statement once per connection, and PostgreSQL may switch a
//! prepared statement to a generic plan after five executions and keep it for the
//! connection's life. Planned on empty tables, a join of a parameter array with a table
//! became a hash join over a sequential scan, which the relay's connection then ran on
//! every batch while the messages table grew (the flat-out benchmark's relay spent most
//! of its time there). This test plans every statement of the path generically on an
//! empty database, as that connection would, and fails on any sequential scan of the
//! tables that grow with traffic.

use beehive_testkit::TestEnv;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

/// Tables that grow with traffic: scanning one on the message path is a defect.
const GROWING: [&str; 4] = ["messages", "members", "conversations", "outbox"];

/// The sequential scans of `plan` (EXPLAIN's JSON), as relation names.
fn seq_scans(plan: &Value, found: &mut Vec<String>) {
    match plan {
        Value::Object(node) => {
            if node.get("Node Type").and_then(Value::as_str) == Some("Seq Scan") {
                let relation = node
                    .get("Relation Name")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                found.push(relation.to_owned());
            }
            for value in node.values() {
                seq_scans(value, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| seq_scans(item, found)),
        _ => {}
    }
}

/// The generic plan of `sql` on `conn`, as EXPLAIN's JSON.
async fn generic_plan(conn: &mut PgConnection, name: &str, sql: &str) -> Value {
    conn.execute(sqlx::AssertSqlSafe(format!("PREPARE {name} AS {sql}")))
        .await
        .unwrap_or_else(|e| panic!("{name} does not prepare: {e}"));
    let params: i32 = sqlx::query_scalar(
        "SELECT cardinality(parameter_types) FROM pg_prepared_statements WHERE name = $1",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await
    .expect("prepared statement");
    let nulls = vec!["NULL"; usize::try_from(params).unwrap_or(0)].join(", ");
    let explain = if nulls.is_empty() {
        format!("EXPLAIN (FORMAT JSON) EXECUTE {name}")
    } else {
        format!("EXPLAIN (FORMAT JSON) EXECUTE {name}({nulls})")
    };
    let (plan,): (Value,) = sqlx::query_as(sqlx::AssertSqlSafe(explain))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{name} does not explain: {e}"));
    plan
}

/// A few conversations with members, messages and outbox rows: a young installation.
const POPULATE: &str = "
    INSERT INTO message.conversations (id, kind, direct_low, direct_high, member_count)
    SELECT gen_random_uuid(), 1, gen_random_uuid(), gen_random_uuid(), 2
      FROM generate_series(1, 50);
    INSERT INTO message.members (conversation_id, user_id, join_seq, delivered_seq, read_seq)
    SELECT c.id, v.u, 0, 0, 0
      FROM message.conversations c, LATERAL (VALUES (c.direct_low), (c.direct_high)) v(u);
    INSERT INTO message.messages (conversation_id, seq, id, sender_id, client_msg_id, msg_type, content)
    SELECT c.id, s, gen_random_uuid(), c.direct_low, 'c' || s || c.id, 1, 'hello'
      FROM message.conversations c, generate_series(1, 4) s;
    INSERT INTO message.outbox (partition, conversation_id, kind, seq)
    SELECT 0, conversation_id, 1, seq FROM message.messages;
";

/// Scans a young, never analyzed table may get, and why they do not grow: no plan form
/// makes PostgreSQL reach the rows of an UPDATE or DELETE through an index when it
/// believes the table small, and both tables have their statistics refreshed (which
/// re-plans every cached statement) as they grow.
const YOUNG_TABLE_SCANS: [(&str, &str, &str); 2] = [
    (
        "send_batch",
        "conversations",
        "the UPDATE of the conversation rows it locked (one row per conversation, \
         updated in place; the next ANALYZE re-plans it)",
    ),
    (
        "relay_delete",
        "outbox",
        "the relay vacuums the outbox every 20,000 deletes, which refreshes its \
         statistics and re-plans the delete",
    ),
];

/// The message path's statements whose generic plan, made now, scans a growing table.
async fn scanning_statements(conn: &mut PgConnection, stage: &str) -> Vec<String> {
    let statements = beehive_message::store::message_path_statements();
    assert!(statements.len() >= 10, "the list lost statements");
    let mut failures = Vec::new();
    for (name, sql) in statements {
        let plan = generic_plan(conn, &format!("{name}_{stage}"), sql).await;
        let mut scans = Vec::new();
        seq_scans(&plan, &mut scans);
        scans.retain(|relation| GROWING.contains(&relation.as_str()));
        if stage == "young" {
            scans.retain(|relation| {
                !YOUNG_TABLE_SCANS
                    .iter()
                    .any(|(statement, table, _)| *statement == name && relation == table)
            });
        }
        if !scans.is_empty() {
            failures.push(format!("{stage}: {name} scans {scans:?}:\n{plan:#}"));
        }
    }
    failures
}

/// A connection to a fresh, migrated database that always plans generically, as a
/// long-lived connection does after five executions of a statement.
async fn planning_connection() -> (TestEnv, PgConnection) {
    let env = TestEnv::new(&[&beehive_message::MIGRATOR]).await;
    let mut conn = PgConnection::connect(env.settings.database_url.expose())
        .await
        .expect("connect");
    conn.execute("SET plan_cache_mode = force_generic_plan")
        .await
        .expect("set");
    (env, conn)
}

/// Planned when the connection is opened on an empty database, and on a young one whose
/// tables were never analyzed (autovacuum off or not yet run). Not checked: a young
/// database just analyzed, whose statistics say every table fits in a page or two;
/// scanning is then the right plan, and the next ANALYZE re-plans.
#[tokio::test]
async fn message_path_statements_use_indexes_in_the_generic_plans_of_a_young_database() {
    let (_env, mut conn) = planning_connection().await;
    let mut failures = scanning_statements(&mut conn, "empty").await;
    conn.execute(POPULATE).await.expect("populate");
    failures.extend(scanning_statements(&mut conn, "young").await);
    let _ = conn.close().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The check itself: a lookup by a key array written as a plain join is planned as a
/// scan on an empty database, so the test above can fail.
#[tokio::test]
async fn the_plan_check_sees_the_scan_of_a_plain_join() {
    let (_env, mut conn) = planning_connection().await;
    let plan = generic_plan(
        &mut conn,
        "plain_join",
        "SELECT m.seq FROM unnest($1::uuid[], $2::bigint[]) AS k(cid, seq)
           JOIN message.messages m ON m.conversation_id = k.cid AND m.seq = k.seq",
    )
    .await;
    let mut scans = Vec::new();
    seq_scans(&plan, &mut scans);
    let _ = conn.close().await;
    assert_eq!(scans, vec!["messages".to_owned()], "{plan:#}");
}
