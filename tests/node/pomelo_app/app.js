// A small pomelo 2.2.7 application for pomelo_rpc's tests (tests/test_pomelo_master.py):
// the master and backend servers of type "node" (remote relayRemote). Python servers of
// type "py" join through the master. The tests copy this directory to a temp dir, write
// config/*.json there with free ports and run `node app.js` with NODE_PATH set to
// tests/node/node_modules. By hand: `NODE_PATH=../node_modules node app.js` here.
'use strict';
var http = require('http');
var net = require('net');
var pomelo = require('pomelo');

// POMELO_NODELAY=1: TCP_NODELAY on every socket this process opens or accepts (pomelo-rpc
// 1.0.7 never sets it, so each rpc hop waits for a delayed ACK). The one line a studio
// adds to its app.js (docs/backend-servers.md):
if (process.env.POMELO_NODELAY === '1') {
  (function(S, c, e) { S.Socket.prototype.connect = function() { this.setNoDelay(true); return c.apply(this, arguments); }; S.Server.prototype.emit = function(ev, s) { if (ev === 'connection' && s && s.setNoDelay) s.setNoDelay(true); return e.apply(this, arguments); }; })(net, net.Socket.prototype.connect, net.Server.prototype.emit);
}

// pomelo-admin's master and pomelo-rpc's acceptor call listen(port): every interface.
// The tests stay on loopback.
var listen = net.Server.prototype.listen;
net.Server.prototype.listen = function(port) {
  if (arguments.length === 1 && typeof port === 'number') {
    return listen.call(this, port, '127.0.0.1');
  }
  return listen.apply(this, arguments);
};

// The master spawns the servers with their stdout and stderr piped to itself. When it
// dies (the tests kill and restart it), a server's next log line would fail with EPIPE
// and, uncaught, break whatever was logging (an rpc call, say): drop such output instead.
['stdout', 'stderr'].forEach(function(name) {
  process[name].on('error', function() {});
});

var app = pomelo.createApp();
// POMELO_LOG_LEVEL=WARN (pomelo_rpc.pomelo_app sets it): pomelo logs every request at
// DEBUG otherwise, which costs its processes more than the requests do
if (process.env.POMELO_LOG_LEVEL) {
  var pomeloLogger = require('pomelo-logger');
  pomeloLogger.setGlobalLogLevel(pomeloLogger.levels[process.env.POMELO_LOG_LEVEL]);
}
app.set('name', 'pomelo-rpc-python-interop');

// The tests' window into a Node server: a loopback HTTP endpoint on the port its
// servers.json entry names as hookPort.
//   GET  /servers  -> {id: server info} as this server's app knows them
//   POST /rpc {type, service, method, args, serverId?, uid?} -> {error, result}
//        app.rpc.<type>.<service>.<method>(...), routed by uid or toServer(serverId)
function hook(app) {
  var cur = app.getCurServer();
  if (!cur.hookPort) {
    return;
  }
  http.createServer(function(req, res) {
    var body = '';
    req.on('data', function(chunk) { body += chunk; });
    req.on('end', function() {
      var reply = function(obj) {
        res.writeHead(200, {'Content-Type': 'application/json'});
        res.end(JSON.stringify(obj));
      };
      if (req.url === '/servers') {
        return reply(app.getServers());
      }
      if (req.url !== '/rpc') {
        res.writeHead(404);
        return res.end();
      }
      var q = JSON.parse(body);
      var remote = app.rpc[q.type] && app.rpc[q.type][q.service];
      var method = remote && remote[q.method];
      if (!method) {
        return reply({error: 'no proxy app.rpc.' + [q.type, q.service, q.method].join('.')});
      }
      var cb = function(err, result) {
        reply({error: err ? (err.message || String(err)) : null, result: result});
      };
      if (q.serverId) {
        method.toServer.apply(null, [q.serverId].concat(q.args, [cb]));
      } else {
        method.apply(null, [{uid: q.uid || ''}].concat(q.args, [cb]));
      }
    });
  }).listen(cur.hookPort, '127.0.0.1');
}

app.configure('development', 'node', function() {
  hook(app);
});

// Connectors (tests/test_backend.py, bench/backend.py, ./dev demo --pomelo): the
// hybridconnector over WebSocket (the default sioconnector is socket.io 1.7.2), players
// on pomelo-client-websocket. A request on route area.* goes to the area server named
// by the session's "area" setting (set by connector.entryHandler.entry), else to
// pomelo's default choice by uid (crc32 of the uid over the area servers, here sorted
// by id as pomelo_rpc's clients sort them).
var crc = require('crc');
function areaRoute(session, msg, app, cb) {
  var list = (app.getServersByType('area') || []).slice();
  if (list.length === 0) {
    return cb(new Error('no area server'));
  }
  var want = session.get('area');
  if (want) {
    for (var i = 0; i < list.length; i++) {
      if (list[i].id === want) {
        return cb(null, want);
      }
    }
    return cb(new Error('area server ' + want + ' is not in the list'));
  }
  list.sort(function(a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; });
  cb(null, list[Math.abs(crc.crc32(String(session.uid || ''))) % list.length].id);
}

app.configure('development', 'connector', function() {
  app.set('connectorConfig', {connector: pomelo.connectors.hybridconnector, heartbeat: 30});
  // POMELO_RPC_TIMEOUT (ms): how long a forwarded request waits for its backend (pomelo-rpc's
  // callback timeout, 30 s by default: the requests in flight to a killed backend fail then)
  if (process.env.POMELO_RPC_TIMEOUT) {
    app.set('proxyConfig', {timeout: Number(process.env.POMELO_RPC_TIMEOUT)});
  }
  app.route('area', areaRoute);
});

// The master pulls systemInfo and nodeInfo from every server each second (pomelo's
// default with the systemMonitor setting is every 5 minutes); the admin client
// (admin.js) reads what it collected. The master's own process does not report: its
// pomelo-monitor would need iostat and pidstat.
app.configure('development', 'master', function() {
  ['systemInfo', 'nodeInfo'].forEach(function(id) {
    app.registerAdmin(id, function(opts, consoleService) {
      var module = require('pomelo-admin').modules[id](opts);
      if (!consoleService.master) {
        module.monitorHandler = function() {};
      }
      return module;
    }, {interval: 1, delay: 0.1});   // delay 0 would mean the default, 10 s
  });
});

app.start();

process.on('uncaughtException', function(err) {
  console.error(' Caught exception: ' + err.stack);
});
