//! Presence: who is online, visible only to the user, friends and members of a shared
//! conversation; anyone else is reported offline with no devices, so presence cannot
//! be used to probe strangers (API.md).

use std::collections::{HashMap, HashSet};

use beehive_common::Error;
use beehive_proto::v1 as pb;

use super::limits::MAX_PRESENCE_USERS;
use super::validate::check_id_count;
use crate::clients::Clients;

/// Which of `candidates` `viewer` may see: itself, its friends and the members of
/// conversations it shares with them.
pub async fn visible_to(
    clients: &Clients,
    viewer: &str,
    candidates: &[String],
) -> Result<HashSet<String>, Error> {
    let others: Vec<String> = candidates
        .iter()
        .filter(|id| *id != viewer)
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut visible = HashSet::with_capacity(candidates.len());
    if candidates.iter().any(|id| id == viewer) {
        visible.insert(viewer.to_owned());
    }
    if others.is_empty() {
        return Ok(visible);
    }
    // Both visibility checks at once: one round trip's latency, not two.
    let (friends, peers) = futures::future::try_join(
        clients.filter_friends(pb::FilterFriendsRequest {
            user_id: viewer.to_owned(),
            candidate_ids: others.clone(),
        }),
        clients.filter_conversation_peers(pb::FilterConversationPeersRequest {
            user_id: viewer.to_owned(),
            candidate_ids: others,
        }),
    )
    .await?;
    visible.extend(friends.friend_ids);
    visible.extend(peers.peer_ids);
    Ok(visible)
}

/// The presence of each of `user_ids` as `viewer` may see it, in the order asked
/// (duplicates repeated): at most [`MAX_PRESENCE_USERS`] ids.
pub async fn get(
    clients: &Clients,
    viewer: &str,
    user_ids: Vec<String>,
) -> Result<Vec<pb::UserPresence>, Error> {
    check_id_count("user_ids", &user_ids, MAX_PRESENCE_USERS)?;
    let visible = visible_to(clients, viewer, &user_ids).await?;
    let mut known = HashMap::new();
    if !visible.is_empty() {
        let response = clients
            .get_presence(pb::GetPresenceRequest {
                user_ids: visible.iter().cloned().collect(),
            })
            .await?;
        known.extend(
            response
                .presence
                .into_iter()
                .map(|p| (p.user_id.clone(), p)),
        );
    }
    Ok(report(user_ids, &visible, known))
}

/// Answers for every asked id: what the presence service knows for a visible user,
/// offline with no devices and no last-seen time for everyone else.
fn report(
    user_ids: Vec<String>,
    visible: &HashSet<String>,
    known: HashMap<String, pb::UserPresence>,
) -> Vec<pb::UserPresence> {
    user_ids
        .into_iter()
        .map(|user_id| match known.get(&user_id) {
            Some(p) if visible.contains(&user_id) => p.clone(),
            _ => pb::UserPresence {
                user_id,
                online: false,
                devices: 0,
                last_seen: None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(user_id: &str) -> pb::UserPresence {
        pb::UserPresence {
            user_id: user_id.into(),
            online: true,
            devices: 2,
            last_seen: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn invisible_users_are_offline_without_devices_or_last_seen() {
        let visible: HashSet<String> = ["friend".to_owned()].into();
        // Even if the presence service knew about a stranger, nothing leaks.
        let known: HashMap<String, pb::UserPresence> = [
            ("friend".to_owned(), online("friend")),
            ("stranger".to_owned(), online("stranger")),
        ]
        .into();
        let report = report(
            vec!["stranger".into(), "friend".into(), "stranger".into()],
            &visible,
            known,
        );
        let seen: Vec<(&str, bool, u32, bool)> = report
            .iter()
            .map(|p| {
                (
                    p.user_id.as_str(),
                    p.online,
                    p.devices,
                    p.last_seen.is_some(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("stranger", false, 0, false),
                ("friend", true, 2, true),
                ("stranger", false, 0, false)
            ]
        );
    }

    #[test]
    fn visible_users_unknown_to_presence_are_offline() {
        let visible: HashSet<String> = ["friend".to_owned()].into();
        let report = report(vec!["friend".into()], &visible, HashMap::new());
        assert!(!report[0].online);
        assert_eq!(report[0].devices, 0);
    }
}
