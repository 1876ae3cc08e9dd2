// The benchmark peer: panva's oidc-provider (npm, major 9) in one Node process,
// configured like the bridge for the scenarios S2 (code flow), S3 (refresh with
// rotation) and S6 (introspection) of docs PERFORMANCE.md.
//
//   node peer_server.mjs PORT REDIRECT_URI       (or PEER_PORT / PEER_REDIRECT_URI)
//   PEER_CLIENT_ID, PEER_CLIENT_SECRET           the one confidential client
//
// Equivalent to the bridge: a fresh 2048-bit RSA key, RS256 ID tokens carrying
// the scopes' claims (conformIdTokenClaims: false, as the bridge's ID tokens
// carry them too); opaque access and refresh tokens (the bridge's are opaque
// too); client_secret_basic, PKCE S256 required, refresh tokens rotated on every
// use; userinfo and introspection. Storage is memory: a plain Map adapter (below)
// instead of the bundled development store, which scans every token of a grant
// on each save and holds 1,000 entries only. No per-request logging.
//
// /interaction/:uid is not a login page: it exists for the bench's preparation
// only, and signs in the fixed member and grants the requested scopes at once,
// so that later authorize requests carrying the session cookie get a code with
// no interaction. Prints "ready" on stdout once listening.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.argv[2] ?? process.env.PEER_PORT);
const redirectUri = process.argv[3] ?? process.env.PEER_REDIRECT_URI;
const clientId = process.env.PEER_CLIENT_ID ?? 'bench-peer';
const clientSecret = process.env.PEER_CLIENT_SECRET;
if (!Number.isInteger(port) || port <= 0 || !redirectUri || !clientSecret) {
  console.error('usage: PEER_CLIENT_SECRET=... node peer_server.mjs PORT REDIRECT_URI');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// --- storage: one Map for every model, with expiry and a grant index ---------

const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode',
]);
const store = new Map(); // `${model}:${id}` -> { payload, expiresAt (ms) }
const byGrant = new Map(); // grantId -> Set of store keys
const byUid = new Map(); // session uid -> session id
const byUserCode = new Map(); // user code -> id

function unindex(key, payload) {
  if (payload.grantId) byGrant.get(payload.grantId)?.delete(key);
  if (payload.uid && key.startsWith('Session:')) byUid.delete(payload.uid);
  if (payload.userCode) byUserCode.delete(payload.userCode);
}

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  async upsert(id, payload, expiresIn) {
    const key = `${this.model}:${id}`;
    const previous = store.get(key);
    if (previous) unindex(key, previous.payload);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, expiresAt });
    if (GRANTABLE.has(this.model) && payload.grantId) {
      let members = byGrant.get(payload.grantId);
      if (!members) byGrant.set(payload.grantId, (members = new Set()));
      members.add(key);
    }
    if (this.model === 'Session' && payload.uid) byUid.set(payload.uid, id);
    if (payload.userCode) byUserCode.set(payload.userCode, id);
  }

  async find(id) {
    const key = `${this.model}:${id}`;
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      unindex(key, entry.payload);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    const id = byUid.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = byUserCode.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = store.get(`${this.model}:${id}`);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    const key = `${this.model}:${id}`;
    const entry = store.get(key);
    if (entry) {
      store.delete(key);
      unindex(key, entry.payload);
    }
  }

  async revokeByGrantId(grantId) {
    const members = byGrant.get(grantId);
    if (!members) return;
    byGrant.delete(grantId);
    for (const key of members) {
      const entry = store.get(key);
      store.delete(key);
      if (entry) unindex(key, entry.payload);
    }
  }
}

// Expired entries nobody looks up again (redeemed codes, old access tokens)
// are dropped every 30 s, as a store with expiry would.
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt <= now) {
      store.delete(key);
      unindex(key, entry.payload);
    }
  }
  for (const [grantId, members] of byGrant) if (members.size === 0) byGrant.delete(grantId);
}, 30_000).unref();

// --- the fixed member (the bridge's demo person "jdoe") ----------------------

const ACCOUNT_ID = '23210';
const MEMBER = {
  sub: ACCOUNT_ID,
  name: 'Jane Doe',
  given_name: 'Jane',
  family_name: 'Doe',
  email: 'jane.doe@example.org',
  email_verified: false,
  phone_number: '+12025550100',
};

// --- the provider ------------------------------------------------------------

const signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const jwk = { ...signingKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  jwks: { keys: [jwk] },
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [redirectUri],
    scope: 'openid profile email phone offline_access',
    id_token_signed_response_alg: 'RS256',
  }],
  responseTypes: ['code'],
  scopes: ['openid', 'profile', 'email', 'phone', 'offline_access'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'given_name', 'family_name'],
    email: ['email', 'email_verified'],
    phone: ['phone_number'],
  },
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    if (id !== ACCOUNT_ID) return undefined;
    return { accountId: id, async claims() { return { ...MEMBER }; } };
  },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  features: {
    devInteractions: { enabled: false },
    introspection: {
      enabled: true,
      // The bridge's rule: a client introspects only its own tokens.
      allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
    },
    revocation: { enabled: true },
    userinfo: { enabled: true },
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    IdToken: 600,
    RefreshToken: 30 * 24 * 3600,
    Grant: 30 * 24 * 3600,
    Session: 8 * 3600,
    Interaction: 3600,
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  clientBasedCORS: () => false,
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});
provider.proxy = false;

async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    const accountId = details.session?.accountId ?? ACCOUNT_ID;
    // A new grant per interaction: each refresh chain prepared with
    // prompt=consent gets its own grant, so none shares the session's.
    const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const result = { consent: { grantId: await grant.save() } };
    if (!details.session?.accountId) result.login = { accountId, amr: ['pwd'] };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  } catch (err) {
    res.statusCode = 400;
    res.setHeader('Content-Type', 'text/plain');
    res.end(String(err?.message ?? err));
  }
}

const handle = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res);
  } else {
    handle(req, res);
  }
});
server.keepAliveTimeout = 65_000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write('ready\n');
});
