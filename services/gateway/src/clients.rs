//! The gRPC clients of every service the gateway calls, reached through one typed
//! method per call.
//!
//! Each method decides once whether its call is retried: idempotent calls (reads,
//! marks that only move forward, sends deduplicated by `client_msg_id`) retry
//! `unavailable` within one budget shared by every call of this [`Clients`] value;
//! everything else is tried once. Every method returns a boxed `Send` future: awaiting
//! a tonic call on a `ClientChannel` directly inside a spawned task trips a rustc
//! limitation (higher-ranked lifetimes in the `fn(BoxError) -> BoxError` error mapper
//! are "not general enough" when auto traits of async state machines are proven), and
//! boxing at a concrete site sidesteps it. It also keeps the large call state off the
//! socket task's future while no call is running.

use std::future::Future;

use beehive_common::grpc::{ClientChannel, ClientStack, Retry};
use beehive_common::{Component, ComponentError, Error, Settings, Shutdown};
use beehive_proto::v1 as pb;
use beehive_proto::v1::auth_service_client::AuthServiceClient;
use beehive_proto::v1::file_service_client::FileServiceClient;
use beehive_proto::v1::message_service_client::MessageServiceClient;
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use beehive_proto::v1::search_service_client::SearchServiceClient;
use beehive_proto::v1::social_service_client::SocialServiceClient;
use beehive_proto::v1::user_service_client::UserServiceClient;
use futures::future::BoxFuture;
use std::sync::{Arc, OnceLock};

use crate::sends::SendBatcher;
use tonic::{Response, Status};

/// Deadline of a streaming file call (one PATCH body, one download).
pub const FILE_STREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// One gRPC call in flight: the response message or the error in API.md's terms.
pub type Call<T> = BoxFuture<'static, Result<T, Error>>;

/// The gateway's gRPC clients. Each is a balanced, layered channel (deadline,
/// shedding concurrency limit); cloning is cheap and shares the channels and the
/// retry budget.
#[derive(Clone)]
pub struct Clients {
    auth: AuthServiceClient<ClientChannel>,
    user: UserServiceClient<ClientChannel>,
    social: SocialServiceClient<ClientChannel>,
    message: MessageServiceClient<ClientChannel>,
    presence: PresenceServiceClient<ClientChannel>,
    search: SearchServiceClient<ClientChannel>,
    file: FileServiceClient<ClientChannel>,
    /// The file service for streaming calls (a PATCH body, a download): their
    /// deadline is the stream timeout, not the one of ordinary calls.
    file_stream: FileServiceClient<ClientChannel>,
    /// Retry budget shared by the idempotent calls of every handler and socket.
    retry: Retry,
    /// Sends, batched into SendMessages calls; started on first use (it needs a
    /// runtime, and most clones never send).
    sends: Arc<OnceLock<SendBatcher>>,
}

/// Tries `call` once.
fn once<Req, T, Fut>(request: Req, call: impl FnOnce(Req) -> Fut) -> Call<T>
where
    Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
    T: Send + 'static,
{
    let future = call(request);
    Box::pin(async move {
        future
            .await
            .map(Response::into_inner)
            .map_err(|status| Error::from_status(&status))
    })
}

/// Runs `call`, retrying `unavailable` within `retry`'s budget. Only for idempotent
/// calls.
pub(crate) fn retried<Req, T, Fut>(
    retry: &Retry,
    request: Req,
    call: impl Fn(Req) -> Fut + Send + 'static,
) -> Call<T>
where
    Req: Clone + Send + 'static,
    Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
    T: Send + 'static,
{
    let retry = retry.clone();
    Box::pin(async move {
        retry
            .idempotent(move || {
                let call = call(request.clone());
                async move { call.await.map_err(broken_is_unavailable) }
            })
            .await
            .map(Response::into_inner)
            .map_err(|status| Error::from_status(&status))
    })
}

/// A call whose connection broke mid-way (the service was killed or restarted) ends
/// as `unknown` with the transport error as its source, not as a status the service
/// sent. For an idempotent call that is the service being unavailable: the call is
/// retried, and answered `unavailable` if the retries run out, never `internal`.
pub(crate) fn broken_is_unavailable(status: Status) -> Status {
    if status.code() == tonic::Code::Unknown && std::error::Error::source(&status).is_some() {
        tracing::warn!(%status, "a connection broke during a call; retrying it");
        Status::unavailable("the service went away during the call, retry later")
    } else {
        status
    }
}

