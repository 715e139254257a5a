// @tus/server with @tus/file-store on 127.0.0.1: the reference tus 1.0.0 server our upload
// client is tested and benchmarked against (tests/test_upload_peers.py, bench/upload_bench.py).
//
//   node tus_node_server.mjs DIR PORT [DELAY_MS]
//
// Uploads are stored in DIR (one data file per upload, its metadata in DIR/ID.json), served
// under http://127.0.0.1:PORT/files/. DELAY_MS > 0 holds every PATCH that long before it is
// handled, so a test can stop the client mid-way at a known pace. With the environment variable
// FINISH_HOOK_SECONDS, every finished upload runs `sleep SECONDS` as a child process before its
// response (bench/serve_stall_bench.py: a slow completion hook). Prints "listening" once ready.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const hookSeconds = process.env.FINISH_HOOK_SECONDS
const run = promisify(execFile)

const [dir, port, delay] = process.argv.slice(2)
const wait = Number(delay || 0)
const server = new Server({
  path: '/files',
  datastore: new FileStore({ directory: dir }),
  async onIncomingRequest(req) {
    if (wait > 0 && req.method === 'PATCH') await new Promise((done) => setTimeout(done, wait))
  },
  async onUploadFinish() {
    if (hookSeconds) await run('sleep', [hookSeconds])
    return {}
  },
})
const http = server.listen({ host: '127.0.0.1', port: Number(port) }, () => console.log('listening'))
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => http.close(() => process.exit(0)))
