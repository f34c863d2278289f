import { useEffect, useRef, useState } from "preact/hooks";
import type { JSX } from "preact";
import { useStore } from "./hooks";
import { href, navigate, useRoute } from "./router";
import { describeError } from "./store";
import { ChatView, ConversationList, DraftChat, GroupSettings, NewGroup } from "./chat";
import { FriendsView } from "./friends";
import { SearchView } from "./search";

export function App() {
  const store = useStore();
  const route = useRoute();
  if (store.status === "loading") return <main class="center"><p role="status">Loading…</p></main>;
  if (store.status === "revoked") return <Revoked />;
  if (store.status === "signedOut") return route.path[0] === "signup" ? <SignUp /> : <SignIn />;
  return <Shell />;
}

function Notice() {
  const store = useStore();
  if (!store.notice) return null;
  return (
    <div class={`notice ${store.notice.kind}`} role={store.notice.kind === "error" ? "alert" : "status"}>
      <span>{store.notice.text}</span>
      <button type="button" class="link" onClick={() => { store.notice = null; store.changed(); }} aria-label="Dismiss">×</button>
    </div>
  );
}

function Field(props: { label: string; name: string; type?: string; value: string; onInput: (v: string) => void; autoComplete?: string; required?: boolean; hint?: string; inputMode?: JSX.HTMLAttributes["inputMode"] }) {
  const id = `f-${props.name}`;
  return (
    <div class="field">
      <label for={id}>{props.label}</label>
      <input id={id} name={props.name} type={props.type ?? "text"} value={props.value} required={props.required} autoComplete={props.autoComplete} inputMode={props.inputMode}
        onInput={(e) => props.onInput((e.currentTarget as HTMLInputElement).value)} aria-describedby={props.hint ? `${id}-hint` : undefined} />
      {props.hint && <small id={`${id}-hint`}>{props.hint}</small>}
    </div>
  );
}

function SignIn() {
  const store = useStore();
  const [login, setLogin] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      await store.signIn(login.trim(), password);
      // the shell moves from #/signin or #/signup to #/chats as soon as it shows
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="auth">
      <h1><span class="logo" aria-hidden="true">⬢</span> Beehive</h1>
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h2 id="signin-title">Sign in</h2>
        <Notice />
        <Field label="Username, email or user id" name="login" value={login} onInput={setLogin} autoComplete="username" required />
        <Field label="Password" name="password" type="password" value={password} onInput={setPassword} autoComplete="current-password" required />
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
        <p>No account? <a href={href(["signup"])}>Create one</a></p>
      </form>
    </main>
  );
}

