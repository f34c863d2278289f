//! Friendship rules shared by the use cases.

use beehive_common::Error;
use beehive_proto::v1 as pb;

use crate::clients::Clients;

/// Direct messages require friendship: `permission_denied` (403) otherwise.
pub async fn require_friends(clients: &Clients, user_id: &str, other: &str) -> Result<(), Error> {
    let response = clients
        .are_friends(pb::AreFriendsRequest {
            user_id: user_id.to_owned(),
            other_user_id: other.to_owned(),
        })
        .await?;
    if !response.friends {
        return Err(Error::PermissionDenied(
            "direct messages require friendship".to_owned(),
        ));
    }
    Ok(())
}
