// A Node backend's handler calling a Python server (pinus style): node.relayHandler.callPy
// {target, payload} -> app.rpc.area.areaRemote.echo on area server ``target``, a proxy
// pinus built from the user entry of the Python server's remoterPaths (its stubs).
'use strict';

class RelayHandler {
  constructor(app) {
    this.app = app;
  }

  async callPy(msg, session) {
    const remote = this.app.rpc.area && this.app.rpc.area.areaRemote;
    if (!remote) {
      return {code: 500, error: 'no app.rpc.area.areaRemote (yet)'};
    }
    try {
      const answer = await remote.echo.toServer(msg.target, msg.payload);
      return {code: 200, via: this.app.getServerId(), answer: answer};
    } catch (err) {
      return {code: 500, error: err.message || String(err)};
    }
  }
}

module.exports.default = function (app) {
  return new RelayHandler(app);
};
