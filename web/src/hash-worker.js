// Hashes files with BLAKE3 (hash-wasm) off the page's thread, one file at a time, in 4 MiB slices.
import { createBLAKE3 } from "hash-wasm";

const SLICE = 4 * 1024 * 1024;
const hasher = createBLAKE3(); // one WASM instance per worker, re-initialised per file

self.onmessage = async (event) => {
  const { id, file } = event.data;
  try {
    const h = await hasher;
    h.init();
    for (let offset = 0; offset < file.size; offset += SLICE) {
      const end = Math.min(offset + SLICE, file.size);
      h.update(new Uint8Array(await file.slice(offset, end).arrayBuffer()));
      self.postMessage({ id, done: end });
    }
    self.postMessage({ id, hash: h.digest("hex") });
  } catch (err) {
    self.postMessage({ id, error: String(err?.message ?? err) });
  }
};
