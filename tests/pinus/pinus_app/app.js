// A small pinus 1.7.4 application for pomelo_rpc's tests (tests/test_pinus.py,
// tests/test_pinus_backend.py): the master, backend servers of type "node" (remote
// relayRemote) and, when servers.json lists them, connectors (hybridconnector over
// WebSocket) forwarding player requests on area.* to the area servers. Python servers
// (of type "py", or backend servers of type "area") join through the master and
// advertise the JS stubs of their services (`python -m pomelo_rpc stubs`) as their
// remoterPaths. Plain JS on pinus's compiled dist/: no TypeScript.
//
// PINUS_RPC_TRANSPORT=tcp switches the cluster's rpc to pinus-rpc's tcp transport
// (proxyConfig.mailboxFactory / remoteConfig.acceptorFactory); mqtt (pinus's default)
// otherwise. PINUS_TCP_PING / PINUS_TCP_PONG (ms) set the tcp mailbox's heartbeat
// (25000 / 10000 by default) and PINUS_TCP_IDLE_PING the tcp acceptor's (it closes a
// connection silent for that + 5000 ms). The master passes its environment to the
// servers it starts. The tests copy this directory to a temp dir, write config/*.json
// there with free ports and run `node app.js` with NODE_PATH set to
// tests/pinus/node_modules. By hand: `NODE_PATH=../node_modules node app.js` here.
'use strict';
require('reflect-metadata');     // pinus-loader reads remoters' decorator metadata
const http = require('http');
const net = require('net');
const {pinus} = require('pinus');
const rpc = require('pinus-rpc');
const notes = require('./app/notes');

// pinus-admin's master and pinus-rpc's acceptors call listen(port): every interface.
// The tests stay on loopback.
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port) {
  if (arguments.length === 1 && typeof port === 'number') {
    return listen.call(this, port, '127.0.0.1');
  }
  return listen.apply(this, arguments);
};

// The master spawns the servers with their output piped to itself: if it dies first,
// a server's next log line must not fail with EPIPE.
['stdout', 'stderr'].forEach(function (name) {
  process[name].on('error', function () {});
});

const app = pinus.createApp();
app.set('name', 'pomelo-rpc-python-pinus');

const transport = process.env.PINUS_RPC_TRANSPORT || 'mqtt';
const env = function (name) {
  return process.env[name] ? Number(process.env[name]) : undefined;
};
// POMELO_RPC_TIMEOUT (ms): how long an rpc (a forwarded request, say) waits for its answer
const proxyConfig = {timeout: env('POMELO_RPC_TIMEOUT') || 10000};
const remoteConfig = {};
if (transport === 'tcp') {
  proxyConfig.mailboxFactory = rpc.createTcpMailBox;
  remoteConfig.acceptorFactory = rpc.createTcpAcceptor;
  if (env('PINUS_TCP_PING') !== undefined) proxyConfig.ping = env('PINUS_TCP_PING');
  if (env('PINUS_TCP_PONG') !== undefined) proxyConfig.pong = env('PINUS_TCP_PONG');
  if (env('PINUS_TCP_IDLE_PING') !== undefined) remoteConfig.ping = env('PINUS_TCP_IDLE_PING');
} else if (transport !== 'mqtt') {
  throw new Error('PINUS_RPC_TRANSPORT must be mqtt or tcp, not ' + transport);
}
app.set('proxyConfig', proxyConfig);
app.set('remoteConfig', remoteConfig);

// What went wrong in this process, for the tests: an uncaught exception (pinus-rpc
// 1.7.4's mqtt mailbox throws `cb is not a function` 30 s after a notify nobody
// answered) is recorded and reported by GET /health, then the process goes on.
const uncaught = [];
process.on('uncaughtException', function (err) {
  uncaught.push(String(err && err.stack || err));
  console.error('uncaught exception: ' + (err && err.stack || err));
});

