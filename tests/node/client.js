// A Node pomelo-rpc 1.0.7 client (its mqtt mailbox) calling one server.
//   node client.js --port N [--buffer-msg] [--interval MS] [--timeout MS] --calls JSON
//     JSON: [{"service", "method", "args", "namespace"?}, ...], all made concurrently;
//     prints {"results": [[err, ...results], ...]} (callback arguments, in call order).
//   --keepalive MS --pause MS: one echo call, an idle pause, then the calls (keepalive test)
//   node client.js --port N --bench COUNT
//     COUNT sequential user.service.echo calls; prints {"calls", "seconds", "avg_ms", ...}.
'use strict';
var common = require('./common');
var rpc = require('pomelo-rpc');

var opts = common.args(process.argv.slice(2));
var SERVER_ID = 'target-1';

// Never outlive a broken run.
setTimeout(function() {
  finish({error: 'client.js timed out'});
}, Number(opts['max-seconds'] || 60) * 1000).unref();

var client = rpc.client.create({
  context: {serverId: 'node-client-1'},
  bufferMsg: !!opts['buffer-msg'],
  interval: Number(opts.interval || 50),
  timeout: Number(opts.timeout || 10000),
  keepalive: Number(opts.keepalive || 0) || undefined
});

function plain(value) {
  // An Error made on this side (timeout, disconnect) does not survive JSON.stringify.
  if (value instanceof Error) {
    return {local: true, message: value.message};
  }
  return value === undefined ? null : value;
}

function call(spec, cb) {
  client.rpcInvoke(SERVER_ID, {
    namespace: spec.namespace || 'user',
    serverType: 'test',
    service: spec.service || 'service',
    method: spec.method,
    args: spec.args || []
  }, function() {
    cb(Array.prototype.map.call(arguments, plain));
  });
}

function runCalls(calls) {
  var results = new Array(calls.length);
  var left = calls.length;
  if (!left) return finish({results: []});
  calls.forEach(function(spec, i) {
    call(spec, function(args) {
      results[i] = args;
      if (--left === 0) finish({results: results});
    });
  });
}

function runBench(count) {
  var samples = [];
  var i = 0;
  // one warm-up call opens the connection
  call({method: 'echo', args: ['warm-up']}, function() {
    var start = process.hrtime.bigint();
    (function next() {
      if (i === count) {
        var secs = Number(process.hrtime.bigint() - start) / 1e9;
        samples.sort(function(a, b) { return a - b; });
        return finish({calls: count, seconds: secs, avg_ms: secs * 1000 / count,
                       p50_ms: samples[Math.floor(count / 2)],
                       p99_ms: samples[Math.min(count - 1, Math.floor(count * 0.99))]});
      }
      var t0 = process.hrtime.bigint();
      call({method: 'echo', args: ['ping ' + i]}, function(args) {
        if (args[0]) return finish({error: args[0]});
        samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
        i++;
        next();
      });
    })();
  });
}

function finish(obj) {
  common.emit(obj);
  client.stop(true);
  process.exit(0);
}

client.start(function(err) {
  if (err) {
    finish({error: String(err)});
    return;
  }
  client.addServer({id: SERVER_ID, serverType: 'test', host: '127.0.0.1',
                    port: Number(opts.port)});
  var calls = JSON.parse(opts.calls || '[]');
  if (opts.bench) {
    runBench(Number(opts.bench));
  } else if (opts.pause) {
    call({method: 'echo', args: ['before the pause']}, function(args) {
      if (args[0]) return finish({error: args[0]});
      setTimeout(function() { runCalls(calls); }, Number(opts.pause));
    });
  } else {
    runCalls(calls);
  }
});
