//! The social service against real PostgreSQL, Redis and RabbitMQ: the friend request
//! rules, friendships, paging, concurrency and the notifications gateways receive.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use beehive_proto::v1::{
    AcceptFriendRequestRequest, AreFriendsRequest, DeleteFriendRequest, FilterFriendsRequest,
    FriendRequest, FriendRequestStatus, ListFriendRequestsRequest, ListFriendsRequest, PageRequest,
    RejectFriendRequestRequest, RequestDirection, SendFriendRequestRequest, event,
};
use support::{Stack, user};
use tonic::Code;

const TTL: Duration = Duration::from_secs(30);

async fn send(stack: &Stack, from: &str, to: &str) -> Result<FriendRequest, tonic::Status> {
    send_with(stack, from, to, "hi").await
}

async fn send_with(
    stack: &Stack,
    from: &str,
    to: &str,
    message: &str,
) -> Result<FriendRequest, tonic::Status> {
    stack
        .social
        .clone()
        .send_friend_request(SendFriendRequestRequest {
            from_user_id: from.to_owned(),
            to_user_id: to.to_owned(),
            message: message.to_owned(),
        })
        .await
        .map(|r| r.into_inner().request.expect("request"))
}

async fn accept(stack: &Stack, user: &str, id: &str) -> Result<FriendRequest, tonic::Status> {
    stack
        .social
        .clone()
        .accept_friend_request(AcceptFriendRequestRequest {
            user_id: user.to_owned(),
            request_id: id.to_owned(),
        })
        .await
        .map(|r| r.into_inner().request.expect("request"))
}

async fn reject(stack: &Stack, user: &str, id: &str) -> Result<(), tonic::Status> {
    stack
        .social
        .clone()
        .reject_friend_request(RejectFriendRequestRequest {
            user_id: user.to_owned(),
            request_id: id.to_owned(),
        })
        .await
        .map(|_| ())
}

async fn pending(stack: &Stack, user: &str, direction: RequestDirection) -> Vec<FriendRequest> {
    stack
        .social
        .clone()
        .list_friend_requests(ListFriendRequestsRequest {
            user_id: user.to_owned(),
            direction: direction as i32,
            page: None,
        })
        .await
        .expect("list requests")
        .into_inner()
        .requests
}

async fn are_friends(stack: &Stack, a: &str, b: &str) -> bool {
    stack
        .social
        .clone()
        .are_friends(AreFriendsRequest {
            user_id: a.to_owned(),
            other_user_id: b.to_owned(),
        })
        .await
        .expect("are friends")
        .into_inner()
        .friends
}

async fn delete(stack: &Stack, a: &str, b: &str) -> Result<(), tonic::Status> {
    stack
        .social
        .clone()
        .delete_friend(DeleteFriendRequest {
            user_id: a.to_owned(),
            friend_id: b.to_owned(),
        })
        .await
        .map(|_| ())
}

async fn all_friends(stack: &Stack, user: &str, limit: u32) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = stack
            .social
            .clone()
            .list_friends(ListFriendsRequest {
                user_id: user.to_owned(),
                page: Some(PageRequest {
                    limit,
                    cursor: cursor.clone(),
                }),
            })
            .await
            .expect("list friends")
            .into_inner();
        pages += 1;
        out.extend(page.friend_ids);
        cursor = page.page.expect("page").next_cursor;
        if cursor.is_empty() {
            return (out, pages);
        }
    }
}

async fn befriend(stack: &Stack, a: &str, b: &str) {
    let request = send(stack, a, b).await.expect("send");
    accept(stack, b, &request.id).await.expect("accept");
}

/// Ages a request in the database, as time passing would.
async fn age_request(stack: &Stack, id: &str, hours: i32) {
    sqlx::query(
        "UPDATE social.friend_requests SET created_at = now() - make_interval(hours => $2) \
         WHERE id = $1::uuid",
    )
    .bind(id)
    .bind(hours)
    .execute(&stack.env.pool)
    .await
    .expect("age request");
}

