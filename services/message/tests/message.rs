//! MessageService over gRPC against real PostgreSQL (and the real user service for
//! group members): conversations, groups, sends, history, sync and receipts.

mod common;

use std::collections::{BTreeMap, HashMap};

use beehive_common::ErrorCode;
use beehive_proto::v1 as pb;
use common::{Harness, code, text};
use uuid::Uuid;

fn direct(sender: &str, to: &str, client_msg_id: &str) -> pb::SendMessageRequest {
    let mut request = text(sender, "", client_msg_id);
    request.target = Some(pb::send_message_request::Target::ToUserId(to.to_owned()));
    request
}

fn uid() -> String {
    Uuid::now_v7().to_string()
}

async fn history(
    h: &Harness,
    user: &str,
    conversation: &str,
    anchor: Option<pb::list_messages_request::Anchor>,
    limit: u32,
) -> Vec<u64> {
    h.message
        .clone()
        .list_messages(pb::ListMessagesRequest {
            user_id: user.to_owned(),
            conversation_id: conversation.to_owned(),
            anchor,
            limit,
        })
        .await
        .expect("list messages")
        .into_inner()
        .messages
        .iter()
        .map(|m| m.seq)
        .collect()
}

async fn conversation(
    h: &Harness,
    user: &str,
    id: &str,
) -> Result<pb::Conversation, tonic::Status> {
    h.message
        .clone()
        .get_conversation(pb::GetConversationRequest {
            user_id: user.to_owned(),
            conversation_id: id.to_owned(),
        })
        .await
        .map(|r| r.into_inner().conversation.expect("conversation"))
}

async fn mark(h: &Harness, user: &str, id: &str, seq: u64, read: bool) -> pb::Receipt {
    let request = pb::MarkRequest {
        user_id: user.to_owned(),
        conversation_id: id.to_owned(),
        seq,
    };
    let mut client = h.message.clone();
    let response = if read {
        client.mark_read(request).await
    } else {
        client.mark_delivered(request).await
    };
    response
        .expect("mark")
        .into_inner()
        .receipt
        .expect("receipt")
}

