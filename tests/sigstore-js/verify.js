// Verifies a key-signed Sigstore bundle with sigstore-js (@sigstore/verify), as an
// independent client: node verify.js BUNDLE FILE PUBLIC_KEY_PEM
// Key mode, offline: no transparency log, timestamp or CT thresholds (the bundle carries none).
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toTrustMaterial, toSignedEntity } = require('@sigstore/verify');

const [bundlePath, filePath, keyPath] = process.argv.slice(2);
const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
const content = bundle.verificationMaterial.content;
if (content.$case !== 'publicKey') {
  throw new Error(`expected a key-signed bundle, got ${content.$case}`);
}
const der = crypto
  .createPublicKey(fs.readFileSync(keyPath))
  .export({ type: 'spki', format: 'der' });
const trust = toTrustMaterial(
  { certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] },
  { [content.publicKey.hint]: { rawBytes: der } }
);
const verifier = new Verifier(trust, {
  tlogThreshold: 0,
  ctlogThreshold: 0,
  timestampThreshold: 0,
});
verifier.verify(toSignedEntity(bundle, fs.readFileSync(filePath)));
console.log(`sigstore-js: verified ${filePath} (key hint ${content.publicKey.hint})`);
