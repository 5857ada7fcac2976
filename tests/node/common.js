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
