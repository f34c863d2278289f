//! The search component end to end below the gateway: real user, presence and
//! message services (PostgreSQL, Redis), the message relay publishing to the real
//! RabbitMQ, the search component consuming its index queue into a temporary index
//! directory, and `SearchMessages` over gRPC. Each test has its own database and
//! installation prefix.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use beehive_common::events::{Names, SEARCH_INDEX_ROUTING_KEY, publish_confirmed};
use beehive_common::{Component, Settings, Shutdown};
use beehive_message::{MessageConfig, RelayConfig};
use beehive_proto::v1 as pb;
use beehive_proto::v1::message_service_client::MessageServiceClient;
use beehive_proto::v1::search_service_client::SearchServiceClient;
use beehive_proto::v1::user_service_client::UserServiceClient;
use beehive_search::SearchConfig;
use beehive_testkit::{TestEnv, serve};
use lapin::options::{
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;

const PATIENCE: Duration = Duration::from_secs(30);

/// Short batches, and a reindex slow enough (small pages, a pause between them) that
/// a test can act while it runs.
fn search_config(index_dir: &std::path::Path) -> SearchConfig {
    SearchConfig {
        backend: "embedded".to_owned(),
        index_dir: index_dir.to_owned(),
        batch_size: 50,
        batch_interval: Duration::from_millis(100),
        reindex_page_size: 5,
        reindex_page_pause: Duration::from_millis(50),
        elasticsearch: None,
    }
}

struct World {
    _env: TestEnv,
    settings: Settings,
    shutdown: Shutdown,
    message: MessageServiceClient<Channel>,
    search: SearchServiceClient<Channel>,
    users: UserServiceClient<Channel>,
    index_dir: PathBuf,
    search_node: SearchNode,
}

/// The search component, stoppable on its own.
struct SearchNode {
    shutdown: Shutdown,
    serving: tokio::task::JoinHandle<Result<(), beehive_common::ComponentError>>,
}

impl SearchNode {
    async fn start(
        settings: &Settings,
        config: SearchConfig,
    ) -> (Self, SearchServiceClient<Channel>) {
        let shutdown = Shutdown::new();
        let bound = beehive_search::bind_with(
            &serve::context(settings, &shutdown),
            serve::loopback().await,
            config,
        )
        .await
        .expect("bind search");
        for check in &bound.readiness {
            check.run().await.expect("search ready");
        }
        let addr = bound.addr;
        let serving = tokio::spawn(bound.serve);
        let client = SearchServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect search");
        (Self { shutdown, serving }, client)
    }

    async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.serving.await;
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.search_node.shutdown.trigger();
        let _ = std::fs::remove_dir_all(&self.index_dir);
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

impl World {
    async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let env = TestEnv::new(&[&beehive_user::MIGRATOR, &beehive_message::MIGRATOR]).await;
        let shutdown = Shutdown::new();
        let mut settings = env.settings.clone();
        let ctx = |settings: &Settings| serve::context(settings, &shutdown);

        let user = beehive_user::bind(&ctx(&settings), serve::loopback().await)
            .await
            .expect("bind user");
        let user_addr = serve::run(user).await;
        settings.set_component_addr(Component::User, format!("http://{user_addr}"));
        let presence = beehive_presence::bind(&ctx(&settings), serve::loopback().await)
            .await
            .expect("bind presence");
        let presence_addr = serve::run(presence).await;
        settings.set_component_addr(Component::Presence, format!("http://{presence_addr}"));
        let mut message_config = MessageConfig::from_settings(&settings);
        message_config.relay = RelayConfig {
            poll_interval: Duration::from_millis(100),
            rebalance_interval: Duration::from_millis(200),
            ..RelayConfig::default()
        };
        let message =
            beehive_message::bind_with(&ctx(&settings), serve::loopback().await, message_config)
                .await
                .expect("bind message");
        let message_addr = serve::run(message).await;
        settings.set_component_addr(Component::Message, format!("http://{message_addr}"));

        let index_dir = std::env::temp_dir().join(format!("beehive-search-it-{}", env.database()));
        let (search_node, search) = SearchNode::start(&settings, search_config(&index_dir)).await;

        Self {
            _env: env,
            message: MessageServiceClient::connect(format!("http://{message_addr}"))
                .await
                .expect("connect message"),
            search,
            users: UserServiceClient::connect(format!("http://{user_addr}"))
                .await
                .expect("connect user"),
            settings,
            shutdown,
            index_dir,
            search_node,
        }
    }

    /// Stops the search component, lets `damage` act on its index directory, and
    /// starts it again.
    async fn restart_search(&mut self, damage: impl FnOnce(&std::path::Path)) {
        let fresh = Shutdown::new();
        let old = std::mem::replace(
            &mut self.search_node,
            SearchNode {
                shutdown: fresh,
                serving: tokio::spawn(async { Ok(()) }),
            },
        );
        old.stop().await;
        damage(&self.index_dir);
        let (node, client) =
            SearchNode::start(&self.settings, search_config(&self.index_dir)).await;
        self.search_node = node;
        self.search = client;
    }

    async fn reindex(&self, id: &str) -> Result<pb::ReindexResponse, tonic::Status> {
        self.search
            .clone()
            .reindex(pb::ReindexRequest {
                request_id: id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn reindex_state(&self, id: &str) -> Result<pb::ReindexResponse, tonic::Status> {
        self.search
            .clone()
            .get_reindex(pb::GetReindexRequest {
                request_id: id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Waits until the reindex `id` has ended; returns its final state.
    async fn reindexed(&self, id: &str) -> pb::ReindexResponse {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let state = self.reindex_state(id).await.expect("get reindex");
            if state.state != pb::ReindexState::Running as i32 {
                return state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "reindex {id} still running: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn register(&self, names: &[&str]) -> Vec<String> {
        let mut ids = Vec::new();
        for name in names {
            ids.push(
                self.users
                    .clone()
                    .register(pb::RegisterUserRequest {
                        username: (*name).to_owned(),
                        password: "correct horse battery".to_owned(),
                        ..Default::default()
                    })
                    .await
                    .expect("register")
                    .into_inner()
                    .user
                    .expect("user")
                    .id,
            );
        }
        ids
    }

    async fn group(&self, owner: &str, members: &[String]) -> String {
        self.message
            .clone()
            .create_group(pb::CreateGroupRequest {
                owner_id: owner.to_owned(),
                name: "team".to_owned(),
                member_ids: members.to_vec(),
            })
            .await
            .expect("create group")
            .into_inner()
            .conversation
            .expect("conversation")
            .id
    }

    async fn send(&self, sender: &str, conversation: &str, content: &str) -> pb::Message {
        self.message
            .clone()
            .send_message(pb::SendMessageRequest {
                sender_id: sender.to_owned(),
                client_msg_id: uuid::Uuid::now_v7().to_string(),
                target: Some(pb::send_message_request::Target::ConversationId(
                    conversation.to_owned(),
                )),
                msg_type: pb::MessageType::Text as i32,
                content: content.to_owned(),
                file_id: None,
                device_id: "phone".to_owned(),
            })
            .await
            .expect("send")
            .into_inner()
            .message
            .expect("message")
    }

    async fn search(
        &self,
        user: &str,
        query: &str,
        adjust: impl FnOnce(&mut pb::SearchMessagesRequest),
    ) -> Result<pb::SearchMessagesResponse, tonic::Status> {
        let mut request = pb::SearchMessagesRequest {
            user_id: user.to_owned(),
            query: query.to_owned(),
            order: pb::SearchOrder::Recent as i32,
            ..Default::default()
        };
        adjust(&mut request);
        self.search
            .clone()
            .search_messages(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn contents(&self, user: &str, query: &str) -> Vec<String> {
        self.search(user, query, |_| {})
            .await
            .expect("search")
            .hits
            .into_iter()
            .map(|h| h.message.expect("message").content)
            .collect()
    }

    /// Waits until `message` is searchable by `user` (indexing is asynchronous).
    async fn indexed(&self, user: &str, word: &str, message: &pb::Message) {
        eventually(&format!("{:?} is indexed", message.content), || async {
            self.search(user, word, |_| {})
                .await
                .map(|r| {
                    r.hits
                        .iter()
                        .any(|h| h.message.as_ref().map(|m| &m.id) == Some(&message.id))
                })
                .unwrap_or(false)
        })
        .await;
    }

    async fn amqp_channel(&self) -> (lapin::Connection, lapin::Channel) {
        let connection = beehive_common::infra::connect_amqp(&self.settings.amqp_url)
            .await
            .expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        (connection, channel)
    }

    async fn cleanup_broker(&self) {
        let (connection, channel) = self.amqp_channel().await;
        let names = Names::new(&self.settings);
        for queue in [&names.search_index_queue, &names.dead_letter_queue] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [&names.exchange, &names.dead_letter_exchange] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = connection.close(0, "done".into()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chinese_words_scope_filters_and_paging() {
    let world = World::start().await;
    let ids = world.register(&["alice", "bob", "carol", "dave"]).await;
    let (alice, bob, carol, dave) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let group = world.group(alice, std::slice::from_ref(bob)).await;
    world.send(alice, &group, "我们的消息").await;
    world.send(bob, &group, "消费记录").await;
    world.send(alice, &group, "已添加为好友").await;
    world.send(bob, &group, "<b>消息</b> & \"quotes\"").await;
    let long = format!("{}重要消息{}", "前".repeat(250), "后".repeat(250));
    let last = world.send(alice, &group, &long).await;
    world.indexed(alice, "消息", &last).await;

    // Words, not characters: 消息 never matches 消费; newest first.
    let hits = world
        .search(alice, "消息", |_| {})
        .await
        .expect("search")
        .hits;
    let contents: Vec<&str> = hits
        .iter()
        .map(|h| h.message.as_ref().expect("message").content.as_str())
        .collect();
    assert_eq!(
        contents,
        vec![long.as_str(), "<b>消息</b> & \"quotes\"", "我们的消息"]
    );
    // HTML-escaped highlights; a fragment of at most 200 characters for long content.
    assert_eq!(
        hits[1].highlight,
        "&lt;b&gt;<em>消息</em>&lt;/b&gt; &amp; &quot;quotes&quot;"
    );
    assert_eq!(hits[2].highlight, "我们的<em>消息</em>");
    assert!(hits[0].highlight.contains("<em>消息</em>") && hits[0].highlight.starts_with('…'));
    let visible = hits[0].highlight.replace("<em>", "").replace("</em>", "");
    assert!(visible.chars().count() <= 200, "{visible}");
    // Search-mode segmentation: 添加 inside 已添加为好友.
    let added = world
        .search(bob, "添加", |_| {})
        .await
        .expect("search")
        .hits;
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].highlight, "已<em>添加</em>为好友");
    // Every word must match.
    assert_eq!(world.contents(alice, "我们 消息").await, vec!["我们的消息"]);
    assert!(world.contents(alice, "我们 消费").await.is_empty());

    // Filters: sender, conversation, time.
    let by_bob = world
        .search(alice, "消息", |r| r.sender_id = Some(bob.clone()))
        .await
        .expect("search");
    assert_eq!(by_bob.hits.len(), 1);
    let other_group = world.group(alice, std::slice::from_ref(carol)).await;
    let elsewhere = world.send(carol, &other_group, "另一个消息").await;
    world.indexed(alice, "消息", &elsewhere).await;
    let only_first = world
        .search(alice, "消息", |r| r.conversation_id = Some(group.clone()))
        .await
        .expect("search");
    assert_eq!(only_first.hits.len(), 3);
    let future = world
        .search(alice, "消息", |r| {
            r.from = Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 3600,
                nanos: 0,
            })
        })
        .await
        .expect("search");
    assert!(future.hits.is_empty());

    // Paging: stable cursors visit every hit once, newest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = world
            .search(alice, "消息", |r| {
                r.page = Some(pb::PageRequest {
                    limit: 1,
                    cursor: cursor.clone(),
                })
            })
            .await
            .expect("page");
        assert!(page.hits.len() <= 1);
        seen.extend(page.hits.into_iter().map(|h| h.message.expect("m").id));
        cursor = page.page.expect("page").next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 4);
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique, seen);

    // Scope: carol joins the first group later and finds only what came after; dave,
    // a stranger, finds nothing, even when naming the conversation.
    world
        .message
        .clone()
        .add_members(pb::AddMembersRequest {
            user_id: alice.clone(),
            conversation_id: group.clone(),
            user_ids: vec![carol.clone()],
        })
        .await
        .expect("add carol");
    let after_join = world.send(alice, &group, "加入之后的消息").await;
    world.indexed(carol, "消息", &after_join).await;
    let carol_sees = world
        .search(carol, "消息", |r| r.conversation_id = Some(group.clone()))
        .await
        .expect("search");
    let carol_sees: Vec<String> = carol_sees
        .hits
        .into_iter()
        .map(|h| h.message.expect("m").content)
        .collect();
    assert_eq!(carol_sees, vec!["加入之后的消息"]);
    assert!(world.contents(dave, "消息").await.is_empty());
    let probe = world
        .search(dave, "消息", |r| r.conversation_id = Some(group.clone()))
        .await
        .expect("search");
    assert!(probe.hits.is_empty());

    // A member who left finds nothing more of that conversation.
    world
        .message
        .clone()
        .remove_member(pb::RemoveMemberRequest {
            user_id: bob.clone(),
            conversation_id: group.clone(),
            member_id: bob.clone(),
        })
        .await
        .expect("bob leaves");
    assert!(world.contents(bob, "消息").await.is_empty());

    // Bad input is invalid_argument; query syntax is literal, never an error.
    for bad in ["", "   ", &"字".repeat(257)] {
        let status = world
            .search(alice, bad, |_| {})
            .await
            .expect_err("bad query");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
    }
    assert!(world.contents(alice, "((( AND title:* \"").await.is_empty());
    let bad_cursor = world
        .search(alice, "消息", |r| {
            r.page = Some(pb::PageRequest {
                limit: 1,
                cursor: "not-a-cursor".into(),
            })
        })
        .await
        .expect_err("bad cursor");
    assert_eq!(bad_cursor.code(), Code::InvalidArgument);
    let relevance = world
        .search(alice, "消息", |r| {
            r.order = pb::SearchOrder::Relevance as i32;
            r.page = Some(pb::PageRequest {
                limit: 2,
                cursor: String::new(),
            });
        })
        .await
        .expect("relevance");
    assert_eq!(relevance.hits.len(), 2);
    let next = relevance.page.expect("page").next_cursor;
    let wrong_order = world
        .search(alice, "消息", |r| {
            r.page = Some(pb::PageRequest {
                limit: 2,
                cursor: next.clone(),
            })
        })
        .await
        .expect_err("cursor of another order");
    assert_eq!(wrong_order.code(), Code::InvalidArgument);

    world.cleanup_broker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivery_never_duplicates_and_poison_is_dead_lettered() {
    let world = World::start().await;
    let ids = world.register(&["erin", "frank"]).await;
    let (erin, frank) = (&ids[0], &ids[1]);
    let group = world.group(erin, std::slice::from_ref(frank)).await;
    let first = world.send(erin, &group, "duplicate candidate").await;
    world.indexed(frank, "candidate", &first).await;

    // The same event again (a redelivery after a crash), twice, then a poison event.
    let (connection, channel) = world.amqp_channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let names = Names::new(&world.settings);
    let event = pb::Event {
        payload: Some(pb::event::Payload::Message(first.clone())),
        ..Default::default()
    }
    .encode_to_vec();
    let poison = b"\x0a\xff\xff not an event".to_vec();
    publish_confirmed(
        &channel,
        &names.exchange,
        &[
            (SEARCH_INDEX_ROUTING_KEY, event.clone()),
            (SEARCH_INDEX_ROUTING_KEY, event),
            (SEARCH_INDEX_ROUTING_KEY, poison),
        ],
    )
    .await
    .expect("publish");
    // A later message: once it is searchable, everything before it was handled.
    let sentinel = world.send(frank, &group, "sentinel").await;
    world.indexed(erin, "sentinel", &sentinel).await;

    let hits = world
        .search(erin, "candidate", |_| {})
        .await
        .expect("search")
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].message.as_ref(), Some(&first));
    let dead = channel
        .queue_declare(
            names.dead_letter_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("dead-letter queue");
    assert_eq!(dead.message_count(), 1);
    let _ = connection.close(0, "done".into()).await;
    world.cleanup_broker().await;
}

/// The generation directory the index's `current` file names.
fn current_generation(index_dir: &std::path::Path) -> PathBuf {
    let name = std::fs::read_to_string(index_dir.join("current")).expect("current file");
    index_dir.join(name.trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reindex_rebuilds_a_corrupted_index_from_history_once_per_request_id() {
    let mut world = World::start().await;
    let ids = world.register(&["gina", "hank", "iris"]).await;
    let (gina, hank, iris) = (&ids[0], &ids[1], &ids[2]);
    let group = world.group(gina, std::slice::from_ref(hank)).await;
    let mut sent = Vec::new();
    for n in 0..12 {
        sent.push(
            world
                .send(gina, &group, &format!("历史消息 number{n}"))
                .await,
        );
    }
    // iris joins later: the rebuilt index must keep her scope (only later messages).
    world
        .message
        .clone()
        .add_members(pb::AddMembersRequest {
            user_id: gina.clone(),
            conversation_id: group.clone(),
            user_ids: vec![iris.clone()],
        })
        .await
        .expect("add iris");
    let late = world.send(hank, &group, "历史消息 late").await;
    sent.push(late.clone());
    world.indexed(iris, "历史", &late).await;
    let before = world.contents(hank, "历史").await;
    assert_eq!(before.len(), 13);

    // The index is corrupted while the search component is down: it comes back empty.
    world
        .restart_search(|dir| {
            std::fs::write(current_generation(dir).join("meta.json"), b"{ broken")
                .expect("corrupt the index");
        })
        .await;
    assert!(world.contents(hank, "历史").await.is_empty());

    // Bad ids are refused; an unknown id is not found.
    for bad in ["", "has space", &"x".repeat(129)] {
        let status = world.reindex(bad).await.expect_err("bad id");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
    }
    assert_eq!(
        world
            .reindex_state("never-asked")
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );

    let started = world.reindex("rebuild-1").await.expect("reindex");
    assert_eq!(started.request_id, "rebuild-1");
    assert_eq!(started.state, pb::ReindexState::Running as i32);
    let done = world.reindexed("rebuild-1").await;
    assert_eq!(done.state, pb::ReindexState::Succeeded as i32, "{done:?}");
    assert_eq!(done.documents, 13);
    assert!(done.finished_at.is_some() && done.error.is_empty());
    assert_eq!(done.started_at, started.started_at);

    // Everything is back, scope included: iris finds only the message after her join.
    let mut after = world.contents(hank, "历史").await;
    let mut expected = before.clone();
    after.sort();
    expected.sort();
    assert_eq!(after, expected);
    assert_eq!(world.contents(iris, "历史").await, vec!["历史消息 late"]);

    // The same request id starts nothing new: it answers the finished rebuild, also
    // after a restart (the state is kept beside the index).
    let again = world.reindex("rebuild-1").await.expect("same id");
    assert_eq!(again, done);
    world.restart_search(|_| {}).await;
    assert_eq!(world.reindex("rebuild-1").await.expect("same id"), done);
    assert_eq!(world.reindex_state("").await.expect("latest"), done);
    assert_eq!(world.contents(hank, "历史").await.len(), 13);
    world.cleanup_broker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_are_answered_during_a_reindex_and_no_change_is_lost() {
    let world = World::start().await;
    let ids = world.register(&["jade", "kurt"]).await;
    let (jade, kurt) = (&ids[0], &ids[1]);
    let group = world.group(jade, std::slice::from_ref(kurt)).await;
    let mut sent = Vec::new();
    for n in 0..40 {
        sent.push(world.send(jade, &group, &format!("alpha item{n}")).await);
    }
    world.indexed(kurt, "alpha", &sent[39]).await;
    let all = |r: &mut pb::SearchMessagesRequest| {
        r.page = Some(pb::PageRequest {
            limit: 100,
            cursor: String::new(),
        })
    };

    // 40 messages in pages of 5 with a pause between pages: it runs for a while.
    let started = world.reindex("during-1").await.expect("reindex");
    assert_eq!(started.state, pb::ReindexState::Running as i32);
    let refused = world.reindex("during-2").await.expect_err("another id");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("during-1"),
        "{}",
        refused.message()
    );
    // Searches keep being answered, completely, from the old index.
    let mut answered_while_running = 0;
    loop {
        let hits = world.search(kurt, "alpha", all).await.expect("search").hits;
        let state = world.reindex_state("during-1").await.expect("state");
        if state.state != pb::ReindexState::Running as i32 {
            break;
        }
        assert_eq!(hits.len(), 40);
        answered_while_running += 1;
        if answered_while_running == 3 {
            break;
        }
    }
    assert!(
        answered_while_running > 0,
        "the reindex ended before any search"
    );

    // Changes while it runs: a new message, and (hand-published, as a later issue's
    // message service will) an edit and a delete of messages the history still shows
    // in their old form.
    let fresh = world.send(kurt, &group, "beta during the rebuild").await;
    let mut edited = sent[0].clone();
    edited.content = "gamma after the edit".into();
    let (connection, channel) = world.amqp_channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let names = Names::new(&world.settings);
    let edit = pb::Event {
        payload: Some(pb::event::Payload::MessageEdited(pb::MessageEdited {
            message: Some(edited.clone()),
        })),
        ..Default::default()
    }
    .encode_to_vec();
    let delete = pb::Event {
        payload: Some(pb::event::Payload::MessageDeleted(pb::MessageDeleted {
            message_id: sent[1].id.clone(),
            conversation_id: group.clone(),
            seq: sent[1].seq,
        })),
        ..Default::default()
    }
    .encode_to_vec();
    publish_confirmed(
        &channel,
        &names.exchange,
        &[
            (SEARCH_INDEX_ROUTING_KEY, edit),
            (SEARCH_INDEX_ROUTING_KEY, delete),
        ],
    )
    .await
    .expect("publish");
    let _ = connection.close(0, "done".into()).await;

    let done = world.reindexed("during-1").await;
    assert_eq!(done.state, pb::ReindexState::Succeeded as i32, "{done:?}");

    world.indexed(jade, "beta", &fresh).await;
    world.indexed(jade, "gamma", &edited).await;
    let alpha: Vec<String> = world
        .search(kurt, "alpha", all)
        .await
        .expect("search")
        .hits
        .into_iter()
        .map(|h| h.message.expect("message").id)
        .collect();
    assert_eq!(alpha.len(), 38);
    assert!(!alpha.contains(&sent[0].id) && !alpha.contains(&sent[1].id));

    // A new request id may start once the first one ended. The hand-published edit
    // and delete never reached the message history, so a rebuild from it brings back
    // what the history holds.
    let second = world.reindex("during-2").await.expect("after the first");
    assert_eq!(second.request_id, "during-2");
    let second = world.reindexed("during-2").await;
    assert_eq!(second.state, pb::ReindexState::Succeeded as i32);
    assert_eq!(second.documents, 41);
    assert_eq!(
        world
            .search(kurt, "alpha", all)
            .await
            .expect("search")
            .hits
            .len(),
        40
    );
    assert!(world.contents(kurt, "gamma").await.is_empty());
    world.cleanup_broker().await;
}
