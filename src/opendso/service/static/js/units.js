// Units and readable names for the element panel and the trends. Values arrive in SI units (W, var,
// VA, V, A, Ω, F, as OpenDSO stores them); a screen shows them with an SI prefix chosen by magnitude
// (103001.164 W -> 103.0 kW), fractions as %, per-unit values as p.u. The grid model's internal
// fields (ids, zero-sequence data, model switches, source bookkeeping) are not shown: the element
// panel lists only the fields in FIELDS, under a readable label.

const PREFIXES = [
  [1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"], [1, ""], [1e-3, "m"], [1e-6, "µ"], [1e-9, "n"],
];
// units that take an SI prefix; the others are shown as they are
const PREFIXABLE = new Set(["W", "var", "VA", "V", "A", "Ω", "F", "Wh", "S"]);
// units that go below the base unit (mΩ, nF); power, voltage and current never do (no "mW" near zero)
const SUB_UNIT = new Set(["Ω", "F", "S"]);

/** Decimals that keep about four significant digits for a number already scaled to 1..999. */
function digitsFor(x) {
  const a = Math.abs(x);
  if (a >= 100) return 1;
  if (a >= 10) return 2;
  return 3;
}

/** The SI prefix [factor, symbol] for a magnitude in `unit` (none for units that take none). */
export function prefixFor(unit, magnitude) {
  if (!PREFIXABLE.has(unit) || !Number.isFinite(magnitude) || magnitude === 0) return [1, ""];
  const a = Math.abs(magnitude);
  for (const [factor, symbol] of PREFIXES) {
    if (factor < 1 && !SUB_UNIT.has(unit)) break;
    if (a >= factor * 0.9995) return [factor, symbol];
  }
  return SUB_UNIT.has(unit) ? PREFIXES[PREFIXES.length - 1] : [1, ""];
}

/** {value, unit} for display: 103001.164 W -> {value: "103.0", unit: "kW"}. */
export function formatSI(value, unit) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return { value: "—", unit: "" };
  const v = Number(value);
  if (unit === "%" || unit === "p.u." || !PREFIXABLE.has(unit)) {
    const digits = unit === "%" ? 1 : unit === "p.u." ? 4 : Number.isInteger(v) ? 0 : 3;
    return { value: v.toFixed(digits), unit };
  }
  const [factor, symbol] = prefixFor(unit, v);
  const scaled = v / factor;
  return { value: scaled.toFixed(digitsFor(scaled)), unit: `${symbol}${unit}` };
}

/** "103.0 kW" */
export function formatQuantity(value, unit) {
  const f = formatSI(value, unit);
  return f.unit ? `${f.value} ${f.unit}` : f.value;
}

// -- measurement points ------------------------------------------------------------------------------
const QUANTITY_LABELS = {
  u: "Voltage", u_angle: "Voltage angle", p: "Active power", q: "Reactive power", i: "Current",
  i_angle: "Current angle", switch: "Position", fpi: "Fault indicator", tap: "Tap position", f: "Frequency",
  soc: "State of charge",
};

/** Readable name of a point's quantity ("Active power"), from its point_info. */
export function quantityLabel(info) {
  return QUANTITY_LABELS[info?.quantity] ?? info?.quantity ?? "Value";
}

/** A measured value for display: {value, unit}; switches and indicators as words. */
export function formatPoint(value, info) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return { value: "—", unit: "" };
  if (info?.quantity === "switch") return { value: Number(value) >= 0.5 ? "closed" : "open", unit: "" };
  if (info?.quantity === "fpi") return { value: Number(value) >= 0.5 ? "picked up" : "normal", unit: "" };
  if (info?.quantity === "soc") return formatSI(Number(value) * 100, "%");
  return formatSI(value, info?.unit ?? "");
}

// -- element fields ----------------------------------------------------------------------------------
const WINDING = ["Y", "YN", "D", "Z", "ZN"];
const LOAD_MODEL = ["constant power", "constant impedance", "constant current"];
const TERMINAL = {
  0: "branch, from end", 1: "branch, to end", 2: "source", 3: "shunt", 4: "load", 5: "generator",
  6: "three-winding branch, side 1", 7: "three-winding branch, side 2", 8: "three-winding branch, side 3", 9: "node",
};
const onOff = (v) => (v === null || v === undefined ? null : Number(v) ? "in service" : "out of service");
const connected = (v) => (v === null || v === undefined ? null : Number(v) ? "connected" : "disconnected");

