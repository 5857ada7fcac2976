// The "node" servers' remote: Python clients call it, and it calls Python servers back.
'use strict';
module.exports = function(app) {
  return new RelayRemote(app);
};

var RelayRemote = function(app) {
  this.app = app;
};

// app.rpc.py.echoRemote.echo on Python server ``serverId``; answers what it answered.
RelayRemote.prototype.relay = function(serverId, msg, cb) {
  var self = this;
  this.app.rpc.py.echoRemote.echo.toServer(serverId, msg, function(err, answer) {
    if (err) {
      return cb(err);
    }
    cb(null, {via: self.app.getServerId(), answer: answer});
  });
};

// This server's id and the ids of the servers it knows, by type (sorted).
RelayRemote.prototype.whoami = function(cb) {
  var byType = {}, type;
  var servers = this.app.getServers();
  for (var id in servers) {
    type = servers[id].serverType;
    (byType[type] = byType[type] || []).push(id);
  }
  for (type in byType) {
    byType[type].sort();
  }
  cb(null, {id: this.app.getServerId(), servers: byType});
};
