// Build the upload page's script: src/main.js and tus-js-client bundled and minified by esbuild
// into OUT/upload.js, and the licences of every package in the bundle into OUT/licenses.txt.
// Deterministic: the same package-lock.json gives the same bytes (a test checks the shipped copy).
//
//   node build.mjs OUT
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const here = path.dirname(fileURLToPath(import.meta.url))
const out = path.resolve(process.argv[2] ?? path.join(here, '..', 'src', 'onward', 'server', 'static'))

const result = await esbuild.build({
  entryPoints: [path.join(here, 'src', 'main.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome100', 'firefox100', 'safari15'],
  platform: 'browser',
  legalComments: 'none', // the licences go to licenses.txt, whole
  charset: 'utf8',
  metafile: true,
  write: false,
  absWorkingDir: here,
  outfile: path.join(out, 'upload.js'),
})

const packages = new Map() // name -> directory, for every package with code in the bundle
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/^(.*node_modules\/((?:@[^/]+\/)?[^/]+))\//)
  if (match) packages.set(match[2], path.join(here, match[1]))
}

const licences = [
  'The upload page of onward serve (upload.js) bundles these packages. Their licences follow.',
  '',
  'onward (the page itself, src/main.js): MIT, see the onward package.',
]
for (const name of [...packages.keys()].sort()) {
  const dir = packages.get(name)
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  const files = fs.readdirSync(dir).filter((f) => /^(licen[cs]e|copying)/i.test(f)).sort()
  licences.push('', '='.repeat(78), `${name} ${meta.version} (${meta.license ?? 'see below'})`, '='.repeat(78))
  if (!files.length) throw new Error(`${name}: no licence file in ${dir}`)
  for (const file of files) licences.push('', fs.readFileSync(path.join(dir, file), 'utf8').trimEnd())
}

fs.mkdirSync(out, { recursive: true })
fs.writeFileSync(path.join(out, 'upload.js'), result.outputFiles[0].contents)
fs.writeFileSync(path.join(out, 'licenses.txt'), licences.join('\n') + '\n')
console.log(`${path.join(out, 'upload.js')}: ${result.outputFiles[0].contents.length} bytes from ${packages.size} packages`)
