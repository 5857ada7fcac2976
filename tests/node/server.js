// A Node pomelo-rpc 1.0.7 server (its mqtt acceptor) with the services of remote/test.
//   node server.js [--port N] [--buffer-msg] [--interval MS] [--server-id ID] [--no-pingresp]
// --no-pingresp: the acceptor never answers PINGREQ (a server that ignores pings)
// Prints {"event": "listening", "port": N} on stdout once it listens on 127.0.0.1.
'use strict';
var path = require('path');
var common = require('./common');
var rpc = require('pomelo-rpc');

var opts = common.args(process.argv.slice(2));
common.exitWithStdin();
if (opts['no-pingresp']) {
  require('mqtt-connection').prototype.pingresp = function() {};
}
var port = Number(opts.port || 0);
var serverId = opts['server-id'] || 'node-server-1';

var gateway = rpc.server.create({
  paths: [{namespace: 'user', path: path.join(__dirname, 'remote', 'test')}],
  port: port || 1,  // pomelo rejects port 0 here...
  context: {serverId: serverId},
  bufferMsg: !!opts['buffer-msg'],
  interval: Number(opts.interval || 50)
});
gateway.port = port;  // ...but the gateway listens on whatever gateway.port is: 0 is ephemeral
gateway.on('error', function(err) {
  process.stderr.write('server error: ' + err.stack + '\n');
  process.exit(1);
});
gateway.start();
gateway.acceptor.server.on('listening', function() {
  common.emit({event: 'listening', port: gateway.acceptor.server.address().port,
               server_id: serverId});
});
process.on('SIGTERM', function() {
  gateway.stop();
  process.exit(0);
});
