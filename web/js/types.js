/**
 * Socket types: which output may feed which input (the same rule as the server's graph/types.py)
 * and the colour each type is drawn in.
 */

export const ANY = "*";
/** Types that are edited as widgets on the node (a link of the same type may replace the widget). */
export const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);

/** @param {string} type */
function parts(type) {
  return new Set(type.split(",").map((p) => p.trim()));
}

/**
 * Whether an output of `outputType` may feed an input of `inputType`: equal names, `*` on either side,
 * or comma-separated unions ("INT,FLOAT") that share a member. Case matters, as on the server.
 * @param {string|number} outputType @param {string|number} inputType
 */
export function typesCompatible(outputType, inputType) {
  const a = normalise(outputType);
  const b = normalise(inputType);
  if (a === b || a === ANY || b === ANY) return true;
  if (!a.includes(",") && !b.includes(",")) return false;
  const pa = parts(a);
  for (const p of parts(b)) if (pa.has(p)) return true;
  return false;
}

/** litegraph uses 0 / "" for "any"; combos arrive as arrays. */
function normalise(type) {
  if (type === 0 || type === "" || type == null) return ANY;
  if (Array.isArray(type)) return "COMBO";
  return String(type);
}

/** Colours of the common socket types; other types get a stable colour from their name. */
const COLOURS = {
  MODEL: "#b39ddb", CLIP: "#ffd54f", VAE: "#ef5350", CONDITIONING: "#ffa931", LATENT: "#ff7eb6",
  IMAGE: "#64b5f6", MASK: "#81c784", CONTROL_NET: "#00d0a0", UPSCALE_MODEL: "#a0a0ff", CLIP_VISION: "#a8dadc",
  CLIP_VISION_OUTPUT: "#ad7452", STYLE_MODEL: "#c2ffae", GLIGEN: "#d0c0ff", SAMPLER: "#ecb4b4",
  SIGMAS: "#cdffcd", NOISE: "#b0b0b0", GUIDER: "#66ffff", INT: "#7ec8e3", FLOAT: "#8fd4a8",
  STRING: "#d6e685", BOOLEAN: "#e0a0d0", COMBO: "#c9c9c9", "*": "#d0d0d0",
};

/** @param {string} type @returns {string} a CSS colour */
export function typeColour(type) {
  const t = normalise(type);
  if (COLOURS[t]) return COLOURS[t];
  let h = 0;
  for (const ch of t) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360}, 55%, 65%)`;
}

/** The known colours, for litegraph's per-type tables. */
export function knownColours() {
  return { ...COLOURS };
}
