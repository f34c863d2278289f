import { useState } from "preact/hooks";
import type { User } from "../sdk";
import { PresenceDot } from "./chat";
import { useStore } from "./hooks";
import { href, navigate } from "./router";
import { describeError } from "./store";

export function FriendsView() {
  const store = useStore();
  const [q, setQ] = useState("");
  const [results, setResults] = useState<User[] | null>(null);
  const [error, setError] = useState("");
  const [sent, setSent] = useState(new Set<string>());
  const run = async (f: () => Promise<unknown>) => {
    setError("");
    try {
      await f();
    } catch (e) {
      setError(describeError(e));
    }
  };
  const outgoingTo = new Set(store.outgoing.map((r) => r.to_user_id));
  return (
    <section class="panel" aria-labelledby="friends-title">
      <h2 id="friends-title">Friends</h2>
      <form class="row" role="search" onSubmit={(e) => {
        e.preventDefault();
        void run(async () => {
          const users = await store.client.searchUsers(q.trim());
          for (const u of users) store.users.set(u.id, u);
          setResults(users.filter((u) => u.id !== store.me?.id));
        });
      }}>
        <label for="user-search" class="sr-only">Find people by username or nickname</label>
        <input id="user-search" type="search" placeholder="Find people by username or nickname" value={q} required onInput={(e) => setQ((e.currentTarget as HTMLInputElement).value)} />
        <button type="submit">Find people</button>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      {results && (
        <section aria-labelledby="results-title">
          <h3 id="results-title">People</h3>
          {results.length === 0 && <p class="muted">Nobody found.</p>}
          <ul role="list" class="people" data-testid="user-results">
            {results.map((u) => {
              const friend = store.friends.includes(u.id);
              const pending = outgoingTo.has(u.id) || sent.has(u.id);
              return (
                <li key={u.id}>
                  <span>{store.displayName(u.id)}</span>
                  {friend ? <span class="muted">Friend</span> : pending ? <span class="muted">Request sent</span> : (
                    <button type="button" onClick={() => void run(async () => {
                      const r = await store.client.sendFriendRequest(u.id);
                      store.outgoing = [...store.outgoing, r];
                      setSent(new Set([...sent, u.id]));
                      store.changed();
                    })}>Add {u.username}</button>
                  )}
                </li>
              );
            })}
          </ul>
        </section>
      )}
      <section aria-labelledby="incoming-title">
        <h3 id="incoming-title">Friend requests</h3>
        {store.incoming.length === 0 && <p class="muted">No pending requests.</p>}
        <ul role="list" class="people" data-testid="incoming-requests">
          {store.incoming.map((r) => (
            <li key={r.id}>
              <span>{store.displayName(r.from_user_id)}{r.message && <q>{r.message}</q>}</span>
              <span class="actions">
                <button type="button" onClick={() => void run(async () => {
                  const friend = await store.client.acceptFriendRequest(r.id);
                  store.users.set(friend.id, friend);
                  store.incoming = store.incoming.filter((x) => x.id !== r.id);
                  await store.loadFriends();
                })}>Accept {store.shortName(r.from_user_id)}</button>
                <button type="button" class="secondary" onClick={() => void run(async () => {
                  await store.client.rejectFriendRequest(r.id);
                  store.incoming = store.incoming.filter((x) => x.id !== r.id);
                  store.changed();
                })}>Reject</button>
              </span>
            </li>
          ))}
        </ul>
        {store.outgoing.length > 0 && (
          <>
            <h3>Sent requests</h3>
            <ul role="list" class="people">
              {store.outgoing.map((r) => <li key={r.id}><span>{store.displayName(r.to_user_id)}</span><span class="muted">pending</span></li>)}
            </ul>
          </>
        )}
      </section>
      <section aria-labelledby="friendlist-title">
        <h3 id="friendlist-title">Your friends</h3>
        {store.friends.length === 0 && <p class="muted">No friends yet: find people above.</p>}
        <ul role="list" class="people" data-testid="friends">
          {store.friends.map((id) => {
            const direct = store.directWith(id);
            return (
              <li key={id} data-user={id}>
                <span><PresenceDot userId={id} /> {store.displayName(id)}</span>
                <span class="actions">
                  <a class="button" href={direct ? href(["c", direct.id]) : href(["dm", id])}>Chat with {store.shortName(id)}</a>
                  <button type="button" class="secondary" onClick={() => void run(async () => {
                    await store.client.removeFriend(id);
                    await store.loadFriends();
                  })}>Remove</button>
                </span>
              </li>
            );
          })}
        </ul>
      </section>
      <p><button type="button" class="link" onClick={() => navigate(["new-group"])}>Create a group…</button></p>
    </section>
  );
}
