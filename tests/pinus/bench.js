// pinus-rpc 1.7.4 peers for bench/pinus.py (mqtt or tcp transport, as pinus configures
// them: createMqttMailBox/createDefaultAcceptor, createTcpMailBox/createTcpAcceptor).
//   node bench.js server --transport mqtt|tcp
//     a pinus-rpc server of bench_remote (user.bench.echo) on an ephemeral loopback
//     port; prints {"port": N} once it listens
//   node bench.js client --transport mqtt|tcp --port N --conc C --seconds S --size B
//                        [--warmup S]
//     C loops each calling user.bench.echo({"a": "run", "b": "x" * B, "time": t})
//     through rpcInvoke, back to back for S seconds after a warm-up of the same shape;
//     prints {"calls_per_s", "p50_us", "p99_us", "calls"} (what pomelo_rpc.bench.measure
//     reports)
// Both exit when their stdin closes (the bench's process went away).
'use strict';
require('reflect-metadata');
const path = require('path');
const net = require('net');
const rpc = require('pinus-rpc');

const argv = process.argv.slice(2);
const role = argv[0];
const opts = {};
for (let i = 1; i < argv.length; i += 2) {
  opts[argv[i].replace(/^--/, '')] = argv[i + 1];
}
const tcp = opts.transport === 'tcp';
if (!tcp && opts.transport !== 'mqtt') {
  throw new Error('--transport mqtt|tcp');
}
process.stdin.on('end', function () { process.exit(0); });
process.stdin.resume();

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port) {
  if (arguments.length === 1 && typeof port === 'number') {
    return listen.call(this, port, '127.0.0.1');
  }
  return listen.apply(this, arguments);
};

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function server() {
  const gateway = rpc.createServer({
    paths: [{namespace: 'user', serverType: 'bench', path: path.join(__dirname, 'bench_remote')}],
    port: 1,                       // createServer wants a port...
    context: {},
    acceptorFactory: tcp ? rpc.createTcpAcceptor : rpc.createDefaultAcceptor
  });
  gateway.port = 0;                // ...the acceptor listens on whatever it is: 0 is ephemeral
  gateway.start();
  gateway.acceptor.server.on('listening', function () {
    emit({port: gateway.acceptor.server.address().port});
  });
}

function client() {
  const conc = Number(opts.conc || 1);
  const seconds = Number(opts.seconds || 2);
  const warmup = Number(opts.warmup || 0.3);
  const size = Number(opts.size || 10);
  const cli = rpc.createClient({
    mailboxFactory: tcp ? rpc.createTcpMailBox : rpc.createMqttMailBox,
    context: {serverId: 'bench-client'},
    routeContext: {},
    timeout: 30000
  });
  cli.addServer({id: 'bench-0', serverType: 'bench', host: '127.0.0.1', port: Number(opts.port)});
  const msg = function () {
    return {namespace: 'user', serverType: 'bench', service: 'bench', method: 'echo',
            args: [{a: 'run', b: 'x'.repeat(size), time: Date.now()}]};
  };
  const phase = function (secs, done) {
    const latencies = [];
    const stopAt = process.hrtime.bigint() + BigInt(Math.round(secs * 1e9));
    let running = conc;
    const start = process.hrtime.bigint();
    const loop = function () {
      const t0 = process.hrtime.bigint();
      if (t0 >= stopAt) {
        if (--running === 0) {
          done(latencies, Number(process.hrtime.bigint() - start) / 1e9);
        }
        return;
      }
      cli.rpcInvoke('bench-0', msg(), function (err) {
        if (err) {
          emit({error: String(err.message || err)});
          process.exit(1);
        }
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e3);
        setImmediate(loop);
      });
    };
    for (let i = 0; i < conc; i++) {
      loop();
    }
  };
  cli.start(function () {
    phase(warmup, function () {
      phase(seconds, function (latencies, elapsed) {
        latencies.sort(function (a, b) { return a - b; });
        const n = latencies.length;
        emit({calls_per_s: n / elapsed, p50_us: latencies[Math.floor(n / 2)],
              p99_us: latencies[Math.min(n - 1, Math.floor(n * 0.99))], calls: n});
        process.exit(0);
      });
    });
  });
}

if (role === 'server') {
  server();
} else if (role === 'client') {
  client();
} else {
  throw new Error('node bench.js server|client ...');
}