#[tokio::test]
async fn direct_conversations_are_unique_per_pair_and_sends_are_idempotent() {
    let h = Harness::start(None).await;
    let (a, b) = (uid(), uid());
    let mut client = h.message.clone();

    let first = client
        .send_message(direct(&a, &b, "m1"))
        .await
        .expect("send")
        .into_inner();
    let m1 = first.message.expect("message");
    assert!(!first.duplicate);
    assert_eq!(m1.seq, 1);
    let reply = client
        .send_message(direct(&b, &a, "m1"))
        .await
        .expect("reply")
        .into_inner();
    let m2 = reply.message.expect("message");
    assert_eq!(
        m2.conversation_id, m1.conversation_id,
        "one conversation per pair"
    );
    assert_eq!(m2.seq, 2);
    assert!(!reply.duplicate, "client ids are per sender");

    // The same (sender, client_msg_id) again: the first message, nothing stored.
    let again = client
        .send_message(direct(&a, &b, "m1"))
        .await
        .expect("resend")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.message.expect("message"), m1);
    let conv = conversation(&h, &a, &m1.conversation_id)
        .await
        .expect("get");
    assert_eq!(conv.last_seq, 2);
    assert_eq!(conv.kind, pb::ConversationKind::Direct as i32);
    let mut members = conv.member_ids.clone();
    members.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(members, expected);

    // Concurrent repeats of one client id store exactly one message.
    let sends = (0..10).map(|_| {
        let mut client = h.message.clone();
        let request = text(&a, &m1.conversation_id, "burst");
        async move {
            client
                .send_message(request)
                .await
                .expect("send")
                .into_inner()
        }
    });
    let results = futures::future::join_all(sends).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|r| r.message.as_ref().expect("message").id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "one message for ten identical sends");
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    let conv = conversation(&h, &a, &m1.conversation_id)
        .await
        .expect("get");
    assert_eq!(conv.last_seq, 3, "no seq was burned by the duplicates");
    let seqs = history(&h, &a, &m1.conversation_id, None, 0).await;
    assert_eq!(seqs, vec![1, 2, 3]);

    // Concurrent first messages of a new pair share one conversation.
    let (c, d) = (uid(), uid());
    let firsts = (0..8).map(|i| {
        let mut client = h.message.clone();
        let request = if i % 2 == 0 {
            direct(&c, &d, &format!("c{i}"))
        } else {
            direct(&d, &c, &format!("d{i}"))
        };
        async move {
            client
                .send_message(request)
                .await
                .expect("send")
                .into_inner()
        }
    });
    let results = futures::future::join_all(firsts).await;
    let conversations: std::collections::HashSet<String> = results
        .iter()
        .map(|r| r.message.as_ref().expect("message").conversation_id.clone())
        .collect();
    assert_eq!(conversations.len(), 1);
    let mut seqs: Vec<u64> = results
        .iter()
        .map(|r| r.message.as_ref().expect("m").seq)
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn twenty_concurrent_senders_produce_gap_free_seqs() {
    let mut h = Harness::start(None).await;
    let users = h.register(20).await;
    let group = h.group(&users[0], &users[1..]).await;
    assert_eq!(group.member_ids.len(), 20);
    let per_sender = 15;
    let senders = users.iter().map(|user| {
        let mut client = h.message.clone();
        let user = user.clone();
        let group = group.id.clone();
        async move {
            let mut seqs = Vec::new();
            for i in 0..per_sender {
                let m = client
                    .send_message(text(&user, &group, &format!("{user}-{i}")))
                    .await
                    .expect("send")
                    .into_inner()
                    .message
                    .expect("message");
                seqs.push(m.seq);
            }
            seqs
        }
    });
    let all = futures::future::join_all(senders).await;
    for seqs in &all {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "a sender's seqs rise: {seqs:?}"
        );
    }
    let mut every: Vec<u64> = all.into_iter().flatten().collect();
    every.sort_unstable();
    let total = (20 * per_sender) as u64;
    assert_eq!(
        every,
        (1..=total).collect::<Vec<_>>(),
        "seqs 1..=300, no gaps, no repeats"
    );

    // History agrees, page by page.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = history(
            &h,
            &users[3],
            &group.id,
            Some(pb::list_messages_request::Anchor::AfterSeq(after)),
            200,
        )
        .await;
        if page.is_empty() {
            break;
        }
        after = *page.last().expect("last");
        seen.extend(page);
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    // Sending advanced each sender's read_seq to its own last message.
    let conv = conversation(&h, &users[0], &group.id).await.expect("get");
    assert!(conv.read_seq >= per_sender as u64);
    assert_eq!(conv.unread_count, conv.last_seq - conv.read_seq);
}

#[tokio::test]
async fn history_pages_after_before_and_latest() {
    let h = Harness::start(None).await;
    let (a, b) = (uid(), uid());
    let mut client = h.message.clone();
    let first = client
        .send_message(direct(&a, &b, "0"))
        .await
        .expect("send")
        .into_inner();
    let id = first.message.expect("m").conversation_id;
    for i in 1..25 {
        h.send(&a, &id, &i.to_string()).await;
    }
    use pb::list_messages_request::Anchor;
    assert_eq!(
        history(&h, &b, &id, Some(Anchor::AfterSeq(0)), 5).await,
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        history(&h, &b, &id, Some(Anchor::AfterSeq(22)), 5).await,
        vec![23, 24, 25]
    );
    assert_eq!(
        history(&h, &b, &id, Some(Anchor::BeforeSeq(10)), 4).await,
        vec![6, 7, 8, 9]
    );
    assert_eq!(
        history(&h, &b, &id, Some(Anchor::BeforeSeq(3)), 4).await,
        vec![1, 2]
    );
    assert_eq!(history(&h, &b, &id, None, 3).await, vec![23, 24, 25]);
    assert_eq!(
        history(&h, &b, &id, None, 0).await.len(),
        25,
        "default limit 50"
    );
    assert!(
        history(&h, &b, &id, Some(Anchor::AfterSeq(25)), 5)
            .await
            .is_empty()
    );
    // Non-members see nothing, not even that it exists.
    let err = h
        .message
        .clone()
        .list_messages(pb::ListMessagesRequest {
            user_id: uid(),
            conversation_id: id.clone(),
            anchor: None,
            limit: 5,
        })
        .await
        .expect_err("stranger");
    assert_eq!(code(err), ErrorCode::NotFound);
}

