// The JSON objects of Beehive's public API (API.md, v1). IDs are opaque strings.

export interface User {
  id: string;
  username: string;
  nickname: string;
  avatar: string;
  description: string;
  /** Only on the caller's own user. */
  email?: string | null;
  created_at?: string;
}

export type MsgType = "text" | "image" | "voice" | "file";

export interface Message {
  id: string;
  conversation_id: string;
  seq: number;
  sender_id: string;
  client_msg_id: string;
  msg_type: MsgType;
  content: string;
  file_id?: string | null;
  created_at?: string;
}

export interface Conversation {
  id: string;
  kind: "direct" | "group";
  name: string;
  avatar: string;
  owner_id?: string | null;
  member_ids: string[];
  last_seq: number;
  last_message?: Message | null;
  unread_count: number;
  read_seq: number;
  updated_at?: string;
}

export interface FriendRequest {
  id: string;
  from_user_id: string;
  to_user_id: string;
  message: string;
  status: "pending" | "accepted" | "rejected" | "expired";
  created_at?: string;
}

export interface Presence {
  user_id: string;
  online: boolean;
  devices: number;
  last_seen?: string | null;
}

export interface Receipt {
  user_id: string;
  delivered_seq: number;
  read_seq: number;
}

export interface SearchHit {
  message: Message;
  /** HTML-escaped content with matches wrapped in `<em>`...`</em>`. */
  highlight: string;
}

export interface FileMeta {
  id: string;
  sha256: string;
  size: number;
  content_type: string;
  filename: string;
  created_at?: string;
}

export interface AuthResult {
  user: User;
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

export interface Tokens {
  access_token: string;
  refresh_token: string;
  /** Milliseconds since the epoch at which the access token expires. */
  expires_at: number;
  /** Milliseconds since the epoch at which it was received. */
  issued_at?: number;
}

export interface SendInput {
  client_msg_id?: string;
  conversation_id?: string;
  to_user_id?: string;
  msg_type?: MsgType;
  content: string;
  file_id?: string;
}

export type KickReason = "logout" | "password_changed" | "session_revoked" | string;

/** Frames the server pushes (API.md, "Server to client"). */
export type ServerFrame =
  | { type: "message"; data: { message: Message } }
  | { type: "ack"; id?: string; data: { client_msg_id: string; message: Message } }
  | { type: "error"; id?: string; data: { code: string; message: string } }
  | { type: "receipt"; data: { conversation_id: string; user_id: string; delivered_seq: number; read_seq: number } }
  | { type: "typing"; data: { conversation_id: string; user_id: string } }
  | { type: "presence"; data: { user_id: string; online: boolean } }
  | { type: "friend_request"; data: { request: FriendRequest } }
  | { type: "friend_accepted"; data: { request: FriendRequest } }
  | { type: "conversation_updated"; data: { conversation: Conversation } }
  | { type: "sync_done"; id?: string; data: { cursors: Record<string, number>; has_more: boolean } }
  | { type: "pong"; id?: string; data: Record<string, never> }
  | { type: "reconnect"; data: { after_ms: number } }
  | { type: "kicked"; data: { reason: KickReason } };
