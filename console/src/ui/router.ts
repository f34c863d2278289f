// Routes live in the URL fragment (#/chats, #/c/<id>, ...), so the gateway serves one
// page and every other path stays a 404.
import { useEffect, useState } from "preact/hooks";

export interface Route {
  path: string[];
  query: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const raw = hash.replace(/^#/, "");
  const [p, q = ""] = raw.split("?", 2);
  const path = p.split("/").filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  return { path, query: new URLSearchParams(q) };
}

export function href(path: string[], query?: Record<string, string | number | undefined>): string {
  let h = `#/${path.map(encodeURIComponent).join("/")}`;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== "") qs.set(k, String(v));
    const s = qs.toString();
    if (s) h += `?${s}`;
  }
  return h;
}

export function navigate(path: string[], query?: Record<string, string | number | undefined>, replace = false): void {
  const h = href(path, query);
  if (replace) history.replaceState(null, "", h);
  else location.hash = h;
  if (replace) window.dispatchEvent(new HashChangeEvent("hashchange"));
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}
