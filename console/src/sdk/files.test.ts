import { describe, expect, it } from "vitest";
import type { HttpRequest, HttpResponse, HttpStack, PreviousUpload, UrlStorage } from "tus-js-client";
import { BeehiveClient, MemoryTokenStore } from "./client";
import { ApiError } from "./errors";
import { msgTypeFor, sha256Hex, uploadFile } from "./files";
import { apiError, fakeFetch, fakeJwt, json } from "./testing";

/** An in-memory tus 1.0.0 server behind tus-js-client's HttpStack interface. */
class FakeTusServer implements HttpStack {
  uploads = new Map<string, { length: number; bytes: number[]; metadata: string; fileId?: string }>();
  requests: Array<{ method: string; url: string; headers: Record<string, string> }> = [];
  /** Drop the connection once after this many bytes were stored in total. */
  failAfterBytes: number | null = null;
  next = 1;

  getName() {
    return "fake";
  }

  createRequest(method: string, url: string): HttpRequest {
    const headers: Record<string, string> = {};
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const server = this;
    let progress: (n: number) => void = () => {};
    return {
      getMethod: () => method,
      getURL: () => url,
      setHeader: (k, v) => void (headers[k.toLowerCase()] = v),
      getHeader: (k) => headers[k.toLowerCase()],
      setProgressHandler: (h) => void (progress = h),
      abort: () => Promise.resolve(),
      getUnderlyingObject: () => null,
      async send(body: Blob | null): Promise<HttpResponse> {
        server.requests.push({ method, url, headers: { ...headers } });
        return server.handle(method, url, headers, body, progress);
      },
    };
  }

  private async handle(method: string, url: string, headers: Record<string, string>, body: Blob | null, progress: (n: number) => void): Promise<HttpResponse> {
    const res = (status: number, h: Record<string, string> = {}): HttpResponse => ({
      getStatus: () => status,
      getHeader: (k) => ({ "tus-resumable": "1.0.0", ...Object.fromEntries(Object.entries(h).map(([a, b]) => [a.toLowerCase(), b])) })[k.toLowerCase()],
      getBody: () => "",
      getUnderlyingObject: () => null,
    });
    if (headers["tus-resumable"] !== "1.0.0") return res(412);
    if (!headers.authorization?.startsWith("Bearer ")) return res(401);
    if (method === "POST") {
      const id = `up${this.next++}`;
      this.uploads.set(id, { length: Number(headers["upload-length"]), bytes: [], metadata: headers["upload-metadata"] });
      return res(201, { Location: `http://gw/api/v1/files/uploads/${id}` });
    }
    const upload = this.uploads.get(url.split("/").pop() as string);
    if (!upload) return res(404);
    if (method === "HEAD") {
      return res(200, { "Upload-Offset": String(upload.bytes.length), "Upload-Length": String(upload.length), ...(upload.fileId ? { "Beehive-File-Id": upload.fileId } : {}) });
    }
    if (method === "PATCH") {
      if (headers["content-type"] !== "application/offset+octet-stream") return res(415);
      if (Number(headers["upload-offset"]) !== upload.bytes.length) return res(409);
      const chunk = new Uint8Array(await (body as Blob).arrayBuffer());
      for (const b of chunk) {
        if (this.failAfterBytes !== null && upload.bytes.length >= this.failAfterBytes) {
          this.failAfterBytes = null;
          throw new Error("connection reset");
        }
        upload.bytes.push(b);
      }
      progress(chunk.length);
      if (upload.bytes.length === upload.length) upload.fileId = `file-${url.split("/").pop()}`;
      return res(204, { "Upload-Offset": String(upload.bytes.length), ...(upload.fileId ? { "Beehive-File-Id": upload.fileId } : {}) });
    }
    return res(405);
  }
}

class MemoryUrlStorage implements UrlStorage {
  entries = new Map<string, PreviousUpload & { fingerprint: string }>();
  n = 0;
  findAllUploads() {
    return Promise.resolve([...this.entries.values()]);
  }
  findUploadsByFingerprint(fp: string) {
    return Promise.resolve([...this.entries.values()].filter((e) => e.fingerprint === fp));
  }
  removeUpload(key: string) {
    this.entries.delete(key);
    return Promise.resolve();
  }
  addUpload(fingerprint: string, upload: PreviousUpload) {
    const key = `k${this.n++}`;
    this.entries.set(key, { ...upload, fingerprint, urlStorageKey: key });
    return Promise.resolve(key);
  }
}

function client(check: () => Response = () => apiError(404, "not_found")) {
  const store = new MemoryTokenStore();
  store.save({ access_token: fakeJwt("u1"), refresh_token: "r", expires_at: Date.now() + 600_000 });
  const f = fakeFetch(check);
  return { client: new BeehiveClient({ baseUrl: "http://gw", fetch: f.fetch, store }), calls: f.calls };
}

const bytes = (n: number): Uint8Array<ArrayBuffer> => new Uint8Array(Array.from({ length: n }, (_, i) => (i * 7) % 251));
const named = (data: Uint8Array<ArrayBuffer>, name: string, type: string) => Object.assign(new Blob([data], { type }), { name });

