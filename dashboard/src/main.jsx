// The dashboard's shell: who is signed in, the navigation, and the page the path names.
// Every string from the API is rendered as a JSX text child, which Preact sets as text,
// never as HTML.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { call } from "./api.js";
import { KeysPage } from "./keys.jsx";
import { UsagePage } from "./usage.jsx";
import { OverviewPage } from "./overview.jsx";
import { ErrorNote } from "./parts.jsx";
import "./style.css";

const PAGES = [
  { path: "/", title: "Overview", page: OverviewPage },
  { path: "/keys", title: "Keys", page: KeysPage },
  { path: "/usage", title: "Usage", page: UsagePage },
];

function pageOf(path) {
  return PAGES.find((p) => p.path === path) || PAGES[0];
}

function Login({ onSignedIn }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const session = await call("POST", "/api/auth/login", { name, password });
      onSignedIn(session.user);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="login">
      <h1>Tollgate</h1>
      <form onSubmit={submit} aria-label="Sign in">
        <label>
          Name
          <input name="name" autocomplete="username" value={name} required
            onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Password
          <input name="password" type="password" autocomplete="current-password" value={password}
            required onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        <button type="submit" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
        <ErrorNote error={error} />
      </form>
    </main>
  );
}

function App() {
  // undefined: still asking who is signed in; null: nobody.
  const [me, setMe] = useState(undefined);
  const [error, setError] = useState(null);
  const [path, setPath] = useState(location.pathname);

  useEffect(() => {
    call("GET", "/api/auth/me")
      .then(setMe)
      .catch((e) => (e.status === 401 ? setMe(null) : setError(e)));
    const onPop = () => setPath(location.pathname);
    addEventListener("popstate", onPop);
    return () => removeEventListener("popstate", onPop);
  }, []);

  function go(event, to) {
    event.preventDefault();
    history.pushState(null, "", to);
    setPath(to);
  }

  async function logout() {
    try {
      await call("POST", "/api/auth/logout");
    } finally {
      setMe(null);
    }
  }

  if (error) return <main><ErrorNote error={error} /></main>;
  if (me === undefined) return <main><p class="loading">Loading…</p></main>;
  if (me === null) return <Login onSignedIn={setMe} />;

  const current = pageOf(path);
  const Page = current.page;
  return (
    <>
      <header>
        <strong class="brand">Tollgate</strong>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <a href={p.path} aria-current={p === current ? "page" : undefined}
              onClick={(e) => go(e, p.path)}>{p.title}</a>
          ))}
        </nav>
        <span class="who" data-testid="who">{me.name} ({me.role})</span>
        <button type="button" onClick={logout}>Sign out</button>
      </header>
      <main>
        <h1>{current.title}</h1>
        <Page me={me} />
      </main>
    </>
  );
}

// The page's own "Loading…" placeholder goes once the app takes over.
const root = document.getElementById("app");
root.textContent = "";
render(<App />, root);
