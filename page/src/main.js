// The upload page of `onward serve`: tus-js-client does the protocol (chunks, retries, resume
// from the server's offset, URL storage); this file is the page around it. It talks only to its
// own origin: the endpoint is the server's upload collection, read from <main data-endpoint>.
import * as tus from 'tus-js-client'

const CHUNK = 16 * 1024 * 1024 // one PATCH each; the server checkpoints and verifies per request
// Retries of a failed request before the page gives up and shows the error with a Retry button:
// about five minutes, enough for a server restart or a short network outage. Progress resets it.
const RETRY_DELAYS = [0, 1000, 2000, 4000, 8000, 15000, 30000, 30000, 30000, 60000, 60000, 60000]
const TOKEN_KEY = 'onward-token'
const PROBE_ID = 'A'.repeat(32) // a well-formed id no upload has: 404 with the right token, 401 without

const main = document.querySelector('main')
const endpoint = new URL(main.dataset.endpoint, window.location.href).href
const tokenRequired = main.dataset.token === 'required'
const $ = (id) => document.getElementById(id)
const subtle = window.isSecureContext && window.crypto && window.crypto.subtle

const uploads = new Set() // the rows being uploaded, paused or failed

// --- formatting ---------------------------------------------------------------------------

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i += 1
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`
}

function duration(seconds) {
  if (!Number.isFinite(seconds)) return 'unknown'
  const s = Math.round(seconds)
  if (s < 60) return `${s} s`
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`
}

function base64(buffer) {
  return btoa(String.fromCharCode(...new Uint8Array(buffer)))
}

function el(tag, attrs = {}, text = '') {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v)
  if (text) node.textContent = text
  return node
}

function announce(text) {
  $('announce').textContent = text
}

// --- the token ----------------------------------------------------------------------------

function token() {
  return window.sessionStorage.getItem(TOKEN_KEY)
}

function authHeaders() {
  const t = token()
  return t ? { Authorization: `Bearer ${t}` } : {}
}

function showTokenForm(message) {
  $('token-form').hidden = false
  $('uploader').hidden = true
  $('token-error').textContent = message || ''
  $('token').focus()
}