#[tokio::test]
async fn a_request_goes_from_pending_to_a_mutual_friendship_and_back() {
    let stack = Stack::start(TTL).await;
    let (a, b, c) = (user(), user(), user());

    let request = send_with(&stack, &a, &b, "let's chat").await.expect("send");
    assert_eq!(request.status, FriendRequestStatus::Pending as i32);
    assert_eq!(
        (request.from_user_id.as_str(), request.to_user_id.as_str()),
        (a.as_str(), b.as_str())
    );
    assert_eq!(request.message, "let's chat");
    assert!(request.created_at.is_some());

    let duplicate = send(&stack, &a, &b).await.expect_err("duplicate refused");
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let incoming = pending(&stack, &b, RequestDirection::Incoming).await;
    assert_eq!(
        incoming.iter().map(|r| &r.id).collect::<Vec<_>>(),
        vec![&request.id]
    );
    let outgoing = pending(&stack, &a, RequestDirection::Outgoing).await;
    assert_eq!(
        outgoing.iter().map(|r| &r.id).collect::<Vec<_>>(),
        vec![&request.id]
    );
    assert!(
        pending(&stack, &a, RequestDirection::Incoming)
            .await
            .is_empty()
    );

    // Only the addressee may decide; everyone else learns nothing.
    for outsider in [&a, &c] {
        let error = accept(&stack, outsider, &request.id)
            .await
            .expect_err("not theirs");
        assert_eq!(error.code(), Code::NotFound);
        let error = reject(&stack, outsider, &request.id)
            .await
            .expect_err("not theirs");
        assert_eq!(error.code(), Code::NotFound);
    }
    let unknown = accept(&stack, &b, &user()).await.expect_err("unknown id");
    assert_eq!(unknown.code(), Code::NotFound);

    let accepted = accept(&stack, &b, &request.id).await.expect("accept");
    assert_eq!(accepted.status, FriendRequestStatus::Accepted as i32);
    assert_eq!(accepted.id, request.id);
    assert!(are_friends(&stack, &a, &b).await);
    assert!(are_friends(&stack, &b, &a).await);
    assert!(!are_friends(&stack, &a, &c).await);
    assert_eq!(all_friends(&stack, &a, 0).await.0, vec![b.clone()]);
    assert_eq!(all_friends(&stack, &b, 0).await.0, vec![a.clone()]);
    assert!(
        pending(&stack, &b, RequestDirection::Incoming)
            .await
            .is_empty()
    );

    let again = accept(&stack, &b, &request.id)
        .await
        .expect_err("decided already");
    assert_eq!(again.code(), Code::NotFound);
    let friends_already = send(&stack, &b, &a).await.expect_err("already friends");
    assert_eq!(friends_already.code(), Code::AlreadyExists);

    // Deleting by either side ends it both ways.
    delete(&stack, &b, &a).await.expect("delete");
    assert!(!are_friends(&stack, &a, &b).await);
    assert!(!are_friends(&stack, &b, &a).await);
    assert!(all_friends(&stack, &a, 0).await.0.is_empty());
    let gone = delete(&stack, &a, &b)
        .await
        .expect_err("not friends any more");
    assert_eq!(gone.code(), Code::NotFound);
    // And they may start over.
    send(&stack, &a, &b)
        .await
        .expect("new request after unfriending");
}

