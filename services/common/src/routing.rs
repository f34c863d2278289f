//! Instance routing: which gateway instances hold connections of which users (the
//! presence service's `RouteUsers` answer), and how one event becomes one copy per
//! instance, narrowed to the recipients on it. Publishers of events (the message
//! relay, typing notifications, social and presence announcements) all route this way.

use std::collections::HashMap;

use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use beehive_proto::v1::{Event, InstanceUsers, RouteUsersRequest};

use crate::error::Error;
use crate::grpc::ClientChannel;

/// User id -> ids of the gateway instances holding a live connection of that user.
/// Users without a live connection are absent.
pub type InstancesOf = HashMap<String, Vec<String>>;

/// Inverts presence's routes (instance -> users) into [`InstancesOf`].
pub fn instances_of(routes: Vec<InstanceUsers>) -> InstancesOf {
    let mut out = InstancesOf::new();
    for route in routes {
        for user in route.user_ids {
            out.entry(user).or_default().push(route.instance_id.clone());
        }
    }
    out
}

/// Which gateway instances hold connections of `users`, in one `RouteUsers` call
/// (none when `users` is empty). Repeated users are asked for once.
pub async fn route_users(
    presence: &PresenceServiceClient<ClientChannel>,
    mut users: Vec<String>,
) -> Result<InstancesOf, Error> {
    users.sort_unstable();
    users.dedup();
    if users.is_empty() {
        return Ok(InstancesOf::new());
    }
    let routes = presence
        .clone()
        .route_users(RouteUsersRequest { user_ids: users })
        .await
        .map_err(|s| Error::from_status(&s))?
        .into_inner()
        .routes;
    Ok(instances_of(routes))
}

/// One copy of `event` per gateway instance holding any of its recipients, narrowed
/// to the recipients on that instance. Recipients on no instance are dropped (they
/// catch up with `sync` or by listing).
pub fn split_event(event: &Event, instances_of: &InstancesOf) -> Vec<(String, Event)> {
    let mut per_instance: HashMap<&str, Vec<String>> = HashMap::new();
    for user in &event.recipient_ids {
        for instance in instances_of.get(user.as_str()).into_iter().flatten() {
            per_instance
                .entry(instance.as_str())
                .or_default()
                .push(user.clone());
        }
    }
    per_instance
        .into_iter()
        .map(|(instance, recipients)| {
            let mut copy = event.clone();
            copy.recipient_ids = recipients;
            (instance.to_owned(), copy)
        })
        .collect()
}

/// [`split_event`] for each of `events`, with presence's routes as they come.
pub fn split_by_instance(events: Vec<Event>, routes: &[InstanceUsers]) -> Vec<(String, Event)> {
    let instances = instances_of(routes.to_vec());
    events
        .iter()
        .flat_map(|event| split_event(event, &instances))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(recipients: &[&str]) -> Event {
        Event {
            recipient_ids: recipients.iter().map(|r| (*r).to_owned()).collect(),
            ..Event::default()
        }
    }

    #[test]
    fn one_copy_per_instance_with_its_recipients_only() {
        let routes = vec![
            InstanceUsers {
                instance_id: "gw-a".to_owned(),
                user_ids: vec!["u1".to_owned(), "u2".to_owned()],
            },
            InstanceUsers {
                instance_id: "gw-b".to_owned(),
                user_ids: vec!["u2".to_owned()],
            },
        ];
        let mut routed = split_by_instance(vec![event(&["u1", "u2", "offline"])], &routes);
        routed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(routed.len(), 2);
        assert_eq!(routed[0].0, "gw-a");
        let mut on_a = routed[0].1.recipient_ids.clone();
        on_a.sort();
        assert_eq!(on_a, ["u1", "u2"]);
        assert_eq!(routed[1].0, "gw-b");
        assert_eq!(routed[1].1.recipient_ids, ["u2"]);
    }

    #[test]
    fn nobody_online_means_no_copies() {
        assert!(split_event(&event(&["u1"]), &InstancesOf::new()).is_empty());
    }
}