/// The error of a PATCH's call. A connection to the file service that broke mid-call
/// (the process died or was restarted) arrives as `unknown` with the transport error
/// as its source, not a status the service sent: that is the service being
/// unavailable, and the client resumes (tus: HEAD, then PATCH from the stored offset),
/// not an internal error.
fn write_error(status: &tonic::Status) -> Error {
    if status.code() == tonic::Code::Unknown && std::error::Error::source(status).is_some() {
        tracing::warn!(%status, "the file service's connection broke during an upload");
        return Error::Unavailable(
            "the file service went away during the upload; HEAD the upload and resume from its offset"
                .to_owned(),
        );
    }
    Error::from_status(status)
}

impl Clients {
    /// Connects to every component at its configured address. Nothing is dialled
    /// here: channels connect lazily and re-resolve DNS in the background.
    pub fn connect(settings: &Settings, shutdown: &Shutdown) -> Result<Self, ComponentError> {
        let channel = |component: Component| {
            ClientStack::connect(component, settings, shutdown)
                .map_err(|e| ComponentError::failed(Component::Gateway, e))
        };
        Ok(Self {
            auth: AuthServiceClient::new(channel(Component::Auth)?),
            user: UserServiceClient::new(channel(Component::User)?),
            social: SocialServiceClient::new(channel(Component::Social)?),
            message: MessageServiceClient::new(channel(Component::Message)?),
            presence: PresenceServiceClient::new(channel(Component::Presence)?),
            search: SearchServiceClient::new(channel(Component::Search)?),
            file: FileServiceClient::new(channel(Component::File)?),
            file_stream: {
                let mut streaming = settings.clone();
                streaming.grpc_timeout = FILE_STREAM_TIMEOUT;
                FileServiceClient::new(
                    ClientStack::connect(Component::File, &streaming, shutdown)
                        .map_err(|e| ComponentError::failed(Component::Gateway, e))?,
                )
                .max_decoding_message_size(4 << 20)
            },
            retry: Retry::default(),
            sends: Arc::default(),
        })
    }

    /// The auth client for the token verifier, which keeps its own key and
    /// revocation caches and calls auth on its own schedule.
    pub fn auth_for_verifier(&self) -> AuthServiceClient<ClientChannel> {
        self.auth.clone()
    }

    // --- auth: none of these is idempotent (each opens, rotates or ends sessions),
    // except listing keys, which today's behaviour tries once.

    pub fn register(&self, request: pb::AuthRegisterRequest) -> Call<pb::TokenResponse> {
        let mut auth = self.auth.clone();
        once(request, move |r| async move { auth.register(r).await })
    }

    pub fn login(&self, request: pb::LoginRequest) -> Call<pb::TokenResponse> {
        let mut auth = self.auth.clone();
        once(request, move |r| async move { auth.login(r).await })
    }

    pub fn refresh(&self, request: pb::RefreshRequest) -> Call<pb::TokenResponse> {
        let mut auth = self.auth.clone();
        once(request, move |r| async move { auth.refresh(r).await })
    }

    pub fn logout(&self, request: pb::LogoutRequest) -> Call<pb::LogoutResponse> {
        let mut auth = self.auth.clone();
        once(request, move |r| async move { auth.logout(r).await })
    }

    pub fn change_password(
        &self,
        request: pb::AuthChangePasswordRequest,
    ) -> Call<pb::AuthChangePasswordResponse> {
        let mut auth = self.auth.clone();
        once(
            request,
            move |r| async move { auth.change_password(r).await },
        )
    }

    pub fn list_signing_keys(
        &self,
        request: pb::ListSigningKeysRequest,
    ) -> Call<pb::ListSigningKeysResponse> {
        let mut auth = self.auth.clone();
        once(
            request,
            move |r| async move { auth.list_signing_keys(r).await },
        )
    }

    // --- user

    pub fn send_verification_code(
        &self,
        request: pb::SendVerificationCodeRequest,
    ) -> Call<pb::SendVerificationCodeResponse> {
        let mut user = self.user.clone();
        once(request, move |r| async move {
            user.send_verification_code(r).await
        })
    }

