// Servers of type "py" are Python processes (pomelo_rpc, tests/remote/pomelo/echoRemote.py).
// Node pomelo builds app.rpc.py.echoRemote.* from the method names of this file; the
// bodies never run here.
'use strict';
module.exports = function() {
  return {
    echo: function(msg, cb) { cb(new Error('echoRemote runs on the Python servers')); },
    slow: function(msg, seconds, cb) { cb(new Error('echoRemote runs on the Python servers')); }
  };
};