describe("uploadFile", () => {
  it("hashes, creates a tus upload with metadata, sends chunks and returns Beehive-File-Id", async () => {
    const server = new FakeTusServer();
    const { client: c, calls } = client();
    const data = bytes(2500);
    const sha = await sha256Hex(new Blob([data]));
    const progress: number[] = [];
    const result = await uploadFile(c, named(data, "photo.png", "image/png"), {
      httpStack: server, urlStorage: new MemoryUrlStorage(), chunkSize: 1000, onProgress: (sent) => progress.push(sent),
    });
    expect(result).toEqual({ fileId: "file-up1", sha256: sha, instant: false, resumed: false });
    expect(calls[0].body).toEqual({ sha256: sha, size: 2500, filename: "photo.png", content_type: "image/png" });
    expect(server.uploads.get("up1")?.bytes).toEqual([...data]);
    const post = server.requests[0];
    expect(post.method).toBe("POST");
    expect(post.url).toBe("http://gw/api/v1/files/uploads");
    expect(post.headers["upload-length"]).toBe("2500");
    const meta = Object.fromEntries(post.headers["upload-metadata"].split(",").map((kv) => { const [k, v] = kv.split(" "); return [k, atob(v)]; }));
    expect(meta).toEqual({ filename: "photo.png", sha256: sha, content_type: "image/png" });
    expect(server.requests.filter((r) => r.method === "PATCH")).toHaveLength(3);
    expect(progress.at(-1)).toBe(2500);
  });

  it("resumes after a dropped connection from the server's offset", async () => {
    const server = new FakeTusServer();
    server.failAfterBytes = 1500;
    const { client: c } = client();
    const data = bytes(3000);
    const result = await uploadFile(c, named(data, "a.bin", ""), {
      httpStack: server, urlStorage: new MemoryUrlStorage(), chunkSize: 1000, retryDelays: [0, 0],
    });
    expect(result.fileId).toBe("file-up1");
    expect(server.uploads.get("up1")?.bytes).toEqual([...data]);
    const methods = server.requests.map((r) => r.method);
    expect(methods).toContain("HEAD"); // asked where to continue
    expect(server.uploads.size).toBe(1);
  });

  it("continues an interrupted upload of the same content in a later call (after a reload)", async () => {
    const server = new FakeTusServer();
    const storage = new MemoryUrlStorage();
    const { client: c } = client();
    const data = bytes(3000);
    server.failAfterBytes = 1000;
    // no retries: the first attempt fails like a closed tab
    await expect(uploadFile(c, named(data, "v.ogg", "audio/ogg"), { httpStack: server, urlStorage: storage, chunkSize: 1000, retryDelays: [] })).rejects.toThrow();
    expect(server.uploads.get("up1")?.bytes.length).toBe(1000);
    const again = await uploadFile(c, named(data, "v.ogg", "audio/ogg"), { httpStack: server, urlStorage: storage, chunkSize: 1000, retryDelays: [] });
    expect(again).toMatchObject({ fileId: "file-up1", resumed: true });
    expect(server.uploads.size).toBe(1);
    const patches = server.requests.filter((r) => r.method === "PATCH").map((r) => r.headers["upload-offset"]);
    expect(patches).toEqual(["0", "1000", "1000", "2000"]);
    expect(storage.entries.size).toBe(0); // forgotten once complete
  });

  it("uses the instant upload when the server already has the content", async () => {
    const server = new FakeTusServer();
    const { client: c } = client(() => json(200, { file: { id: "f-existing", sha256: "x", size: 3, content_type: "text/plain", filename: "t.txt" } }));
    const result = await uploadFile(c, named(bytes(3), "t.txt", "text/plain"), { httpStack: server, urlStorage: new MemoryUrlStorage() });
    expect(result).toMatchObject({ fileId: "f-existing", instant: true });
    expect(server.requests).toHaveLength(0);
  });

  it("reports a server without files as 404 not_found", async () => {
    const { client: c } = client();
    const none: HttpStack = {
      getName: () => "none",
      createRequest: (method, url) => ({
        getMethod: () => method, getURL: () => url, setHeader() {}, getHeader: () => undefined, setProgressHandler() {},
        abort: () => Promise.resolve(), getUnderlyingObject: () => null,
        send: () => Promise.resolve({ getStatus: () => 404, getHeader: () => undefined, getBody: () => '{"error":{"code":"not_found","message":"no such endpoint"}}', getUnderlyingObject: () => null }),
      }),
    };
    const error = await uploadFile(c, named(bytes(10), "x", ""), { httpStack: none, urlStorage: new MemoryUrlStorage(), retryDelays: [] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(404);
  });

  it("picks the message type from the content type", () => {
    expect(msgTypeFor("image/png")).toBe("image");
    expect(msgTypeFor("audio/webm")).toBe("voice");
    expect(msgTypeFor("application/pdf")).toBe("file");
  });
});