// name -> [label, how]: how is a unit string (SI value), "%frac" (a fraction shown as %), "p.u.",
// "text", "int", or a function (value, fields, ctx) -> text (null: not shown)
const FIELDS = {
  std_type: ["Type", "text"],
  subnet: ["Subnet", "text"],
  zone: ["Zone", "text"],
  substation: ["Substation", "text"],
  profile: ["Profile", "text"],
  in_service: ["In service", (v) => (v === null || v === undefined ? null : v ? "yes" : "no")],
  status: ["Status", onOff],
  node: ["Node", (v, _f, ctx) => ctx.name(v)],
  from_node: ["From node", (v, _f, ctx) => ctx.name(v)],
  to_node: ["To node", (v, _f, ctx) => ctx.name(v)],
  from_status: ["From end", connected],
  to_status: ["To end", connected],
  element: ["Switched element", (v, _f, ctx) => ctx.name(v)],
  side: ["At", (v) => (Number(v) === 1 ? "to end" : "from end")],
  closed: ["Position", (v) => (Number(v) ? "closed" : "open")],
  u_rated: ["Rated voltage", "V"],
  length_km: ["Length", (v) => (v === null ? null : Number(v) < 1 ? `${(Number(v) * 1000).toFixed(0)} m` : `${Number(v).toFixed(2)} km`)],
  i_n: ["Rated current", "A"],
  r1: ["Resistance R1", "Ω"],
  x1: ["Reactance X1", "Ω"],
  c1: ["Capacitance C1", "F"],
  sn: ["Rated power", "VA"],
  sn_va: ["Rated power", "VA"],
  u1: ["Rated voltage, from side", "V"],
  u2: ["Rated voltage, to side", "V"],
  uk: ["Short-circuit voltage", "%frac"],
  pk: ["Short-circuit losses", "W"],
  i0: ["No-load current", "%frac"],
  p0: ["No-load losses", "W"],
  clock: ["Vector group", (v, f) => {
    const a = WINDING[f.winding_from];
    const b = WINDING[f.winding_to];
    return a && b ? `${a}${b.toLowerCase()}${v}` : `clock ${v}`;
  }],
  tap_pos: ["Tap position", (v, f) => `${v} (range ${f.tap_min} … ${f.tap_max})`],
  tap_side: ["Tap changer on", (v) => (Number(v) === 1 ? "to side" : "from side")],
  tap_size: ["Tap step", "V"],
  type: ["Load model", (v) => LOAD_MODEL[v] ?? `type ${v}`],
  p_specified: ["Active power (model)", "W"],
  q_specified: ["Reactive power (model)", "var"],
  scaling: ["Scaling", (v) => (v === null ? null : `${Number(v)}×`)],
  u_ref: ["Voltage set-point", "p.u."],
  u_ref_angle: ["Voltage angle set-point", (v) => (v === null ? null : `${((Number(v) * 180) / Math.PI).toFixed(1)}°`)],
  sk: ["Short-circuit power", "VA"],
  rx_ratio: ["R/X ratio", (v) => (v === null ? null : Number(v).toFixed(2))],
  measured_object: ["Measures", (v, _f, ctx) => ctx.name(v)],
  measured_terminal_type: ["Where", (v) => TERMINAL[v] ?? `terminal type ${v}`],
  u_sigma: ["Voltage accuracy (σ)", "V"],
  p_sigma: ["Active power accuracy (σ)", "W"],
  q_sigma: ["Reactive power accuracy (σ)", "var"],
  power_sigma: ["Power accuracy (σ)", "VA"],
  i_sigma: ["Current accuracy (σ)", "A"],
};

/**
 * The fields worth showing, as [label, text] rows in FIELDS order. `ctx.name(id)` names another element
 * (a node, the measured object). Fields not in FIELDS (ids, zero-sequence data, bookkeeping) and
 * empty values are left out.
 */
export function readableFields(fields, ctx) {
  const rows = [];
  const f = fields ?? {};
  for (const [key, [label, how]] of Object.entries(FIELDS)) {
    if (!(key in f) || (key === "in_service" && "status" in f)) continue;
    const v = f[key];
    if (v === null || v === undefined || v === "") continue;
    let text;
    if (typeof how === "function") text = how(v, f, ctx);
    else if (how === "text") text = String(v);
    else if (how === "int") text = String(v);
    else if (how === "%frac") text = formatQuantity(Number(v) * 100, "%");
    else text = formatQuantity(v, how);
    if (text !== null && text !== undefined && text !== "") rows.push([label, String(text)]);
  }
  return rows;
}
