//! Auth's gRPC client to the user service.

use beehive_common::grpc::{AddrError, ClientChannel, ClientStack};
use beehive_common::{Component, Settings, Shutdown};
use beehive_proto::v1::user_service_client::UserServiceClient;

/// The user service client auth uses.
pub type UserClient = UserServiceClient<ClientChannel>;

/// Connects (lazily, DNS-balanced, with deadline and load shedding) to the user
/// service at `BEEHIVE_USER_ADDR`.
pub fn connect(settings: &Settings, shutdown: &Shutdown) -> Result<UserClient, AddrError> {
    let channel = ClientStack::connect(Component::User, settings, shutdown)?;
    Ok(UserServiceClient::new(channel))
}
