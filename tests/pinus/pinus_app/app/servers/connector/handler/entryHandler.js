// The connectors' handler (pinus style: a class made by the module's default export,
// async methods): a player's first request, and a view of its session.
'use strict';

class EntryHandler {
  constructor(app) {
    this.app = app;
  }

  // {uid?, area?}: bind the session to uid (if given), set the area server that serves
  // its area.* requests (if given; see app.js areaRoute).
  async entry(msg, session) {
    if (msg.area) {
      session.set('area', msg.area);
    }
    try {
      if (msg.uid) {
        await session.abind(msg.uid);
      }
      await session.apushAll();
    } catch (err) {
      return {code: 500, error: err.message};
    }
    return {code: 200, sid: session.id, server: this.app.getServerId()};
  }

  // The session as this connector holds it: {sid, uid, settings, server}.
  async session(msg, session) {
    return {code: 200, sid: session.id, uid: session.uid || null,
            settings: session.settings, server: this.app.getServerId()};
  }
}

module.exports.default = function (app) {
  return new EntryHandler(app);
};