#[tokio::test]
async fn the_history_stream_pages_every_message_in_conversation_and_seq_order() {
    let h = Harness::start(None).await;
    let a = uid();
    let mut expected: Vec<(String, u64, String)> = Vec::new();
    for (peer, count) in [(uid(), 4), (uid(), 1), (uid(), 6)] {
        let first = h
            .message
            .clone()
            .send_message(direct(&a, &peer, &format!("first-{peer}")))
            .await
            .expect("send")
            .into_inner()
            .message
            .expect("message");
        expected.push((first.conversation_id.clone(), first.seq, first.id.clone()));
        for i in 1..count {
            let m = h
                .send(&a, &first.conversation_id, &format!("{peer}-{i}"))
                .await
                .message
                .expect("message");
            expected.push((m.conversation_id, m.seq, m.id));
        }
    }
    expected.sort();
    let mut seen: Vec<(String, u64, String)> = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = h
            .message
            .clone()
            .list_history(pb::ListHistoryRequest {
                after: after.clone(),
                limit: 4,
            })
            .await
            .expect("history page")
            .into_inner();
        pages += 1;
        assert!(page.messages.len() <= 4);
        seen.extend(
            page.messages
                .into_iter()
                .map(|m| (m.conversation_id, m.seq, m.id)),
        );
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 3, "11 messages in pages of 4");
    // A position that is not a conversation id is refused.
    let err = h
        .message
        .clone()
        .list_history(pb::ListHistoryRequest {
            after: Some(pb::HistoryPosition {
                conversation_id: "not-a-uuid".into(),
                seq: 1,
            }),
            limit: 4,
        })
        .await
        .expect_err("bad position");
    assert_eq!(code(err), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn members_added_later_start_at_their_join_seq() {
    let mut h = Harness::start(None).await;
    let users = h.register(3).await;
    let (owner, early, late) = (&users[0], &users[1], &users[2]);
    let group = h.group(owner, std::slice::from_ref(early)).await;
    for i in 0..5 {
        h.send(owner, &group.id, &format!("before{i}")).await;
    }
    let added = h
        .message
        .clone()
        .add_members(pb::AddMembersRequest {
            user_id: early.clone(),
            conversation_id: group.id.clone(),
            user_ids: vec![late.clone(), early.clone()],
        })
        .await
        .expect("any member may add")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(added.member_ids.len(), 3);

    let seen_by_late = conversation(&h, late, &group.id).await.expect("member now");
    assert_eq!(seen_by_late.unread_count, 0);
    assert_eq!(seen_by_late.read_seq, 5);
    assert!(
        seen_by_late.last_message.is_none(),
        "messages before joining stay hidden"
    );
    assert!(history(&h, late, &group.id, None, 50).await.is_empty());

    for i in 0..3 {
        h.send(owner, &group.id, &format!("after{i}")).await;
    }
    assert_eq!(history(&h, late, &group.id, None, 50).await, vec![6, 7, 8]);
    use pb::list_messages_request::Anchor;
    assert_eq!(
        history(&h, late, &group.id, Some(Anchor::AfterSeq(0)), 50).await,
        vec![6, 7, 8]
    );
    assert_eq!(
        history(&h, late, &group.id, Some(Anchor::BeforeSeq(7)), 50).await,
        vec![6]
    );
    let seen_by_late = conversation(&h, late, &group.id).await.expect("member");
    assert_eq!(seen_by_late.unread_count, 3);
    assert_eq!(seen_by_late.last_message.expect("visible now").seq, 8);
    let seen_by_early = conversation(&h, early, &group.id).await.expect("member");
    assert_eq!(seen_by_early.unread_count, 8);

    let sync = h
        .message
        .clone()
        .sync(pb::SyncRequest {
            user_id: late.clone(),
            cursors: HashMap::from([(group.id.clone(), 0)]),
            limit: 0,
        })
        .await
        .expect("sync")
        .into_inner();
    let seqs: Vec<u64> = sync.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![6, 7, 8], "sync never reaches below the join seq");
}

