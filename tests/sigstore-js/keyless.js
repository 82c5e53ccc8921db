// Produces a keyless Sigstore bundle with sigstore-js (@sigstore/sign), fully offline, as an
// independent client: node keyless.js FILE OUT_DIR [--dsse SHA256HEX]
// Fulcio, Rekor v1 and a timestamp authority are played by @sigstore/mock behind nock (no real
// network: nock.disableNetConnect()), each with its own fresh P-256 key (CA, CT log, Rekor, TSA).
// Without --dsse, FILE's bytes are signed as a message signature (like `cosign sign-blob`);
// with --dsse HEX, a DSSE envelope over an in-toto Statement v1 whose subject digest is
// sha256:HEX (how cosign v3 signs an image manifest) is signed instead; FILE is then unused.
// Writes OUT_DIR/bundle.sigstore.json and OUT_DIR/trusted_root.json, checks the bundle with
// @sigstore/verify against that trusted root, and prints on stdout:
//   identity=<certificate SAN (URI)> issuer=<OIDC issuer extension>
//   leaf-not-before=<unix seconds>
'use strict';
// The mock services are reached through make-fetch-happen, which would tunnel through any
// configured proxy; nothing here may leave the process, so drop proxy settings first.
for (const name of Object.keys(process.env)) {
  if (/^(https?|all|no)_proxy$/i.test(name)) delete process.env[name];
}
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const nock = require('nock');
const mock = require('@sigstore/mock');
const { bundleToJSON, bundleFromJSON } = require('@sigstore/bundle');
const {
  DSSEBundleBuilder,
  FulcioSigner,
  MessageSignatureBundleBuilder,
  RekorWitness,
  TSAWitness,
} = require('@sigstore/sign');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');
const { HashAlgorithm, PublicKeyDetails, TrustedRoot } = require('@sigstore/protobuf-specs');

const FULCIO_URL = 'https://fulcio.interop.test';
const REKOR_URL = 'https://rekor.interop.test';
const TSA_URL = 'https://tsa.interop.test';
const CTLOG_URL = 'https://ctfe.interop.test'; // only named in the trusted root, never contacted
const OIDC_ISSUER = 'https://oidc.interop.test';
const EMAIL = 'interop@example.com';
// The mock Fulcio puts the token's `sub` claim in the certificate as a URI SAN (whatever it
// holds) and `iss` in the issuer extensions (1.3.6.1.4.1.57264.1.1 and .1.8), so `sub` is a URI.
const SUBJECT = 'https://oidc.interop.test/users/interop';
const STATEMENT_TYPE = 'application/vnd.in-toto+json';

function usage(msg) {
  console.error(`keyless.js: ${msg}\nusage: node keyless.js FILE OUT_DIR [--dsse SHA256HEX]`);
  process.exit(2);
}

const args = process.argv.slice(2);
let dsseDigest;
const dsseAt = args.indexOf('--dsse');
if (dsseAt >= 0) {
  dsseDigest = args[dsseAt + 1];
  args.splice(dsseAt, 2);
  if (!/^[0-9a-f]{64}$/.test(dsseDigest || '')) usage('--dsse wants 64 lowercase hex digits');
}
if (args.length !== 2) usage('expected FILE and OUT_DIR');
const [filePath, outDir] = args;

const newKeyPair = () => crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const spki = (publicKey) => publicKey.export({ type: 'spki', format: 'der' });
const sha256 = (data) => crypto.createHash('sha256').update(data).digest();
const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