#[tokio::test]
async fn bad_input_is_invalid_argument() {
    let stack = Stack::start(TTL).await;
    let (a, b) = (user(), user());
    let cases = [
        send(&stack, &a, &a).await,
        send(&stack, &a, "not-a-uuid").await,
        send(&stack, "", &b).await,
        send(&stack, &a, &"f".repeat(100_000)).await,
        send_with(&stack, &a, &b, &"x".repeat(257)).await,
    ];
    for (i, result) in cases.into_iter().enumerate() {
        let error = result.expect_err("refused");
        assert_eq!(error.code(), Code::InvalidArgument, "case {i}: {error:?}");
    }
    send_with(&stack, &a, &b, &"蜂".repeat(256))
        .await
        .expect("256 characters are fine");

    let mut social = stack.social.clone();
    let unspecified = social
        .list_friend_requests(ListFriendRequestsRequest {
            user_id: a.clone(),
            direction: RequestDirection::Unspecified as i32,
            page: None,
        })
        .await
        .expect_err("direction required");
    assert_eq!(unspecified.code(), Code::InvalidArgument);
    let cursor = social
        .list_friends(ListFriendsRequest {
            user_id: a.clone(),
            page: Some(PageRequest {
                limit: 10,
                cursor: "forged".into(),
            }),
        })
        .await
        .expect_err("bad cursor");
    assert_eq!(cursor.code(), Code::InvalidArgument);
    let request_id = accept(&stack, &b, "12").await.expect_err("bad id");
    assert_eq!(request_id.code(), Code::InvalidArgument);
    let filter = social
        .filter_friends(FilterFriendsRequest {
            user_id: a.clone(),
            candidate_ids: vec![b.clone(); 5001],
        })
        .await
        .expect_err("too many candidates");
    assert_eq!(filter.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_request_against_a_pending_opposite_one_accepts_it() {
    let stack = Stack::start(TTL).await;
    let (a, b) = (user(), user());
    let first = send(&stack, &a, &b).await.expect("a asks b");
    let second = send(&stack, &b, &a).await.expect("b asks a");
    assert_eq!(second.id, first.id, "the existing request is the answer");
    assert_eq!(second.status, FriendRequestStatus::Accepted as i32);
    assert!(are_friends(&stack, &a, &b).await);
    assert!(
        pending(&stack, &a, RequestDirection::Incoming)
            .await
            .is_empty()
    );
    assert!(
        pending(&stack, &b, RequestDirection::Incoming)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn requests_expire_after_seven_days_and_block_duplicates_for_one() {
    let stack = Stack::start(TTL).await;
    let (a, b, c) = (user(), user(), user());

    // Older than a day: a new request supersedes the old one.
    let old = send(&stack, &a, &b).await.expect("send");
    age_request(&stack, &old.id, 25).await;
    let newer = send(&stack, &a, &b).await.expect("allowed after 24 h");
    assert_ne!(newer.id, old.id);
    let incoming = pending(&stack, &b, RequestDirection::Incoming).await;
    assert_eq!(
        incoming.iter().map(|r| &r.id).collect::<Vec<_>>(),
        vec![&newer.id]
    );
    let superseded = accept(&stack, &b, &old.id).await.expect_err("superseded");
    assert_eq!(superseded.code(), Code::NotFound);

    // Older than a week: expired, not listed, not acceptable, not blocking.
    let stale = send(&stack, &c, &b).await.expect("send");
    age_request(&stack, &stale.id, 7 * 24 + 1).await;
    let incoming = pending(&stack, &b, RequestDirection::Incoming).await;
    assert!(incoming.iter().all(|r| r.id != stale.id));
    assert!(
        pending(&stack, &c, RequestDirection::Outgoing)
            .await
            .is_empty()
    );
    let expired = accept(&stack, &b, &stale.id).await.expect_err("expired");
    assert_eq!(expired.code(), Code::NotFound);
    // The hourly sweep rewrites exactly the stale row, and nothing changes for readers.
    let store = beehive_social::store::Store::new(stack.env.pool.clone());
    let swept = store
        .expire_stale(beehive_social::friends::REQUEST_LIFETIME, 100)
        .await
        .expect("sweep");
    assert_eq!(swept, 1);
    let status: i16 =
        sqlx::query_scalar("SELECT status FROM social.friend_requests WHERE id = $1::uuid")
            .bind(&stale.id)
            .fetch_one(&stack.env.pool)
            .await
            .expect("status");
    assert_eq!(status, 4);
    assert_eq!(
        pending(&stack, &b, RequestDirection::Incoming).await.len(),
        1
    );
    // An expired request in the opposite direction is not accepted by a new one.
    let fresh = send(&stack, &b, &c).await.expect("new request");
    assert_eq!(fresh.status, FriendRequestStatus::Pending as i32);
    assert_ne!(fresh.id, stale.id);
    assert!(!are_friends(&stack, &b, &c).await);
}

#[tokio::test]
async fn a_rejected_request_is_gone_and_makes_no_friendship() {
    let stack = Stack::start(TTL).await;
    let (a, b) = (user(), user());
    let request = send(&stack, &a, &b).await.expect("send");
    reject(&stack, &b, &request.id).await.expect("reject");
    assert!(
        pending(&stack, &b, RequestDirection::Incoming)
            .await
            .is_empty()
    );
    assert!(!are_friends(&stack, &a, &b).await);
    let late = accept(&stack, &b, &request.id).await.expect_err("rejected");
    assert_eq!(late.code(), Code::NotFound);
    let twice = reject(&stack, &b, &request.id).await.expect_err("rejected");
    assert_eq!(twice.code(), Code::NotFound);
}

#[tokio::test]
async fn friends_and_requests_page_with_cursors() {
    let stack = Stack::start(TTL).await;
    let hub = user();
    let others: Vec<String> = (0..5).map(|_| user()).collect();
    for other in &others {
        befriend(&stack, other, &hub).await;
    }
    let (friends, pages) = all_friends(&stack, &hub, 2).await;
    assert_eq!(pages, 3);
    let mut expected = others.clone();
    expected.sort();
    assert_eq!(friends, expected, "every friend once, ordered by id");

    let fans: Vec<String> = (0..3).map(|_| user()).collect();
    for fan in &fans {
        send(&stack, fan, &hub).await.expect("send");
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = stack
            .social
            .clone()
            .list_friend_requests(ListFriendRequestsRequest {
                user_id: hub.clone(),
                direction: RequestDirection::Incoming as i32,
                page: Some(PageRequest {
                    limit: 2,
                    cursor: cursor.clone(),
                }),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.requests.len() <= 2);
        seen.extend(page.requests.into_iter().map(|r| r.from_user_id));
        cursor = page.page.expect("page").next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    // Newest first.
    let mut newest_first = fans.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
}

#[tokio::test]
async fn filter_friends_keeps_candidate_order() {
    let stack = Stack::start(TTL).await;
    let (me, f1, f2, stranger) = (user(), user(), user(), user());
    befriend(&stack, &me, &f1).await;
    befriend(&stack, &f2, &me).await;
    let kept = stack
        .social
        .clone()
        .filter_friends(FilterFriendsRequest {
            user_id: me.clone(),
            candidate_ids: vec![f2.clone(), stranger.clone(), f1.clone(), f2.clone()],
        })
        .await
        .expect("filter")
        .into_inner()
        .friend_ids;
    assert_eq!(kept, vec![f2, f1]);
    assert!(!are_friends(&stack, &me, &me).await);
}

#[tokio::test]
async fn concurrent_requests_between_a_pair_make_one_outcome() {
    let stack = Stack::start(TTL).await;
    let (a, b) = (user(), user());
    let attempts = futures::future::join_all((0..12).map(|_| send(&stack, &a, &b))).await;
    let created: Vec<_> = attempts.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(created.len(), 1, "{attempts:?}");
    assert!(
        attempts
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.code() == Code::AlreadyExists)
    );

    // Both directions at once: one request is created and the other accepts it.
    let (c, d) = (user(), user());
    let (x, y) = tokio::join!(send(&stack, &c, &d), send(&stack, &d, &c));
    let (x, y) = (x.expect("c asks d"), y.expect("d asks c"));
    assert_eq!(x.id, y.id);
    assert!(are_friends(&stack, &c, &d).await);
    let statuses: HashSet<i32> = [x.status, y.status].into_iter().collect();
    assert!(statuses.contains(&(FriendRequestStatus::Accepted as i32)));
}

#[tokio::test]
async fn the_addressee_and_the_requester_are_notified_on_their_gateways() {
    let stack = Stack::start(TTL).await;
    let (a, b) = (user(), user());
    let mut gateway_a = stack.gateway_queue("gw-a").await;
    let mut gateway_b = stack.gateway_queue("gw-b").await;
    stack.connect_user("gw-a", &a, "laptop").await;
    stack.connect_user("gw-b", &b, "phone").await;
    stack.connect_user("gw-b", &b, "tablet").await;

    let request = send(&stack, &a, &b).await.expect("send");
    let event = gateway_b
        .expect("friend_request", |p| {
            matches!(p, event::Payload::FriendRequest(_))
        })
        .await;
    assert_eq!(
        event.recipient_ids,
        vec![b.clone()],
        "one copy per instance"
    );
    let Some(event::Payload::FriendRequest(notified)) = event.payload else {
        unreachable!()
    };
    assert_eq!(notified.id, request.id);
    assert_eq!(notified.status, FriendRequestStatus::Pending as i32);

    accept(&stack, &b, &request.id).await.expect("accept");
    let event = gateway_a
        .expect("friend_accepted", |p| {
            matches!(p, event::Payload::FriendAccepted(_))
        })
        .await;
    assert_eq!(event.recipient_ids, vec![a.clone()]);
    let Some(event::Payload::FriendAccepted(notified)) = event.payload else {
        unreachable!()
    };
    assert_eq!(notified.id, request.id);
    assert_eq!(notified.status, FriendRequestStatus::Accepted as i32);

    // Nothing about the request went to a's gateway, nothing about the acceptance to b's.
    let stray_a = gateway_a.drain(Duration::from_millis(300)).await;
    assert!(
        !stray_a
            .iter()
            .any(|e| matches!(e.payload, Some(event::Payload::FriendRequest(_))))
    );
    let stray_b = gateway_b.drain(Duration::from_millis(300)).await;
    assert!(
        !stray_b
            .iter()
            .any(|e| matches!(e.payload, Some(event::Payload::FriendAccepted(_))))
    );
}

#[tokio::test]
async fn sending_works_while_nobody_is_online() {
    let stack = Stack::start(TTL).await;
    let (a, b) = (user(), user());
    // No registrations: routing finds no instance and nothing is published, but the
    // request is stored and listed.
    let request = send(&stack, &a, &b).await.expect("send");
    let listed = pending(&stack, &b, RequestDirection::Incoming).await;
    assert_eq!(listed[0].id, request.id);
}