    pub fn update_profile(
        &self,
        request: pb::UpdateProfileRequest,
    ) -> Call<pb::UpdateProfileResponse> {
        let mut user = self.user.clone();
        once(
            request,
            move |r| async move { user.update_profile(r).await },
        )
    }

    pub fn get_user(&self, request: pb::GetUserRequest) -> Call<pb::GetUserResponse> {
        let user = self.user.clone();
        retried(&self.retry, request, move |r| {
            let mut user = user.clone();
            async move { user.get_user(r).await }
        })
    }

    pub fn batch_get_users(
        &self,
        request: pb::BatchGetUsersRequest,
    ) -> Call<pb::BatchGetUsersResponse> {
        let user = self.user.clone();
        retried(&self.retry, request, move |r| {
            let mut user = user.clone();
            async move { user.batch_get_users(r).await }
        })
    }

    pub fn search_users(&self, request: pb::SearchUsersRequest) -> Call<pb::SearchUsersResponse> {
        let user = self.user.clone();
        retried(&self.retry, request, move |r| {
            let mut user = user.clone();
            async move { user.search_users(r).await }
        })
    }

    // --- social

    pub fn send_friend_request(
        &self,
        request: pb::SendFriendRequestRequest,
    ) -> Call<pb::SendFriendRequestResponse> {
        let mut social = self.social.clone();
        once(request, move |r| async move {
            social.send_friend_request(r).await
        })
    }

    pub fn accept_friend_request(
        &self,
        request: pb::AcceptFriendRequestRequest,
    ) -> Call<pb::AcceptFriendRequestResponse> {
        let mut social = self.social.clone();
        once(request, move |r| async move {
            social.accept_friend_request(r).await
        })
    }

    pub fn reject_friend_request(
        &self,
        request: pb::RejectFriendRequestRequest,
    ) -> Call<pb::RejectFriendRequestResponse> {
        let mut social = self.social.clone();
        once(request, move |r| async move {
            social.reject_friend_request(r).await
        })
    }

    pub fn delete_friend(
        &self,
        request: pb::DeleteFriendRequest,
    ) -> Call<pb::DeleteFriendResponse> {
        let mut social = self.social.clone();
        once(
            request,
            move |r| async move { social.delete_friend(r).await },
        )
    }

    pub fn list_friend_requests(
        &self,
        request: pb::ListFriendRequestsRequest,
    ) -> Call<pb::ListFriendRequestsResponse> {
        let social = self.social.clone();
        retried(&self.retry, request, move |r| {
            let mut social = social.clone();
            async move { social.list_friend_requests(r).await }
        })
    }

    pub fn list_friends(&self, request: pb::ListFriendsRequest) -> Call<pb::ListFriendsResponse> {
        let social = self.social.clone();
        retried(&self.retry, request, move |r| {
            let mut social = social.clone();
            async move { social.list_friends(r).await }
        })
    }

    pub fn are_friends(&self, request: pb::AreFriendsRequest) -> Call<pb::AreFriendsResponse> {
        let social = self.social.clone();
        retried(&self.retry, request, move |r| {
            let mut social = social.clone();
            async move { social.are_friends(r).await }
        })
    }

    pub fn filter_friends(
        &self,
        request: pb::FilterFriendsRequest,
    ) -> Call<pb::FilterFriendsResponse> {
        let social = self.social.clone();
        retried(&self.retry, request, move |r| {
            let mut social = social.clone();
            async move { social.filter_friends(r).await }
        })
    }

    // --- message: group changes are tried once; reads, marks (they only move
    // forward) and sends (deduplicated on sender and client_msg_id) are retried.

    pub fn create_group(&self, request: pb::CreateGroupRequest) -> Call<pb::ConversationResponse> {
        let mut message = self.message.clone();
        once(
            request,
            move |r| async move { message.create_group(r).await },
        )
    }

    pub fn update_group(&self, request: pb::UpdateGroupRequest) -> Call<pb::ConversationResponse> {
        let mut message = self.message.clone();
        once(
            request,
            move |r| async move { message.update_group(r).await },
        )
    }

    pub fn add_members(&self, request: pb::AddMembersRequest) -> Call<pb::ConversationResponse> {
        let mut message = self.message.clone();
        once(
            request,
            move |r| async move { message.add_members(r).await },
        )
    }