// An unsigned JWT: the mock Fulcio (strict mode) decodes but does not verify it.
function identityToken() {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: OIDC_ISSUER,
    sub: SUBJECT,
    aud: 'sigstore',
    email: EMAIL,
    email_verified: true,
    iat: now,
    nbf: now,
    exp: now + 600,
  };
  return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.`;
}

// Serves one @sigstore/mock handler ({ path, fn }) for POSTs to base + path, as many times as
// asked; nock only intercepts that host, and disableNetConnect() refuses everything else.
function serve(base, handler) {
  nock(base)
    .post(handler.path)
    .reply(async (_uri, body) => {
      const req = typeof body === 'string' ? body : JSON.stringify(body);
      const { statusCode, response, contentType } = await handler.fn(req);
      return [statusCode, response, { 'Content-Type': contentType || 'text/plain' }];
    });
}

// What Rekor v1 stores is not the proposed entry verbatim (which is all the mock logs): it
// re-encodes certificates as canonical PEM and reduces a dsse entry to the hashes of envelope
// and payload plus each signature with its verifier. Do that before the mock logs the entry.
function canonicalPem(b64Pem) {
  return Buffer.from(new crypto.X509Certificate(Buffer.from(b64Pem, 'base64')).toString());
}
function asStoredByRekor(proposed) {
  const entry = JSON.parse(proposed);
  if (entry.kind === 'hashedrekord') {
    const key = entry.spec.signature.publicKey;
    key.content = canonicalPem(key.content).toString('base64');
    return JSON.stringify(entry);
  }
  if (entry.kind !== 'dsse' || entry.apiVersion !== '0.0.1') {
    throw new Error(`unexpected Rekor entry ${entry.kind} ${entry.apiVersion}`);
  }
  const { envelope, verifiers } = entry.spec.proposedContent;
  const env = JSON.parse(envelope);
  const payload = Buffer.from(env.payload, 'base64');
  const pae = Buffer.concat([
    Buffer.from(`DSSEv1 ${Buffer.byteLength(env.payloadType)} ${env.payloadType} ${payload.length} `),
    payload,
  ]);
  const signatures = env.signatures.map(({ sig }) => {
    const pem = verifiers.map(canonicalPem).find((cert) =>
      crypto.verify('sha256', pae, new crypto.X509Certificate(cert).publicKey, Buffer.from(sig, 'base64'))
    );
    if (!pem) throw new Error('DSSE signature verified by no verifier');
    return { signature: sig, verifier: pem.toString('base64') };
  });
  signatures.sort((a, b) => (a.signature < b.signature ? -1 : a.signature > b.signature ? 1 : 0));
  return JSON.stringify({
    apiVersion: entry.apiVersion,
    kind: entry.kind,
    spec: {
      envelopeHash: { algorithm: 'sha256', value: sha256(envelope).toString('hex') },
      payloadHash: { algorithm: 'sha256', value: sha256(payload).toString('hex') },
      signatures,
    },
  });
}

async function main() {
  // Trust material is valid from a few minutes before signing.
  const validFor = { start: new Date(Date.now() - 5 * 60 * 1000) };

  const ctKeys = newKeyPair();
  const ctlog = await mock.initializeCTLog(ctKeys);
  const ca = await mock.initializeCA(newKeyPair(), ctlog);
  const rekorKeys = newKeyPair();
  const tlog = await mock.initializeTLog(REKOR_URL, rekorKeys);
  // The TSA's clock is fixed on a whole second: a genTime with a fraction of a second (pkijs
  // writes one) is not always read back by @sigstore/core ("invalid time"). It is 2 s ahead,
  // so it is never before the certificate's notBefore (whole seconds, issued a moment later).
  const tsaClock = new Date((Math.floor(Date.now() / 1000) + 2) * 1000);
  const tsa = await mock.initializeTSA(newKeyPair(), tsaClock);

  nock.disableNetConnect();
  serve(FULCIO_URL, mock.fulcioHandler(ca, { strict: true }));
  const rekor = mock.rekorHandler(tlog, { strict: true });
  serve(REKOR_URL, {
    path: rekor.path,
    fn: async (body) => {
      try {
        return await rekor.fn(asStoredByRekor(body));
      } catch (e) {
        return { statusCode: 400, response: String(e.message) };
      }
    },
  });
  serve(TSA_URL, mock.tsaHandler(tsa, { strict: true }));

  const signer = new FulcioSigner({
    fulcioBaseURL: FULCIO_URL,
    identityProvider: { getToken: async () => identityToken() },
  });
  const witnesses = [
    new RekorWitness({ rekorBaseURL: REKOR_URL, majorApiVersion: 1 }),
    new TSAWitness({ tsaBaseURL: TSA_URL }),
  ];

  let bundle;
  let artifact;
  if (dsseDigest) {
    const statement = {
      _type: 'https://in-toto.io/Statement/v1',
      subject: [{ digest: { sha256: dsseDigest } }],
      predicateType: 'https://sigstore.dev/cosign/sign/v1',
      predicate: {},
    };
    bundle = await new DSSEBundleBuilder({ signer, witnesses }).create({
      data: Buffer.from(JSON.stringify(statement)),
      type: STATEMENT_TYPE,
    });
  } else {
    artifact = fs.readFileSync(filePath);
    bundle = await new MessageSignatureBundleBuilder({ signer, witnesses }).create({
      data: artifact,
    });
  }
  if (!nock.isDone()) throw new Error(`mock services not called: ${nock.pendingMocks()}`);
  nock.cleanAll();

  const tlogKey = spki(rekorKeys.publicKey);
  const trustedRoot = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [
      {
        baseUrl: REKOR_URL,
        hashAlgorithm: HashAlgorithm.SHA2_256,
        publicKey: {
          rawBytes: tlogKey,
          keyDetails: PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
          validFor,
        },
        logId: { keyId: sha256(tlogKey) },
      },
    ],
    certificateAuthorities: [
      {
        subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
        uri: FULCIO_URL,
        certChain: { certificates: [{ rawBytes: ca.rootCertificate }] },
        validFor,
      },
    ],
    ctlogs: [
      {
        baseUrl: CTLOG_URL,
        hashAlgorithm: HashAlgorithm.SHA2_256,
        publicKey: {
          rawBytes: ctlog.publicKey,
          keyDetails: PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
          validFor,
        },
        logId: { keyId: Buffer.from(ctlog.logID) },
      },
    ],
    timestampAuthorities: [
      {
        subject: { organization: 'sigstore.mock', commonName: 'tsa' },
        uri: TSA_URL,
        certChain: {
          certificates: [{ rawBytes: tsa.intCertificate }, { rawBytes: tsa.rootCertificate }],
        },
        validFor,
      },
    ],
  };

  fs.mkdirSync(outDir, { recursive: true });
  const bundlePath = path.join(outDir, 'bundle.sigstore.json');
  const rootPath = path.join(outDir, 'trusted_root.json');
  fs.writeFileSync(bundlePath, JSON.stringify(bundleToJSON(bundle), null, 2) + '\n');
  fs.writeFileSync(rootPath, JSON.stringify(TrustedRoot.toJSON(trustedRoot), null, 2) + '\n');

  // Sanity check: read both files back and verify with sigstore-js's own verifier.
  const written = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const trust = toTrustMaterial(TrustedRoot.fromJSON(JSON.parse(fs.readFileSync(rootPath, 'utf8'))));
  const verifier = new Verifier(trust, { tlogThreshold: 1, ctlogThreshold: 1, timestampThreshold: 1 });
  verifier.verify(toSignedEntity(written, artifact), {
    subjectAlternativeName: SUBJECT,
    extensions: { issuer: OIDC_ISSUER },
  });

  const content = written.verificationMaterial.content;
  const leafDer =
    content.$case === 'certificate'
      ? content.certificate.rawBytes
      : content.x509CertificateChain.certificates[0].rawBytes;
  const leaf = new crypto.X509Certificate(leafDer);
  const notBefore = Math.floor(Date.parse(leaf.validFrom) / 1000);

  console.error(
    `sigstore-js: keyless ${dsseDigest ? `DSSE (sha256:${dsseDigest})` : filePath} → ` +
      `${bundlePath}, ${rootPath}; verified`
  );
  console.log(`identity=${SUBJECT} issuer=${OIDC_ISSUER}`);
  console.log(`leaf-not-before=${notBefore}`);
}

main().catch((e) => {
  console.error(`keyless.js: ${e && e.stack ? e.stack : e}`);
  if (e && e.cause) console.error('cause:', e.cause);
  process.exit(1);
});
