// The bench service on a pinus-rpc server (bench.js server): echo, as
// pomelo_rpc/bench_remote/bench.py.
'use strict';

class Bench {
  async echo(payload) {
    return payload;
  }
}

module.exports.default = function () {
  return new Bench();
};
