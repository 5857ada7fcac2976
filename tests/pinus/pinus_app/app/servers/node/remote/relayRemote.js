// The "node" servers' remote, as pinus loads a remoter: a class made by the module's
// default export. Python clients call it; it calls Python servers back.
'use strict';
const notes = require('../../../notes');

class RelayRemote {
  constructor(app) {
    this.app = app;
  }

  async echo(msg) {
    return msg;
  }

  // An error with a code (what pinus sends: its own fields and its stack)
  async fail(code, message) {
    const err = new Error(message);
    if (code !== null) {
      err.code = code;
    }
    throw err;
  }

  // A notify target: returns nothing, records what it got
  async note(msg) {
    notes.push(msg);
  }

  // app.rpc.py.echoRemote.echo on Python server ``serverId``; answers what it answered
  async relay(serverId, msg) {
    const answer = await this.app.rpc.py.echoRemote.echo.toServer(serverId, msg);
    return {via: this.app.getServerId(), answer: answer};
  }

  // This server's id and the ids of the servers it knows, by type (sorted)
  async whoami() {
    const byType = {};
    const servers = this.app.getServers();
    for (const id in servers) {
      const type = servers[id].serverType;
      (byType[type] = byType[type] || []).push(id);
    }
    for (const type in byType) {
      byType[type].sort();
    }
    return {id: this.app.getServerId(), servers: byType};
  }
}

module.exports.default = function (app) {
  return new RelayRemote(app);
};
