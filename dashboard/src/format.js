// How numbers and times read on screen. Money arrives as exact decimal strings and is
// shown exactly (trailing zeros dropped, at least cents), never through a float.

/** `"0.000123450000"` as `$0.00012345`, `"2.500000000000"` as `$2.50`. */
export function dollars(exact) {
  const [whole, fraction = ""] = String(exact).split(".");
  const kept = fraction.replace(/0+$/, "").padEnd(2, "0");
  return `$${whole}.${kept}`;
}

/** Unix ms as a local date and time, or a dash for none. */
export function when(ms) {
  if (ms === null || ms === undefined) return "—";
  return new Date(ms).toLocaleString();
}

/** A count with thousands separators. */
export function count(n) {
  return Number(n).toLocaleString();
}