#[tokio::test]
async fn delivered_and_read_only_move_up_and_receipts_list_every_member() {
    let h = Harness::start(None).await;
    let (a, b) = (uid(), uid());
    let first = h
        .message
        .clone()
        .send_message(direct(&a, &b, "0"))
        .await
        .expect("send")
        .into_inner();
    let id = first.message.expect("m").conversation_id;
    for i in 1..6 {
        h.send(&a, &id, &i.to_string()).await;
    }
    let conv = conversation(&h, &b, &id).await.expect("get");
    assert_eq!((conv.last_seq, conv.read_seq, conv.unread_count), (6, 0, 6));
    let sender_view = conversation(&h, &a, &id).await.expect("get");
    assert_eq!(
        (sender_view.read_seq, sender_view.unread_count),
        (6, 0),
        "sending reads"
    );

    let r = mark(&h, &b, &id, 2, false).await;
    assert_eq!((r.delivered_seq, r.read_seq), (2, 0));
    let r = mark(&h, &b, &id, 4, true).await;
    assert_eq!(
        (r.delivered_seq, r.read_seq),
        (4, 4),
        "reading implies delivery"
    );
    let r = mark(&h, &b, &id, 1, true).await;
    assert_eq!(r.read_seq, 4, "never down");
    let r = mark(&h, &b, &id, 3, false).await;
    assert_eq!(r.delivered_seq, 4, "never down");
    let r = mark(&h, &b, &id, 999, false).await;
    assert_eq!(r.delivered_seq, 6, "never above last_seq");
    let conv = conversation(&h, &b, &id).await.expect("get");
    assert_eq!((conv.read_seq, conv.unread_count), (4, 2));

    let receipts = h
        .message
        .clone()
        .list_receipts(pb::ListReceiptsRequest {
            user_id: b.clone(),
            conversation_id: id.clone(),
        })
        .await
        .expect("receipts")
        .into_inner()
        .receipts;
    let by_user: BTreeMap<String, (u64, u64)> = receipts
        .iter()
        .map(|r| (r.user_id.clone(), (r.delivered_seq, r.read_seq)))
        .collect();
    assert_eq!(by_user.len(), 2);
    assert_eq!(by_user[&a], (6, 6));
    assert_eq!(by_user[&b], (6, 4));

    // One receipt row per move, none for marks that moved nothing.
    let receipt_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message.outbox WHERE kind = 2")
            .fetch_one(&h.env.pool)
            .await
            .expect("count");
    assert_eq!(receipt_rows, 3);

    let stranger = h
        .message
        .clone()
        .mark_read(pb::MarkRequest {
            user_id: uid(),
            conversation_id: id.clone(),
            seq: 1,
        })
        .await
        .expect_err("stranger");
    assert_eq!(code(stranger), ErrorCode::NotFound);
}

#[tokio::test]
async fn owners_hand_over_and_removed_members_are_shut_out() {
    let mut h = Harness::start(None).await;
    let users = h.register(4).await;
    let (owner, second, third, fourth) = (&users[0], &users[1], &users[2], &users[3]);
    let group = h
        .group(owner, &[second.clone(), third.clone(), fourth.clone()])
        .await;
    assert_eq!(group.owner_id.as_deref(), Some(owner.as_str()));
    h.send(owner, &group.id, "hello").await;
    let remove = |actor: &str, member: &str| {
        let mut client = h.message.clone();
        let request = pb::RemoveMemberRequest {
            user_id: actor.to_owned(),
            conversation_id: group.id.clone(),
            member_id: member.to_owned(),
        };
        async move { client.remove_member(request).await }
    };

    // A member may not remove another; the owner may.
    assert_eq!(
        code(remove(third, fourth).await.expect_err("not owner")),
        ErrorCode::PermissionDenied
    );
    remove(owner, fourth).await.expect("owner removes");
    assert_eq!(
        code(conversation(&h, fourth, &group.id).await.expect_err("gone")),
        ErrorCode::NotFound
    );
    let err = h
        .message
        .clone()
        .send_message(text(fourth, &group.id, "still here?"))
        .await
        .expect_err("removed member cannot send");
    assert_eq!(code(err), ErrorCode::PermissionDenied);
    let sync = h
        .message
        .clone()
        .sync(pb::SyncRequest {
            user_id: fourth.clone(),
            cursors: HashMap::from([(group.id.clone(), 0)]),
            limit: 0,
        })
        .await
        .expect("sync")
        .into_inner();
    assert!(sync.messages.is_empty() && sync.cursors.is_empty());
    assert_eq!(
        code(remove(fourth, third).await.expect_err("not a member")),
        ErrorCode::NotFound
    );

    // The owner leaves: the longest-standing member (the first added) takes over.
    remove(owner, owner).await.expect("owner leaves");
    let conv = conversation(&h, second, &group.id).await.expect("get");
    assert_eq!(conv.owner_id.as_deref(), Some(second.as_str()));
    assert_eq!(conv.member_ids, vec![second.clone(), third.clone()]);
    // A member removes itself.
    remove(third, third).await.expect("leave");
    let conv = conversation(&h, second, &group.id).await.expect("get");
    assert_eq!(conv.member_ids, vec![second.clone()]);

    // Every change was queued as a conversation_updated announcement, the removals
    // naming the removed member as an extra recipient.
    let extras: Vec<Option<Vec<Uuid>>> = sqlx::query_scalar(
        "SELECT extra_recipients FROM message.outbox WHERE kind = 3 ORDER BY id",
    )
    .fetch_all(&h.env.pool)
    .await
    .expect("announcements");
    let uuid = |s: &String| Uuid::parse_str(s).expect("uuid");
    assert_eq!(
        extras,
        vec![
            None,
            Some(vec![uuid(fourth)]),
            Some(vec![uuid(owner)]),
            Some(vec![uuid(third)])
        ]
    );
}

