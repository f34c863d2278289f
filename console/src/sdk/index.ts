// Beehive's JavaScript SDK: REST, the live WebSocket and tus uploads over the public API.
export * from "./types";
export * from "./errors";
export * from "./client";
export * from "./socket";
export * from "./timeline";
export * from "./files";
export * from "./highlight";
export { newClientMsgId } from "./ids";
export { Emitter } from "./emitter";
