// Small pieces every page shows the same way.

/** An API error as a visible alert, or nothing. */
export function ErrorNote({ error }) {
  if (!error) return null;
  return <p class="error" role="alert">{error.message || String(error)}</p>;
}

/** What the user may change: admins everything, members their own, viewers nothing. */
export function mayWrite(me) {
  return me.role === "admin" || me.role === "member";
}
