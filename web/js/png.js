/**
 * Reading the text chunks of a PNG in the browser (tEXt, zTXt, iTXt), where SaveImage stores the
 * `workflow` (editor JSON) and `prompt` (API JSON), and the `comf` chunks (laid out like tEXt) where
 * animated PNGs keep them.
 */

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * @param {ArrayBuffer} buffer the PNG file
 * @returns {Promise<Record<string, string>>} keyword → text (empty when not a PNG)
 */
export async function readPngText(buffer) {
  const bytes = new Uint8Array(buffer);
  const out = {};
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) return out;
  const view = new DataView(buffer);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8");
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = latin1.decode(bytes.subarray(pos + 4, pos + 8));
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    pos += 12 + length;
    if (type === "IEND") break;
    try {
      if (type === "tEXt" || type === "comf") {
        const zero = data.indexOf(0);
        if (zero > 0) out[latin1.decode(data.subarray(0, zero))] = latin1.decode(data.subarray(zero + 1));
      } else if (type === "zTXt") {
        const zero = data.indexOf(0);
        if (zero > 0) out[latin1.decode(data.subarray(0, zero))] = latin1.decode(await inflate(data.subarray(zero + 2)));
      } else if (type === "iTXt") {
        const zero = data.indexOf(0);
        if (zero <= 0) continue;
        const keyword = latin1.decode(data.subarray(0, zero));
        const compressed = data[zero + 1] === 1;
        let p = zero + 3;
        p = data.indexOf(0, p) + 1; // language tag
        p = data.indexOf(0, p) + 1; // translated keyword
        if (p <= 0) continue;
        const text = data.subarray(p);
        out[keyword] = utf8.decode(compressed ? await inflate(text) : text);
      }
    } catch (err) {
      console.warn(`unreadable ${type} chunk`, err);
    }
  }
  return out;
}

/**
 * The workflow a PNG carries: the editor JSON if present, else the API prompt.
 * @returns {Promise<{workflow?: any, prompt?: any}>}
 */
export async function workflowFromPng(buffer) {
  const text = await readPngText(buffer);
  const parse = (s) => {
    try {
      return s ? JSON.parse(s) : undefined;
    } catch {
      return undefined;
    }
  };
  const workflow = parse(text.workflow);
  if (workflow) return { workflow };
  const prompt = parse(text.prompt);
  return prompt ? { prompt } : {};
}