    pub fn remove_member(
        &self,
        request: pb::RemoveMemberRequest,
    ) -> Call<pb::RemoveMemberResponse> {
        let mut message = self.message.clone();
        once(
            request,
            move |r| async move { message.remove_member(r).await },
        )
    }

    pub fn list_conversations(
        &self,
        request: pb::ListConversationsRequest,
    ) -> Call<pb::ListConversationsResponse> {
        let message = self.message.clone();
        retried(&self.retry, request, move |r| {
            let mut message = message.clone();
            async move { message.list_conversations(r).await }
        })
    }

    pub fn get_conversation(
        &self,
        request: pb::GetConversationRequest,
    ) -> Call<pb::ConversationResponse> {
        let message = self.message.clone();
        retried(&self.retry, request, move |r| {
            let mut message = message.clone();
            async move { message.get_conversation(r).await }
        })
    }

    /// Stores a message; batched with the gateway's other sends (see [`crate::sends`]).
    pub fn send_message(&self, request: pb::SendMessageRequest) -> Call<pb::SendMessageResponse> {
        let sends = self
            .sends
            .get_or_init(|| SendBatcher::start(self.message.clone(), self.retry.clone()))
            .clone();
        Box::pin(async move { sends.send(request).await })
    }

    pub fn list_messages(
        &self,
        request: pb::ListMessagesRequest,
    ) -> Call<pb::ListMessagesResponse> {
        let message = self.message.clone();
        retried(&self.retry, request, move |r| {
            let mut message = message.clone();
            async move { message.list_messages(r).await }
        })
    }

    pub fn sync(&self, request: pb::SyncRequest) -> Call<pb::SyncResponse> {
        let message = self.message.clone();
        retried(&self.retry, request, move |r| {
            let mut message = message.clone();
            async move { message.sync(r).await }
        })
    }

    pub fn mark_delivered(&self, request: pb::MarkRequest) -> Call<pb::MarkResponse> {
        let message = self.message.clone();
        retried(&self.retry, request, move |r| {
            let mut message = message.clone();
            async move { message.mark_delivered(r).await }
        })
    }

    pub fn mark_read(&self, request: pb::MarkRequest) -> Call<pb::MarkResponse> {
        let message = self.message.clone();
        retried(&self.retry, request, move |r| {
            let mut message = message.clone();
            async move { message.mark_read(r).await }
        })
    }

    pub fn list_receipts(
        &self,
        request: pb::ListReceiptsRequest,
    ) -> Call<pb::ListReceiptsResponse> {
        let message = self.message.clone();
        retried(&self.retry, request, move |r| {
            let mut message = message.clone();
            async move { message.list_receipts(r).await }
        })
    }

    /// Typing is transient: not retried, a lost one is harmless.
    pub fn notify_typing(
        &self,
        request: pb::NotifyTypingRequest,
    ) -> Call<pb::NotifyTypingResponse> {
        let mut message = self.message.clone();
        once(
            request,
            move |r| async move { message.notify_typing(r).await },
        )
    }

    pub fn filter_conversation_peers(
        &self,
        request: pb::FilterConversationPeersRequest,
    ) -> Call<pb::FilterConversationPeersResponse> {
        let message = self.message.clone();
        retried(&self.retry, request, move |r| {
            let mut message = message.clone();
            async move { message.filter_conversation_peers(r).await }
        })
    }

    // --- presence

    pub fn get_presence(&self, request: pb::GetPresenceRequest) -> Call<pb::GetPresenceResponse> {
        let presence = self.presence.clone();
        retried(&self.retry, request, move |r| {
            let mut presence = presence.clone();
            async move { presence.get_presence(r).await }
        })
    }

    pub fn register_connection(
        &self,
        request: pb::RegisterConnectionRequest,
    ) -> Call<pb::RegisterConnectionResponse> {
        let presence = self.presence.clone();
        retried(&self.retry, request, move |r| {
            let mut presence = presence.clone();
            async move { presence.register_connection(r).await }
        })
    }

    pub fn unregister_connection(
        &self,
        request: pb::UnregisterConnectionRequest,
    ) -> Call<pb::UnregisterConnectionResponse> {
        let presence = self.presence.clone();
        retried(&self.retry, request, move |r| {
            let mut presence = presence.clone();
            async move { presence.unregister_connection(r).await }
        })
    }

