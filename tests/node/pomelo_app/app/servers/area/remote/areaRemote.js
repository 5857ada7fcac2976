// The area servers' remote. Python area servers (pomelo_rpc) serve it too; Node's
// app.rpc.area.areaRemote.* is built from this file.
'use strict';
module.exports = function(app) {
  return {
    // {server_id, msg}: who answered, and what it was sent
    echo: function(msg, cb) { cb(null, {server_id: app.getServerId(), msg: msg}); }
  };
};
