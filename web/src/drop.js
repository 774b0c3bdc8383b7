// Files from a drop (folders walked recursively) or from a file input, as {file, name, size}.

export function filesFromInput(input) {
  return [...input.files].map((file) => ({ file, name: file.name, size: file.size }));
}

export async function filesFromDrop(dataTransfer) {
  const entries = [...dataTransfer.items]
    .filter((item) => item.kind === "file")
    .map((item) => item.webkitGetAsEntry?.());
  if (entries.length === 0 || entries.some((e) => !e)) {
    return [...dataTransfer.files].map((file) => ({ file, name: file.name, size: file.size }));
  }
  const out = [];
  for (const entry of entries) await walk(entry, out);
  return out;
}

async function walk(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ file, name: file.name, size: file.size });
    return;
  }
  const reader = entry.createReader();
  for (;;) {
    // readEntries answers at most 100 entries per call: read until it answers none.
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    for (const child of batch) await walk(child, out);
  }
}
