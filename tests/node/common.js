// Shared by server.js and client.js: keep stdout for our JSON lines and sockets on loopback.
'use strict';
var net = require('net');

// pomelo-rpc's acceptor console.logs on every connection and pomelo-logger logs to the
// console too: send all of that to stderr, stdout carries only JSON lines.
var out = process.stdout.write.bind(process.stdout);
console.log = console.info = console.warn = function() {
  process.stderr.write(Array.prototype.join.call(arguments, ' ') + '\n');
};

// pomelo-rpc's acceptor calls server.listen(port) (every interface): bind loopback only.
var listen = net.Server.prototype.listen;
net.Server.prototype.listen = function(port) {
  if (arguments.length === 1 && typeof port === 'number') {
    return listen.call(this, port, '127.0.0.1');
  }
  return listen.apply(this, arguments);
};

// POMELO_RPC_NODE_NODELAY=1 (or --nodelay): every socket gets setNoDelay(true), the
// Node peers "with TCP_NODELAY patched in" of bench/mqtt_vs_node.py. pomelo-rpc 1.0.7
// never sets it, so a packet written in pieces waits for the peer's delayed ACK.
var NODELAY = process.env.POMELO_RPC_NODE_NODELAY === '1' ||
    process.argv.indexOf('--nodelay') >= 0;
if (NODELAY) {
  // outgoing: Socket#connect (net.createConnection); setNoDelay before the connect is
  // remembered and applied once the handle exists
  var connect = net.Socket.prototype.connect;
  net.Socket.prototype.connect = function() {
    this.setNoDelay(true);
    return connect.apply(this, arguments);
  };
  // incoming: each accepted socket, before the server's own 'connection' listeners
  var emit = net.Server.prototype.emit;
  net.Server.prototype.emit = function(event, socket) {
    if (event === 'connection' && socket && typeof socket.setNoDelay === 'function') {
      socket.setNoDelay(true);
    }
    return emit.apply(this, arguments);
  };
}
module.exports.nodelay = NODELAY;

// Exit when stdin closes: a server started with a pipe as stdin dies with its parent.
module.exports.exitWithStdin = function() {
  process.stdin.on('end', function() { process.exit(0); });
  process.stdin.on('error', function() {});
  process.stdin.resume();
};

module.exports.emit = function(obj) {
  out(JSON.stringify(obj) + '\n');
};

module.exports.args = function(argv) {
  var opts = {};
  for (var i = 0; i < argv.length; i++) {
    var a = argv[i];
    if (a.slice(0, 2) !== '--') continue;
    var key = a.slice(2);
    var next = argv[i + 1];
    if (next === undefined || next.slice(0, 2) === '--') {
      opts[key] = true;
    } else {
      opts[key] = next;
      i++;
    }
  }
  return opts;
};
