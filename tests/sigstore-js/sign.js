// Signs a file with sigstore-js (@sigstore/sign) and a PEM private key, writing a key-mode
// Sigstore bundle, as an independent client: node sign.js FILE PRIVATE_KEY_PEM BUNDLE_OUT
// No Fulcio, Rekor or TSA: the bundle carries the public key's hint and the signature.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleToJSON } = require('@sigstore/bundle');
const { MessageSignatureBundleBuilder } = require('@sigstore/sign');

const [filePath, keyPath, outPath] = process.argv.slice(2);
const key = crypto.createPrivateKey(fs.readFileSync(keyPath));
const pub = crypto.createPublicKey(key);
const hint = crypto
  .createHash('sha256')
  .update(pub.export({ type: 'spki', format: 'der' }))
  .digest('base64');
const signer = {
  sign: async (data) => ({
    signature: crypto.sign('sha256', data, key),
    key: { $case: 'publicKey', publicKey: pub.export({ type: 'spki', format: 'pem' }), hint },
  }),
};
new MessageSignatureBundleBuilder({ signer, witnesses: [] })
  .create({ data: fs.readFileSync(filePath) })
  .then((bundle) => {
    fs.writeFileSync(outPath, JSON.stringify(bundleToJSON(bundle), null, 2));
    console.log(`sigstore-js: signed ${filePath} → ${outPath}`);
  })
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
