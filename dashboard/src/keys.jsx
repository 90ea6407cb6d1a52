// Keys: the list the caller may see (the API shows a member only their own), creation
// with the secret shown once, revocation and rotation. Viewers get no write controls;
// the API refuses their changes anyway.
import { useEffect, useState } from "preact/hooks";
import { call } from "./api.js";
import { when } from "./format.js";
import { ErrorNote, mayWrite } from "./parts.jsx";

/** The secret of a key just created or rotated: shown once, with a copy button. */
function SecretOnce({ issued, onDone }) {
  const [copied, setCopied] = useState(false);
  async function copy() {
    try {
      await navigator.clipboard.writeText(issued.secret);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  }
  return (
    <section class="secret" role="status" aria-label="New secret">
      <p>
        The secret of <strong>{issued.key.name}</strong>. Copy it now: it is not stored and
        will not be shown again.
      </p>
      <code data-testid="secret">{issued.secret}</code>
      <div class="row">
        <button type="button" onClick={copy}>{copied ? "Copied" : "Copy"}</button>
        <button type="button" onClick={onDone}>Done</button>
      </div>
    </section>
  );
}

function CreateKey({ onIssued }) {
  const [name, setName] = useState("");
  const [models, setModels] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const list = models.split(",").map((m) => m.trim()).filter(Boolean);
      onIssued(await call("POST", "/api/keys", { name, models: list }));
      setName("");
      setModels("");
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }
  return (
    <form class="row" onSubmit={submit} aria-label="Create a key">
      <label>
        Name
        <input name="key-name" value={name} required onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label>
        Models (comma-separated, empty: all)
        <input name="key-models" value={models} onInput={(e) => setModels(e.currentTarget.value)} />
      </label>
      <button type="submit" disabled={busy}>Create key</button>
      <ErrorNote error={error} />
    </form>
  );
}

export function KeysPage({ me }) {
  const [keys, setKeys] = useState(null);
  const [error, setError] = useState(null);
  const [issued, setIssued] = useState(null);
  const writer = mayWrite(me);

  async function load() {
    try {
      setKeys(await call("GET", "/api/keys"));
      setError(null);
    } catch (e) {
      setError(e);
    }
  }
  useEffect(() => {
    load();
  }, []);

  async function act(key, action) {
    if (action === "revoke" && !confirm(`Revoke ${key.name}? Calls with it stop.`)) return;
    try {
      if (action === "revoke") await call("POST", `/api/keys/${encodeURIComponent(key.id)}/revoke`);
      else setIssued(await call("POST", `/api/keys/${encodeURIComponent(key.id)}/rotate`, { grace_seconds: 0 }));
      await load();
    } catch (e) {
      setError(e);
    }
  }

  return (
    <>
      {writer && <CreateKey onIssued={(i) => { setIssued(i); load(); }} />}
      {issued && <SecretOnce issued={issued} onDone={() => setIssued(null)} />}
      <ErrorNote error={error} />
      {keys === null && !error && <p class="loading">Loading keys…</p>}
      {keys && keys.length === 0 && <p>No keys yet.</p>}
      {keys && keys.length > 0 && (
        <div class="scroll">
          <table data-testid="keys">
            <thead>
              <tr>
                <th>Name</th><th>Prefix</th><th>User</th><th>Team</th><th>Models</th>
                <th>Limits (rpm / tpm)</th><th>Status</th><th>Created</th>
                {writer && <th>Actions</th>}
              </tr>
            </thead>
            <tbody>
              {keys.map((k) => (
                <tr key={k.id}>
                  <td>{k.name}</td>
                  <td><code>{k.prefix}</code></td>
                  <td>{k.user || "—"}</td>
                  <td>{k.team || "—"}</td>
                  <td>{k.models.length ? k.models.join(", ") : "all"}</td>
                  <td>{k.requests_per_minute ?? "default"} / {k.tokens_per_minute ?? "default"}</td>
                  <td>{k.status}</td>
                  <td>{when(k.created_at_ms)}</td>
                  {writer && (
                    <td class="actions">
                      {k.status === "active" && (
                        <>
                          <button type="button" onClick={() => act(k, "rotate")}>Rotate</button>
                          <button type="button" class="danger" onClick={() => act(k, "revoke")}>Revoke</button>
                        </>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
