// Upload one file to RhinoBox with tus-js-client (installed for the web page, from web/package-lock.json).
// Usage: node tus_js_upload.cjs ENDPOINT FILE PROTOCOL CHUNK_SIZE [STOP_AFTER_BYTES]
// With STOP_AFTER_BYTES the first upload is aborted once that many bytes are acknowledged, and a second
// Upload object resumes it from its URL, as a page reloaded mid-upload does.
// Prints one JSON line: {"url": ..., "result": <the RhinoBox-Result header, parsed>, "resumedFrom": N}.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const tus = require(path.join(__dirname, '..', '..', 'web', 'node_modules', 'tus-js-client'))

const [endpoint, file, protocol, chunkSize, stopAfter] = process.argv.slice(2)
const data = fs.readFileSync(file)
const token = process.env.RHINOBOX_TOKEN

function start (options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint,
      protocol,
      chunkSize: Number(chunkSize),
      retryDelays: [0, 200, 500],
      metadata: { filename: path.basename(file), filetype: 'application/octet-stream', comment: 'tus-js-client' },
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      ...options,
      onError: reject,
      onSuccess: (payload) => resolve({ upload, response: payload && payload.lastResponse }),
      onChunkComplete: (size, accepted) => {
        if (options.stopAt && accepted >= options.stopAt) {
          upload.abort().then(() => resolve({ upload, aborted: accepted }))
        }
      }
    })
    upload.start()
  })
}

async function main () {
  let resumedFrom = 0
  let first = await start({ stopAt: stopAfter ? Number(stopAfter) : 0 })
  if (first.aborted !== undefined) {
    resumedFrom = first.aborted
    first = await start({ uploadUrl: first.upload.url })
  }
  const header = first.response ? first.response.getHeader('RhinoBox-Result') : null
  console.log(JSON.stringify({ url: first.upload.url, result: header ? JSON.parse(header) : null, resumedFrom }))
}

main().catch((err) => { console.error(String(err)); process.exit(1) })