#[tokio::test]
async fn groups_validate_names_members_and_updates() {
    let mut h = Harness::start(None).await;
    let users = h.register(3).await;
    let mut client = h.message.clone();
    let create = |name: &str, members: Vec<String>| pb::CreateGroupRequest {
        owner_id: users[0].clone(),
        name: name.to_owned(),
        member_ids: members,
    };
    assert_eq!(
        code(
            client
                .create_group(create("", vec![]))
                .await
                .expect_err("name")
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .create_group(create(&"n".repeat(65), vec![]))
                .await
                .expect_err("long")
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .create_group(create("x", vec![uid()]))
                .await
                .expect_err("unknown user")
        ),
        ErrorCode::InvalidArgument
    );
    let too_many: Vec<String> = (0..2000).map(|_| uid()).collect();
    assert_eq!(
        code(
            client
                .create_group(create("x", too_many))
                .await
                .expect_err("2001 members")
        ),
        ErrorCode::InvalidArgument
    );
    let group = client
        .create_group(create("  Team  ", vec![users[1].clone(), users[1].clone()]))
        .await
        .expect("create")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(group.name, "Team");
    assert_eq!(group.member_ids, vec![users[0].clone(), users[1].clone()]);
    assert_eq!(group.kind, pb::ConversationKind::Group as i32);

    let renamed = client
        .update_group(pb::UpdateGroupRequest {
            user_id: users[1].clone(),
            conversation_id: group.id.clone(),
            name: Some("Renamed".into()),
            avatar: Some("https://example.com/a.png".into()),
        })
        .await
        .expect("any member renames")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(
        (renamed.name.as_str(), renamed.avatar.as_str()),
        ("Renamed", "https://example.com/a.png")
    );
    let err = client
        .update_group(pb::UpdateGroupRequest {
            user_id: users[2].clone(),
            conversation_id: group.id.clone(),
            name: Some("Hijack".into()),
            avatar: None,
        })
        .await
        .expect_err("non-member");
    assert_eq!(code(err), ErrorCode::NotFound);
    let err = client
        .add_members(pb::AddMembersRequest {
            user_id: users[0].clone(),
            conversation_id: group.id.clone(),
            user_ids: vec![uid()],
        })
        .await
        .expect_err("unknown user");
    assert_eq!(code(err), ErrorCode::InvalidArgument);

    // Direct conversations are not groups.
    let (a, b) = (uid(), uid());
    let m = client
        .send_message(direct(&a, &b, "x"))
        .await
        .expect("send")
        .into_inner();
    let direct_id = m.message.expect("m").conversation_id;
    let err = client
        .update_group(pb::UpdateGroupRequest {
            user_id: a.clone(),
            conversation_id: direct_id,
            name: Some("nope".into()),
            avatar: None,
        })
        .await
        .expect_err("direct");
    assert_eq!(code(err), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn sends_are_validated() {
    let h = Harness::start(None).await;
    let (a, b) = (uid(), uid());
    let mut client = h.message.clone();
    let mut big = direct(&a, &b, "big");
    big.content = "x".repeat(16 * 1024 + 1);
    assert_eq!(
        code(client.send_message(big).await.expect_err("big")),
        ErrorCode::PayloadTooLarge
    );
    let mut nul = direct(&a, &b, "nul");
    nul.content = "a\0b".into();
    assert_eq!(
        code(client.send_message(nul).await.expect_err("NUL")),
        ErrorCode::InvalidArgument
    );
    let mut empty = direct(&a, &b, "empty");
    empty.content = String::new();
    assert_eq!(
        code(client.send_message(empty).await.expect_err("empty")),
        ErrorCode::InvalidArgument
    );
    let mut image = direct(&a, &b, "img");
    image.msg_type = pb::MessageType::Image as i32;
    assert_eq!(
        code(
            client
                .send_message(image.clone())
                .await
                .expect_err("no file")
        ),
        ErrorCode::InvalidArgument
    );
    // A file the sender may not read is refused; here no file service answers at all,
    // and the send fails closed (nothing stored) instead of trusting the id.
    image.file_id = Some(uid());
    let refused = code(
        client
            .send_message(image)
            .await
            .expect_err("unverifiable file"),
    );
    assert!(
        matches!(refused, ErrorCode::Unavailable | ErrorCode::NotFound),
        "{refused:?}"
    );
    let mut no_target = direct(&a, &b, "t");
    no_target.target = None;
    assert_eq!(
        code(client.send_message(no_target).await.expect_err("target")),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .send_message(direct(&a, &a, "self"))
                .await
                .expect_err("self")
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .send_message(direct(&a, &b, &"i".repeat(65)))
                .await
                .expect_err("long id")
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .send_message(text(&a, &uid(), "nowhere"))
                .await
                .expect_err("no such conversation")
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            client
                .send_message(text(&a, "not-an-id", "bad"))
                .await
                .expect_err("bad id")
        ),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn sync_is_capped_resumable_and_exact() {
    let h = Harness::start(None).await;
    let me = uid();
    let peers: Vec<String> = (0..3).map(|_| uid()).collect();
    let mut ids = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let first = h
            .message
            .clone()
            .send_message(direct(peer, &me, "0"))
            .await
            .expect("send")
            .into_inner();
        let id = first.message.expect("m").conversation_id;
        for n in 1..(4 + i * 3) {
            h.send(peer, &id, &n.to_string()).await;
        }
        ids.push(id);
    }
    // 4 + 7 + 10 = 21 unread; read some of the first one.
    mark(&h, &me, &ids[0], 2, true).await;

    let mut cursors: HashMap<String, u64> = HashMap::new();
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 20, "sync terminates");
        let response = h
            .message
            .clone()
            .sync(pb::SyncRequest {
                user_id: me.clone(),
                cursors: cursors.clone(),
                limit: 4,
            })
            .await
            .expect("sync")
            .into_inner();
        assert!(response.messages.len() <= 4);
        for m in &response.messages {
            got.entry(m.conversation_id.clone())
                .or_default()
                .push(m.seq);
        }
        assert_eq!(response.cursors.len(), 3, "a cursor for every conversation");
        cursors = response.cursors;
        if !response.has_more {
            break;
        }
    }
    assert_eq!(
        got[&ids[0]],
        vec![3, 4],
        "from read_seq when no cursor was given"
    );
    assert_eq!(got[&ids[1]], (1..=7).collect::<Vec<_>>());
    assert_eq!(got[&ids[2]], (1..=10).collect::<Vec<_>>());
    assert_eq!(cursors[&ids[2]], 10);

    // Nothing is missing now; a new message shows up exactly once.
    h.send(&peers[1], &ids[1], "late").await;
    let response = h
        .message
        .clone()
        .sync(pb::SyncRequest {
            user_id: me.clone(),
            cursors: cursors.clone(),
            limit: 0,
        })
        .await
        .expect("sync")
        .into_inner();
    let seqs: Vec<(String, u64)> = response
        .messages
        .iter()
        .map(|m| (m.conversation_id.clone(), m.seq))
        .collect();
    assert_eq!(seqs, vec![(ids[1].clone(), 8)]);
    assert!(!response.has_more);
}