// The tests' window into a Node server: a loopback HTTP endpoint on the port its
// servers.json entry names as hookPort.
//   GET  /servers -> {id: server info} as this server's app knows them
//   GET  /health  -> {uncaught: [...], rpc: {serverType: [service, ...]}}
//   GET  /notes   -> what relayRemote.note received (notifies from Python)
//   POST /rpc {type, service, method, args, serverId?, uid?, notify?}
//        -> {error: {message, code, keys} | null, result}: app.rpc.<type>.<service>.
//           <method>, to serverId (.to(serverId, notify)) or routed by uid
//           (.route({uid}, notify))
//   POST /invoke {serverId, msg} -> {error, result}: app.rpcInvoke(serverId, msg)
function describe(err) {
  if (!err) return null;
  return {message: err.message, code: err.code, keys: Object.keys(err).sort(),
          stack: typeof err.stack === 'string' ? err.stack.split('\n')[0] : null};
}

function hook(app) {
  const cur = app.getCurServer();
  if (!cur.hookPort) {
    return;
  }
  http.createServer(function (req, res) {
    let body = '';
    req.on('data', function (chunk) { body += chunk; });
    req.on('end', function () {
      const reply = function (obj) {
        res.writeHead(200, {'Content-Type': 'application/json'});
        res.end(JSON.stringify(obj === undefined ? null : obj));
      };
      if (req.url === '/servers') {
        return reply(app.getServers());
      }
      if (req.url === '/health') {
        const proxies = {};
        for (const type in (app.rpc || {})) {
          proxies[type] = Object.keys(app.rpc[type]).sort();
        }
        return reply({uncaught: uncaught, rpc: proxies});
      }
      if (req.url === '/notes') {
        return reply(notes);
      }
      const q = JSON.parse(body || '{}');
      if (req.url === '/invoke') {
        return app.rpcInvoke(q.serverId, q.msg, function (err, result) {
          reply({error: describe(err), result: result});
        });
      }
      if (req.url !== '/rpc') {
        res.writeHead(404);
        return res.end();
      }
      const remote = app.rpc[q.type] && app.rpc[q.type][q.service];
      const method = remote && remote[q.method];
      if (!method) {
        return reply({error: {message: 'no proxy app.rpc.' + [q.type, q.service, q.method].join('.')}});
      }
      const call = q.serverId ? method.to(q.serverId, !!q.notify)
                              : method.route({uid: q.uid || ''}, !!q.notify);
      call.apply(null, q.args || []).then(function (result) {
        reply({error: null, result: result});
      }, function (err) {
        reply({error: describe(err), result: null});
      });
    });
  }).listen(cur.hookPort, '127.0.0.1');
}

app.configure('development', 'node', function () {
  hook(app);
});

// Connectors (tests/test_pinus_backend.py, pomelo_rpc.pomelo_app.PinusApp): pinus's
// hybridconnector over WebSocket, players on pomelo-client-websocket (tests/node). A
// request on route area.* goes to the area server named by the session's "area" setting
// (set by connector.entryHandler.entry), else to pinus's default choice by uid (crc32 of
// the uid over the area servers, here sorted by id as pomelo_rpc's clients sort them).
// The connectors reach a Python area server through app.sysrpc.area.msgRemote, built
// from the sys entry of the remoterPaths it advertises.
const crc = require('crc');
function areaRoute(session, msg, app, cb) {
  const list = (app.getServersByType('area') || []).slice();
  if (list.length === 0) {
    return cb(new Error('no area server'));
  }
  const want = session.get('area');
  if (want) {
    if (list.some(function (s) { return s.id === want; })) {
      return cb(null, want);
    }
    return cb(new Error('area server ' + want + ' is not in the list'));
  }
  list.sort(function (a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; });
  cb(null, list[Math.abs(crc.crc32(String(session.uid || ''))) % list.length].id);
}

app.configure('development', 'connector', function () {
  app.set('connectorConfig', {connector: pinus.connectors.hybridconnector, heartbeat: 30});
  app.route('area', areaRoute);
});

app.start();