    /// Not retried: the next period's heartbeat names the same sockets again.
    pub fn heartbeat(&self, request: pb::HeartbeatRequest) -> Call<pb::HeartbeatResponse> {
        let mut presence = self.presence.clone();
        once(request, move |r| async move { presence.heartbeat(r).await })
    }

    // --- search: a read, retried.

    pub fn search_messages(
        &self,
        request: pb::SearchMessagesRequest,
    ) -> Call<pb::SearchMessagesResponse> {
        let search = self.search.clone();
        retried(&self.retry, request, move |r| {
            let mut search = search.clone();
            async move { search.search_messages(r).await }
        })
    }

    // --- file: creating files, uploads and writes are not idempotent; reads are.

    pub fn check_file(&self, request: pb::CheckFileRequest) -> Call<pb::FileResponse> {
        let mut file = self.file.clone();
        once(request, move |r| async move { file.check_file(r).await })
    }

    pub fn create_upload(&self, request: pb::CreateUploadRequest) -> Call<pb::UploadResponse> {
        let mut file = self.file.clone();
        once(request, move |r| async move { file.create_upload(r).await })
    }

    pub fn get_upload(&self, request: pb::GetUploadRequest) -> Call<pb::UploadResponse> {
        let file = self.file.clone();
        retried(&self.retry, request, move |r| {
            let mut file = file.clone();
            async move { file.get_upload(r).await }
        })
    }

    pub fn terminate_upload(
        &self,
        request: pb::GetUploadRequest,
    ) -> Call<pb::TerminateUploadResponse> {
        let mut file = self.file.clone();
        once(
            request,
            move |r| async move { file.terminate_upload(r).await },
        )
    }

    /// One PATCH: `first` (the header fields) and then the data messages of `rest`.
    pub fn write_upload(
        &self,
        first: pb::WriteUploadRequest,
        rest: impl futures::Stream<Item = pb::WriteUploadRequest> + Send + 'static,
    ) -> Call<pb::UploadResponse> {
        let mut file = self.file_stream.clone();
        let stream = futures::StreamExt::chain(futures::stream::once(async move { first }), rest);
        Box::pin(async move {
            file.write_upload(stream)
                .await
                .map(Response::into_inner)
                .map_err(|status| write_error(&status))
        })
    }

    pub fn get_file_meta(&self, request: pb::GetFileMetaRequest) -> Call<pb::FileResponse> {
        let file = self.file.clone();
        retried(&self.retry, request, move |r| {
            let mut file = file.clone();
            async move { file.get_file_meta(r).await }
        })
    }

    /// Opens a download (or thumbnail) stream.
    pub fn read_file(
        &self,
        request: pb::ReadFileRequest,
    ) -> Call<tonic::Streaming<pb::ReadFileResponse>> {
        let file = self.file_stream.clone();
        retried(&self.retry, request, move |r| {
            let mut file = file.clone();
            async move { file.read_file(r).await }
        })
    }

    pub fn delete_file(&self, request: pb::GetFileMetaRequest) -> Call<pb::DeleteFileResponse> {
        let mut file = self.file.clone();
        once(request, move |r| async move { file.delete_file(r).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_broken_mid_upload_is_unavailable_not_internal() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        assert!(matches!(write_error(&broken), Error::Unavailable(_)));
        // An `unknown` the service itself answered stays an internal error.
        let answered = tonic::Status::unknown("something odd");
        assert!(matches!(write_error(&answered), Error::Internal(_)));
        assert!(matches!(
            write_error(&tonic::Status::not_found("upload")),
            Error::NotFound(_)
        ));
    }

    #[test]
    fn an_idempotent_call_whose_connection_broke_is_retried_as_unavailable() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(
            broken_is_unavailable(broken).code(),
            tonic::Code::Unavailable
        );
        let answered = tonic::Status::unknown("something odd");
        assert_eq!(broken_is_unavailable(answered).code(), tonic::Code::Unknown);
        let denied = tonic::Status::permission_denied("no");
        assert_eq!(
            broken_is_unavailable(denied).code(),
            tonic::Code::PermissionDenied
        );
    }
}