#[tokio::test]
async fn conversation_lists_are_ordered_by_last_message_and_paged() {
    let h = Harness::start(None).await;
    let me = uid();
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = h
            .message
            .clone()
            .send_message(direct(&me, &uid(), &format!("first{i}")))
            .await
            .expect("send")
            .into_inner();
        ids.push(m.message.expect("m").conversation_id);
    }
    // Activity order now: 4 3 2 1 0; touch 1 and then 3.
    h.send(&me, &ids[1], "bump1").await;
    h.send(&me, &ids[3], "bump3").await;
    let expected = vec![
        ids[3].clone(),
        ids[1].clone(),
        ids[4].clone(),
        ids[2].clone(),
        ids[0].clone(),
    ];

    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = h
            .message
            .clone()
            .list_conversations(pb::ListConversationsRequest {
                user_id: me.clone(),
                page: Some(pb::PageRequest {
                    limit: 2,
                    cursor: cursor.clone(),
                }),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.conversations.len() <= 2);
        for c in &page.conversations {
            assert!(c.last_message.is_some());
            assert_eq!(c.member_ids.len(), 2);
        }
        listed.extend(page.conversations.into_iter().map(|c| c.id));
        cursor = page.page.expect("page").next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(listed, expected);
    let err = h
        .message
        .clone()
        .list_conversations(pb::ListConversationsRequest {
            user_id: me.clone(),
            page: Some(pb::PageRequest {
                limit: 2,
                cursor: "garbage".into(),
            }),
        })
        .await
        .expect_err("bad cursor");
    assert_eq!(code(err), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn conversation_peers_are_the_users_sharing_a_conversation() {
    let h = Harness::start(None).await;
    let (me, friend, stranger) = (uid(), uid(), uid());
    h.message
        .clone()
        .send_message(direct(&me, &friend, "hi"))
        .await
        .expect("send");
    let peers = h
        .message
        .clone()
        .filter_conversation_peers(pb::FilterConversationPeersRequest {
            user_id: me.clone(),
            candidate_ids: vec![friend.clone(), stranger.clone(), me.clone()],
        })
        .await
        .expect("peers")
        .into_inner()
        .peer_ids;
    assert_eq!(peers, vec![friend]);
}

#[tokio::test]
async fn batched_sends_number_per_conversation_and_skip_duplicates_and_strangers() {
    use beehive_message::conversation::NewMessage;
    use beehive_message::store::{OutboxSignal, Store};
    let h = Harness::start(None).await;
    let (a, b, c) = (uid(), uid(), uid());
    let open = |from: &str, to: &str| {
        let mut client = h.message.clone();
        let request = direct(from, to, &format!("open-{to}"));
        async move {
            client
                .send_message(request)
                .await
                .expect("open")
                .into_inner()
                .message
                .expect("m")
                .conversation_id
        }
    };
    let ab = Uuid::parse_str(&open(&a, &b).await).expect("id");
    let ac = Uuid::parse_str(&open(&a, &c).await).expect("id");
    let store = Store::new(h.env.pool.clone(), OutboxSignal::default());
    let user = |s: &String| Uuid::parse_str(s).expect("uuid");
    let msg = |sender: &String, client_msg_id: &str| NewMessage {
        sender_id: user(sender),
        client_msg_id: client_msg_id.to_owned(),
        msg_type: pb::MessageType::Text,
        content: format!("batched {client_msg_id}"),
        file_id: None,
        device_id: "d".to_owned(),
    };
    let messages = [
        (ab, msg(&a, "x1")),
        (ac, msg(&a, "x2")),
        (ab, msg(&b, "y1")),
        (ab, msg(&a, "x1")),                 // duplicate within the batch
        (ab, msg(&c, "z1")),                 // not a member of a-b
        (ab, msg(&a, "open-{b}")),           // new id, stored
        (ab, msg(&a, &format!("open-{b}"))), // duplicate of an earlier send
        (ac, msg(&c, "z2")),
    ];
    let sends: Vec<(Uuid, Uuid, &NewMessage)> = messages
        .iter()
        .map(|(conversation, m)| (*conversation, Uuid::now_v7(), m))
        .collect();
    let stored = store.send_batch(&sends).await.expect("batch");
    let got: Vec<(usize, Uuid, i64)> = stored
        .iter()
        .map(|(i, m)| (*i, m.conversation_id, m.seq))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        got,
        vec![(0, ab, 2), (1, ac, 2), (2, ab, 3), (5, ab, 4), (7, ac, 3)],
        "consecutive seqs per conversation in input order; duplicates and strangers skipped"
    );
    assert_eq!(
        history(&h, &b, &ab.to_string(), None, 0).await,
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        history(&h, &c, &ac.to_string(), None, 0).await,
        vec![1, 2, 3]
    );
    let outbox: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT conversation_id, seq FROM message.outbox WHERE kind = 1 ORDER BY id",
    )
    .fetch_all(&h.env.pool)
    .await
    .expect("outbox");
    let per = |conversation: Uuid| -> Vec<i64> {
        outbox
            .iter()
            .filter(|(c, _)| *c == conversation)
            .map(|(_, s)| *s)
            .collect()
    };
    assert_eq!(per(ab), vec![1, 2, 3, 4], "outbox rows in seq order");
    assert_eq!(per(ac), vec![1, 2, 3]);
    let a_view = conversation(&h, &a, &ab.to_string()).await.expect("get");
    assert_eq!(a_view.read_seq, 4, "the sender read up to its last message");
    let b_view = conversation(&h, &b, &ab.to_string()).await.expect("get");
    assert_eq!((b_view.read_seq, b_view.unread_count), (3, 1));
}

