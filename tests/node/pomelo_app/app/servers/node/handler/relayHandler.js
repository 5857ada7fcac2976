// A Node backend's handler calling a Python server: node.relayHandler.callPy
// {target, payload} -> app.rpc.area.areaRemote.echo on area server ``target``.
'use strict';
module.exports = function(app) {
  return new RelayHandler(app);
};

var RelayHandler = function(app) {
  this.app = app;
};

RelayHandler.prototype.callPy = function(msg, session, next) {
  var self = this;
  this.app.rpc.area.areaRemote.echo.toServer(msg.target, msg.payload, function(err, answer) {
    if (err) {
      return next(null, {code: 500, error: err.message || String(err)});
    }
    next(null, {code: 200, via: self.app.getServerId(), answer: answer});
  });
};