function SignUp() {
  const store = useStore();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [nickname, setNickname] = useState("");
  const [email, setEmail] = useState("");
  const [code, setCode] = useState("");
  const [codeSent, setCodeSent] = useState(false);
  const [error, setError] = useState("");
  const [info, setInfo] = useState("");
  const [busy, setBusy] = useState(false);
  const sendCode = async () => {
    setError("");
    setInfo("");
    try {
      await store.client.sendCode(email.trim());
      setCodeSent(true);
      setInfo(`A 6-digit code was sent to ${email.trim()} (without SMTP the server logs it). It is valid for 5 minutes.`);
    } catch (err) {
      setError(describeError(err));
    }
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    setError("");
    if (email.trim() && !code.trim()) {
      setError(codeSent ? "Enter the code from the email." : "Send yourself a code first: an email address must be verified.");
      return;
    }
    setBusy(true);
    try {
      await store.signUp({ username: username.trim(), password, nickname: nickname.trim() || undefined, email: email.trim() || undefined, code: code.trim() || undefined });
      // the shell moves from #/signin or #/signup to #/chats as soon as it shows
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="auth">
      <h1><span class="logo" aria-hidden="true">⬢</span> Beehive</h1>
      <form onSubmit={submit} aria-labelledby="signup-title">
        <h2 id="signup-title">Create an account</h2>
        <Field label="Username" name="username" value={username} onInput={setUsername} autoComplete="username" required hint="3-32 characters: letters, digits, _ . -" />
        <Field label="Password" name="new-password" type="password" value={password} onInput={setPassword} autoComplete="new-password" required hint="8-128 characters" />
        <Field label="Nickname (optional)" name="nickname" value={nickname} onInput={setNickname} autoComplete="nickname" />
        <Field label="Email (optional)" name="email" type="email" value={email} onInput={(v) => { setEmail(v); setCodeSent(false); }} autoComplete="email" hint="With an email, a code sent to it confirms the address." />
        {email.trim() && (
          <div class="row">
            <button type="button" class="secondary" onClick={sendCode}>{codeSent ? "Send the code again" : "Send code"}</button>
            <Field label="Code" name="code" value={code} onInput={setCode} inputMode="numeric" autoComplete="one-time-code" />
          </div>
        )}
        {info && <p class="info" role="status">{info}</p>}
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>{busy ? "Creating…" : "Sign up"}</button>
        <p>Have an account? <a href={href(["signin"])}>Sign in</a></p>
      </form>
    </main>
  );
}

function Revoked() {
  const store = useStore();
  const reasons: Record<string, string> = {
    logout: "You signed out on another device or tab.",
    password_changed: "Your password was changed on another device.",
    session_revoked: "This session was revoked.",
  };
  return (
    <main class="auth">
      <h1><span class="logo" aria-hidden="true">⬢</span> Beehive</h1>
      <section class="card" role="alert" aria-labelledby="revoked-title">
        <h2 id="revoked-title">Session revoked</h2>
        <p>{reasons[store.revokedReason] ?? `The session ended (${store.revokedReason || "revoked"}).`}</p>
        <button type="button" onClick={() => { store.status = "signedOut"; store.changed(); navigate(["signin"], undefined, true); }}>Sign in again</button>
      </section>
    </main>
  );
}

function ConnectionBanner() {
  const store = useStore();
  const [, setTick] = useState(0);
  useEffect(() => {
    if (store.connection !== "reconnecting") return;
    const t = setInterval(() => setTick((n) => n + 1), 1000);
    return () => clearInterval(t);
  }, [store.connection]);
  const s = store.connection;
  if (s === "open" || s === "idle" || s === "closed" || s === "kicked") return <div role="status" aria-live="polite" class="sr-only" data-connection={s}>{s === "open" ? "Connected" : ""}</div>;
  const text = s === "offline" ? "Offline: waiting for the network…" : s === "connecting" ? "Connecting…" : "Reconnecting…";
  return <div class="banner" role="status" aria-live="polite" data-connection={s}>{text}</div>;
}

function Shell() {
  const store = useStore();
  const route = useRoute();
  const [q, setQ] = useState("");
  const searchRef = useRef<HTMLInputElement>(null);
  const [section, id, sub] = route.path;
  useEffect(() => {
    if (!section || section === "signin" || section === "signup") navigate(["chats"], undefined, true);
  }, [section]);
  useEffect(() => {
    store.setActive(section === "c" && id ? id : null);
  }, [section, id]);
  const requests = store.incoming.length;
  const inChat = section === "c" || section === "dm" || section === "new-group";
  const me = store.me;
  let main;
  if (section === "c" && id && sub === "settings") main = <GroupSettings id={id} />;
  else if (section === "c" && id) main = <ChatView key={id} id={id} focusSeq={Number(route.query.get("seq")) || undefined} />;
  else if (section === "dm" && id) main = <DraftChat key={id} userId={id} />;
  else if (section === "friends") main = <FriendsView />;
  else if (section === "search") main = <SearchView key={route.query.toString()} q={route.query.get("q") ?? ""} conversationId={route.query.get("c") ?? undefined} />;
  else if (section === "new-group") main = <NewGroup />;
  else main = <div class="empty"><p>Select a conversation, or find people under <a href={href(["friends"])}>Friends</a>.</p></div>;
  const listVisible = section === "chats" || !section;
  return (
    <div class={`shell ${inChat || section === "friends" || section === "search" ? "detail" : "list"}`}>
      <header class="top">
        <a class="brand" href={href(["chats"])} aria-label="Beehive conversations"><span class="logo" aria-hidden="true">⬢</span><span class="brand-name"> Beehive</span></a>
        <form class="search" role="search" onSubmit={(e) => { e.preventDefault(); if (q.trim()) navigate(["search"], { q: q.trim() }); }}>
          <label for="global-search" class="sr-only">Search all messages</label>
          <input id="global-search" ref={searchRef} type="search" placeholder="Search messages" value={q} onInput={(e) => setQ((e.currentTarget as HTMLInputElement).value)} />
          <button type="submit">Search</button>
        </form>
        <nav aria-label="Main">
          <a href={href(["chats"])} aria-current={listVisible ? "page" : undefined}>Chats</a>
          <a href={href(["friends"])} aria-current={section === "friends" ? "page" : undefined}>Friends{requests > 0 && <span class="badge" aria-label={`${requests} friend requests`}>{requests}</span>}</a>
        </nav>
        <div class="me">
          <span class="who" title={me?.id} data-testid="me">{me ? `@${me.username}` : ""}</span>
          <button type="button" class="secondary" onClick={() => void store.signOut().then(() => navigate(["signin"], undefined, true))}>Sign out</button>
        </div>
      </header>
      <ConnectionBanner />
      <Notice />
      <div class="body">
        <aside class="sidebar" aria-label="Conversations">
          <ConversationList activeId={section === "c" ? id : undefined} />
        </aside>
        <main class="main" id="main">{main}</main>
      </div>
    </div>
  );
}