/// SendMessages answers each send as SendMessage would, in order: stored ones with
/// their message, repeats as duplicates, and each failure with its own error without
/// failing the others.
#[tokio::test]
async fn batched_sends_answer_each_send_in_order() {
    use pb::send_result::Result as Sent;

    let h = Harness::start(None).await;
    let (a, b, stranger) = (uid(), uid(), uid());
    let mut client = h.message.clone();
    let first = client
        .send_message(direct(&a, &b, "open"))
        .await
        .expect("open")
        .into_inner()
        .message
        .expect("message");
    let conversation = first.conversation_id.clone();
    let mut bad_sender = text(&a, &conversation, "bad");
    bad_sender.sender_id = "not-a-uuid".into();
    let sends = vec![
        text(&a, &conversation, "b1"),
        text(&stranger, &conversation, "intruder"),
        text(&b, &conversation, "b2"),
        bad_sender,
        direct(&a, &b, "open"),
        text(&a, &conversation, "b3"),
    ];
    let results = client
        .send_messages(pb::SendMessagesRequest { sends })
        .await
        .expect("send_messages")
        .into_inner()
        .results;
    assert_eq!(results.len(), 6);
    let outcome: Vec<Result<(String, bool), ErrorCode>> = results
        .into_iter()
        .map(|r| match r.result.expect("a result") {
            Sent::Sent(sent) => {
                let m = sent.message.expect("message");
                Ok((m.client_msg_id, sent.duplicate))
            }
            Sent::Error(status) => Err(beehive_common::Error::from_item_status(status).code()),
        })
        .collect();
    assert_eq!(
        outcome,
        vec![
            Ok(("b1".into(), false)),
            Err(ErrorCode::PermissionDenied),
            Ok(("b2".into(), false)),
            Err(ErrorCode::InvalidArgument),
            Ok(("open".into(), true)),
            Ok(("b3".into(), false)),
        ]
    );
    // Stored once each, numbered in the order of the call.
    let stored = client
        .list_messages(pb::ListMessagesRequest {
            user_id: a.clone(),
            conversation_id: conversation.clone(),
            anchor: None,
            limit: 10,
        })
        .await
        .expect("list messages")
        .into_inner()
        .messages;
    let stored: Vec<(u64, &str)> = stored
        .iter()
        .map(|m| (m.seq, m.client_msg_id.as_str()))
        .collect();
    assert_eq!(stored, [(1, "open"), (2, "b1"), (3, "b2"), (4, "b3")]);

    // Too many sends in one call: refused as a whole.
    let sends = (0..257)
        .map(|i| text(&a, &conversation, &format!("x{i}")))
        .collect();
    let refused = client
        .send_messages(pb::SendMessagesRequest { sends })
        .await
        .expect_err("too many");
    assert_eq!(code(refused), ErrorCode::InvalidArgument);
    assert_eq!(history(&h, &a, &conversation, None, 10).await.len(), 4);
}
