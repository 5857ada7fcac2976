// A Node pomelo-rpc 1.0.7 client (its mqtt mailbox) calling one server.
//   node client.js --port N [--buffer-msg] [--interval MS] [--timeout MS] --calls JSON
//     JSON: [{"service", "method", "args", "namespace"?}, ...], all made concurrently;
//     prints {"results": [[err, ...results], ...]} (callback arguments, in call order).
//   --keepalive MS --pause MS: one echo call, an idle pause, then the calls (keepalive test)
//   node client.js --port N --bench COUNT
//     COUNT sequential user.service.echo calls; prints {"calls", "seconds", "avg_ms", ...}.
//   node client.js --port N --throughput --conc C --seconds S --size B [--warmup S]
//                  [--max-calls M] [--service NAME] [--nodelay]
//     C loops each calling user.<NAME>.echo({"a": "run", "b": "x" * B, "time": t}) back to
//     back for S seconds (or M calls in all) after a warm-up of the same shape; prints
//     {"calls_per_s", "p50_us", "p99_us", "calls"} (what pomelo_rpc.bench.measure reports).
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

function runThroughput() {
  var conc = Number(opts.conc || 1);
  var seconds = Number(opts.seconds || 2);
  var warmup = opts.warmup === undefined ? Math.min(0.3, seconds) : Number(opts.warmup);
  var maxCalls = Number(opts['max-calls'] || 0);
  var payload = {a: 'run', b: new Array(Number(opts.size || 10) + 1).join('x'),
                 time: Date.now() / 1000};
  var spec = {service: opts.service || 'service', method: 'echo', args: [payload]};

  // conc loops for secs seconds (and at most max calls); done(latencies in µs, elapsed s)
  function phase(secs, max, done) {
    var latencies = [];
    var start = process.hrtime.bigint();
    var stopAt = start + BigInt(Math.round(secs * 1e9));
    var started = 0;
    var running = conc;
    function loop() {
      if (process.hrtime.bigint() >= stopAt || (max && started >= max)) {
        if (--running === 0) {
          done(latencies, Number(process.hrtime.bigint() - start) / 1e9);
        }
        return;
      }
      started++;
      var t0 = process.hrtime.bigint();
      call(spec, function(args) {
        if (args[0]) return finish({error: args[0]});
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e3);
        loop();
      });
    }
    for (var i = 0; i < conc; i++) loop();
  }

  // one call opens the connection
  call({method: 'echo', service: spec.service, args: ['warm-up']}, function(args) {
    if (args[0]) return finish({error: args[0]});
    phase(warmup, maxCalls ? 1 : 0, function() {
      phase(seconds, maxCalls, function(lat, elapsed) {
        lat.sort(function(a, b) { return a - b; });
        var n = lat.length;
        var p50 = n % 2 ? lat[(n - 1) / 2] : (lat[n / 2 - 1] + lat[n / 2]) / 2;
        finish({calls_per_s: n / elapsed, p50_us: p50,
                p99_us: lat[Math.min(n - 1, Math.floor(n * 0.99))], calls: n,
                nodelay: common.nodelay});
      });
    });
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
  if (opts.throughput) {
    runThroughput();
  } else if (opts.bench) {
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
