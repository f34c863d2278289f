import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "../sdk";
import { useStore } from "./hooks";
import { describeError } from "./store";

/** Loads a file (or its thumbnail) with the access token and gives an object URL. */
function useBlobUrl(fileId: string, thumbnail?: "small" | "medium", enabled = true): { url: string | null; error: string } {
  const store = useStore();
  const [url, setUrl] = useState<string | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    if (!enabled) return;
    let alive = true;
    let made: string | null = null;
    store.client.fileBlob(fileId, thumbnail).then(
      (blob) => {
        if (!alive) return;
        made = URL.createObjectURL(blob);
        setUrl(made);
      },
      (e: unknown) => alive && setError(e instanceof ApiError && e.status === 404 ? "file unavailable" : describeError(e)),
    );
    return () => {
      alive = false;
      if (made) URL.revokeObjectURL(made);
    };
  }, [fileId, thumbnail, enabled]);
  return { url, error };
}

function FullImage({ fileId, name, onClose }: { fileId: string; name: string; onClose: () => void }) {
  const { url, error } = useBlobUrl(fileId);
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
  }, []);
  return (
    <dialog ref={ref} class="viewer" aria-label={name} onClose={onClose}>
      {url ? <img src={url} alt={name} data-testid="full-image" /> : <p role="status">{error || "Loading…"}</p>}
      <form method="dialog"><button type="submit">Close</button></form>
    </dialog>
  );
}

export function FileMessage({ fileId, kind, name }: { fileId: string; kind: string; name: string }) {
  const store = useStore();
  const [open, setOpen] = useState(false);
  const thumb = useBlobUrl(fileId, "medium", kind === "image");
  const voice = useBlobUrl(fileId, undefined, kind === "voice");
  if (kind === "image") {
    return (
      <div class="file image">
        <button type="button" class="thumb" onClick={() => setOpen(true)} aria-label={`Open image ${name}`}>
          {thumb.url ? <img src={thumb.url} alt={name} data-testid="thumbnail" /> : <span class="muted">{thumb.error || "Loading image…"}</span>}
        </button>
        {open && <FullImage fileId={fileId} name={name} onClose={() => setOpen(false)} />}
      </div>
    );
  }
  if (kind === "voice") {
    return (
      <div class="file voice">
        {voice.url ? <audio controls src={voice.url} aria-label={`Voice message ${name}`} /> : <span class="muted">{voice.error || "Loading voice message…"}</span>}
      </div>
    );
  }
  return (
    <div class="file other">
      <button type="button" class="link" onClick={async () => {
        try {
          const blob = await store.client.fileBlob(fileId);
          const url = URL.createObjectURL(blob);
          const a = document.createElement("a");
          a.href = url;
          a.download = name || "file";
          a.click();
          setTimeout(() => URL.revokeObjectURL(url), 10_000);
        } catch (e) {
          store.notify(describeError(e), "error");
        }
      }}>Download {name}</button>
    </div>
  );
}
