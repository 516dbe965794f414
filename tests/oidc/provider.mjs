// A real OpenID provider (oidc-provider) for budget-mcp's OAuth tests: client credentials grant, resource
// indicators, JWT access tokens carrying the client's budget_prefixes.
//
// node provider.mjs CONFIG.json  listens on 127.0.0.1 (a free port) and prints "ready <issuer>" once it serves.
// On SIGHUP it reads CONFIG.json again (new keys, clients, clock) and prints "ready <issuer>" again: the
// same issuer and port, so key rotation is seen by a server that keeps running.
//
// CONFIG.json: {"keys": [private JWKs, the first signs], "alg": "ES256", "ttl": 3600,
//   "clients": [{"client_id", "client_secret", "scope", "budget_prefixes"?}],
//   "clock_start": epoch seconds (optional: the provider's "now" starts there, as the test's clock does),
//   "port": a port to listen on (optional; read at start only)}
import fs from 'node:fs';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const configPath = process.argv[2];
const realNow = Date.now.bind(Date);
let offset = 0;
Date.now = () => realNow() + offset;

let handler = (_req, res) => { res.statusCode = 503; res.end(); };
const server = http.createServer((req, res) => handler(req, res));

function load(issuer) {
  const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  offset = config.clock_start === undefined ? 0 : config.clock_start * 1000 - realNow();
  const clients = new Map(config.clients.map((c) => [c.client_id, c]));
  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: c.scope,
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: config.alg ?? 'ES256',
    })),
    jwks: { keys: config.keys },
    scopes: ['budget:read', 'budget:spend', 'budget:admin'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          if (!/^https?:\/\//.test(resource)) throw new errors.InvalidTarget();
          return {
            scope: 'budget:read budget:spend budget:admin',
            audience: resource,
            accessTokenTTL: config.ttl ?? 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: config.alg ?? 'ES256' } },
          };
        },
      },
    },
    extraTokenClaims: (_ctx, token) => {
      const prefixes = clients.get(token.clientId)?.budget_prefixes;
      return prefixes === undefined ? undefined : { budget_prefixes: prefixes };
    },
  });
  handler = provider.callback();
  console.log(`ready ${issuer}`);
}

const { port = 0 } = JSON.parse(fs.readFileSync(configPath, 'utf8'));
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  load(issuer);
  process.on('SIGHUP', () => load(issuer));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
