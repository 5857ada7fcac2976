// Simulated pomelo players (pomelo-client-websocket@1.0.13, several per process) for
// pomelo_rpc's backend tests, its bench and `./dev demo --pomelo`.
//   node players.js      reads one JSON command per line on stdin, writes one JSON event
//                        per line on stdout:
// {"op":"connect","p":name,"port":N}                  -> {"ev":"connected","p"} | {"ev":"error","p","error"}
// {"op":"request","p","route","msg","tag"}             -> {"ev":"response","p","tag","body"}
// {"op":"notify","p","route","msg"}                    (nothing back)
// {"op":"close","p"}                                   -> {"ev":"closed","p"} (once closed)
// pushes and kicks as they arrive: {"ev":"push","p","route","body"}, {"ev":"kick","p"};
// a connection closed by the server: {"ev":"closed","p"}.
// {"op":"load","tag","port","players","seconds","route","msg","entry","pushEvery"}:
//   ``players`` players connect, each sends entry (connector.entryHandler.entry with
//   entry + {uid: "load-<i>"}) then requests ``route`` one after the other for
//   ``seconds`` (every pushEvery-th with "push": true) ->
//   {"ev":"load","tag","requests","errors","pushes","seconds","p50","p99"} (ms)
'use strict';
var Pomelo = require('pomelo-client-websocket');
var readline = require('readline');

// pomelo-client-websocket@1.0.13 decodes only the first pomelo package of a WebSocket
// message, but a connector sends the messages of one session queued in the same tick
// as one message (a response and a push, say): split each message into its packages
// (1 byte type, 3 bytes length, body) and hand them over one at a time.
var initWebSocket = Pomelo.prototype.initWebSocket;
Pomelo.prototype.initWebSocket = function(url, cb) {
  initWebSocket.call(this, url, cb);
  var handle = this.socket.onmessage;
  this.socket.onmessage = function(event) {
    var bytes = new Uint8Array(event.data), off = 0, len;
    while (off + 4 <= bytes.length) {
      len = (bytes[off + 1] << 16 | bytes[off + 2] << 8 | bytes[off + 3]) >>> 0;
      handle({data: bytes.slice(off, off + 4 + len).buffer});
      off += 4 + len;
    }
  };
};

// pomelo-client-websocket@1.0.13 writes a request id of two or more bytes most
// significant group first, pomelo-protocol 0.1.6 (the connector) reads it least
// significant first: from id 128 on, the connector answers another id and the request
// hangs. Request ids are kept within one byte (1..127; a player here never has that many
// requests in flight).
var request = Pomelo.prototype.request;
Pomelo.prototype.request = function() {
  if (this.reqId >= 127) {
    this.reqId = 0;
  }
  return request.apply(this, arguments);
};

var players = {};

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function connect(name, port, cb) {
  var p = new Pomelo();
  var done = false;
  p.on('__CLIENT_ROUTE', function(route, body) {
    out({ev: 'push', p: name, route: route, body: body});
  });
  p.on('onKick', function() { out({ev: 'kick', p: name}); });
  p.on('close', function(e) { out({ev: 'closed', p: name, code: e && e.code, reason: e && e.reason}); });
  p.on('io-error', function(e) {
    out({ev: 'io-error', p: name, error: String(e && (e.message || e.error || e))});
    if (!done) {
      done = true;
      cb(new Error('connect failed: ' + (e && e.message || 'io-error')));
    }
  });
  p.init({host: '127.0.0.1', port: port}, function() {
    if (!done) {
      done = true;
      cb(null, p);
    }
  });
}

function percentile(sorted, q) {
  if (sorted.length === 0) {
    return null;
  }
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function load(cmd) {
  var latencies = [], errors = 0, pushes = 0, requests = 0, ready = 0, clients = [];
  var stopAt = 0, finished = 0, started = 0;
  var every = cmd.pushEvery || 0;
  function report() {
    latencies.sort(function(a, b) { return a - b; });
    out({ev: 'load', tag: cmd.tag, requests: requests, errors: errors, pushes: pushes,
         seconds: (Date.now() - started) / 1000,
         p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99)});
    clients.forEach(function(c) { c.disconnect(); });
  }
  function run(client, i) {
    var n = 0;
    (function next() {
      if (Date.now() >= stopAt) {
        if (++finished === cmd.players) {
          report();
        }
        return;
      }
      var msg = Object.assign({}, cmd.msg || {});
      n++;
      if (every && n % every === 0) {
        msg.push = true;
      }
      var t0 = process.hrtime.bigint();
      client.request(cmd.route, msg, function(body) {
        var ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (!body || body.code !== 200) {
          errors++;
        } else {
          requests++;
          latencies.push(ms);
        }
        next();
      });
    })();
  }
  for (var i = 0; i < cmd.players; i++) {
    (function(i) {
      connect('load-' + i, cmd.port, function(err, client) {
        if (err) {
          out({ev: 'error', tag: cmd.tag, error: err.message});
          return;
        }
        clients[i] = client;
        client.on('onMove', function() { pushes++; });
        var entry = Object.assign({uid: 'load-' + i}, cmd.entry || {});
        client.request('connector.entryHandler.entry', entry, function(body) {
          if (!body || body.code !== 200) {
            out({ev: 'error', tag: cmd.tag, error: 'entry failed: ' + JSON.stringify(body)});
            return;
          }
          if (++ready === cmd.players) {
            started = Date.now();
            stopAt = started + cmd.seconds * 1000;
            clients.forEach(run);
          }
        });
      });
    })(i);
  }
}

readline.createInterface({input: process.stdin}).on('line', function(line) {
  var cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    return out({ev: 'error', error: 'bad command: ' + line});
  }
  var p = players[cmd.p];
  switch (cmd.op) {
    case 'connect':
      connect(cmd.p, cmd.port, function(err, client) {
        if (err) {
          return out({ev: 'error', p: cmd.p, error: err.message});
        }
        players[cmd.p] = client;
        out({ev: 'connected', p: cmd.p});
      });
      break;
    case 'request':
      if (!p) {
        return out({ev: 'response', p: cmd.p, tag: cmd.tag, body: null, error: 'no player'});
      }
      p.request(cmd.route, cmd.msg || {}, function(body) {
        out({ev: 'response', p: cmd.p, tag: cmd.tag, body: body});
      });
      break;
    case 'notify':
      if (p) {
        p.notify(cmd.route, cmd.msg || {});
      }
      break;
    case 'close':
      if (p) {
        p.disconnect();
        delete players[cmd.p];
      }
      break;
    case 'load':
      load(cmd);
      break;
    default:
      out({ev: 'error', error: 'unknown op ' + cmd.op});
  }
}).on('close', function() {
  process.exit(0);
});