async function checkToken(candidate) {
  // A HEAD of an upload that does not exist: the server checks credentials before looking it up.
  const res = await fetch(endpoint + PROBE_ID, {
    method: 'HEAD',
    headers: { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${candidate}` },
    cache: 'no-store',
  })
  return res.status !== 401 && res.status !== 403
}

$('token-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  const candidate = $('token').value.trim()
  if (!candidate) {
    $('token-error').textContent = 'Enter the access token you were given.'
    return
  }
  $('token-error').textContent = 'Checking the token…'
  let ok
  try {
    ok = await checkToken(candidate)
  } catch (error) {
    $('token-error').textContent = `Could not reach the server to check the token: ${error.message}`
    return
  }
  if (!ok) {
    $('token-error').textContent =
      'The server did not accept this token (401). Check it with whoever runs the server.'
    return
  }
  window.sessionStorage.setItem(TOKEN_KEY, candidate)
  $('token').value = ''
  $('token-form').hidden = true
  $('uploader').hidden = false
  announce('Token accepted.')
  showUnfinished()
  retryFailed()
})

// --- one file -----------------------------------------------------------------------------

function explain(error, file) {
  const res = error.originalResponse
  const status = res ? res.getStatus() : 0
  if (error.name === 'NotReadableError' || /NotReadable|could not be read/i.test(String(error))) {
    return `${file.name} could not be read: it was changed or moved. Choose it again.`
  }
  if (status === 401 || status === 403) return 'The server refused the access token. Enter it again above.'
  if (status === 413 && error.originalRequest && error.originalRequest.getMethod() === 'PATCH') {
    return 'The server (or a proxy in front of it) refused a 16 MiB piece of the file as too large (413).'
  }
  if (status === 413) {
    const limit = /\((\d+) bytes\)/.exec(res.getBody() || '')
    return `The file is larger than this server accepts${limit ? ` (${bytes(Number(limit[1]))})` : ''}.`
  }
  if (status === 410) return 'The server no longer has this upload (it expired). Choose the file again to start over.'
  if (status === 507) return 'The server is out of disk space. Try again later.'
  if (status === 460) return 'The data was damaged on the way (checksum mismatch) more than once.'
  if (status >= 500) return `The server failed (${status}). Try again later.`
  if (status) return `The server refused the upload (${status}): ${res.getBody() || 'no reason given'}`.trim()
  return 'The connection to the server was lost. The upload continues where it stopped when you press Retry, or by itself when the network is back.'
}

class Row {
  constructor(file) {
    this.file = file
    this.paused = false
    this.failed = false
    this.accepted = 0 // bytes the server has confirmed: what a pause or a failure keeps
    this.samples = []
    this.digests = new Map() // chunk offset -> base64 sha256, read by onBeforeRequest
    this.li = el('li', { class: 'file' })
    const label = `progress-${Math.random().toString(36).slice(2)}`
    this.li.append(el('span', { class: 'name', id: label }, file.name))
    this.bar = el('progress', { max: String(file.size || 1), value: '0', 'aria-labelledby': label })
    this.status = el('span', { class: 'status' }, 'Starting…')
    this.error = el('span', { class: 'error', role: 'alert' })
    this.button = el('button', { type: 'button', 'aria-label': `Pause ${file.name}` }, 'Pause')
    this.button.addEventListener('click', () => (this.paused || this.failed ? this.start() : this.pause()))
    this.li.append(this.bar, this.status, this.button, this.error)
    $('active').append(this.li)
    uploads.add(this)
    this.upload = new tus.Upload(file, {
      endpoint,
      chunkSize: CHUNK,
      retryDelays: RETRY_DELAYS,
      removeFingerprintOnSuccess: true,
      metadata: { filename: file.name, filetype: file.type || 'application/octet-stream' },
      fileReader: this.hashingReader(),
      onBeforeRequest: (req) => this.beforeRequest(req),
      onShouldRetry: (error) => {
        const res = error.originalResponse
        const status = res ? res.getStatus() : 0
        return (status === 0 || status >= 500 || [408, 409, 423, 460].includes(status)) && navigator.onLine
      },
      onProgress: (sent, total) => this.progress(sent, total),
      onChunkComplete: (_size, accepted) => {
        this.accepted = accepted
      },
      onSuccess: () => this.finished(),
      onError: (error) => this.fail(error),
    })
  }

  // Upload-Checksum per chunk when SubtleCrypto exists (secure contexts: https or 127.0.0.1):
  // each chunk is hashed as tus-js-client slices it, and the hash goes on the PATCH that sends it.
  // The next chunk is hashed while this one is on the wire, so hashing adds little time.
  hashingReader() {
    const row = this
    return {
      async openFile(input, chunkSize) {
        const source = await tus.defaultOptions.fileReader.openFile(input, chunkSize)
        let ahead = null // {key, digest: Promise} of the chunk expected next
        const hash = async (start, end) => {
          const part = await source.slice(start, end)
          return base64(await subtle.digest('SHA-256', await part.value.arrayBuffer()))
        }
        return {
          size: source.size,
          async slice(start, end) {
            const part = await source.slice(start, end)
            if (subtle && part.value && part.value.size) {
              const key = `${start}-${end}`
              const early = ahead && ahead.key === key ? await ahead.digest : null
              const digest = early || (await hash(start, end))
              row.digests.clear()
              row.digests.set(String(start), digest)
              const next = Math.min(end + chunkSize, source.size)
              ahead = part.done ? null : { key: `${end}-${next}`, digest: hash(end, next).catch(() => null) }
            }
            return part
          },
          close() {
            ahead = null
            source.close()
          },
        }
      },
    }
  }

  beforeRequest(req) {
    for (const [name, value] of Object.entries(authHeaders())) req.setHeader(name, value)
    const digest = req.getMethod() === 'PATCH' && this.digests.get(req.getHeader('Upload-Offset'))
    if (digest) req.setHeader('Upload-Checksum', `sha256 ${digest}`)
  }

  async start() {
    this.paused = false
    this.failed = false
    this.error.textContent = ''
    this.samples = []
    this.setButton('Pause')
    this.status.textContent = 'Asking the server how far this file got…'
    try {
      const previous = await this.upload.findPreviousUploads()
      if (previous.length) this.upload.resumeFromPreviousUpload(previous[0])
    } catch (_error) {
      // no stored URL: a new upload
    }
    dropUnfinished(this.file)
    this.upload.start()
  }

  pause() {
    this.paused = true
    this.upload.abort()
    this.setButton('Resume')
    this.status.textContent = `Paused: ${this.kept()}.`
  }

  kept() {
    return `${bytes(this.accepted)} of ${bytes(this.file.size)} are on the server`
  }

  setButton(text) {
    this.button.textContent = text
    this.button.setAttribute('aria-label', `${text} ${this.file.name}`)
  }

  progress(sent, total) {
    const now = performance.now()
    this.samples.push([now, sent])
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift()
    const [t0, b0] = this.samples[0]
    const rate = now > t0 ? ((sent - b0) * 1000) / (now - t0) : 0
    this.bar.max = total || 1
    this.bar.value = sent
    const eta = rate > 0 ? duration((total - sent) / rate) : 'unknown'
    this.status.textContent = `${bytes(sent)} of ${bytes(total)} · ${bytes(rate)}/s · ${eta} left`
  }

  finished() {
    uploads.delete(this)
    this.li.remove()
    const id = this.upload.url.split('/').pop()
    const item = el('li')
    item.append(el('span', { class: 'name' }, this.file.name), ` ${bytes(this.file.size)} · id `)
    item.append(el('code', {}, id))
    $('done').append(item)
    $('done-section').hidden = false
    announce(`${this.file.name} is uploaded.`)
  }

  fail(error) {
    this.failed = true
    const status = error.originalResponse ? error.originalResponse.getStatus() : 0
    this.error.textContent = explain(error, this.file)
    this.setButton('Retry')
    this.button.hidden = status === 413 && error.originalRequest.getMethod() === 'POST' // it cannot fit
    this.status.textContent = `Stopped: ${this.kept()}.`
    if (status === 401 || status === 403) {
      window.sessionStorage.removeItem(TOKEN_KEY)
      showTokenForm('The server did not accept the token (401). Enter it again.')
    }
  }
}

// Files that failed and may succeed now (not those too large for the server) start again.
function retryFailed() {
  for (const row of uploads) if (row.failed && !row.button.hidden) row.start()
}

function addFiles(files) {
  if (tokenRequired && !token()) {
    showTokenForm('Enter the access token first.')
    return
  }
  for (const file of files) new Row(file).start()
}

// --- uploads left unfinished by an earlier visit --------------------------------------------

function storedKey(file) {
  return ['tus-br', file.name, file.type, file.size, file.lastModified, endpoint].join('-')
}

async function showUnfinished() {
  const list = $('unfinished')
  list.replaceChildren()
  let stored = []
  try {
    stored = await tus.defaultOptions.urlStorage.findAllUploads()
  } catch (_error) {
    return
  }
  const mine = stored.filter((s) => s.uploadUrl && s.urlStorageKey.includes(`-${endpoint}::`))
  for (const entry of mine) {
    const name = (entry.metadata && entry.metadata.filename) || 'a file'
    const item = el('li', { 'data-key': entry.urlStorageKey })
    item.append(el('span', { class: 'name' }, name), ` ${bytes(entry.size)} `)
    const where = el('span', { class: 'status' }, '')
    const forget = el('button', { type: 'button', 'aria-label': `Discard the unfinished upload of ${name}` }, 'Discard')
    forget.addEventListener('click', async () => {
      await tus.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey)
      tus.Upload.terminate(entry.uploadUrl, { headers: authHeaders(), retryDelays: [] }).catch(() => {})
      item.remove()
      $('unfinished-section').hidden = !list.children.length
    })
    item.append(where, forget)
    list.append(item)
    serverOffset(entry.uploadUrl).then((offset) => {
      where.textContent = offset === null ? '' : `(${bytes(offset)} on the server)`
    })
  }
  $('unfinished-section').hidden = !mine.length
}

async function serverOffset(url) {
  try {
    const res = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0', ...authHeaders() } })
    return res.ok ? Number(res.headers.get('Upload-Offset')) : null
  } catch (_error) {
    return null
  }
}

function dropUnfinished(file) {
  const key = storedKey(file)
  for (const item of $('unfinished').querySelectorAll('li')) {
    if (item.dataset.key.startsWith(`tus::${key}::`)) item.remove()
  }
  $('unfinished-section').hidden = !$('unfinished').children.length
}

// --- choosing files -------------------------------------------------------------------------

const input = $('files')
input.addEventListener('change', () => {
  addFiles(Array.from(input.files))
  input.value = ''
})

const zone = $('drop')
for (const name of ['dragenter', 'dragover']) {
  zone.addEventListener(name, (event) => {
    event.preventDefault()
    zone.classList.add('over')
  })
}
for (const name of ['dragleave', 'drop']) {
  zone.addEventListener(name, () => zone.classList.remove('over'))
}
zone.addEventListener('drop', (event) => {
  event.preventDefault()
  addFiles(Array.from(event.dataTransfer.files))
})

// A network that comes back restarts what failed while it was away.
window.addEventListener('online', retryFailed)

if (!subtle) $('no-checksum').hidden = false
if (tokenRequired && !token()) showTokenForm()
else showUnfinished()
