// Usage: the calls the caller may see, newest first, filtered and paged by the API's
// cursor; the CSV link downloads exactly the calls the same filter selects.
import { useEffect, useState } from "preact/hooks";
import { call, withQuery } from "./api.js";
import { count, dollars, when } from "./format.js";
import { ErrorNote } from "./parts.jsx";

const PAGE = 50;
const FILTERS = ["key", "user", "team", "model", "provider"];

export function UsagePage() {
  const [draft, setDraft] = useState({});
  const [filter, setFilter] = useState({});
  const [cursors, setCursors] = useState([null]);
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    setPage(null);
    call("GET", withQuery("/api/usage/calls", { ...filter, limit: PAGE, cursor }))
      .then((p) => { setPage(p); setError(null); })
      .catch(setError);
  }, [filter, cursor]);

  function apply(event) {
    event.preventDefault();
    setFilter({ ...draft });
    setCursors([null]);
  }

  return (
    <>
      <form class="row" onSubmit={apply} aria-label="Filter calls">
        {FILTERS.map((name) => (
          <label>
            {name}
            <input name={`filter-${name}`} value={draft[name] || ""}
              onInput={(e) => setDraft({ ...draft, [name]: e.currentTarget.value })} />
          </label>
        ))}
        <button type="submit">Filter</button>
        <a class="button" href={withQuery("/api/usage/export.csv", filter)} download="usage.csv">
          Download CSV
        </a>
      </form>
      <ErrorNote error={error} />
      {page === null && !error && <p class="loading">Loading calls…</p>}
      {page && page.calls.length === 0 && <p>No calls match.</p>}
      {page && page.calls.length > 0 && (
        <div class="scroll">
          <table data-testid="calls">
            <thead>
              <tr>
                <th>Time</th><th>Key</th><th>User</th><th>Model</th><th>Provider</th>
                <th>Input</th><th>Cache read</th><th>Cache write</th><th>Output</th>
                <th>Cost</th><th>Flags</th><th>Status</th>
              </tr>
            </thead>
            <tbody>
              {page.calls.map((c) => (
                <tr key={c.request_id} data-request-id={c.request_id}>
                  <td>{when(c.finished_at_ms)}</td>
                  <td><code>{c.key_id}</code></td>
                  <td>{c.user || "—"}</td>
                  <td>{c.model}</td>
                  <td>{c.provider}</td>
                  <td class="num">{count(c.input_uncached)}</td>
                  <td class="num">{count(c.cache_read)}</td>
                  <td class="num">{count(c.cache_write)}</td>
                  <td class="num">{count(c.output)}</td>
                  <td class="num" data-testid="cost">{dollars(c.cost_usd)}</td>
                  <td>{[c.partial && "partial", c.estimated && "estimated"].filter(Boolean).join(", ")}</td>
                  <td>{c.status}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div class="row">
        <button type="button" disabled={cursors.length === 1}
          onClick={() => setCursors(cursors.slice(0, -1))}>Newer</button>
        <button type="button" disabled={!page || !page.next_cursor}
          onClick={() => setCursors([...cursors, page.next_cursor])}>Older</button>
      </div>
    </>
  );
}
