// Upload one file with tus-js-client (the real npm package), for onward's interop tests and
// benchmarks. One JSON object per line on stdout: {"event": "url"|"chunk"|"paused"|"done"|"error"}.
//
//   node tus_upload.mjs --endpoint URL --file PATH [--protocol tus-v1|ietf-draft-05]
//        [--chunk-size BYTES] [--upload-url URL] [--pause-after BYTES] [--header 'Name: value']
//
// --upload-url resumes an upload created by an earlier (killed) run: tus-js-client asks the
// server for its offset (HEAD) and continues from there. --pause-after stops sending once the
// server has acknowledged that many bytes and then waits, so a test can kill it mid-upload.
import fs from 'node:fs'
import tus from 'tus-js-client'

const args = { protocol: 'tus-v1', chunkSize: Infinity, headers: {} }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i += 2) {
  const [name, value] = [argv[i], argv[i + 1]]
  if (name === '--endpoint') args.endpoint = value
  else if (name === '--file') args.file = value
  else if (name === '--protocol') args.protocol = value
  else if (name === '--chunk-size') args.chunkSize = Number(value)
  else if (name === '--upload-url') args.uploadUrl = value
  else if (name === '--pause-after') args.pauseAfter = Number(value)
  else if (name === '--header') {
    const at = value.indexOf(':')
    args.headers[value.slice(0, at).trim()] = value.slice(at + 1).trim()
  } else {
    console.error(`unknown option ${name}`)
    process.exit(2)
  }
}
const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n')
const size = fs.statSync(args.file).size

const upload = new tus.Upload(fs.createReadStream(args.file), {
  endpoint: args.endpoint,
  uploadUrl: args.uploadUrl ?? null,
  protocol: args.protocol,
  chunkSize: args.chunkSize,
  uploadSize: size,
  headers: args.headers,
  retryDelays: null,
  metadata: { filename: args.file.split('/').pop(), filetype: 'application/octet-stream' },
  onUploadUrlAvailable() {
    emit({ event: 'url', url: upload.url })
  },
  onChunkComplete(_chunk, accepted, total) {
    emit({ event: 'chunk', accepted, total })
    if (args.pauseAfter !== undefined && accepted >= args.pauseAfter && accepted < total) {
      upload.abort(false).then(() => {
        emit({ event: 'paused', accepted })
        setInterval(() => {}, 1000) // wait to be killed
      })
    }
  },
  onSuccess() {
    emit({ event: 'done', url: upload.url })
  },
  onError(error) {
    emit({ event: 'error', message: String(error) })
    process.exit(1)
  },
})
upload.start()
