// Uploads over tus 1.0.0 (tus-js-client): hash the content, try the instant upload
// (POST /files/check), else create/resume an upload whose URL is remembered by the
// content's sha256, report progress, and read the file id from `Beehive-File-Id`.

import { Upload } from "tus-js-client";
import type { HttpStack, UrlStorage } from "tus-js-client";
import type { BeehiveClient } from "./client";
import { ApiError } from "./errors";
import type { FileMeta, MsgType } from "./types";

export interface UploadOptions {
  onProgress?: (sent: number, total: number) => void;
  /** Aborts the transfer (the upload stays resumable). */
  signal?: AbortSignal;
  /** Bytes per PATCH (default 1 MiB). */
  chunkSize?: number;
  /** Delays between retries of a failed request (default: up to ~30 s in total). */
  retryDelays?: number[];
  /** For tests and other runtimes; the browser defaults are XHR and localStorage. */
  httpStack?: HttpStack;
  urlStorage?: UrlStorage;
}

export interface UploadResult {
  fileId: string;
  sha256: string;
  /** True when the server already had the content (no bytes sent). */
  instant: boolean;
  /** True when an earlier, interrupted upload of the same content was continued. */
  resumed: boolean;
}

export class UploadError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = "UploadError";
  }
}

/** Lowercase hex SHA-256 of the blob. */
export async function sha256Hex(blob: Blob): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The message type for a file of this content type. */
export function msgTypeFor(contentType: string): MsgType {
  if (contentType.startsWith("image/")) return "image";
  if (contentType.startsWith("audio/")) return "voice";
  return "file";
}

/** Reads slices of a Blob: works in browsers (XHR sends Blobs) and in tests. */
const blobReader = {
  openFile(input: Blob) {
    return Promise.resolve({
      size: input.size,
      slice(start: number, end: number) {
        return Promise.resolve({ value: input.slice(start, end), done: end >= input.size });
      },
      close() {},
    });
  },
};

/** Uploads `file` (a File or Blob with a name) and returns its file id. */
export async function uploadFile(client: BeehiveClient, file: Blob & { name?: string }, options: UploadOptions = {}): Promise<UploadResult> {
  const filename = file.name || "file";
  const contentType = file.type || "application/octet-stream";
  const sha256 = await sha256Hex(file);
  options.signal?.throwIfAborted();
  const existing: FileMeta | null = await client.checkFile({ sha256, size: file.size, filename, content_type: contentType });
  if (existing) {
    options.onProgress?.(file.size, file.size);
    return { fileId: existing.id, sha256, instant: true, resumed: false };
  }
  const fingerprint = `beehive-upload:${client.userId ?? ""}:${sha256}:${file.size}`;
  return new Promise<UploadResult>((resolve, reject) => {
    let fileId: string | null = null;
    let resumed = false;
    let settled = false;
    const upload = new Upload(file, {
      endpoint: client.url("/files/uploads"),
      metadata: { filename, sha256, content_type: contentType },
      chunkSize: options.chunkSize ?? 1024 * 1024,
      retryDelays: options.retryDelays ?? [0, 1000, 2000, 4000, 8000, 15000],
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      fingerprint: () => Promise.resolve(fingerprint),
      fileReader: blobReader,
      ...(options.httpStack ? { httpStack: options.httpStack } : {}),
      ...(options.urlStorage ? { urlStorage: options.urlStorage } : {}),
      onBeforeRequest: async (req) => {
        req.setHeader("Authorization", `Bearer ${await client.accessToken()}`);
      },
      onAfterResponse: (_req, res) => {
        const id = res.getHeader("Beehive-File-Id") ?? res.getHeader("beehive-file-id");
        if (id) fileId = id;
      },
      onShouldRetry: (error) => {
        const status = error.originalResponse?.getStatus() ?? 0;
        // network errors, locks and server trouble are worth retrying; 4xx are not
        return status === 0 || status === 423 || status === 429 || status >= 500;
      },
      onProgress: (sent, total) => options.onProgress?.(sent, total),
      onSuccess: () => {
        settled = true;
        if (fileId) resolve({ fileId, sha256, instant: false, resumed });
        else reject(new UploadError("the upload finished but the server named no file (Beehive-File-Id missing)"));
      },
      onError: (error) => {
        if (settled) return;
        settled = true;
        const status = (error as { originalResponse?: { getStatus(): number } | null }).originalResponse?.getStatus();
        if (status === 404 && !resumed) reject(new ApiError(404, "not_found", "this server does not accept file uploads"));
        else if (status === 413) reject(new ApiError(413, "payload_too_large", "the file is larger than the server accepts"));
        else reject(new UploadError(error.message, status));
      },
    });
    options.signal?.addEventListener("abort", () => {
      if (settled) return;
      settled = true;
      void upload.abort(false);
      reject(new DOMException("upload aborted", "AbortError"));
    });
    upload
      .findPreviousUploads()
      .then((previous) => {
        if (previous.length > 0) {
          resumed = true;
          upload.resumeFromPreviousUpload(previous[0]);
        }
        upload.start();
      })
      .catch(() => upload.start());
  });
}
